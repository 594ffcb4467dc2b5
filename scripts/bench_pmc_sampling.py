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
epochs), its ratio to GradDiff's (#10's target: at most 1.5; GradDiff's loss from conf/method/graddiff.yaml, trained
with the same training settings in the same run, its own row last; `--no-baseline` leaves it out), the sampling
(decoding) calls and the number of answers sampled, the final mean selected score (mean ROUGE-L recall of the
cached answers against the initial ones) and unlearn quality. The first line names the device.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from benchmarks.metrics.paper import PaperSuite
from pmc import CONF_DIR
from pmc.core.generation import GenerationSizes
from pmc.experiment import method_batch_size
from pmc.methods import collapse
from pmc.methods.base import RunContext
from pmc.optimisation import TrainingConfig
from pmc.pipeline import (
    configure_kernels,
    device_name,
    eval_context,
    load_benchmark,
    load_stage0,
    prepare_generation,
    prompt_format,
    seed_everything,
)
from pmc.trainer import unlearn


def unlearned_once(cfg, stage0, benchmark, fmt, sizes: GenerationSizes, method, label: str) -> dict:
    """A copy of the target unlearned with `method` (the run re-seeded, cfg's training settings) and scored."""
    seed_everything(cfg.seed)
    model = copy.deepcopy(stage0.target)
    run = RunContext(model, stage0.tokenizer, fmt, benchmark, cfg.generation.max_new_tokens,
                     method_batch_size(cfg, sizes.unlearning.decoding, method),
                     scoring_batch_size=sizes.unlearning.scoring)
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
    epoch_s = (time.perf_counter() - start - parts["setup"]) / training.epochs  # without PMC's initial answers
    ctx = eval_context(cfg, stage0.tokenizer, fmt, benchmark, sizes.evaluation)
    scores = PaperSuite().score_model(model, ctx, label).summary
    pmc = isinstance(method, collapse.PartialModelCollapse)
    return {"mode": label, "device": str(next(model.parameters()).device), "epoch_s": epoch_s, "calls": calls,
            "sampled": method.sampled_answers if pmc else None, "score": method.cache.mean_score() if pmc else None,
            "unlearn_quality": scores["unlearn_quality"], "utility": scores["utility"]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".cache/pmc", help="stage-0 checkpoints (built if absent)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--modes", default="batch,epoch", help="comma-separated sample_every values to run "
                                                                 "(batch, step, epoch)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="leave out GradDiff with the same training settings (the ratio's baseline)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. device=cuda")
    args = parser.parse_intermixed_args(argv)  # options may follow the overrides (gpu_check.sh)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        # --epochs last: an experiment or override setting method.training.epochs does not change it unseen
        cfg = compose("config", overrides=[f"cache_dir={args.cache_dir}", *args.overrides,
                                           f"method.training.epochs={args.epochs}"])
        # GradDiff's loss as conf/method/graddiff.yaml sets it; it trains with cfg's training settings, as PMC does
        baseline = compose("config", overrides=["method=graddiff"]).method.handler
    configure_kernels(cfg)  # as a job: TF32 on a GPU, compiled code kept in compile_cache_dir
    benchmark = load_benchmark(cfg, {})
    fmt = prompt_format(cfg, benchmark)
    start = time.perf_counter()
    stage0 = load_stage0(cfg, benchmark, fmt, {})
    sizes = prepare_generation(cfg, [stage0.target], stage0.tokenizer, fmt, benchmark)
    h = cfg.method.handler
    device = next(stage0.target.parameters()).device
    print(f"device: {device_name(device)} [{device.type}]; torch {torch.__version__}")
    print(f"stage 0: {'built ' + ', '.join(stage0.built) if stage0.built else 'from cache'} in "
          f"{time.perf_counter() - start:.1f} s; {len(benchmark.forget)} forget questions, "
          f"{args.epochs} epochs, micro-batch {cfg.method.training.batch_size} x "
          f"{cfg.method.training.gradient_accumulation_steps} a step; n={h.num_samples} T={h.temperature} "
          f"top_p={h.top_p} top_k={h.top_k} max_length={h.max_length} max_new_tokens={h.max_new_tokens}")

    rows = [unlearned_once(cfg, stage0, benchmark, fmt, sizes,
                           instantiate(cfg.method.handler, sample_every=mode), mode)
            for mode in args.modes.split(",")]
    reference = None if args.no_baseline else unlearned_once(cfg, stage0, benchmark, fmt, sizes,
                                                             instantiate(baseline), "graddiff")
    print("\n| sample_every | device | s / epoch | PMC / GradDiff | sampling calls | sampled answers "
          "| final mean selected score | unlearn quality | utility |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['epoch_s'] / reference['epoch_s']:.2f}" if reference else "-"
        print(f"| {r['mode']} | {r['device']} | {r['epoch_s']:.2f} | {ratio} | {r['calls']} | {r['sampled']} "
              f"| {r['score']:.3f} | {r['unlearn_quality']:.2f} | {r['utility']:.2f} |")
    if reference:
        print(f"| GradDiff, the same training settings | {reference['device']} | {reference['epoch_s']:.2f} | 1.00 "
              f"| 0 | - | - | {reference['unlearn_quality']:.2f} | {reference['utility']:.2f} |")
    return rows + ([reference] if reference else [])


if __name__ == "__main__":
    main(sys.argv[1:])
