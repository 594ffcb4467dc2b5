"""`python -m pmc.evaluate checkpoint=DIR` (or `pmc-evaluate`): score a saved model without unlearning it.

The config tree is the run's (benchmark, model and its prompt format, eval suites, generation settings), so a
checkpoint saved by `save_unlearned=true` is scored exactly as its run scored it. The target and retain models of
stage 0 come from the cache (built there if absent, never a manual step) and are scored beside it: the retain
model is the reference of TOFU's forget quality. Their results come from the eval cache when a run (or an earlier
evaluation) with the same settings scored them already. The steps are pmc.pipeline's, as a run takes them
(pmc.experiment.evaluate_checkpoint); this module is the command line only and imports Hydra, not torch, as
pmc.run does.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pmc import CONF_DIR
from pmc.failures import cli, report_errors


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def hydra_main(cfg: DictConfig) -> dict:
    from pmc.experiment import evaluate_checkpoint  # torch and the suites: for a composed job only

    return report_errors(evaluate_checkpoint, cfg)


def main() -> None:
    """`python -m pmc.evaluate` / `pmc-evaluate`: configuration errors are one line and exit status 1."""
    cli(hydra_main, CONF_DIR)


if __name__ == "__main__":
    # run the imported module, not __main__: submitit launchers then pickle the task function by reference
    from pmc import evaluate

    evaluate.main()
