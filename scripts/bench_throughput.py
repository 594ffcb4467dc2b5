"""Throughput of the harness on this device: training tokens/s, generated tokens/s (greedy evaluation decoding and
PMC-style sampling of n answers per question) and the wall time per stage of one job, as two tables: training
first, printed (and written to --json) as soon as it is measured, so a bench cut off by a time limit leaves it;
then decoding and the job.

    python scripts/bench_throughput.py                                    # the default config (tiny, synthetic)
    python scripts/bench_throughput.py --device cuda --gen-batch auto experiment=tofu_subset_smollm2
    python scripts/bench_throughput.py --results outputs/.../results.json  # stage times of a job that already ran
    python scripts/bench_throughput.py --no-job --steps 3 model=smollm2_135m model.finetune.epochs=0  # quick check

Everything after the options is a Hydra override of the run config (model, benchmark, method, generation...).

1. The job (unless --no-job or --results): `pmc.experiment.run_experiment` once, in a temporary directory, with the eval
   cache off (so `eval` is the full scoring of target, retain and unlearned model); its results.json timings_s give
   data, stage0 (built, or read from the stage-0 cache: the table says which), unlearn and eval.
2. Training: --steps optimiser steps of a copy of the stage-0 target through the harness's own loop
   (`pmc.trainer.finetune`: accelerate, method.training's precision, TF32 on a GPU, its optimiser, clipping,
   group_by_length, pad_to_multiple_of, compile, compile_mode and compile_regional; answer-only NLL, every method's
   retain term; with compile_mode=reduce-overhead a width first seen after the warm-up records its CUDA graphs in the
   timed steps) on
   batches of --train-batch retain records cut to method.training.max_length, timed after --warmup-steps (2) steps of
   the same run (steady state: the session's setup and a compile are left out); tokens = non-padding tokens (prompt and
   answer), forward + backward + step. Then the same steps in a plain fp32 torch loop (no accelerate, clipping,
   schedule, logging or compile): the ratio of the two is what the harness's own per-step work costs, or with compile
   gains, here. Each loop runs twice (harness, plain, plain, harness) and its times are averaged, so a process's own
   speed-up over its first minutes cancels out of the ratio.
   Last, the optimizer step alone over the model's parameters, with torch's fused kernel and without
   (training.fused_optimizer; unfused is torch's default: a loop per tensor on a CPU, foreach kernels on a GPU).
3. Greedy decoding: the first --questions evaluation questions through `pmc.core.generation.greedy_answers`, the way
   the suites decode (generation.max_new_tokens, generation.batch_size; KV cache and compile options applied).
4. PMC sampling: the same questions, --samples answers each, with the method's temperature, top-k and top-p
   (PMC's, or T = 1.25, top-k 50, top-p 0.95), questions per call as a PMC run gets them. With --compare-warpers,
   the same calls again through transformers' own warpers and draw (`top_p_within_top_k=False`: top-p sorts the
   whole vocabulary at every decoding step, torch.multinomial draws over all of it), from the same RNG state (other
   draws from the same distribution, so other answers), and the ratio of the two in generated tokens/s.
   Generated tokens = the answers re-tokenised (without special tokens) + 1 end-of-sequence each: what the model
   produced, not the padded positions. Both after one untimed warm-up call (a compiled model compiles there; where a
   job compiled the same step before, inductor reads its code from compile_cache_dir, as the bench's jobs do, and
   the row says of how many graphs it read the code and how many it generated).
5. Scoring: the answer log-probabilities of the first --questions evaluation (question, answer) pairs, as the suites
   score them (`benchmarks.metrics.scoring.answer_logprob_means`, generation.scoring_batch_size rows per forward
   pass), after one untimed warm-up batch; tokens = the pairs' non-padding tokens. With --score-batches 8,32,...
   the same pairs again at each of those rows per pass, with the ratio to the run's.
6. Evaluation's greedy answers of one model (the selected suites' splits, eval=[...]): split by split (one call per
   distinct question list, as the suites ask for them) and planned (every distinct question in one call, longest
   prompt first, as a run decodes them: EvalContext.greedy_answers), both timed here, with decoding calls and the
   ratio of the two times.
Stage 0 comes from the stage-0 cache (`cache_dir`), built there if absent (the job builds it first).
--json PATH also writes the table's numbers as JSON.
--training-only: only point 2 (no job, no decoding), e.g. an A/B of a training option on a CPU: `--training-only
--steps 8 experiment=tofu_subset_smollm2 model.finetune.epochs=0 method.training.fused_optimizer=false`.
--continuous-batching: the greedy row's questions again through transformers' continuous batching
(generation.continuous_batching), with the ratio of the two.
--compare-dropping: the greedy and PMC sampling rows again with generation.drop_finished_rows the other way
(finished rows kept in the batch where the run drops them, as on a CPU by default, or dropped where it keeps them),
with the ratio dropped / kept in generated tokens/s (sampling: other draws, so other answer lengths).
--profile DIR: where each step's time goes, from torch.profiler: 3 training steps of the harness's loop (after the
warm-up steps and one more), one greedy decoding call and one PMC sampling call (after the timed ones), each as wall
time, eager operators that run a kernel (OperatorCount, in a separate untimed pass: on any device about the kernels a
GPU launches for the work in eager mode; none for a compiled phase), time the device was busy (its kernels), kernel
launches and synchronisations per training step or per model forward (a decoding step; prefill included), printed as
a second table; DIR/profile.json holds the numbers and
DIR/profile_<phase>.txt the 25 operators that took the most time. A device busy for a small share of the wall time
is waiting for the host: launch overhead and synchronisations, not arithmetic, set the speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the harness's own packages first

from benchmarks.metrics.scoring import answer_logprob_means, max_length_for  # noqa: E402
from pmc import CONF_DIR  # noqa: E402
from pmc.checks import check_training  # noqa: E402
from pmc.core.batches import encode_pairs  # noqa: E402
from pmc.core.generation import (  # noqa: E402
    BatchSizes,
    compiles_decoding,
    configure_generation,
    drops_finished_rows,
    generate_answers,
    greedy_answers,
)
from pmc.core.losses import answer_nll  # noqa: E402
from pmc.experiment import pmc_sampling_settings, run_experiment  # noqa: E402
from pmc.optimisation import OPTIMIZERS, TrainingConfig, decay_parameter_groups  # noqa: E402
from pmc.pipeline import (  # noqa: E402
    compile_counts,
    configure_kernels,
    device_name,
    eval_context,
    generation_options,
    instantiate_node,
    load_stage0,
    metric_suites,
    prepare_generation,
    prompt_format,
)
from pmc.trainer import finetune  # noqa: E402

STAGES = ("data", "stage0", "unlearn", "eval")
UNLEARN_PARTS = {  # results.json's unlearn.<part> (pmc.trainer.unlearn, the methods' timings)
    "unlearn.setup": "before the first step (the method set up, its initial state: PMC's initial answers)",
    "unlearn.initial_answers": "PMC's initial answers decoded",
    "unlearn.sampling": "PMC's samples decoded",
    "unlearn.scoring": "PMC's samples scored by ROUGE-L and selected",
}
WARMUP_STEPS = 2


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn):
    synchronise(device)
    start = time.perf_counter()
    out = fn()
    synchronise(device)
    return out, time.perf_counter() - start


def round_the_list(records: list, steps: int, batch_size: int) -> list:
    """steps x batch_size records, taken round the list."""
    return [records[k % len(records)] for k in range(steps * batch_size)]


def harness_steps(model, tokenizer, fmt, chosen: list, training: TrainingConfig, log_step, desc: str) -> None:
    """The harness's loop (`finetune`: one epoch, no accumulation) on a copy of `model`, one step per batch_size of
    `chosen`; log_step is called after each optimiser step."""
    finetune(copy.deepcopy(model), tokenizer, fmt, chosen, replace(training, epochs=1, gradient_accumulation_steps=1),
             seed=0, log_step=log_step, desc=desc)


def training_throughput(model, tokenizer, fmt, records, training: TrainingConfig, steps: int,
                        device: torch.device, warmup: int) -> dict:
    """Steady-state tokens/s and steps/s of a copy of `model` trained on (`warmup` + `steps`) x batch_size retain
    records (taken round the list) through the harness's loop (`finetune`, one epoch; timed from the end of the
    warm-up steps to the end, so the session's setup and the optimiser's first allocation stay out) and through a
    plain torch loop on the same records (answer NLL, backward, AdamW step, fused as the run's; no accelerate,
    precision, clipping, schedule or logging), the floor the harness's own per-step work adds to. Each loop runs
    twice, in the order harness, plain, plain, harness, and its two times are averaged: a process runs faster over
    its first minutes (SmolLM2 on 2 CPU cores: the harness's loop 4.2 s per step first, 3.8 s right after; the
    plain loop 3.7 s first, 3.2 s after), so one pass each in a fixed order put that drift into the ratio. Tokens
    per step: the records' non-padding tokens over all the steps (the harness shuffles them), the same for both
    loops. Then the optimizer step alone, fused and unfused, on the plain loop's copy."""
    batch_size = training.batch_size
    chosen = round_the_list(records, warmup + steps, batch_size)
    tokens = steps / (warmup + steps) * sum(
        int(encode_pairs(tokenizer, fmt, [(r.question, r.answer)], training.max_length).attention_mask.sum())
        for r in chosen)

    def harness_seconds() -> float:
        started = {}

        def mark_warm(entry: dict) -> None:
            if entry["step"] == warmup:
                synchronise(device)
                started["at"] = time.perf_counter()

        harness_steps(model, tokenizer, fmt, chosen, training, mark_warm, "harness loop")
        synchronise(device)
        return time.perf_counter() - started["at"]

    def plain_seconds() -> tuple[float, torch.nn.Module]:
        plain_model = copy.deepcopy(model).train()
        optimiser = torch.optim.AdamW(plain_model.parameters(), lr=training.learning_rate,
                                      fused=training.fused_optimizer)

        def plain_steps(first: int, count: int) -> None:
            for k in range(first, first + count):
                pairs = [(r.question, r.answer) for r in chosen[k * batch_size : (k + 1) * batch_size]]
                answer_nll(plain_model, encode_pairs(tokenizer, fmt, pairs, training.max_length).to(device)).backward()
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)

        plain_steps(0, warmup)
        _, seconds = timed(device, lambda: plain_steps(warmup, steps))
        return seconds, plain_model

    first_harness = harness_seconds()
    first_plain, _ = plain_seconds()
    second_plain, plain_model = plain_seconds()
    second_harness = harness_seconds()
    seconds, plain = (first_harness + second_harness) / 2, (first_plain + second_plain) / 2
    return {"tokens_per_s": tokens / seconds, "steps_per_s": steps / seconds, "seconds": seconds, "tokens": tokens,
            "passes_s": [first_harness, second_harness],
            "plain_loop": {"tokens_per_s": tokens / plain, "steps_per_s": steps / plain, "seconds": plain,
                           "passes_s": [first_plain, second_plain]},
            "optimizer_step_s": optimizer_step_seconds(plain_model, training, device)}


