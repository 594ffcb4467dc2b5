"""The two jobs the command lines launch, with their imports (torch, transformers, the methods and suites):

- `run_experiment` (`python -m pmc.run`): config checks (method, logger and suites built) -> benchmark -> stage-0
  models -> shared training loop -> metric suites -> results, in that order: the build steps of pmc.pipeline, with
  unlearning between the stage-0 models and the evaluation;
- `evaluate_checkpoint` (`python -m pmc.evaluate checkpoint=DIR`): a saved model scored beside the stage-0 models.

A problem the user can fix (bad config, data or checkpoint, a diverged loss) ends a job with one line on stderr, a
failure.json and exit status 1, and no results.json (pmc.failures).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pmc.checkpoint import Checkpoints
from pmc.checks import check_unlearning_config, check_value
from pmc.core.errors import CheckpointError
from pmc.core.generation import DEFAULT_TOP_K, configure_generation
from pmc.core.models import device_for, load_checkpoint, save_checkpoint, without_lora
from pmc.distributed import export_launch_environment, is_main_process
from pmc.failures import stage
from pmc.loggers import NullLogger
from pmc.methods.base import RunContext
from pmc.optimisation import TrainingConfig
from pmc.pipeline import (
    Suite,
    check_config,
    checkpoint_config,
    compile_counts,
    compile_counts_since,
    configure_kernels,
    eval_cache,
    eval_context,
    evaluate_models,
    instantiate_node,
    load_benchmark,
    load_stage0,
    lora_settings,
    model_to_unlearn,
    models_on_device,
    offloaded,
    pin_code_identity,
    prepare_generation,
    prompt_format,
    run_record,
    seed_everything,
    timed,
)
from pmc.results import write_json_atomic
from pmc.trainer import unlearn


def job_overrides() -> list[str]:
    """This job's command-line overrides (empty outside a Hydra app, e.g. in tests composing configs)."""
    if not HydraConfig.initialized():
        return []
    return OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)  # as typed, unresolved


