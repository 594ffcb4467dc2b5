"""The build steps the two jobs share (pmc.experiment: `run_experiment` behind `pmc.run`, `evaluate_checkpoint` behind
`pmc.evaluate`), in the order both take them.

check the config (and build the metric suites) -> seed -> benchmark -> prompt format -> stage-0 models -> decoding
settings -> evaluation context and its cache -> every suite on every model -> the run record (results.json).
A run unlearns between the stage-0 models and the evaluation; an evaluation loads a checkpoint instead. Each step is
a public function here, so the two jobs (and the benchmark scripts) build their runs the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import platform
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch._dynamo.callback import CallbackTrigger, callback_handler
from torch._dynamo.utils import calculate_time_spent, counters

from benchmarks.metrics import EvalContext, Suite, build_suites
from pmc.checkpoint import CheckpointConfig
from pmc.checks import check_run_config
from pmc.core.errors import ConfigError, HarnessError
from pmc.core.generation import (
    BatchSizes,
    GenerationSizes,
    check_generation_options,
    configure_generation,
    release_kept_caches,
    resolve_batch_sizes,
)
from pmc.core.models import device_for, enable_tf32, with_lora
from pmc.core.prompts import RAW_TEXT, PromptFormat
from pmc.core.residency import HOST, taking_turns
from pmc.distributed import world_size
from pmc.eval_cache import SCORED, EvalCache, harness_digest
from pmc.failures import stage
from pmc.results import versions, write_json_atomic
from pmc.stage0 import prepare_models, weights_sha256

log = logging.getLogger("pmc")


# --- configuration --------------------------------------------------------------------------------------------------


def metric_suites(cfg: DictConfig) -> dict[str, Suite]:
    """The selected metric suites (conf/eval/<name>.yaml, chosen with eval=[...]) built from their settings, each
    key and type checked (a one-line ConfigError naming eval.<suite>.<key>). The one place that knows how suites
    are configured."""
    if "eval_settings" in cfg:
        raise ConfigError("eval_settings: replaced by each suite's own settings under eval.<suite> "
                          "(conf/eval/<suite>.yaml), e.g. eval.analyses.sampling.k=16 instead of "
                          "+eval_settings.analyses.sampling.k=16")
    return build_suites(OmegaConf.to_container(cfg.eval, resolve=True))


def check_config(cfg: DictConfig) -> dict[str, Suite]:
    """What pmc.run and pmc.evaluate check before reading any data: keys, types, device, model, the evaluation and
    decoding settings; returns the metric suites."""
    check_run_config(cfg)
    suites = metric_suites(cfg)
    if not isinstance(cfg.eval_cache, bool):
        raise ConfigError(f"eval_cache must be true or false, got {cfg.eval_cache!r}")
    g = cfg.generation
    check_generation_options(g.batch_size, g.cache_implementation, g.compile, g.continuous_batching,
                             g.compile_dynamic, g.drop_finished_rows, g.scoring_batch_size)
    return suites


def configure_kernels(cfg: DictConfig) -> None:
    """The kernel settings every job fixes before any model runs: determinism (`deterministic`), where compiled code
    is kept (`compile_cache_dir`) and, on a CUDA device, TF32 (`pmc.core.models.enable_tf32`: from the start, so a
    model decodes and scores at one precision whether or not its process has trained yet)."""
    configure_determinism(cfg.deterministic)
    configure_compile_cache(cfg.get("compile_cache_dir"))
    enable_tf32(device_for(cfg.device))


def configure_compile_cache(directory: str | None) -> None:
    """torch.compile's on-disk caches in `directory` (`compile_cache_dir`, by default beside the stage-0 cache):
    inductor's generated code, AOTAutograd's graphs and Triton's kernels, keyed by torch's version, the device and
    the graph, written atomically, so jobs in any number of processes and on any node that sees the folder share them.
    A sweep's every compiled job compiles the same graphs (the decoding step, the decoder layers); from the second
    on, inductor reads its code from here instead of generating it: on this CPU the tiny model's compiled decoding
    step took 26.6 s to compile in a first process and 4.0 s in a second (`scripts/bench_decoding_compile.py`, its
    "second process" column). torch's own default, /tmp/torchinductor_<user>, is per node. torch reads the folder
    from TORCHINDUCTOR_CACHE_DIR whenever it compiles, so the job sets that variable; `None` leaves it as it is."""
    if directory is None:
        return
    directory = str(Path(directory).absolute())
    earlier = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if earlier not in (None, directory):
        log.info("compiled code is kept in %s (compile_cache_dir), not in $TORCHINDUCTOR_CACHE_DIR=%s; "
                 "compile_cache_dir=null keeps the variable's", directory, earlier)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory


def configure_determinism(enabled: bool) -> None:
    """`deterministic=true`: deterministic GPU kernels or an error, never silent run-to-run variation.

    cuBLAS gets a fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts, so this runs before any GPU
    work), ops with atomic-add kernels (embedding and gather backward, scatter_add, index_add, flash and
    memory-efficient attention backward) switch to their deterministic versions and ops without one raise, and
    cuDNN stops autotuning. TF32 (which every job turns on for speed) is deterministic on one GPU and stays on.
    `false` leaves torch's defaults. On a CPU runs are deterministic either way. docs/determinism.md has the details.
    """
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def checkpoint_config(cfg: DictConfig) -> CheckpointConfig:
    """`checkpoint:` of the config; checkpoints are written only by single-process runs (a multi-process run's
    other processes have no run directory to resume from)."""
    node = cfg.get("checkpoint", {})
    if not OmegaConf.is_config(node):  # pmc.evaluate: `checkpoint` names the model to score; stage 0 keeps the defaults
        node = {}
    try:
        checkpoint = CheckpointConfig(**node)
    except TypeError as e:
        raise ConfigError(f"checkpoint: {e} (keys: enabled, every_steps, min_interval_s, keep)") from None
    if checkpoint.enabled and world_size() > 1:
        log.warning("checkpoint.enabled: not supported in a multi-process run yet; this run cannot resume")
        return CheckpointConfig(enabled=False)
    return checkpoint


def instantiate_node(node: DictConfig, what: str):
    """hydra.utils.instantiate, with our own errors passed through and the rest named after the config group."""
    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, HarnessError):
            raise cause from None
        raise ConfigError(f"could not build {what}: {cause or e}") from None


# --- building the run -----------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def timed(timings: dict, name: str):
    """Time a stage of the run (timings_s in results.json); an error escaping it is tagged with the stage."""
    start = time.perf_counter()
    with stage(name):
        yield
    timings[name] = round(time.perf_counter() - start, 3)


def load_benchmark(cfg: DictConfig, timings: dict):
    """The benchmark, built from freshly seeded RNGs (the synthetic one draws its data)."""
    seed_everything(cfg.seed)
    with timed(timings, "data"):
        return instantiate_node(cfg.benchmark, "benchmark")


def prompt_format(cfg: DictConfig, benchmark) -> PromptFormat:
    """The model's prompt format, or plain-text continuation for a text benchmark (MUSE-style corpora)."""
    return RAW_TEXT if benchmark.raw_text else PromptFormat(**cfg.model.prompt)


