"""Forget targets that replace each forget answer by an "I don't know" refusal (IDK-NLL, IdkDPO, FLAT).

Two kinds (`method.handler.refusal`):
  fixed   the same `refusal_text` for every question, "I don't know." by default: the PMC paper's IDK baseline
          (official unlearning/dataloader.py L80-84). Needs nothing from the benchmark.
  random  a fresh refusal per question and epoch from the benchmark's list (TOFU's idontknow.jsonl; the synthetic
          benchmark's own list), drawn from a seeded generator, as TOFU's IDK data loader, open-unlearning's
          QAwithIdkDataset (src/data/qa.py L85-89, used by its IdkDPO) and FLAT's TextForgetDatasetCLQA
          (data_module.py L624-625) draw one per example.
"""

from __future__ import annotations

import random

from pmc.core.errors import ConfigError
from pmc.core.rng import rng_state, set_rng_state
from pmc.methods.base import ForgetExample, RunContext

REFUSALS = ("fixed", "random")
PMC_REFUSAL = "I don't know."  # official PMC unlearning/dataloader.py L84


class RefusalTargets:
    """Mixin: forget examples (question, refusal), paired with (question, forget answer) when the loss compares
    the two (`compare_with_forget_answer`)."""

    compare_with_forget_answer = False

    def _init_refusals(self, seed: int, refusal: str, refusal_text: str = PMC_REFUSAL) -> None:
        if refusal not in REFUSALS:
            raise ConfigError(f"method.handler.refusal must be one of {list(REFUSALS)}, got {refusal!r}")
        if not isinstance(refusal_text, str) or not refusal_text.strip():
            raise ConfigError(f"method.handler.refusal_text must be a non-empty string, got {refusal_text!r}")
        self.refusal, self.refusal_text = refusal, refusal_text
        self.refusal_rng = random.Random(seed)

    def _refusal_pool(self, run: RunContext) -> list[str]:
        if self.refusal == "fixed":
            return [self.refusal_text]
        if not run.benchmark.idk_answers:
            raise ConfigError(
                f"method {self.name!r} with refusal=random needs 'I don't know' answers, but benchmark "
                f"{run.benchmark.name!r} has none (TOFU: idontknow.jsonl in benchmark.data_dir); or use "
                "method.handler.refusal=fixed"
            )
        return run.benchmark.idk_answers

    def forget_examples(self, run: RunContext) -> list[ForgetExample]:
        refusals = self._refusal_pool(run)
        return [
            ForgetExample(r.question, self.refusal_rng.choice(refusals),
                          (r.question, r.answer) if self.compare_with_forget_answer else None)
            for r in run.benchmark.forget
        ]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "refusal_rng": rng_state(self.refusal_rng)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        set_rng_state(self.refusal_rng, state["refusal_rng"])
