"""`python -m pmc.run` (or `pmc-run`): one unlearning experiment, composed by Hydra from conf/.

config checks (method, logger and suites built) -> benchmark -> stage-0 models -> shared training loop -> metric
suites -> results, in that order. A problem the user can fix (bad config, data or checkpoint, a diverged loss) ends
the run with one line on stderr, a failure.json and exit status 1, and no results.json (pmc.failures).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from benchmarks.metrics import EvalContext, Suite, build_suites
from pmc.checkpoint import CheckpointConfig, Checkpoints
from pmc.checks import check_run_config, check_unlearning_config
from pmc.core.errors import ConfigError, HarnessError
from pmc.core.generation import check_generation_options, configure_generation, resolve_batch_size
from pmc.core.models import device_for, save_checkpoint, with_lora, without_lora
from pmc.core.prompts import RAW_TEXT, PromptFormat
from pmc.core.records import DataError
from pmc.distributed import export_launch_environment, is_main_process, world_size
from pmc.eval_cache import SCORED, EvalCache
from pmc.failures import cli, report_errors, stage
from pmc.loggers import NullLogger
from pmc.methods.base import RunContext
from pmc.results import versions, write_json_atomic
from pmc.stage0 import prepare_models
from pmc.trainer import TrainingConfig, unlearn

log = logging.getLogger("pmc")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """`deterministic=true`: deterministic GPU kernels or an error, never silent run-to-run variation.

    cuBLAS gets a fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts, so this runs before any GPU
    work), ops with atomic-add kernels (embedding and gather backward, scatter_add, index_add, flash and
    memory-efficient attention backward) switch to their deterministic versions and ops without one raise, and
    cuDNN stops autotuning. TF32 (which the trainer turns on for speed) is deterministic on one GPU and stays on.
    `false` leaves torch's defaults. On a CPU runs are deterministic either way. docs/determinism.md has the details.
    """
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@contextmanager
def timed(timings: dict, name: str):
    """Time a stage of the run (timings_s in results.json); an error escaping it is tagged with the stage."""
    start = time.perf_counter()
    with stage(name):
        yield
    timings[name] = round(time.perf_counter() - start, 3)


def _instantiate(node: DictConfig, what: str):
    """hydra.utils.instantiate, with our own errors passed through and the rest named after the config group."""
    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (HarnessError, DataError)):
            raise cause from None
        raise ConfigError(f"could not build {what}: {cause or e}") from None


def job_overrides() -> list[str]:
    """This job's command-line overrides (empty outside a Hydra app, e.g. in tests composing configs)."""
    if not HydraConfig.initialized():
        return []
    return OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)  # as typed, unresolved


def prompt_format(cfg: DictConfig, benchmark) -> PromptFormat:
    """The model's prompt format, or plain-text continuation for a text benchmark (MUSE-style corpora)."""
    return RAW_TEXT if benchmark.raw_text else PromptFormat(**cfg.model.prompt)


def metric_suites(cfg: DictConfig) -> dict[str, Suite]:
    """The selected metric suites (conf/eval/<name>.yaml, chosen with eval=[...]) built from their settings, each
    key and type checked (a one-line ConfigError naming eval.<suite>.<key>)."""
    if "eval_settings" in cfg:
        raise ConfigError("eval_settings: replaced by each suite's own settings under eval.<suite> "
                          "(conf/eval/<suite>.yaml), e.g. eval.analyses.sampling.k=16 instead of "
                          "+eval_settings.analyses.sampling.k=16")
    return build_suites(OmegaConf.to_container(cfg.eval, resolve=True))


def check_eval_suites(cfg: DictConfig) -> None:
    """The evaluation and generation settings, checked before anything is built."""
    metric_suites(cfg)
    if not isinstance(cfg.eval_cache, bool):
        raise ConfigError(f"eval_cache must be true or false, got {cfg.eval_cache!r}")
    g = cfg.generation
    check_generation_options(g.batch_size, g.cache_implementation, g.compile)


def checkpoint_config(cfg: DictConfig) -> CheckpointConfig:
    """`checkpoint:` of the config; checkpoints are written only by single-process runs (a multi-process run's
    other processes have no run directory to resume from)."""
    node = cfg.get("checkpoint", {})
    if not OmegaConf.is_config(node):  # pmc.evaluate: `checkpoint` names the model to score; stage 0 keeps the defaults
        node = {}
    try:
        checkpoint = CheckpointConfig(**node)
    except TypeError as e:
        raise ConfigError(f"checkpoint: {e} (keys: enabled, every_steps, keep)") from None
    if checkpoint.enabled and world_size() > 1:
        log.warning("checkpoint.enabled: not supported in a multi-process run yet; this run cannot resume")
        return CheckpointConfig(enabled=False)
    return checkpoint


