"""PMC's choice among sampled answers, free of models so it can be checked by hand.

A candidate's score is its ROUGE-L recall against the model's own answer from before unlearning (lower = further
from what is to be forgotten), plus an optional penalty for answers shorter than `min_length` words, which keeps
collapse from settling on empty or one-word answers.
"""

from __future__ import annotations

import math
import random

from pmc.errors import ConfigError

SELECTION_RULES = ("argmin", "bradley_terry")


def penalised_score(rouge_recall: float, answer: str, min_length: int, length_penalty: float) -> float:
    """ROUGE recall, plus length_penalty when the answer has fewer than min_length whitespace-separated words."""
    return rouge_recall + (length_penalty if len(answer.split()) < min_length else 0.0)


def select(scores: list[float], rule: str, tau: float, rng: random.Random) -> int:
    """Index of the chosen candidate: the lowest score (argmin, first on ties), or a draw from the Bradley–Terry
    distribution softmax((1 - score) / tau), which favours low scores but keeps some diversity."""
    if rule == "argmin":
        return min(range(len(scores)), key=lambda i: scores[i])
    if rule == "bradley_terry":
        return rng.choices(range(len(scores)), weights=bradley_terry_weights(scores, tau))[0]
    raise ConfigError(f"method.handler.selection must be one of {SELECTION_RULES}, got {rule!r}")


def bradley_terry_weights(scores: list[float], tau: float) -> list[float]:
    if tau <= 0:
        raise ConfigError(f"method.handler.bt_temperature must be > 0, got {tau}")
    logits = [(1.0 - s) / tau for s in scores]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


class BestSoFarCache:
    """Per forget question, the lowest-scoring answer seen so far.

    A question whose cached score is 0 cannot improve, so it is not resampled (saves most of the sampling cost late
    in training). A new choice replaces the cached answer only if it scores strictly lower.
    """

    def __init__(self, size: int):
        self.answers: list[str | None] = [None] * size
        self.scores: list[float] = [math.inf] * size

    def pending(self) -> list[int]:
        """Questions still worth sampling for: never sampled, or cached score above 0."""
        return [i for i, s in enumerate(self.scores) if s > 0]

    def offer(self, index: int, answer: str, score: float) -> bool:
        """Keep `answer` for question `index` if it beats the cached one; True when it did."""
        if score < self.scores[index]:
            self.answers[index], self.scores[index] = answer, score
            return True
        return False

    def mean_score(self) -> float:
        return sum(self.scores) / len(self.scores)