def optimizer_step_seconds(model, training: TrainingConfig, device: torch.device, steps: int = 3) -> dict:
    """Seconds per optimizer step over the model's parameter groups (random gradients; the model is a throw-away
    copy), with torch's fused kernel and without it (torch's default then: a loop per tensor on a CPU, grouped
    `foreach` kernels on a GPU): what `training.fused_optimizer` changes, apart from the rest of a step."""
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    found = {}
    for name, fused in (("fused", True), ("unfused", False)):
        optimizer = OPTIMIZERS[training.optimizer](decay_parameter_groups(model, training.weight_decay),
                                                   lr=training.learning_rate, fused=fused)
        optimizer.step()  # allocates the moments
        _, seconds = timed(device, lambda step=optimizer.step: [step() for _ in range(steps)])
        found[name] = seconds / steps
    return found


def scoring_throughput(model, tokenizer, fmt, pairs: list[tuple[str, str]], batch_size: int, max_length: int,
                       device: torch.device) -> dict:
    """Scored tokens/s of the pairs' answer log-probabilities at `batch_size` rows per forward pass (point 5)."""
    answer_logprob_means(model, tokenizer, fmt, pairs[:batch_size], batch_size, max_length)  # warm-up
    _, seconds = timed(device, lambda: answer_logprob_means(model, tokenizer, fmt, pairs, batch_size, max_length))
    tokens = int(encode_pairs(tokenizer, fmt, pairs, max_length).attention_mask.sum())
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "answers": len(pairs),
            "batch_size": batch_size}


