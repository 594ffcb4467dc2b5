"""The PMC paper's metrics: ROUGE-L recall of greedy answers against the ground truth.

unlearn quality = 100 · (2 − R_forget − R_forget_paraphrased) / 2
utility         = 100 · mean(R_retain, R_world_facts, R_real_authors)

as the official code computes them (yascho/partial-model-collapse-unlearning, unlearning/experiment.py L60-67):

  forget_paraphrased  the paraphrased forget question scored against the *paraphrased answer* (official
                      unlearning/dataloader.py L40-50, modify_paraphrased_sample); a benchmark whose forget records
                      have no paraphrased answer is a DataError, never a silent fall-back to the original answer.
  retain              (retain_set=sampled, the default) `retain_samples` = 400 draws *with replacement* from the
                      retain split the unlearning trains against (TOFU forget10: retain90; an author subset: its
                      retain authors), indices `numpy.random.default_rng(retain_seed).integers(0, n, size=400)`
                      with retain_seed = 12345 (official unlearning/dataloader.py L32-38, "retain_short"). The
                      official code draws only when the split has more than 400 records (L32); a smaller split
                      (CPU-scale subsets, the synthetic benchmark) is used whole, in order.
                      retain_set=retain_perturbed: the benchmark's retain evaluation set instead (TOFU:
                      retain_perturbed.json, what the `tofu` suite scores), the harness's earlier choice.

Settings: PaperSuite's fields, set in conf/eval/paper.yaml or on the command line, e.g.
`eval.paper.retain_set=retain_perturbed`. Per-example rows of the sampled retain split carry `index`, the drawn
position in the retain split.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

import numpy as np

from benchmarks.metrics.common import EvalContext, Suite, SuiteResult, to_score
from pmc.core.records import DataError, QARecord
from pmc.core.rouge import rouge_l_recall

RETAIN_SETS = ("sampled", "retain_perturbed")
# the suite's table columns and trade-off pair: PAPER_COLUMNS, PAPER_TRADE_OFF in benchmarks/metrics/columns.py


def unlearn_quality(r_forget: float, r_forget_paraphrased: float) -> float:
    return 100.0 * (2.0 - r_forget - r_forget_paraphrased) / 2.0


def utility(r_retain: float, r_world_facts: float, r_real_authors: float) -> float:
    return 100.0 * mean([r_retain, r_world_facts, r_real_authors])


def sampled_retain_indices(num_records: int, samples: int = 400, seed: int = 12345) -> list[int]:
    """Positions in the retain split that utility scores: `samples` draws with replacement when the split is
    larger (official unlearning/dataloader.py L32-37: `if len(dataset) > 400`, `rng.integers(low=0,
    high=len(dataset), size=400)`, `dataset.select(rints)`), else every position in order."""
    if num_records > samples:
        return np.random.default_rng(seed).integers(low=0, high=num_records, size=samples).tolist()
    return list(range(num_records))


def _retain_split(ctx: EvalContext, settings: PaperSuite) -> list[tuple[QARecord, int | None]]:
    """(record, its index in the retain split, or None for the retain evaluation set) for utility's retain term."""
    name = ctx.benchmark.name
    if settings.retain_set == "retain_perturbed":
        records = ctx.benchmark.eval_sets.get("retain")
        if not records:
            raise DataError(f"benchmark {name!r} has no retain evaluation set for eval.paper."
                            "retain_set=retain_perturbed")
        return [(r, None) for r in records]
    split = ctx.benchmark.retain
    if not split:
        raise DataError(f"benchmark {name!r} has no retain split to draw utility's retain questions from "
                        "(eval.paper.retain_set=sampled)")
    indices = sampled_retain_indices(len(split), settings.retain_samples, settings.retain_seed)
    return [(split[i], i) for i in indices]


def _splits(ctx: EvalContext, settings: PaperSuite) -> dict[str, list[tuple[str, str, int | None]]]:
    """(question, reference answer, retain-split index or None) per split."""
    sets, name = ctx.benchmark.eval_sets, ctx.benchmark.name
    missing = [s for s in ("forget", "world_facts", "real_authors") if not sets.get(s)]
    if missing:
        raise DataError(f"benchmark {name!r} has no evaluation records for {missing}")
    if any(r.paraphrased_question is None or r.paraphrased_answer is None for r in sets["forget"]):
        raise DataError(f"benchmark {name!r}, split 'forget_paraphrased': every forget record needs a "
                        "paraphrased_question and a paraphrased_answer (the paper scores the reworded question "
                        "against the reworded answer)")
    plain = lambda records: [(r.question, r.answer, None) for r in records]
    return {
        "forget": plain(sets["forget"]),
        "retain": [(r.question, r.answer, index) for r, index in _retain_split(ctx, settings)],
        "world_facts": plain(sets["world_facts"]),
        "real_authors": plain(sets["real_authors"]),
        # official unlearning/dataloader.py L47-50: question <- paraphrased_question, answer <- paraphrased_answer
        "forget_paraphrased": [(r.paraphrased_question, r.paraphrased_answer, None) for r in sets["forget"]],
    }


@dataclass
class PaperSuite(Suite):
    """`eval=[paper]`: unlearn quality and utility of every model, each on its own."""

    name = "paper"
    retain_set: str = "sampled"  # sampled | retain_perturbed
    retain_samples: int = 400  # official unlearning/dataloader.py L32, L36: size=400
    retain_seed: int = 12345  # official unlearning/dataloader.py L35: np.random.default_rng(12345)

    def __post_init__(self) -> None:
        if self.retain_set not in RETAIN_SETS:
            raise self.invalid("retain_set", self.retain_set, f"one of {list(RETAIN_SETS)}")
        for key, low in (("retain_samples", 1), ("retain_seed", 0)):
            if getattr(self, key) < low:
                raise self.invalid(key, getattr(self, key), f"an integer >= {low}")

    def greedy_questions(self, ctx: EvalContext) -> dict[str, list[str]]:
        return {split: [q for q, _, _ in triples] for split, triples in _splits(ctx, self).items()}

    def score_model(self, model, ctx: EvalContext, label: str = "") -> SuiteResult:
        examples, recall = {}, {}
        for split, triples in _splits(ctx, self).items():
            answers = ctx.greedy_answers(model, [q for q, _, _ in triples], desc=f"eval {label} {split}")
            rows = []
            for (q, a, index), g in zip(triples, answers):
                rows.append({"question": q, "answer": a, "generated": g, "rouge_l_recall": rouge_l_recall(a, g),
                             **({} if index is None else {"index": index})})
            examples[split] = rows
            recall[split] = mean(r["rouge_l_recall"] for r in rows)
        summary = {
            "unlearn_quality": unlearn_quality(recall["forget"], recall["forget_paraphrased"]),
            "utility": utility(recall["retain"], recall["world_facts"], recall["real_authors"]),
            **{f"rouge_{split}": value for split, value in recall.items()},
        }
        return SuiteResult(summary, examples)

    def evaluate(self, models: dict, ctx: EvalContext,
                 known: dict[str, SuiteResult] | None = None) -> dict[str, SuiteResult]:
        """Each model on its own; models with a result in `known` are skipped."""
        return {name: self.score_model(model, ctx, name) for name, model in to_score(models, known).items()}