def load_stage0(cfg: DictConfig, benchmark, fmt: PromptFormat, timings: dict, in_host_memory: bool = False):
    """Target and retain models for this config, from the stage-0 cache (built there first if absent), on the run's
    device, or with `in_host_memory` in host memory: a job whose models take turns on the device in evaluation, and
    that does not need them there before, never holds them there together (an 8B job's start: 29.9 GiB)."""
    with timed(timings, "stage0"):
        stage0 = prepare_models(OmegaConf.to_container(cfg.model, resolve=True), benchmark, fmt, cfg.cache_dir,
                                cfg.stage0.seed, device_for(cfg.device), cfg.stage0.target_path, cfg.stage0.retain_path,
                                checkpoint_config(cfg), cfg.stage0.side_by_side,
                                place=HOST if in_host_memory else None)
    log.info("stage 0: %s", "built " + ", ".join(stage0.built) if stage0.built else "all models from cache")
    return stage0


def lora_settings(cfg: DictConfig) -> dict | None:
    """model.lora as a plain dict (None where the model config has none)."""
    return OmegaConf.to_container(cfg.model.lora) if cfg.model.get("lora") is not None else None


def model_to_unlearn(cfg: DictConfig, target: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of the stage-0 target on `device` (the target may wait in host memory), with LoRA adapters where
    model.lora.r > 0, made after seeding again: unlearning, the adapters' first values included, does not depend on
    whether stage 0 was built in this run or read from the cache."""
    seed_everything(cfg.seed)
    return with_lora(copy.deepcopy(target).to(device), lora_settings(cfg))


@contextmanager
def offloaded(models: list[torch.nn.Module], enabled: bool, restore: bool = True):
    """`models` in host memory while the block runs, back on their devices after it (also when it fails) unless
    `restore` is false (they come back in their turns, `models_on_device`). A job's target and retain models wait so
    while the method trains a copy of the target: a GPU then holds the model being trained and what the method keeps,
    not two idle models beside it (Llama-3.2-3B in bf16: 11.2 GiB of 80, `scripts/bench_memory.py`). On a CPU
    nothing moves."""
    devices = [next(model.parameters()).device for model in models]
    if enabled:
        for model in models:
            model.to("cpu")
    try:
        yield
    finally:
        if enabled and restore:
            for model, device in zip(models, devices):
                model.to(device)


@contextmanager
def models_on_device(cfg: DictConfig, models: dict[str, torch.nn.Module], timings: dict):
    """With eval_one_model_on_device, the models take turns on the run's device while the block runs (one there at a
    time, the others in host memory, `pmc.core.residency`), and timings gets the seconds their moves took
    (`eval.turns`, part of `eval`); else nothing moves."""
    with taking_turns(models.values(), device_for(cfg.device), cfg.eval_one_model_on_device,
                      on_park=release_kept_caches) as turns:
        yield
    if turns is not None:
        timings["eval.turns"] = round(turns.moving_s, 3)


def prepare_generation(cfg: DictConfig, models, tokenizer, fmt: PromptFormat, benchmark) -> GenerationSizes:
    """Set the KV-cache and compile options on the models (copies made later inherit them) and return the numbers of
    rows decoded and scored at once while the method trains and in evaluation: generation.batch_size and
    generation.scoring_batch_size, or with `auto` what fits in the run's device's free memory beside the models there
    and the room kept for what comes later (`reserve_bytes`: training's, or the unlearned model's). Both the static
    cache and `auto` are sized for the longest decoding evaluation does: the benchmark's longest prompt plus
    max_new_tokens (or generation.max_length), at most the model's context."""
    g = cfg.generation
    sequence_length = None
    if "auto" in (g.batch_size, g.scoring_batch_size) or g.cache_implementation == "static":
        questions = {r.question for r in benchmark.forget} | {r.question for records in benchmark.eval_sets.values()
                                                              for r in records}
        longest_prompt = max(len(fmt.prompt_ids(tokenizer, q)) for q in questions)
        sequence_length = g.max_length or longest_prompt + g.max_new_tokens
        context = getattr(models[0].config, "max_position_embeddings", None)
        sequence_length = min(sequence_length, context or sequence_length)
    for model in models:
        configure_generation(model, max_cache_len=sequence_length, **generation_options(g))
    lora = bool((lora_settings(cfg) or {}).get("r"))
    device = device_for(cfg.device)
    return GenerationSizes(
        unlearning=resolve_batch_sizes(g.batch_size, g.scoring_batch_size, models[0], sequence_length,
                                       full_fine_tuning=not lora, device=device),
        evaluation=resolve_batch_sizes(g.batch_size, g.scoring_batch_size, models[0], sequence_length,
                                       full_fine_tuning=False, device=device))


