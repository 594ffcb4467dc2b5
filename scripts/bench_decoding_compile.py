"""What compiling the decoding step costs under each `generation.compile_dynamic`, and what it compiles.

    python scripts/bench_decoding_compile.py                      # quickstart's tiny model, modes true, null, varying
    python scripts/bench_decoding_compile.py experiment=tofu_subset_smollm2 model.finetune.epochs=0
    python scripts/bench_decoding_compile.py --modes null,varying experiment=tofu_subset_smollm2 \
        benchmark.forget_split=forget10 benchmark.num_authors=40 benchmark.data_dir=.device/tofu device=cuda \
        generation.batch_size=128 model.finetune.epochs=0

Each mode runs in a process of its own with an empty inductor cache (its own TORCHINDUCTOR_CACHE_DIR), as a sweep's
first compiled job does, then again in a second fresh process on the cache the first filled, as every later job of
the sweep does (`compile_cache_dir`: torch keeps the code it generated on disk, so the second process traces the step
but generates no code; --first-only leaves it out): the stage-0 target from the stage-0 cache
(built there first if absent, untimed), its decoding set up as a run sets it up (`prepare_generation`) with a static
KV cache, `generation.compile` (inductor, `true`, unless the overrides name another backend) and the mode, then the
calls of several widths a run makes: greedy answers to --questions evaluation questions at the run's batch size (its
last batch narrower), and PMC's sampling of one micro-batch of questions and of 3 questions (n samples each). On a
CPU the decoding step is compiled through transformers' opt-in for every device (it compiles on CUDA only).

The table gives per mode the graphs traced (results.json's `compiled_graphs`), the seconds compiling (torch's compile
timers, `compile_s`), the wall time of all the calls, the same two times in the second process with the graphs whose
code it read from the cache and generated (`compile_cache_hits`, `compile_cache_misses`), the CUDA graphs recorded
(GPU), and whether its greedy answers, in both processes, are the first mode's (the same arithmetic on a static or a
symbolic batch: they should be). The first line names the device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from pmc import CONF_DIR
from pmc.core.generation import generate_answers, greedy_answers
from pmc.core.models import compile_backend
from pmc.experiment import pmc_sampling_settings
from pmc.pipeline import (
    compile_counts,
    device_name,
    load_benchmark,
    load_stage0,
    prepare_generation,
    prompt_format,
    seed_everything,
)

RESULT = "bench_decoding_compile result: "  # the line a mode's process reports on


def one_mode(mode: str, overrides: list[str], questions: int) -> dict:
    """In this process: the model's decoding compiled under `mode`, then a run's calls of several widths, timed."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["generation.cache_implementation=static", "generation.compile=true",
                                           *overrides, f"generation.compile_dynamic={mode}"])
    benchmark = load_benchmark(cfg, {})
    fmt = prompt_format(cfg, benchmark)
    stage0 = load_stage0(cfg, benchmark, fmt, {})
    model, tokenizer = stage0.target, stage0.tokenizer
    rows_at_once = prepare_generation(cfg, [model], tokenizer, fmt, benchmark).evaluation.decoding
    model.generation_config.compile_config._compile_all_devices = True  # transformers compiles on CUDA only
    sampling = pmc_sampling_settings(cfg, rows_at_once)
    asked = [r.question for records in benchmark.eval_sets.values() for r in records][:questions]
    forget = [r.question for r in benchmark.forget]
    micro_batch = forget[: cfg.method.training.batch_size]
    device = next(model.parameters()).device
    seed_everything(cfg.seed)
    start = time.perf_counter()
    answers = greedy_answers(model, tokenizer, fmt, asked, max_new_tokens=cfg.generation.max_new_tokens,
                             batch_size=rows_at_once)
    generate_answers(model, tokenizer, fmt, micro_batch, **sampling)
    generate_answers(model, tokenizer, fmt, micro_batch[:3], **sampling)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    counts = compile_counts()
    return {"mode": mode, "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "model": cfg.model.name, "backend": compile_backend(cfg.generation.compile, "generation.compile"),
            "rows_at_once": rows_at_once, "questions": len(asked), "samples": sampling["num_samples"],
            "micro_batch": len(micro_batch), "seconds": seconds, **counts, "answers": answers}


def in_own_process(mode: str, overrides: list[str], questions: int, cache: str) -> dict:
    """one_mode in a fresh Python process with inductor's cache in `cache`; its result line parsed. The run config's
    compile_cache_dir is not applied (no job runs), so the variable alone says where the cache is."""
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--questions", str(questions), *overrides],
                          env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"error: compile_dynamic={mode}: the process exited with status {done.returncode}\n{tail}")
    return json.loads(lines[-1][len(RESULT):])


def first_and_second_process(mode: str, overrides: list[str], questions: int, second: bool) -> dict:
    """The mode in a process with an empty inductor cache, then (`second`) in another on the cache it filled; the
    second's numbers under "second"."""
    with tempfile.TemporaryDirectory(prefix=f"bench-compile-{mode}-") as cache:
        row = in_own_process(mode, overrides, questions, cache)
        if second:
            row["second"] = in_own_process(mode, overrides, questions, cache)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="true,null,varying", help="comma-separated compile_dynamic values to run")
    parser.add_argument("--questions", type=int, default=64, help="evaluation questions decoded greedily")
    parser.add_argument("--first-only", action="store_true",
                        help="leave out each mode's second process, on the cache the first filled")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one mode, in this process
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, e.g. device=cuda")
    args = parser.parse_intermixed_args(argv)
    modes = args.modes.split(",")
    unknown = [mode for mode in modes if mode not in ("true", "null", "varying")]
    if unknown:
        parser.error(f"--modes: {unknown} not among true, null, varying")
    if args.child:
        print(RESULT + json.dumps(one_mode(args.child, args.overrides, args.questions)), flush=True)
        return []

    rows = [first_and_second_process(mode, args.overrides, args.questions, not args.first_only) for mode in modes]
    first = rows[0]
    print(f"device: {first['device']} [{first['device_type']}]; torch {first['torch']}; model {first['model']}; "
          f"backend {first['backend']}; greedy: {first['questions']} questions at {first['rows_at_once']} rows a "
          f"call; sampling: {first['micro_batch']} and 3 questions x {first['samples']} samples")
    print("\n| compile_dynamic | graphs | compiling (s) | all calls (s) | second process: compiling (s) | all calls "
          f"(s) | code cached / generated | CUDA graphs recorded | greedy answers as {first['mode']}'s |\n"
          "|---|---:|---:|---:|---:|---:|---|---:|---|")

    def differing(r: dict) -> int:
        return sum(a != b for a, b in zip(r["answers"], first["answers"]))

    for r in rows:
        second = r.get("second")
        differ = differing(r) + (differing(second) if second else 0)
        same = "yes" if differ == 0 else f"{differ} of {len(first['answers']) * (2 if second else 1)} differ"
        second_cells = ("- | - | -" if second is None else f"{second['compile_s']:.1f} | {second['seconds']:.1f} | "
                        f"{second['compile_cache_hits']} / {second['compile_cache_misses']}")
        print(f"| {r['mode']} | {r['compiled_graphs']} | {r['compile_s']:.1f} | {r['seconds']:.1f} | {second_cells} "
              f"| {r['cudagraph_recordings']} | {same} |")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
