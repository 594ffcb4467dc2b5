"""The least-likely multiple-choice attack: the attacker picks the option the model finds least likely, which gives
the true answer away when unlearning left it conspicuously unlikely (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Sequence

import numpy as np

from benchmarks.metrics.common import EvalContext
from benchmarks.metrics.scoring import answer_logprobs
from pmc.core.errors import ConfigError
from pmc.core.records import QARecord

TRUE_OPTIONS = ("paraphrased", "answer")


@dataclass
class AttackSettings:
    true_option: str = "paraphrased"  # paraphrased (where the record has one) | answer

    def __post_init__(self) -> None:
        if self.true_option not in TRUE_OPTIONS:
            raise ConfigError(f"eval.analyses.attack.true_option must be one of {list(TRUE_OPTIONS)}, "
                              f"got {self.true_option!r}")


def least_likely_credit(logprobs: Sequence[float], true_index: int = 0) -> float:
    """1 when the option with the lowest score is the true one, 1/#tied when it ties with others at the minimum."""
    low = min(logprobs)
    tied = [i for i, v in enumerate(logprobs) if v == low]
    return 1.0 / len(tied) if true_index in tied else 0.0


def true_option(record: QARecord, which: str = "paraphrased") -> str:
    """The correct option of the multiple choice: the paraphrased answer when asked for and present."""
    return record.paraphrased_answer if which == "paraphrased" and record.paraphrased_answer else record.answer


def least_likely(model, ctx: EvalContext, records: list[QARecord],
                 which: str = "paraphrased") -> tuple[dict, list[dict]]:
    """Per question, the options scored by length-normalised answer log-probability (as TOFU scores answers)."""
    options = [(r.question, [true_option(r, which), *r.perturbed_answer]) for r in records]
    pairs = list(dict.fromkeys((q, a) for q, answers in options for a in answers))
    logprob = answer_logprobs(model, ctx, pairs)  # those TOFU's truth ratio scored already are not scored again
    rows = []
    for q, answers in options:
        scores = [logprob[(q, a)] for a in answers]
        rows.append({"question": q, "options": answers, "logprobs": scores,
                     "pick": int(np.argmin(scores)), "credit": least_likely_credit(scores),
                     "chance": 1.0 / len(answers)})
    return ({"least_likely_attack_rate": mean(r["credit"] for r in rows),
             "least_likely_chance": mean(r["chance"] for r in rows)}, rows)