def decoding_throughput(model, tokenizer, fmt, questions: list[str], device: torch.device, **kwargs) -> dict:
    """Generated tokens/s of `generate_answers` on the questions (after one warm-up call, timed apart with the
    seconds torch.compile spent in it: a compiled step compiles there, or later where a width first seen compiles
    again)."""
    before = compile_counts()
    _, warmup_seconds = timed(device, lambda: generate_answers(model, tokenizer, fmt,
                                                               questions[: kwargs["batch_size"]], **kwargs))
    warmup_compile_s = compile_counts()["compile_s"] - before["compile_s"]
    answers, seconds = timed(device, lambda: generate_answers(model, tokenizer, fmt, questions, **kwargs))
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for row in answers for a in row)
    after = compile_counts()
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens,
            "answers": len(answers[0]) * len(answers),
            "warmup_seconds": warmup_seconds, "warmup_compile_s": warmup_compile_s,
            "compile_s": after["compile_s"] - before["compile_s"],
            # a short compile may be inductor's code read from compile_cache_dir, where a job compiled it before
            **{key: after[key] - before[key] for key in ("compile_cache_hits", "compile_cache_misses")}}


@contextmanager
def generation_settings(model, cfg, **changes):
    """The model's decoding configured as the run's `generation:` block with `changes` (configure_generation's
    keywords), then as the run's again."""
    settings = {**generation_options(cfg.generation), "max_cache_len": model.generation_config.max_cache_len}
    configure_generation(model, **{**settings, **changes})
    try:
        yield
    finally:
        configure_generation(model, **settings)


