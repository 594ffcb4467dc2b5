"""Time the TOFU metric suite on one model: batched (ctx.batch_size rows at a time) versus one example at a time.

    python scripts/bench_tofu_metrics.py                                  # ~1-3 min on 2 CPU cores
    python scripts/bench_tofu_metrics.py --cache-dir .cache/pmc-bench --batch-size 32 --model target
    python scripts/bench_tofu_metrics.py --full                           # the default config as is (slow on CPU)
    python scripts/bench_tofu_metrics.py benchmark.num_world_facts=30     # extra Hydra overrides go last

Stage 0 (the target and retain models) comes from `pmc.stage0.prepare_models` with the config composed from conf/
(shrunk, unless --full, to the 2-layer model the tests use, on a 6-author synthetic benchmark with 80 evaluation
questions), cached under --cache-dir so later runs only time the metrics. One model is then scored by
`tofu.score_model` (greedy answers, ROUGE, every answer log-probability: all the per-model work of the suite) with a
fresh EvalContext each time, so no generation is reused: with --batch-size, then with batch size 1, each the best of
--repeats runs after a warm-up. It prints questions per second for both, the log-prob part alone in (question,
answer) pairs per second, and the speed-ups.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.metrics import EvalContext, scoring, tofu
from pmc import CONF_DIR
from pmc.core.models import device_for
from pmc.core.prompts import PromptFormat
from pmc.stage0 import prepare_models

SMALL = [  # the test suite's tiny model, on a benchmark with a few more evaluation questions
    "model.architecture.vocab_size=512", "model.architecture.hidden_size=128", "model.architecture.num_layers=2",
    "model.architecture.intermediate_size=512", "model.pretrain.epochs=30", "model.pretrain.learning_rate=3e-3",
    "model.finetune.epochs=40", "model.finetune.learning_rate=3e-3",
    "benchmark.num_authors=6", "benchmark.forget_authors=1", "benchmark.retain_eval_authors=3",
    "benchmark.num_world_facts=20", "benchmark.num_real_authors=20",
]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".cache/pmc-bench", help="stage-0 checkpoints (built if absent)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=("target", "retain"), default="target")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--full", action="store_true", help="the composed default config, without shrinking it")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. device=cuda")
    args = parser.parse_intermixed_args(argv)  # options may follow the overrides (gpu_check.sh)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*([] if args.full else SMALL), *args.overrides])
    benchmark = instantiate(cfg.benchmark)
    fmt = PromptFormat(**cfg.model.prompt)
    device = device_for(cfg.device)
    (stage0, stage0_s) = timed(lambda: prepare_models(OmegaConf.to_container(cfg.model, resolve=True), benchmark, fmt,
                                                      args.cache_dir, cfg.stage0.seed, device))
    print(f"stage 0: {'built ' + ', '.join(stage0.built) if stage0.built else 'from cache'} in {stage0_s:.1f} s "
          f"({args.cache_dir}); device {device}, {torch.get_num_threads()} torch threads")
    model, tokenizer = getattr(stage0, args.model), stage0.tokenizer

    sets = tofu.eval_sets(EvalContext(tokenizer, fmt, benchmark, cfg.generation.max_new_tokens, 1))
    questions = sum(len(records) for records in sets.values())
    pairs = tofu.scored_pairs(sets)
    max_length = scoring.max_length_for(model, EvalContext(tokenizer, fmt, benchmark, 1, 1))
    print(f"model {args.model}: {questions} questions, {len(pairs)} (question, answer) pairs to score, "
          f"max_new_tokens {cfg.generation.max_new_tokens}")

    # warm-up (first-call set-up of generation, allocations, kernels), not timed
    scoring.answer_logprob_means(model, tokenizer, fmt, pairs[:8], 8, max_length)
    warm = EvalContext(tokenizer, fmt, benchmark, cfg.generation.max_new_tokens, 8)
    warm.greedy_answers(model, [question for question, _ in pairs[:8]])
    figures = {}
    for batch_size in (args.batch_size, 1):
        def suite(batch_size=batch_size):  # a fresh context each time, so no greedy answer is reused
            ctx = EvalContext(tokenizer, fmt, benchmark, cfg.generation.max_new_tokens, batch_size)
            return tofu.score_model(model, ctx, args.model)

        suite_s = min(timed(suite)[1] for _ in range(args.repeats))
        logprob_s = min(timed(lambda size=batch_size: scoring.answer_logprob_means(model, tokenizer, fmt, pairs, size,
                                                                                 max_length))[1]
                        for _ in range(args.repeats))
        figures[batch_size] = (questions / suite_s, len(pairs) / logprob_s)
        print(f"batch size {batch_size:>3}: suite {suite_s:6.2f} s = {questions / suite_s:7.1f} questions/s | "
              f"log-probs alone {logprob_s:6.2f} s = {len(pairs) / logprob_s:7.1f} pairs/s")
    batched, single = figures[args.batch_size], figures[1]
    print(f"speed-up batch {args.batch_size} vs 1: suite x{batched[0] / single[0]:.1f}, "
          f"log-probs x{batched[1] / single[1]:.1f}")
    return {"questions_per_s": {b: f[0] for b, f in figures.items()},
            "pairs_per_s": {b: f[1] for b, f in figures.items()}}


if __name__ == "__main__":
    main(sys.argv[1:])
