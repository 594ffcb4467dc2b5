"""Response quality of the greedy answers to the forget questions: empty rate, length, distinct-word ratio and
fluency under the retain model (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

from benchmarks.metrics.analyses.collateral import word_count
from benchmarks.metrics.common import EvalContext, mean_or_nan
from benchmarks.metrics.scoring import answer_logprobs
from pmc.core.errors import ConfigError
from pmc.core.records import QARecord


@dataclass
class QualitySettings:
    empty_nll: float | None = None  # null: empty answers are left out of the fluency mean

    def __post_init__(self) -> None:
        if self.empty_nll is not None and self.empty_nll < 0:
            raise ConfigError(f"eval.analyses.quality.empty_nll must be null or a non-negative number, "
                              f"got {self.empty_nll!r}")


def distinct_ratio(text: str) -> float | None:
    """Unique / total lower-cased words; None for an empty answer."""
    words = text.lower().split()
    return len(set(words)) / len(words) if words else None


def quality(model, retain, ctx: EvalContext, records: list[QARecord], q: QualitySettings,
            label: str) -> tuple[dict, list[dict]]:
    """The model's greedy answers (the memo shared with the other suites), each non-empty one scored by the retain
    model: per-token NLL of the answer, end-of-sequence included, as TOFU scores answers."""
    questions = [r.question for r in records]
    answers = ctx.greedy_answers(model, questions, desc=f"eval {label} forget")
    scored = [(question, a) for question, a in zip(questions, answers) if a.strip()]
    nll = {pair: -v for pair, v in answer_logprobs(retain, ctx, scored).items()}
    rows = []
    for r, a in zip(records, answers):
        empty = not a.strip()
        rows.append({"question": r.question, "answer": r.answer, "generated": a, "empty": empty,
                     "words": word_count(a), "distinct_ratio": distinct_ratio(a),
                     "retain_nll": None if empty else nll[(r.question, a)]})
    fluency = [r["retain_nll"] if not r["empty"] else q.empty_nll for r in rows]
    return ({"empty_rate": mean(float(r["empty"]) for r in rows),
             "answer_length": mean(r["words"] for r in rows),
             "distinct_ratio": mean_or_nan(r["distinct_ratio"] for r in rows if not r["empty"]),
             "fluency_nll": mean_or_nan(float(v) for v in fluency if v is not None)}, rows)