def evaluation_decoding(model, cfg, tokenizer, fmt, benchmark, batch_sizes: BatchSizes, device: torch.device) -> dict:
    """One model's evaluation greedy answers, decoded split by split and planned (point 6 of the docstring)."""
    ctx = eval_context(cfg, tokenizer, fmt, benchmark, batch_sizes)
    batch_size = batch_sizes.decoding
    splits = list(dict.fromkeys(tuple(questions) for suite in metric_suites(cfg).values()
                                for questions in suite.greedy_questions(ctx).values()))
    distinct = list(dict.fromkeys(q for questions in splits for q in questions))

    def split_by_split():
        for questions in splits:
            greedy_answers(model, tokenizer, fmt, list(questions), batch_size=batch_size, **ctx.answer_length())

    def planned():
        fresh = eval_context(cfg, tokenizer, fmt, benchmark, batch_sizes)
        fresh.plan_greedy_answers(distinct)
        fresh.greedy_answers(model, list(splits[0]))

    _, split_seconds = timed(device, split_by_split)
    _, planned_seconds = timed(device, planned)
    calls = lambda n: -(-n // batch_size)
    return {"splits": len(splits), "answers": sum(map(len, splits)), "distinct": len(distinct),
            "batch_size": batch_size,
            "split_by_split": {"seconds": split_seconds, "calls": sum(calls(len(q)) for q in splits)},
            "planned": {"seconds": planned_seconds, "calls": calls(len(distinct))}}


def job_timings(cfg, results_path: str | None, eval_cache: bool) -> dict:
    """timings_s (and whether stage 0 was built) of one job: read from results_path, or from a job run now."""
    if results_path is None:
        with tempfile.TemporaryDirectory(prefix="bench-job-") as run_dir:
            job_cfg = cfg.copy()
            job_cfg.eval_cache = eval_cache
            run_experiment(job_cfg, Path(run_dir))
            results = json.loads((Path(run_dir) / "results.json").read_text())
    else:
        results = json.loads(Path(results_path).read_text())
    return {"timings_s": results["timings_s"], "stage0_built": results["stage0"]["built_in_this_run"],
            "eval_cache": results.get("eval_cache"), "source": results_path or "a job run by this script",
            # None: a results.json from before 2026-11-27 (graphs) or 2026-11-28 (skips, recordings)
            "graphs_compiled": results.get("compiled_graphs"), "cudagraph_skips": results.get("cudagraph_skips"),
            "cudagraph_recordings": results.get("cudagraph_recordings"),
            "compile_s": results.get("compile_s"),  # None before 2026-11-28's second GPU session
            "compile_cache": [results.get(f"compile_cache_{k}") for k in ("hits", "misses", "bypasses")]}


PROFILED_STEPS = 3
KERNEL_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
SYNCHRONISATIONS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
MODEL_FORWARD = "aten::embedding"  # once per forward of the model: one per decoding step (and the prefill)
# operators that run no kernel: besides views (an operator's schema says so), these re-describe or allocate memory
NO_KERNEL_OPERATORS = frozenset({"_unsafe_view", "lift_fresh", "empty", "empty_like", "empty_strided"})


class OperatorCount(TorchDispatchMode):
    """Counts the operators dispatched below autograd (composite operators already split, e.g. linear into t and
    addmm) that run a kernel, and the model forwards among them. In eager mode this is about the kernels a GPU
    launches for the same work, on any device: a 135M model on a GPU is launch-bound (docs/gpu.md), so on a CPU the
    count says how a change would move a GPU step's time. Counting costs time, so counted work is never timed."""

    def __init__(self):
        super().__init__()
        self.counting, self.operators, self.forwards = False, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if self.counting and not func.is_view and name not in NO_KERNEL_OPERATORS:
            self.operators += 1
            self.forwards += name == MODEL_FORWARD.removeprefix("aten::")
        return func(*args, **(kwargs or {}))


def counted_training(model, tokenizer, fmt, records, training: TrainingConfig) -> float:
    """Operators per optimiser step of the harness's loop, over PROFILED_STEPS steps after the warm-up steps."""
    chosen = round_the_list(records, WARMUP_STEPS + PROFILED_STEPS, training.batch_size)
    count = OperatorCount()

    def switch(entry: dict) -> None:
        count.counting = WARMUP_STEPS <= entry["step"] < WARMUP_STEPS + PROFILED_STEPS

    with count:
        harness_steps(model, tokenizer, fmt, chosen, training, switch, "counted")
    return count.operators / PROFILED_STEPS


def counted_call(fn) -> float:
    """Operators per model forward of one call of fn."""
    count = OperatorCount()
    count.counting = True
    with count:
        fn()
    return count.operators / max(1, count.forwards)


def activities(device: torch.device) -> list:
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def profiled_call(fn, device: torch.device):
    """(operator statistics, wall seconds) of one call of fn under torch.profiler; the wall time is that of a second
    call without the profiler's overhead, from the same RNG state (a sampling call draws the same answers)."""
    torch.manual_seed(0)
    with profile(activities=activities(device)) as prof:
        timed(device, fn)
    torch.manual_seed(0)
    _, seconds = timed(device, fn)
    return prof.key_averages(), seconds


def profiled_training(model, tokenizer, fmt, records, training: TrainingConfig, device: torch.device,
                      warmup: int):
    """Operator statistics of PROFILED_STEPS optimiser steps of the harness's loop, after `warmup` steps and one
    more (the profiler's own warm-up), the steps counted through the loop's step log."""
    chosen = round_the_list(records, warmup + 1 + PROFILED_STEPS, training.batch_size)
    kept = {}
    with profile(activities=activities(device), schedule=schedule(wait=warmup, warmup=1,
                                                                   active=PROFILED_STEPS, repeat=1),
                 on_trace_ready=lambda prof: kept.update(events=prof.key_averages())) as prof:
        harness_steps(model, tokenizer, fmt, chosen, training, lambda _: prof.step(), "profiled")
    return kept["events"]


def profile_phases(directory: Path, model, tokenizer, fmt, records, training_cfg: TrainingConfig, training: dict,
                   questions: list[str], decoding: dict, sampling: dict, device: torch.device,
                   warmup: int) -> dict:
    """Profile the three phases (training steps, one greedy decoding call, one sampling call, each call on the first
    questions that fill one batch) and write them into `directory`; returns their summaries."""
    greedy = lambda: generate_answers(model, tokenizer, fmt, questions[: decoding["batch_size"]], **decoding)
    sampled = lambda: generate_answers(model, tokenizer, fmt, questions[: sampling["batch_size"]], **sampling)
    training_events = profiled_training(model, tokenizer, fmt, records, training_cfg, device, warmup)
    greedy_events, greedy_seconds = profiled_call(greedy, device)
    sampling_events, sampling_seconds = profiled_call(sampled, device)
    # eager operator counts; a compiled phase's operators are not dispatched one by one, so it has none
    compiled_decoding = compiles_decoding(model)
    operators = {"training": None if training_cfg.compile_backend else
                 counted_training(model, tokenizer, fmt, records, training_cfg),
                 "greedy": None if compiled_decoding else counted_call(greedy),
                 "sampling": None if compiled_decoding else counted_call(sampled)}
    return write_profiles(directory, {
        # wall time per step: the steady-state steps timed before, without the profiler
        "training": (training_events, PROFILED_STEPS / training["steps_per_s"], PROFILED_STEPS, "training step"),
        "greedy": (greedy_events, greedy_seconds, forwards(greedy_events), "model forward"),
        "sampling": (sampling_events, sampling_seconds, forwards(sampling_events), "model forward"),
    }, operators, device)


def profile_summary(events, seconds: float, units: int, unit: str, device: torch.device,
                    operators: float | None = None) -> dict:
    """Per unit (a training step, a model forward): wall milliseconds (`seconds`: the same work without the
    profiler), the eager operators that run a kernel (OperatorCount, counted apart; None when compiled), and on a
    GPU its busy milliseconds (the kernels' time), kernel launches and synchronisations."""
    summary = {"unit": unit, "units": units, "wall_ms": 1000 * seconds / units, "operators": operators}
    if device.type == "cuda":
        count = lambda names: sum(e.count for e in events if e.key in names)
        # the kernels' own events: an operator's self device time counts its kernels again (as torch's table sums)
        device_ms = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA
                        and not getattr(e, "is_user_annotation", False)) / 1000
        summary.update(device_busy_ms=device_ms / units, device_busy_share=device_ms / (1000 * seconds),
                       kernel_launches=count(KERNEL_LAUNCHES) / units, synchronisations=count(SYNCHRONISATIONS) / units)
    return summary


