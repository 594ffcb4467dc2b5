"""The PMC paper's metrics: ROUGE-L recall of greedy answers against the ground truth.

unlearn quality = 100 · (2 − R_forget − R_forget_paraphrased) / 2   (paraphrased = the forget questions reworded)
utility         = 100 · mean(R_retain, R_world_facts, R_real_authors)
"""

from __future__ import annotations

from statistics import mean

from benchmarks.metrics.common import EvalContext, SuiteResult, to_score
from benchmarks.records import DataError
from pmc.rouge import rouge_l_recall


def unlearn_quality(r_forget: float, r_forget_paraphrased: float) -> float:
    return 100.0 * (2.0 - r_forget - r_forget_paraphrased) / 2.0


def utility(r_retain: float, r_world_facts: float, r_real_authors: float) -> float:
    return 100.0 * mean([r_retain, r_world_facts, r_real_authors])


def _splits(ctx: EvalContext) -> dict[str, list[tuple[str, str]]]:
    """(question, reference answer) per split; the paraphrased split asks the forget questions reworded."""
    sets = ctx.benchmark.eval_sets
    missing = [name for name in ("forget", "retain", "world_facts", "real_authors") if not sets.get(name)]
    if missing:
        raise DataError(f"benchmark {ctx.benchmark.name!r} has no evaluation records for {missing}")
    if any(r.paraphrased_question is None for r in sets["forget"]):
        raise DataError(f"benchmark {ctx.benchmark.name!r}: every forget record needs a paraphrased_question")
    splits = {name: [(r.question, r.answer) for r in sets[name]] for name in ("forget", "retain", "world_facts",
                                                                             "real_authors")}
    splits["forget_paraphrased"] = [(r.paraphrased_question, r.answer) for r in sets["forget"]]
    return splits


def score_model(model, ctx: EvalContext, label: str = "") -> SuiteResult:
    examples, recall = {}, {}
    for split, pairs in _splits(ctx).items():
        answers = ctx.greedy_answers(model, [q for q, _ in pairs], desc=f"eval {label} {split}")
        rows = [{"question": q, "answer": a, "generated": g, "rouge_l_recall": rouge_l_recall(a, g)}
                for (q, a), g in zip(pairs, answers)]
        examples[split] = rows
        recall[split] = mean(r["rouge_l_recall"] for r in rows)
    summary = {
        "unlearn_quality": unlearn_quality(recall["forget"], recall["forget_paraphrased"]),
        "utility": utility(recall["retain"], recall["world_facts"], recall["real_authors"]),
        **{f"rouge_{split}": value for split, value in recall.items()},
    }
    return SuiteResult(summary, examples)


def evaluate(models: dict, ctx: EvalContext, known: dict[str, SuiteResult] | None = None) -> dict[str, SuiteResult]:
    """Each model on its own; models with a result in `known` are skipped."""
    return {name: score_model(model, ctx, name) for name, model in to_score(models, known).items()}
