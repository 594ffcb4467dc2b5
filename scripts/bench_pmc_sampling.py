"""When PMC samples: inside every micro-batch with the current weights (official), once per optimizer step for all
its micro-batches (the same weights under gradient accumulation), or once per epoch.

    python scripts/bench_pmc_sampling.py                          # quickstart benchmark, 5 epochs per mode
    python scripts/bench_pmc_sampling.py --epochs 15 device=cuda  # extra Hydra overrides go last
    python scripts/bench_pmc_sampling.py --modes epoch method.handler.top_k=0 method.handler.max_length=null
    python scripts/bench_pmc_sampling.py --modes batch,step method.training.batch_size=2 \
        method.training.gradient_accumulation_steps=4       # step differs from batch only under accumulation

The config is the quickstart's (tiny model, offline synthetic TOFU-style benchmark with 20 forget questions, PMC
with conf/method/pmc.yaml), with `method.training.epochs` set to --epochs. Stage 0 comes from the stage-0 cache
(--cache-dir, the runs' own by default; built there first if absent, not timed). For each mode the target is copied,
the run re-seeded, and PMC trained through `pmc.trainer.unlearn`; then the paper metric suite scores the result. The
table gives, per mode: device, wall time per epoch (unlearning time without the initial greedy answers, over the
epochs), the sampling (decoding) calls and the number of answers sampled, the final mean selected score (mean
ROUGE-L recall of the cached answers against the initial ones) and unlearn quality.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from benchmarks.metrics.paper import PaperSuite
from pmc import CONF_DIR
from pmc.experiment import method_batch_size
from pmc.methods import collapse
from pmc.methods.base import RunContext
from pmc.optimisation import TrainingConfig
from pmc.pipeline import (
    eval_context,
    load_benchmark,
    load_stage0,
    prepare_generation,
    prompt_format,
    seed_everything,
)
from pmc.trainer import unlearn


def run_mode(cfg, stage0, benchmark, fmt, rows_at_once: int, mode: str) -> dict:
    seed_everything(cfg.seed)
    method = instantiate(cfg.method.handler, sample_every=mode)
    model = copy.deepcopy(stage0.target)
    run = RunContext(model, stage0.tokenizer, fmt, benchmark, cfg.generation.max_new_tokens,
                     method_batch_size(cfg, rows_at_once, method))
    calls = 0
    sample = collapse.generate_answers

    def counted_sample(*args, **kwargs):
        nonlocal calls
        calls += 1
        return sample(*args, **kwargs)

    training = TrainingConfig(**cfg.method.training)
    start = time.perf_counter()
    collapse.generate_answers = counted_sample
    try:
        parts = unlearn(method, run, training, cfg.seed)
    finally:
        collapse.generate_answers = sample
    epoch_s = (time.perf_counter() - start - parts["setup"]) / training.epochs  # without the initial answers
    ctx = eval_context(cfg, stage0.tokenizer, fmt, benchmark, rows_at_once)
    scores = PaperSuite().score_model(model, ctx, mode).summary
    return {"mode": mode, "device": str(next(model.parameters()).device), "epoch_s": epoch_s,
            "calls": calls, "sampled": method.sampled_answers, "score": method.cache.mean_score(),
            "unlearn_quality": scores["unlearn_quality"], "utility": scores["utility"]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".cache/pmc", help="stage-0 checkpoints (built if absent)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--modes", default="batch,epoch", help="comma-separated sample_every values to run "
                                                                 "(batch, step, epoch)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. device=cuda")
    args = parser.parse_intermixed_args(argv)  # options may follow the overrides (gpu_check.sh)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        # --epochs last: an experiment or override setting method.training.epochs does not change it unseen
        cfg = compose("config", overrides=[f"cache_dir={args.cache_dir}", *args.overrides,
                                           f"method.training.epochs={args.epochs}"])
    benchmark = load_benchmark(cfg, {})
    fmt = prompt_format(cfg, benchmark)
    start = time.perf_counter()
    stage0 = load_stage0(cfg, benchmark, fmt, {})
    rows_at_once = prepare_generation(cfg, [stage0.target], stage0.tokenizer, fmt, benchmark)
    h = cfg.method.handler
    print(f"stage 0: {'built ' + ', '.join(stage0.built) if stage0.built else 'from cache'} in "
          f"{time.perf_counter() - start:.1f} s; {len(benchmark.forget)} forget questions, "
          f"{args.epochs} epochs, micro-batch {cfg.method.training.batch_size} x "
          f"{cfg.method.training.gradient_accumulation_steps} a step; n={h.num_samples} T={h.temperature} "
          f"top_p={h.top_p} top_k={h.top_k} max_length={h.max_length} max_new_tokens={h.max_new_tokens}")

    rows = [run_mode(cfg, stage0, benchmark, fmt, rows_at_once, mode) for mode in args.modes.split(",")]
    print("\n| sample_every | device | s / epoch | sampling calls | sampled answers | final mean selected score "
          "| unlearn quality | utility |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['device']} | {r['epoch_s']:.2f} | {r['calls']} | {r['sampled']} | {r['score']:.3f} "
              f"| {r['unlearn_quality']:.2f} | {r['utility']:.2f} |")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
