"""Time ROUGE-L recall as PMC scores its samples: the harness's (`pmc.core.rouge`, each distinct word stemmed once)
against rouge-score's own scorer, on TOFU's forget10 questions, with the same scores.

    python scripts/bench_rouge.py --data-dir DIR      # a folder of TOFU's JSON-lines files (locuslab/TOFU's)

PMC scores n samples per forget question, at each sampling, against the model's initial answer. Here each forget10
question's five perturbed answers stand for the samples and its answer for the initial answer (400 x 5 = 2000
scores a pass), and each scorer makes --passes passes (the harness's memo of stemmed words fills in the first,
as in the first epoch of a run). It prints seconds per pass of 2000 scores for both, their ratio and the device
(the CPU's model: ROUGE runs on the host whatever device decodes).
"""

from __future__ import annotations

import argparse
import time

from rouge_score import rouge_scorer

from benchmarks.tofu import load_tofu
from pmc.core.rouge import rouge_l_recall
from pmc.pipeline import cpu_model


def timed_passes(score, pairs: list[tuple[str, str]], passes: int) -> tuple[list[float], list[float]]:
    """(the seconds of each pass, the scores of the last)."""
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        scores = [score(reference, candidate) for reference, candidate in pairs]
        seconds.append(time.perf_counter() - start)
    return seconds, scores


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="TOFU's JSON-lines files")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    forget = load_tofu("forget10", args.data_dir).eval_sets["forget"]
    pairs = [(r.answer, candidate) for r in forget for candidate in r.perturbed_answer]
    reference = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    theirs, their_scores = timed_passes(lambda a, b: reference.score(a, b)["rougeL"].recall, pairs, args.passes)
    ours, our_scores = timed_passes(rouge_l_recall, pairs, args.passes)
    if our_scores != their_scores:
        raise SystemExit("error: the harness's ROUGE-L recall differs from rouge-score's")
    mean = lambda xs: sum(xs) / len(xs)
    print(f"device: {cpu_model()} (ROUGE runs on the host); {len(pairs)} scores per pass, {args.passes} passes; "
          "the same scores: True")
    print("| scorer | first pass (s) | mean pass (s) |")
    print("|---|---:|---:|")
    print(f"| rouge-score's RougeScorer(use_stemmer=True) | {theirs[0]:.3f} | {mean(theirs):.3f} |")
    print(f"| the harness's (each distinct word stemmed once) | {ours[0]:.3f} | {mean(ours):.3f} |")
    print(f"rouge-score / harness: {mean(theirs) / mean(ours):.2f} (first pass {theirs[0] / ours[0]:.2f})")
    return {"pairs": len(pairs), "rouge_score_s": theirs, "harness_s": ours}


if __name__ == "__main__":
    main()
