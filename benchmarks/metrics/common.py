"""Types shared by the metric suites."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from pmc.core.generation import greedy_answers
from pmc.core.records import QABenchmark


@dataclass
class EvalContext:
    """What every suite needs besides the models.

    One context scores one fixed set of models: greedy answers are remembered per (model, questions), so suites
    asking the same questions (paper and tofu both score the plain forget/retain/utility questions) decode once.
    Build a fresh context if a model's weights change.

    `settings` carries per-suite options from the run config, keyed by suite name (a suite reads only its own
    entry and falls back to its module defaults for anything missing).
    """

    tokenizer: object
    prompt_format: object  # pmc.core.prompts.PromptFormat
    benchmark: QABenchmark
    max_new_tokens: int
    batch_size: int
    max_length: int | None = None  # token budget of a scored question+answer; None: the model's context size
    settings: dict = field(default_factory=dict)  # suite name -> that suite's settings, e.g. {"analyses": {...}}
    _answers: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def greedy_answers(self, model, questions: list[str], desc: str | None = None) -> list[str]:
        """Greedy answers (max_new_tokens, batch_size rows at a time), decoded once per model and question list."""
        key = (id(model), tuple(questions))
        hit = self._answers.get(key)
        if hit is None or hit[0] is not model:  # the model is kept in the entry, so its id cannot be reused
            answers = greedy_answers(model, self.tokenizer, self.prompt_format, list(questions),
                                     max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, desc=desc)
            hit = self._answers[key] = (model, answers)
        return list(hit[1])


@dataclass(frozen=True)
class Column:
    """A summary metric a suite declares for result tables and figures (pmc.reporting reads these, not its own
    lists): results.json's metrics[model][suite][key], shown under `title`, plotted with `axis_label`."""

    suite: str
    key: str
    title: str
    axis_label: str
    digits: int = 2
    log_scale: bool = False  # symlog axes: e.g. a KS-test p-value can be exactly 0


@dataclass
class SuiteResult:
    summary: dict[str, float]
    examples: dict[str, list[dict]] = field(default_factory=dict)  # split -> one dict per example


def to_score(models: dict, known: Mapping[str, SuiteResult] | None) -> dict:
    """The models a suite still has to score: those without a result in `known`."""
    return {name: model for name, model in models.items() if name not in (known or {})}