def load_stage0(cfg: DictConfig, benchmark, fmt: PromptFormat, timings: dict):
    """Target and retain models for this config, from the stage-0 cache (built there first if absent)."""
    with timed(timings, "stage0"):
        stage0 = prepare_models(OmegaConf.to_container(cfg.model, resolve=True), benchmark, fmt, cfg.cache_dir,
                                cfg.seed, device_for(cfg.device), cfg.stage0.target_path, cfg.stage0.retain_path,
                                checkpoint_config(cfg))
    log.info("stage 0: %s", "built " + ", ".join(stage0.built) if stage0.built else "all models from cache")
    return stage0


def prepare_generation(cfg: DictConfig, models, tokenizer, fmt: PromptFormat, benchmark) -> int:
    """Set the KV-cache and compile options on the models (copies made later inherit them) and return the number of
    rows decoded at once: generation.batch_size, or with `auto` what fits beside the first model (for the longest
    prompt of the benchmark plus max_new_tokens, at most the model's context)."""
    g = cfg.generation
    for model in models:
        configure_generation(model, g.cache_implementation, g.compile)
    sequence_length = g.max_new_tokens
    if g.batch_size == "auto":
        questions = {r.question for r in benchmark.forget} | {r.question for records in benchmark.eval_sets.values()
                                                              for r in records}
        sequence_length += max(len(fmt.prompt_ids(tokenizer, q)) for q in questions)
        context = getattr(models[0].config, "max_position_embeddings", None)
        sequence_length = min(sequence_length, context or sequence_length)
    return resolve_batch_size(g.batch_size, models[0], sequence_length)


def method_batch_size(cfg: DictConfig, rows: int, method) -> int:
    """Questions per decoding call during unlearning. `auto` counts decoded rows, and PMC decodes num_samples rows
    per question, so it gets rows / num_samples questions (as the analyses suite divides by its k); an int is the
    questions per call, as given."""
    if cfg.generation.batch_size != "auto":
        return rows
    return max(1, rows // getattr(method, "num_samples", 1))


def eval_context(cfg: DictConfig, tokenizer, fmt: PromptFormat, benchmark, batch_size: int) -> EvalContext:
    return EvalContext(tokenizer, fmt, benchmark, cfg.generation.max_new_tokens, batch_size)


def eval_cache(cfg: DictConfig, stage0, benchmark, ctx: EvalContext) -> EvalCache:
    """The eval cache of this run's stage-0 models, in <cache_dir>/eval (None there: eval_cache=false)."""
    generation = {**OmegaConf.to_container(cfg.generation, resolve=True), "batch_size": ctx.batch_size}
    return EvalCache.for_models(Path(cfg.cache_dir) / "eval" if cfg.eval_cache else None, cfg.model.name,
                                stage0.checkpoints, benchmark, ctx, generation, device_for(cfg.device))


def evaluate_models(models: dict, ctx: EvalContext, suites: dict[str, Suite], run_dir: Path, timings: dict,
                    cache: EvalCache) -> tuple[dict[str, dict], dict[str, dict]]:
    """Run every selected metric suite on every model; writes eval/<model>/<suite>.json and returns the summaries
    and where each came from (results.json's "eval_cache").

    Per suite, the stage-0 models (cache.roles) are scored first, through the eval cache (read when another job
    already scored them); then the other models, with the stage-0 results at hand for the metrics that compare
    (TOFU's forget quality and MUSE's PrivLeak use the retain model's)."""
    metrics: dict[str, dict] = {name: {} for name in models}
    provenance: dict[str, dict] = {name: {} for name in models}
    stage0 = {name: models[name] for name in cache.roles}
    with timed(timings, "eval"):
        for name, suite in suites.items():
            known, status = cache.results(name, suite.settings(), lambda: suite.evaluate(stage0, ctx))
            results = {**known, **suite.evaluate(models, ctx, known)}
            for model_name in models:
                result = results[model_name]
                metrics[model_name][name] = result.summary
                provenance[model_name][name] = status if model_name in known else SCORED
                write_json_atomic(run_dir / "eval" / model_name / f"{name}.json",
                                  {"summary": result.summary, "examples": result.examples})
    return metrics, provenance


def run_record(cfg: DictConfig, benchmark, stage0, metrics: dict, provenance: dict, timings: dict,
               **extra) -> dict:
    """What results.json holds, common to training runs and stand-alone evaluations."""
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": cfg.seed,
        "benchmark": benchmark.name,
        **extra,
        "metrics": metrics,
        "eval_cache": provenance,
        "stage0": {"checkpoints": stage0.checkpoints, "built_in_this_run": stage0.built},
        "timings_s": timings,
        "versions": versions(),
    }


def check_config(cfg: DictConfig) -> None:
    """What pmc.run and pmc.evaluate check before reading any data: keys, types, device, model, suites."""
    check_run_config(cfg)
    check_eval_suites(cfg)
    configure_determinism(cfg.deterministic)


