"""Forget targets that replace each forget answer by a random "I don't know" refusal (IDK-NLL, IdkDPO, FLAT).

The refusals come with the benchmark (TOFU's idontknow.jsonl; the synthetic benchmark's own list). A fresh refusal
is drawn per question and epoch from a seeded generator, as TOFU's IDK data loader does per example.
"""

from __future__ import annotations

import random

from pmc.errors import ConfigError
from pmc.method import ForgetExample, RunContext


class RefusalTargets:
    """Mixin: forget examples (question, refusal), paired with (question, forget answer) when the loss compares
    the two (`compare_with_forget_answer`)."""

    compare_with_forget_answer = False

    def _init_refusals(self, seed: int) -> None:
        self.refusal_rng = random.Random(seed)

    def forget_examples(self, run: RunContext) -> list[ForgetExample]:
        refusals = run.benchmark.idk_answers
        if not refusals:
            raise ConfigError(
                f"method {self.name!r} needs 'I don't know' answers, but benchmark {run.benchmark.name!r} has none "
                "(TOFU: idontknow.jsonl in benchmark.data_dir)"
            )
        return [
            ForgetExample(r.question, self.refusal_rng.choice(refusals),
                          (r.question, r.answer) if self.compare_with_forget_answer else None)
            for r in run.benchmark.forget
        ]