def write_profiles(directory: Path, phases: dict, operators: dict, device: torch.device) -> dict:
    """profile_<phase>.txt (the 25 costliest operators) and profile.json; returns the summaries."""
    directory.mkdir(parents=True, exist_ok=True)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    summaries = {}
    for phase, (events, seconds, units, unit) in phases.items():
        (directory / f"profile_{phase}.txt").write_text(events.table(sort_by=sort_by, row_limit=25))
        summaries[phase] = profile_summary(events, seconds, units, unit, device, operators[phase])
    (directory / "profile.json").write_text(json.dumps(summaries, indent=2))
    return summaries


def forwards(events) -> int:
    return max(1, sum(e.count for e in events if e.key == MODEL_FORWARD))


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A markdown table, its first column left-aligned and the others right-aligned, unless they hold words."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    words = {i for i in range(len(header)) if i == 0 or any(not r[i][:1].isdigit() for r in rows)}
    line = lambda cells: "| " + " | ".join(c.ljust(w) if i in words else c.rjust(w)
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def profile_table(profiles: dict) -> str:
    """The profiled phases, one row each, per training step or per model forward."""
    def cells(p: dict) -> tuple[str, ...]:
        operators = "-" if p["operators"] is None else f"{p['operators']:.0f}"
        if "device_busy_ms" not in p:  # a CPU run: the operators' table in profile_<phase>.txt says the rest
            return (operators, *("-",) * 4)
        return (operators, f"{p['device_busy_ms']:.2f}", f"{p['device_busy_share']:.0%}",
                f"{p['kernel_launches']:.0f}", f"{p['synchronisations']:.1f}")

    return table(("phase (per unit, units)", "wall ms", "eager operators", "device busy ms", "busy share",
                  "kernel launches", "synchronisations"),
                 [(f"{phase} (per {p['unit']}, {p['units']})", f"{p['wall_ms']:.2f}", *cells(p))
                  for phase, p in profiles.items()])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's device)")
    parser.add_argument("--train-batch", type=int, default=None, help="default: method.training.batch_size")
    parser.add_argument("--gen-batch", default=None, help="an int or auto (default: generation.batch_size)")
    parser.add_argument("--samples", type=int, default=None, help="PMC's n (default: the method's, else 5)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS,
                        help="untimed, unprofiled training steps first (compile_mode=reduce-overhead records CUDA "
                             "graphs for each micro-batch shape it meets: give it enough to meet them all)")
    parser.add_argument("--questions", type=int, default=64, help="evaluation questions decoded")
    parser.add_argument("--score-batches", default=None, type=rows_list,
                        help="also score the pairs at these rows per forward pass, e.g. 8,32,128")
    parser.add_argument("--no-job", action="store_true", help="skip the job (no per-stage times)")
    parser.add_argument("--training-only", action="store_true",
                        help="only the training rows (no job, no decoding): a training change measured in minutes "
                             "on a CPU")
    parser.add_argument("--compare-warpers", action="store_true",
                        help="also time PMC sampling through transformers' own top-k / top-p warpers")
    parser.add_argument("--continuous-batching", action="store_true",
                        help="also time the greedy questions through transformers' continuous batching")
    parser.add_argument("--compare-dropping", action="store_true",
                        help="also time greedy decoding and PMC sampling with generation.drop_finished_rows the "
                             "other way")
    parser.add_argument("--results", default=None, help="per-stage times from this results.json instead of a job")
    parser.add_argument("--eval-cache", action="store_true", help="let the job read stage-0 scores from the cache")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--profile", default=None, type=Path,
                        help="also profile a few steps of each phase with torch.profiler into this folder")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, e.g. model=smollm2_135m")
    args = parser.parse_intermixed_args(argv)  # options may follow the overrides (gpu_check.sh)
    if args.steps < 1:
        parser.error(f"--steps: at least 1 timed training step, got {args.steps}")
    if args.warmup_steps < 1:  # the timing starts at the end of the last warm-up step
        parser.error(f"--warmup-steps: at least 1, got {args.warmup_steps}")
    if args.training_only and (args.profile or args.results or args.continuous_batching or args.compare_warpers
                               or args.compare_dropping or args.score_batches):
        parser.error("--training-only times training alone: no --profile, --results, --continuous-batching, "
                     "--compare-warpers, --compare-dropping or --score-batches")

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.gen_batch:
        overrides.append(f"generation.batch_size={args.gen_batch if args.gen_batch == 'auto' else int(args.gen_batch)}")
    if args.train_batch:
        overrides.append(f"method.training.batch_size={args.train_batch}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    configure_kernels(cfg)  # as a job: TF32 on a GPU, compiled code kept in compile_cache_dir

    job = None if args.no_job or args.training_only else job_timings(cfg, args.results, args.eval_cache)

    benchmark = instantiate_node(cfg.benchmark, "benchmark")
    fmt = prompt_format(cfg, benchmark)
    stage0 = load_stage0(cfg, benchmark, fmt, {})
    model, tokenizer = stage0.target, stage0.tokenizer
    device = next(model.parameters()).device
    sizes = prepare_generation(cfg, [model], tokenizer, fmt, benchmark)
    batch_sizes, rows_at_once = sizes.evaluation, sizes.evaluation.decoding
    records = [r for records in benchmark.eval_sets.values() for r in records][: args.questions]
    questions = [r.question for r in records]
    max_new_tokens = cfg.generation.max_new_tokens

    training_cfg = check_training(OmegaConf.to_container(cfg.method.training, resolve=True), "method.training")
    training = training_throughput(model, tokenizer, fmt, benchmark.retain, training_cfg, args.steps, device,
                                   args.warmup_steps)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    header_line = (f"device: {device_name(device)} [{device.type}]; torch {torch.__version__}; model "
                   f"{cfg.model.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, {dtype}); "
                   f"benchmark {benchmark.name}; generation: cache {cfg.generation.cache_implementation or 'dynamic'}, "
                   f"compile {cfg.generation.compile}")
    optimizer = training["optimizer_step_s"]
    mode = f", {training_cfg.compile_mode}" if training_cfg.compile_mode else ""
    scope = "" if training_cfg.compile_regional else ", the whole model"
    compiled = f", compiled ({training_cfg.compile_backend}{mode}{scope})" if training_cfg.compile_backend else ""
    padded = (f", padded to multiples of {training_cfg.pad_to_multiple_of}" if training_cfg.pad_to_multiple_of
              else "")
    training_rows = [
        ("training", f"{training['tokens_per_s']:.0f}", "tokens/s",
         f"batch {training_cfg.batch_size}, max_length {training_cfg.max_length}, {training_cfg.precision}"
         f"{', grouped by length' if training_cfg.group_by_length else ''}"
         f"{padded}{compiled}, {args.steps} steps"),
        ("training", f"{training['steps_per_s']:.2f}", "steps/s", "the harness's loop (accelerate, as a run trains)"),
        ("training, plain loop", f"{training['plain_loop']['tokens_per_s']:.0f}", "tokens/s",
         "the same records: forward + backward + AdamW step in plain torch, fp32"),
        ("training, plain loop", f"{training['plain_loop']['steps_per_s']:.2f}", "steps/s",
         f"harness / plain: {training['steps_per_s'] / training['plain_loop']['steps_per_s']:.2f}"),
        ("optimizer step, fused", f"{1000 * optimizer['fused']:.1f}", "ms",
         f"{training_cfg.optimizer} over the model's parameters; the run uses "
         f"{'fused' if training_cfg.fused_optimizer else 'unfused'} (training.fused_optimizer)"),
        ("optimizer step, unfused", f"{1000 * optimizer['unfused']:.1f}", "ms",
         f"torch's default kernels; unfused / fused: {optimizer['unfused'] / optimizer['fused']:.2f}"),
    ]
    numbers = {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
               "dtype": dtype, "model": cfg.model.name, "benchmark": benchmark.name,
               "training": {**training, "batch_size": training_cfg.batch_size, "precision": training_cfg.precision,
                            "group_by_length": training_cfg.group_by_length, "compile": training_cfg.compile,
                            "compile_mode": training_cfg.compile_mode,
                            "compile_regional": training_cfg.compile_regional,
                            "pad_to_multiple_of": training_cfg.pad_to_multiple_of,
                            "fused_optimizer": training_cfg.fused_optimizer}}
    # printed and written at once: a bench cut off by a time limit (the GPU check's) still leaves its training rows
    print(header_line + "\n" + table(("measure", "value", "unit", "settings"), training_rows), flush=True)
    write_numbers(args.json, numbers)
    if args.training_only:
        return numbers

    # the decoding calls' settings, shared by the timed calls and the profiled ones
    decoding = {"max_new_tokens": max_new_tokens, "batch_size": rows_at_once}
    sampling = pmc_sampling_settings(cfg, sizes.unlearning.decoding, args.samples)  # PMC samples while it trains
    samples, pmc_batch = sampling["num_samples"], sampling["batch_size"]
    greedy = decoding_throughput(model, tokenizer, fmt, questions, device, **decoding)
    with torch.random.fork_rng():
        sampled = decoding_throughput(model, tokenizer, fmt, questions, device, **sampling)
    warpers = None
    if args.compare_warpers:  # from the same RNG state (other draws: the draw sees other candidates)
        with torch.random.fork_rng():
            warpers = decoding_throughput(model, tokenizer, fmt, questions, device, **sampling,
                                          top_p_within_top_k=False)
    evaluation = evaluation_decoding(model, cfg, tokenizer, fmt, benchmark, batch_sizes, device)
    pairs = [(r.question, r.answer) for r in records]
    max_length = max_length_for(model, eval_context(cfg, tokenizer, fmt, benchmark, batch_sizes))
    scored = {rows: scoring_throughput(model, tokenizer, fmt, pairs, rows, max_length, device)
              for rows in dict.fromkeys([batch_sizes.scoring, *(args.score_batches or [])])}
    continuous = None
    if args.continuous_batching:  # the greedy row's questions again, through generate_batch
        with generation_settings(model, cfg, continuous_batching=True):
            continuous = decoding_throughput(model, tokenizer, fmt, questions, device, **decoding)
    toggled = None
    if args.compare_dropping:  # the greedy and sampling rows again, finished rows treated the other way
        dropped = drops_finished_rows(model)
        with generation_settings(model, cfg, drop_finished_rows=not dropped), torch.random.fork_rng():
            toggled = {"drop_finished_rows": not dropped,
                       "greedy": decoding_throughput(model, tokenizer, fmt, questions, device, **decoding),
                       "sampling": decoding_throughput(model, tokenizer, fmt, questions, device, **sampling)}

    gen = f"{len(questions)} questions, {max_new_tokens} new tokens max"

    def warm_up(numbers: dict) -> str:  # where compiling went: the warm-up call, or timed calls of new widths
        cached = (f" (inductor's code of {numbers['compile_cache_hits']} graphs read from the compile cache, of "
                  f"{numbers['compile_cache_misses']} generated)" if numbers["compile_s"] else "")
        return (f"; warm-up call {numbers['warmup_seconds']:.1f} s, compiling {numbers['warmup_compile_s']:.1f} s in "
                f"it, {numbers['compile_s']:.1f} s in all{cached}")

    rows = [
        ("greedy decoding", f"{greedy['tokens_per_s']:.0f}", "tokens/s",
         f"{gen}, batch {rows_at_once}{warm_up(greedy)}"),
        ("PMC sampling", f"{sampled['tokens_per_s']:.0f}", "tokens/s",
         f"{gen}, n = {samples}, {pmc_batch} questions x {samples} per call{warm_up(sampled)}"),
        ("scoring", f"{scored[batch_sizes.scoring]['tokens_per_s']:.0f}", "tokens/s",
         f"{len(pairs)} answers' log-probabilities, {batch_sizes.scoring} rows per forward pass "
         f"(generation.scoring_batch_size)"),
        *((f"scoring, {rows} rows", f"{other['tokens_per_s']:.0f}", "tokens/s",
           f"the same answers; / {batch_sizes.scoring} rows: "
           f"{other['tokens_per_s'] / scored[batch_sizes.scoring]['tokens_per_s']:.2f}")
          for rows, other in scored.items() if rows != batch_sizes.scoring),
        ("evaluation decoding, split by split", f"{evaluation['split_by_split']['seconds']:.2f}", "s",
         f"one model, eval=[{','.join(cfg.eval)}]: {evaluation['splits']} splits, {evaluation['answers']} answers, "
         f"{evaluation['split_by_split']['calls']} calls of up to {rows_at_once} rows"),
        ("evaluation decoding, planned", f"{evaluation['planned']['seconds']:.2f}", "s",
         f"{evaluation['distinct']} distinct questions, {evaluation['planned']['calls']} calls; split by split / "
         f"planned: {evaluation['split_by_split']['seconds'] / evaluation['planned']['seconds']:.2f}"),
    ]
    if warpers is not None:
        rows.insert(2, ("PMC sampling, transformers' warpers", f"{warpers['tokens_per_s']:.0f}", "tokens/s",
                        f"top-p sorting and the draw covering the whole vocabulary; harness / transformers: "
                        f"{sampled['tokens_per_s'] / warpers['tokens_per_s']:.2f}"))
    if toggled is not None:  # after the sampling rows: the greedy and the sampling row, the other way
        way = "dropped" if toggled["drop_finished_rows"] else "kept"
        other_way = []
        for name, measured, key in (("greedy decoding", greedy, "greedy"), ("PMC sampling", sampled, "sampling")):
            other = toggled[key]["tokens_per_s"]
            dropped, kept = ((other, measured["tokens_per_s"]) if toggled["drop_finished_rows"]
                             else (measured["tokens_per_s"], other))
            other_way.append((f"{name}, finished rows {way}", f"{other:.0f}", "tokens/s",
                              f"the same calls, generation.drop_finished_rows="
                              f"{str(toggled['drop_finished_rows']).lower()}; dropped / kept: {dropped / kept:.2f}"))
        rows[2 + (warpers is not None) : 2 + (warpers is not None)] = other_way
    if continuous is not None:
        rows.append(("greedy decoding, continuous batching", f"{continuous['tokens_per_s']:.0f}", "tokens/s",
                     f"the same questions through generate_batch; / fixed batches: "
                     f"{continuous['tokens_per_s'] / greedy['tokens_per_s']:.2f}"))
    if job is not None:
        built = ("built: " + ", ".join(name.split("-")[1] for name in job["stage0_built"])
                 if job["stage0_built"] else "from the stage-0 cache")
        notes = {"stage0": built, "eval": "target, retain and unlearned model" + (
            "" if args.eval_cache or args.results else ", eval cache off")}
        timings = job["timings_s"]
        rows += [(f"job: {stage}", f"{timings[stage]:.1f}", "s", notes.get(stage, "")) for stage in STAGES
                 if stage in timings]
        # where unlearning's time went (results.json since 2026-11-28): before the first step, and the method's own
        # work (PMC: initial answers, sampling, scoring); then eval's: the greedy answers, each suite without them
        rows += [(f"job: {part}", f"{seconds:.1f}", "s", "part of unlearn: " + UNLEARN_PARTS.get(
                     part, "the method's own work"))
                 for part, seconds in timings.items() if part.startswith("unlearn.")]
        rows += [(f"job: {part}", f"{seconds:.1f}", "s", "part of eval: " + (
                     "every suite's greedy answers, every model scored" if part == "eval.greedy_answers"
                     else "the suite's own time, without the greedy answers"))
                 for part, seconds in timings.items() if part.startswith("eval.")]
        rows.append(("job: total", f"{sum(timings[stage] for stage in STAGES if stage in timings):.1f}", "s",
                     job["source"]))
        if job["graphs_compiled"] is not None:
            rows.append(("job: graphs compiled", str(job["graphs_compiled"]), "graphs",
                         "torch.compile's traces in the job: the decoding step (generation.compile), the decoder "
                         "layers (method.training.compile); each a compile on a GPU"))
        if job["compile_s"] is not None:
            rows.append(("job: compiling", f"{job['compile_s']:.1f}", "s",
                         "dynamo's tracing and the backend's code generation, within the job's stages"))
        if None not in job["compile_cache"]:  # None: a results.json from before 2026-11-28, late
            rows.append(("job: compile cache hit / missed / bypassed", " / ".join(map(str, job["compile_cache"])),
                         "graphs", "inductor's code read from compile_cache_dir / generated and stored / generated "
                         "and not stored"))
        if job["cudagraph_recordings"] is not None:
            rows.append(("job: CUDA graphs recorded", str(job["cudagraph_recordings"]), "recordings",
                         "inductor's CUDA-graph recordings (per compiled function and shape; a handful per run, not "
                         "one per step)"))
        if job["cudagraph_skips"] is not None:
            rows.append(("job: CUDA graphs skipped", str(job["cudagraph_skips"]), "functions",
                         "compiled functions inductor ran without CUDA graphs (TORCH_LOGS=cudagraphs says why)"))
    print(table(("measure", "value", "unit", "settings"), rows), flush=True)
    profiles = None
    if args.profile:
        profiles = profile_phases(args.profile, model, tokenizer, fmt, benchmark.retain, training_cfg, training,
                                  questions, decoding, sampling, device, args.warmup_steps)
        print(profile_table(profiles))
    numbers.update({"greedy": {**greedy, "batch_size": rows_at_once},
                    "sampling": {**sampled, "num_samples": samples, "questions_per_call": pmc_batch},
                    "sampling_transformers_warpers": warpers,
                    "scoring": list(scored.values()),
                    "evaluation_decoding": evaluation, "continuous_batching": continuous,
                    "finished_rows_toggled": toggled,
                    "generation": OmegaConf.to_container(cfg.generation, resolve=True), "job": job,
                    "profile": profiles})
    return write_numbers(args.json, numbers)


def rows_list(text: str) -> list[int]:
    """--score-batches: positive ints, comma-separated."""
    try:
        rows = [int(part) for part in text.split(",")]
    except ValueError:
        rows = []
    if not rows or min(rows) < 1:
        raise argparse.ArgumentTypeError(f"comma-separated positive ints, e.g. 8,32,128, got {text!r}")
    return rows


def write_numbers(path: str | None, numbers: dict) -> dict:
    """The table's numbers, also written as JSON to `path` when given."""
    if path:
        Path(path).write_text(json.dumps(numbers, indent=2))
    return numbers


if __name__ == "__main__":
    main()