def generation_options(g: DictConfig) -> dict:
    """configure_generation's keywords from the run's `generation:` block (all but max_cache_len, which
    prepare_generation sizes from the benchmark)."""
    return {"cache_implementation": g.cache_implementation, "compile": g.compile,
            "continuous_batching": g.continuous_batching, "compile_dynamic": g.compile_dynamic,
            "drop_finished_rows": g.drop_finished_rows}


# --- evaluation and the record --------------------------------------------------------------------------------------


def eval_context(cfg: DictConfig, tokenizer, fmt: PromptFormat, benchmark, batch_sizes: BatchSizes) -> EvalContext:
    """What every suite scores with (each suite carries its own settings)."""
    return EvalContext(tokenizer, fmt, benchmark, cfg.generation.max_new_tokens, batch_sizes.decoding,
                       scoring_batch_size=batch_sizes.scoring, generation_max_length=cfg.generation.max_length)


def eval_cache(cfg: DictConfig, stage0, benchmark, ctx: EvalContext) -> EvalCache:
    """The eval cache of this run's stage-0 models, in <cache_dir>/eval (None there: eval_cache=false). Its key holds
    every generation setting (the batch sizes resolved) but how a compiled step is traced where nothing is compiled."""
    generation = {**OmegaConf.to_container(cfg.generation, resolve=True), "batch_size": ctx.batch_size,
                  "scoring_batch_size": ctx.scoring_batch_size}
    if not generation["compile"]:
        del generation["compile_dynamic"]
    return EvalCache.for_models(Path(cfg.cache_dir) / "eval" if cfg.eval_cache else None, cfg.model.name,
                                stage0.checkpoints, benchmark, ctx, generation, device_for(cfg.device))