def method_batch_size(cfg: DictConfig, rows: int, method) -> int:
    """Questions per decoding call during unlearning. `auto` counts decoded rows, and PMC decodes num_samples rows
    per question, so it gets rows / num_samples questions (as the analyses suite divides by its k); an int is the
    questions per call, as given."""
    if cfg.generation.batch_size != "auto":
        return rows
    return max(1, rows // getattr(method, "num_samples", 1))


def pmc_sampling_settings(cfg: DictConfig, rows: int, num_samples: int | None = None) -> dict:
    """The keyword arguments of one of PMC's sampling calls (`generate_answers`) under this run config, as the
    benchmark scripts time them: the method's n (`num_samples` where given; 5 for a method without one), temperature,
    top-p and top-k (PMC's defaults where the method has none), the run's new-token budget, and the questions per
    call that `method_batch_size` gives for `rows` decoded at once."""
    handler = OmegaConf.to_container(cfg.method.handler, resolve=True)
    samples = num_samples or handler.get("num_samples") or 5
    return {"max_new_tokens": cfg.generation.max_new_tokens, "num_samples": samples,
            "batch_size": method_batch_size(cfg, rows, SimpleNamespace(num_samples=samples)),
            "temperature": float(handler.get("temperature", 1.25)), "top_p": float(handler.get("top_p", 0.95)),
            "top_k": int(handler.get("top_k", DEFAULT_TOP_K))}


def build_method(cfg: DictConfig):
    """The unlearning method, built right after seeding as it always was (its constructor may draw random numbers).
    What it draws reaches nothing else: the run seeds again before loading data and again before unlearning."""
    seed_everything(cfg.seed)
    return instantiate_node(cfg.method.handler, "method")


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict:
    """Run one experiment and write its files into run_dir; returns what results.json holds.

    Everything that can be checked without data or models (config types, the method, the logger, the metric
    suites) is checked and built first, so a bad setting fails in seconds, not after stage 0.
    """
    with stage("config"):
        pin_code_identity()
        suites = check_config(cfg)
        configure_kernels(cfg)
        training = check_unlearning_config(cfg)
        checkpoint_config(cfg)
        export_launch_environment(cfg.get("accelerate_config"))
        method = build_method(cfg)
        logger = instantiate_node(cfg.logger, "logger") if is_main_process() else NullLogger()
    if not is_main_process():
        # the other processes of a multi-GPU run compute alongside the main one (pmc.distributed) and write nothing
        with tempfile.TemporaryDirectory() as scratch:
            return _unlearn_and_evaluate(cfg, Path(scratch), logger, method, training, suites)
    logger.start(OmegaConf.to_container(cfg, resolve=True), run_dir, job_overrides())
    try:
        return _unlearn_and_evaluate(cfg, run_dir, logger, method, training, suites)
    finally:
        logger.finish()


def _unlearn_and_evaluate(cfg: DictConfig, run_dir: Path, logger, method, training: TrainingConfig,
                          suites: dict[str, Suite]) -> dict:
    timings: dict[str, float] = {}
    compiled_before = compile_counts()
    benchmark = load_benchmark(cfg, timings)
    fmt = prompt_format(cfg, benchmark)
    # taking turns in evaluation and offloaded while the method trains, target and retain need the device only in
    # their turns: they wait in host memory from the start
    stage0 = load_stage0(cfg, benchmark, fmt, timings,
                         in_host_memory=cfg.eval_one_model_on_device and cfg.stage0.offload_during_unlearning)

    sizes = prepare_generation(cfg, [stage0.target, stage0.retain], stage0.tokenizer, fmt, benchmark)

    lora = lora_settings(cfg)
    ctx = eval_context(cfg, stage0.tokenizer, fmt, benchmark, sizes.evaluation)
    cache = eval_cache(cfg, stage0, benchmark, ctx)
    initial_state: dict[str, str] = {}  # results.json's initial_state_cache: where each value came from

    def before_unlearning(name: str, settings: dict, compute):
        """The method's values from the model before unlearning, through the eval cache (the stage-0 target is
        the model unlearning starts from; LoRA adapters start at zero but are in the key all the same)."""
        value, initial_state[name] = cache.value(name, {**settings, "lora": lora}, compute)
        return value

    checkpoint = checkpoint_config(cfg)
    checkpoints = (Checkpoints(run_dir / "checkpoints", checkpoint.every_steps, checkpoint.min_interval_s)
                   if checkpoint.enabled else None)
    resumed_from_step = checkpoints.resume_step() if checkpoints else 0
    train_log = resume_train_log(run_dir / "train_log.jsonl", resumed_from_step)

    def log_step(record: dict) -> None:
        train_log.write(json.dumps(record) + "\n")
        train_log.flush()
        logger.log_step(record)

    # the copy unlearned is made once target and retain are off the device (at most two models there at a time);
    # with one model on the device in evaluation they stay off it until their turns
    with offloaded([stage0.target, stage0.retain], cfg.stage0.offload_during_unlearning,
                   restore=not cfg.eval_one_model_on_device):
        unlearned = model_to_unlearn(cfg, stage0.target, device_for(cfg.device))
        run = RunContext(unlearned, stage0.tokenizer, fmt, benchmark, cfg.generation.max_new_tokens,
                         method_batch_size(cfg, sizes.unlearning.decoding, method),
                         before_unlearning=before_unlearning, scoring_batch_size=sizes.unlearning.scoring)
        with timed(timings, "unlearn"), train_log:
            parts = unlearn(method, run, training, cfg.seed, log_step, checkpoints)
    timings.update({f"unlearn.{name}": seconds for name, seconds in parts.items()})
    unlearned = without_lora(unlearned)  # LoRA adapters merged: evaluated and saved as a plain model

    models = {"target": stage0.target, "retain": stage0.retain, "unlearned": unlearned}
    with models_on_device(cfg, models, timings):
        metrics, provenance = evaluate_models(models, ctx, suites, run_dir, timings, cache)
    with stage("save"):
        if cfg.save_unlearned:
            configure_generation(unlearned)  # the checkpoint keeps transformers' generation defaults, not this run's
            save_checkpoint(unlearned, stage0.tokenizer, run_dir / "unlearned_model")
        # resumed_from_step: timings_s holds this process's times only, unlearning's from that step on
        results = run_record(cfg, benchmark, stage0, metrics, provenance, timings, sizes, method=cfg.method.name,
                             resumed_from_step=resumed_from_step, initial_state_cache=initial_state,
                             **compile_counts_since(compiled_before, device_for(cfg.device)))
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


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path) -> dict:
    """Score cfg.checkpoint beside the stage-0 models; writes eval/ and results.json into run_dir."""
    with stage("config"):
        pin_code_identity()
        suites = check_config(cfg)
        configure_kernels(cfg)
        check_value("checkpoint", cfg.checkpoint, str)
    timings: dict[str, float] = {}
    compiled_before = compile_counts()
    benchmark = load_benchmark(cfg, timings)
    fmt = prompt_format(cfg, benchmark)
    with stage("checkpoint"):
        model, tokenizer = load_checkpoint(cfg.checkpoint)
    stage0 = load_stage0(cfg, benchmark, fmt, timings, in_host_memory=cfg.eval_one_model_on_device)
    if tokenizer.get_vocab() != stage0.tokenizer.get_vocab():
        raise CheckpointError(
            f"{cfg.checkpoint}: its tokenizer differs from the one of model={cfg.model.name}; evaluate it with the "
            "model and benchmark config it was trained from"
        )
    # taking turns (eval_one_model_on_device), the checkpoint comes onto the device in its turn
    models = {"target": stage0.target, "retain": stage0.retain,
              "checkpoint": model if cfg.eval_one_model_on_device else model.to(device_for(cfg.device))}
    sizes = prepare_generation(cfg, list(models.values()), tokenizer, fmt, benchmark)
    ctx = eval_context(cfg, tokenizer, fmt, benchmark, sizes.evaluation)
    with models_on_device(cfg, models, timings):
        metrics, provenance = evaluate_models(models, ctx, suites, run_dir, timings,
                                              eval_cache(cfg, stage0, benchmark, ctx))
    with stage("save"):
        results = run_record(cfg, benchmark, stage0, metrics, provenance, timings, sizes,
                             checkpoint=str(cfg.checkpoint),
                             **compile_counts_since(compiled_before, device_for(cfg.device)))
        write_json_atomic(run_dir / "results.json", results)
    return results
