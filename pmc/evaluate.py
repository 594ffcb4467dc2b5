"""`python -m pmc.evaluate checkpoint=DIR` (or `pmc-evaluate`): score a saved model without unlearning it.

The config tree is the run's (benchmark, model and its prompt format, eval suites, generation settings), so a
checkpoint saved by `save_unlearned=true` is scored exactly as its run scored it. The target and retain models of
stage 0 come from the cache (built there if absent, never a manual step) and are scored beside it: the retain
model is the reference of TOFU's forget quality. Their results come from the eval cache when a run (or an earlier
evaluation) with the same settings scored them already. The steps are pmc.pipeline's, as pmc.run takes them.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from pmc.checks import check_value
from pmc.core.errors import CheckpointError
from pmc.core.models import device_for, load_checkpoint
from pmc.failures import cli, report_errors, stage
from pmc.pipeline import (
    CONF_DIR,
    check_config,
    configure_determinism,
    eval_cache,
    eval_context,
    evaluate_models,
    load_benchmark,
    load_stage0,
    prepare_generation,
    prompt_format,
    run_record,
)
from pmc.results import write_json_atomic


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path) -> dict:
    """Score cfg.checkpoint beside the stage-0 models; writes eval/ and results.json into run_dir."""
    with stage("config"):
        suites = check_config(cfg)
        configure_determinism(cfg.deterministic)
        check_value("checkpoint", cfg.checkpoint, str)
    timings: dict[str, float] = {}
    benchmark = load_benchmark(cfg, timings)
    fmt = prompt_format(cfg, benchmark)
    with stage("checkpoint"):
        model, tokenizer = load_checkpoint(cfg.checkpoint)
    stage0 = load_stage0(cfg, benchmark, fmt, timings)
    if tokenizer.get_vocab() != stage0.tokenizer.get_vocab():
        raise CheckpointError(
            f"{cfg.checkpoint}: its tokenizer differs from the one of model={cfg.model.name}; evaluate it with the "
            "model and benchmark config it was trained from"
        )
    models = {"target": stage0.target, "retain": stage0.retain, "checkpoint": model.to(device_for(cfg.device))}
    batch_size = prepare_generation(cfg, list(models.values()), tokenizer, fmt, benchmark)
    ctx = eval_context(cfg, tokenizer, fmt, benchmark, batch_size)
    metrics, provenance = evaluate_models(models, ctx, suites, run_dir, timings,
                                          eval_cache(cfg, stage0, benchmark, ctx))
    with stage("save"):
        results = run_record(cfg, benchmark, stage0, metrics, provenance, timings, checkpoint=str(cfg.checkpoint))
        write_json_atomic(run_dir / "results.json", results)
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def hydra_main(cfg: DictConfig) -> dict:
    return report_errors(evaluate_checkpoint, cfg)


def main() -> None:
    """`python -m pmc.evaluate` / `pmc-evaluate`: configuration errors are one line and exit status 1."""
    cli(hydra_main, CONF_DIR)


if __name__ == "__main__":
    # run the imported module, not __main__: submitit launchers then pickle the task function by reference (a copy
    # by value would drag this module's globals along, torch.backends.cudnn among them, which does not pickle)
    from pmc import evaluate

    evaluate.main()