def evaluate_models(models: dict, ctx: EvalContext, suites: dict[str, Suite], run_dir: Path, timings: dict,
                    cache: EvalCache) -> tuple[dict[str, dict], dict[str, dict]]:
    """Run every selected metric suite on every model; writes eval/<model>/<suite>.json and returns the summaries
    and where each came from (results.json's "eval_cache").

    The greedy answers every suite will ask for are planned first, so that each model's are decoded in one call
    (EvalContext.greedy_answers), at its first request. Besides `eval`, timings gets where its time went:
    `eval.greedy_answers` (that decoding, every model) and `eval.<suite>` (each suite's own time without it: scoring,
    its own decoding such as the analyses' sampling, reading or writing the eval cache).

    Per suite, the stage-0 models (cache.roles) are scored first, through the eval cache (read when another job
    already scored them); then the other models, with the stage-0 results at hand for the metrics that compare
    (TOFU's forget quality and MUSE's PrivLeak use the retain model's)."""
    metrics: dict[str, dict] = {name: {} for name in models}
    provenance: dict[str, dict] = {name: {} for name in models}
    stage0 = {name: models[name] for name in cache.roles}
    parts, decoded_at_start = {}, ctx.decoding_s
    with timed(timings, "eval"):
        ctx.plan_greedy_answers(q for suite in suites.values() for split in suite.greedy_questions(ctx).values()
                                for q in split)
        for name, suite in suites.items():
            start, decoded_before = time.perf_counter(), ctx.decoding_s
            known, status = cache.results(name, suite.settings(), lambda score=suite.evaluate: score(stage0, ctx))
            results = {**known, **suite.evaluate(models, ctx, known)}
            for model_name in models:
                result = results[model_name]
                metrics[model_name][name] = result.summary
                provenance[model_name][name] = status if model_name in known else SCORED
                write_json_atomic(run_dir / "eval" / model_name / f"{name}.json",
                                  {"summary": result.summary, "examples": result.examples})
            parts[f"eval.{name}"] = round(time.perf_counter() - start - (ctx.decoding_s - decoded_before), 3)
    timings.update({"eval.greedy_answers": round(ctx.decoding_s - decoded_at_start, 3), **parts})
    return metrics, provenance


def pin_code_identity() -> None:
    """Read what names the harness's code, its git commit (results.json) and its source digest (the eval cache's key),
    as a run starts: both are read from disk, and a file saved while a run goes on (a sweep runs for hours) would
    otherwise name results of the code the run imported, or key the eval cache with an older code's scores."""
    versions()
    harness_digest()


