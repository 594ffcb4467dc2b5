"""`python -m pmc.run` (or `pmc-run`): one unlearning experiment, composed by Hydra from conf/ and run by
pmc.experiment.run_experiment.

This module is the command line only: it imports Hydra, not torch, so what Hydra answers by itself (`--help`,
`--cfg job`, an unknown config group or option, a sweep handed to a SLURM launcher on a login node) takes about a
second; the experiment's code is imported once Hydra has composed a job. A problem the user can fix ends the run
with one line on stderr and exit status 1 (pmc.failures).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pmc import CONF_DIR
from pmc.failures import cli, report_errors


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> dict:
    from pmc.experiment import run_experiment  # torch, transformers and the methods: for a composed job only

    return report_errors(run_experiment, cfg)


def main() -> None:
    """`python -m pmc.run` / `pmc-run`: every configuration error is one line and exit status 1 (pmc.failures.cli)."""
    cli(hydra_main, CONF_DIR)


if __name__ == "__main__":
    # run the imported module, not __main__: submitit launchers then pickle the task function by reference (a copy
    # by value would drag this module's globals along, which need not pickle)
    from pmc import run

    run.main()