def build_method(cfg: DictConfig):
    """The unlearning method, built right after seeding as it always was (its constructor may draw random numbers).
    What it draws reaches nothing else: the run seeds again before loading data and again before unlearning."""
    seed_everything(cfg.seed)
    return _instantiate(cfg.method.handler, "method")


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict:
    """Run one experiment and write its files into run_dir; returns what results.json holds.

    Everything that can be checked without data or models (config types, the method, the logger, the metric
    suites) is checked and built first, so a bad setting fails in seconds, not after stage 0.
    """
    with stage("config"):
        check_config(cfg)
        training = check_unlearning_config(cfg)
        checkpoint_config(cfg)
        export_launch_environment(cfg.get("accelerate_config"))
        method = build_method(cfg)
        logger = _instantiate(cfg.logger, "logger") if is_main_process() else NullLogger()
    if not is_main_process():
        # the other processes of a multi-GPU run compute alongside the main one (pmc.distributed) and write nothing
        with tempfile.TemporaryDirectory() as scratch:
            return _unlearn_and_evaluate(cfg, Path(scratch), logger, method, training)
    logger.start(OmegaConf.to_container(cfg, resolve=True), run_dir, job_overrides())
    try:
        return _unlearn_and_evaluate(cfg, run_dir, logger, method, training)
    finally:
        logger.finish()


def _unlearn_and_evaluate(cfg: DictConfig, run_dir: Path, logger, method, training: TrainingConfig) -> dict:
    timings: dict[str, float] = {}
    seed_everything(cfg.seed)

    with timed(timings, "data"):
        benchmark = _instantiate(cfg.benchmark, "benchmark")
    fmt = prompt_format(cfg, benchmark)
    stage0 = load_stage0(cfg, benchmark, fmt, timings)

    batch_size = prepare_generation(cfg, [stage0.target, stage0.retain], stage0.tokenizer, fmt, benchmark)

    # Re-seed so unlearning does not depend on whether stage 0 was built in this run or read from the cache.
    seed_everything(cfg.seed)
    lora = cfg.model.get("lora")
    unlearned = with_lora(copy.deepcopy(stage0.target), OmegaConf.to_container(lora) if lora is not None else None)
    run = RunContext(unlearned, stage0.tokenizer, fmt, benchmark, cfg.generation.max_new_tokens,
                     method_batch_size(cfg, batch_size, method))
    checkpoint = checkpoint_config(cfg)
    checkpoints = Checkpoints(run_dir / "checkpoints", checkpoint.every_steps) if checkpoint.enabled else None
    train_log = resume_train_log(run_dir / "train_log.jsonl", checkpoints.resume_step() if checkpoints else 0)

    def log_step(record: dict) -> None:
        train_log.write(json.dumps(record) + "\n")
        train_log.flush()
        logger.log_step(record)

    with timed(timings, "unlearn"), train_log:
        unlearn(method, run, training, cfg.seed, log_step, checkpoints)
    unlearned = without_lora(unlearned)  # LoRA adapters merged: evaluated and saved as a plain model

    models = {"target": stage0.target, "retain": stage0.retain, "unlearned": unlearned}
    ctx = eval_context(cfg, stage0.tokenizer, fmt, benchmark, batch_size)
    metrics, provenance = evaluate_models(models, ctx, metric_suites(cfg), run_dir, timings,
                                          eval_cache(cfg, stage0, benchmark, ctx))
    with stage("save"):
        if cfg.save_unlearned:
            configure_generation(unlearned)  # the checkpoint keeps transformers' generation defaults, not this run's
            save_checkpoint(unlearned, stage0.tokenizer, run_dir / "unlearned_model")
        results = run_record(cfg, benchmark, stage0, metrics, provenance, timings, method=method.name)
        write_json_atomic(run_dir / "results.json", results)
        if checkpoints and not checkpoint.keep:
            checkpoints.remove()
    logger.log_results(results, run_dir)
    return results


def resume_train_log(path: Path, resume_step: int):
    """The per-step log, opened for appending: its records up to the checkpoint a run resumes from are kept, the
    later ones (steps the resumed run trains again) are dropped; a run that starts afresh starts an empty log."""
    kept = []
    if resume_step and path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                if line.endswith("\n") and json.loads(line)["step"] <= resume_step]
    path.write_text("".join(kept), encoding="utf-8")
    return path.open("a", encoding="utf-8")


# absolute, so the app finds its configs however it is started (python -m pmc.run, the pmc-run script, imported)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> dict:
    return report_errors(run_experiment, cfg)


def main() -> None:
    """`python -m pmc.run` / `pmc-run`: every configuration error is one line and exit status 1 (pmc.failures.cli)."""
    cli(hydra_main)


if __name__ == "__main__":
    # run the imported module, not __main__: submitit launchers then pickle the task function by reference (a copy
    # by value would drag this module's globals along, torch.backends.cudnn among them, which does not pickle)
    from pmc import run

    run.main()