def compile_counts() -> dict[str, float]:
    """What torch.compile has done in this process so far: `compiled_graphs`, the graphs it traced (the decoding step
    for generation.compile, the decoder layers for training.compile; on a GPU each is a compile); `compile_s`, the
    seconds spent compiling them (dynamo's tracing and the backend's code generation, forward and backward; not the
    CUDA-graph recordings, which happen when a compiled function first runs): on the H100 (2026-11-28) PMC's first
    compiled decoding call took 227 s, and only this says how much of a job's time is compiling;
    `compile_cache_hits`, `_misses` and `_bypasses`, the graphs whose code inductor read from its on-disk cache
    (`compile_cache_dir`), generated and stored there, or generated without storing (a graph it does not cache): a
    sweep's later jobs should hit, and a miss where an earlier job compiled the same says their keys differ;
    `cudagraph_recordings`, the CUDA graphs inductor recorded (one per compiled function and shape, and again when a
    static input's address changes: a recording costs a few replays, so a run should make a handful, not one per
    step); and `cudagraph_skips`, the times inductor ran a compiled function without its CUDA graphs (a graph it
    cannot record, a function past torch's re-record limit). inductor says so only under TORCH_LOGS=cudagraphs, and a
    skipped step runs at eager speed, so a run records them all."""
    if _count_cudagraph_recording not in callback_handler.start_callbacks:  # torch._dynamo.reset() clears them
        callback_handler.register_start_callback(_count_cudagraph_recording)
    return {"compiled_graphs": counters["stats"]["unique_graphs"],
            "compile_s": round(float(calculate_time_spent()["total_wall_time"]), 3),  # an int 0 before a compile
            "compile_cache_hits": counters["inductor"]["fxgraph_cache_hit"],
            "compile_cache_misses": counters["inductor"]["fxgraph_cache_miss"],
            "compile_cache_bypasses": counters["inductor"]["fxgraph_cache_bypass"],
            "cudagraph_recordings": counters["pmc"]["cudagraph_recordings"],
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"]}


def _count_cudagraph_recording(event) -> None:
    """torch.compile's start callback: cudagraph trees announce each recording through it."""
    if event.callback_trigger == CallbackTrigger.CUDAGRAPH_RECORDING:
        counters["pmc"]["cudagraph_recordings"] += 1


def compile_counts_since(before: dict[str, float], device: torch.device) -> dict[str, float]:
    """compile_counts() of one run (counted from its start, so in-process multiruns do not add up); warns in the
    run's log when CUDA graphs were skipped on a CUDA device (elsewhere there are none to record: said, not warned)."""
    counts = {key: round(value - before[key], 3) for key, value in compile_counts().items()}
    if counts["cudagraph_skips"] and device.type == "cuda":
        log.warning("torch.compile ran %d compiled function(s) without CUDA graphs in this run; rerun with "
                    "TORCH_LOGS=cudagraphs to see why", counts["cudagraph_skips"])
    elif counts["cudagraph_skips"]:
        log.info("torch.compile ran %d compiled function(s) without CUDA graphs, as a %s device has none",
                 counts["cudagraph_skips"], device.type)
    return counts


def run_record(cfg: DictConfig, benchmark, stage0, metrics: dict, provenance: dict, timings: dict,
               sizes: GenerationSizes, **extra) -> dict:
    """What results.json holds, common to training runs and stand-alone evaluations; `batch_sizes`: the rows decoded
    and scored at once in evaluation, `unlearning_batch_sizes` while the method trained, as `auto` resolved them (the
    config says `auto`)."""
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": cfg.seed,
        "benchmark": benchmark.name,
        "batch_sizes": dataclasses.asdict(sizes.evaluation),
        "unlearning_batch_sizes": dataclasses.asdict(sizes.unlearning),
        **extra,
        "metrics": metrics,
        "eval_cache": provenance,
        "stage0": {"checkpoints": stage0.checkpoints, "built_in_this_run": stage0.built,
                   "weights_sha256": {role: weights_sha256(path, Path(cfg.cache_dir) / "digests")
                                      for role, path in stage0.checkpoints.items()}},
        "timings_s": timings,
        "versions": versions(),
        "machine": machine(device_for(cfg.device)),
    }


def machine(device: torch.device) -> dict:
    """What the run ran on, beside the package versions: results are reproducible bit for bit only on the same
    kernels (docs/determinism.md), and torch picks CPU kernels by instruction set (`cpu_capability`): the tiny
    quickstart's table differed by tens of points between two of this project's 2-core machines (README)."""
    found = {"platform": platform.platform(), "processor": cpu_model(),
             "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
             "device": device.type}
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    return found


def device_name(device: torch.device) -> str:
    """What the benchmark scripts name a device by: the GPU's name, or the CPU's model with torch's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} torch threads)"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
