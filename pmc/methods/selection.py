"""PMC's choice among sampled answers, free of models so it can be checked by hand.

A candidate's score is its ROUGE-L recall against the model's own answer from before unlearning (lower = further
from what is to be forgotten), plus an optional penalty for answers shorter than `min_length` words, which keeps
collapse from settling on empty or one-word answers.
"""

from __future__ import annotations

import math
import random

from pmc.core.errors import ConfigError

SELECTION_RULES = ("argmin", "bradley_terry")


LENGTH_PENALTIES = ("exp",)  # or a non-negative number: a constant added to short answers' scores


def word_count(answer: str) -> int:
    """Words as the official reward counts them: `answer.strip().split(" ")`, so an empty answer is one word and a run
    of spaces adds empty words (official PMC: unlearning/pmc.py L140)."""
    return len(answer.strip().split(" "))


def check_length_penalty(length_penalty) -> None:
    """`exp` or a finite number >= 0; anything else is a ConfigError (a string typo must not become a constant)."""
    is_number = isinstance(length_penalty, (int, float)) and not isinstance(length_penalty, bool)
    if length_penalty not in LENGTH_PENALTIES and not (is_number and 0 <= length_penalty < math.inf):
        raise ConfigError(f"method.handler.length_penalty must be 'exp' or a number >= 0, got {length_penalty!r}")


def penalised_score(rouge_recall: float, answer: str, min_length: int, length_penalty="exp") -> float:
    """ROUGE recall, plus a penalty when the answer has fewer than min_length words (min_length 0: no penalty).

    `exp` (the official reward, unlearning/pmc.py L136-143): add exp(-#words) and cap the sum at 1, so an empty
    answer (1 word) scores at least e^-1 and a penalised answer never scores above a full overlap. A number c: add
    c, uncapped (a harness option for ablations)."""
    if min_length == 0:
        return rouge_recall
    words = word_count(answer)
    if words >= min_length:
        return rouge_recall
    if length_penalty == "exp":
        return min(rouge_recall + math.exp(-words), 1.0)
    return rouge_recall + length_penalty


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
    in training). A new choice replaces the cached answer unless it scores higher: on a tie the newer answer wins,
    as in the official code (unlearning/pmc.py L51-58: the old answer is kept only if the new score is higher).
    """

    def __init__(self, size: int):
        self.answers: list[str | None] = [None] * size
        self.scores: list[float] = [math.inf] * size

    def pending(self) -> list[int]:
        """Questions still worth sampling for: never sampled, or cached score above 0."""
        return [i for i, s in enumerate(self.scores) if s > 0]

    def offer(self, index: int, answer: str, score: float) -> bool:
        """Keep `answer` for question `index` unless the cached one scores lower; True when it was kept."""
        if score <= self.scores[index]:  # official PMC: unlearning/pmc.py L51-53 (ties replace the cached answer)
            self.answers[index], self.scores[index] = answer, score
            return True
        return False

    def mean_score(self) -> float:
        """Mean cached score over the questions sampled so far (NaN before any): how far collapse has got. With
        per-micro-batch sampling some questions are still unsampled during the first epoch."""
        sampled = [s for s in self.scores if s != math.inf]
        return sum(sampled) / len(sampled) if sampled else math.nan
