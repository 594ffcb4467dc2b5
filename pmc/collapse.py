"""Partial Model Collapse (Scholten et al., ICLR 2026): unlearning without ever training on the forget answers.

Before training, the model's own greedy answer to each forget question is recorded. Every epoch, for each forget
question whose best answer still overlaps that initial answer, n answers are sampled from the *current* model and
scored by ROUGE-L recall against it; the lowest-scoring one (best-so-far, see `selection.BestSoFarCache`) becomes the
training target. The loss is NLL(selected answer | q) + λ·NLL(retain answer | retain q) on answer tokens only:
the model collapses onto its own answers that do not reveal the forget information.
"""

from __future__ import annotations

import random

import torch

from pmc.generation import generate_answers, greedy_answers
from pmc.losses import answer_nll
from pmc.method import ForgetExample, RetainRegularised, RunContext
from pmc.rouge import rouge_l_recall
from pmc.selection import SELECTION_RULES, BestSoFarCache, penalised_score, select
from pmc.checkpoint import rng_state, set_rng_state
from pmc.errors import ConfigError


class PartialModelCollapse(RetainRegularised):
    name = "pmc"
    forget_term = "collapse_loss"

    def __init__(
        self,
        num_samples: int = 5,
        temperature: float = 1.25,
        top_p: float = 0.95,
        max_new_tokens: int | None = None,
        retain_weight: float = 1.5,
        selection: str = "argmin",
        bt_temperature: float = 0.1,
        min_length: int = 0,
        length_penalty: float = 0.0,
        seed: int = 0,
    ):
        if num_samples < 1 or temperature <= 0 or not 0 < top_p <= 1:
            raise ConfigError(
                f"PMC needs num_samples >= 1, temperature > 0, 0 < top_p <= 1; got {num_samples}, {temperature}, {top_p}"
            )
        if selection not in SELECTION_RULES:
            raise ConfigError(f"method.handler.selection must be one of {SELECTION_RULES}, got {selection!r}")
        if selection == "bradley_terry" and not bt_temperature > 0:
            raise ConfigError(f"method.handler.bt_temperature must be > 0, got {bt_temperature}")
        super().__init__(forget_weight=1.0, retain_weight=retain_weight)
        self.num_samples, self.temperature, self.top_p = num_samples, temperature, top_p
        self.max_new_tokens = max_new_tokens
        self.selection, self.bt_temperature = selection, bt_temperature
        self.min_length, self.length_penalty = min_length, length_penalty
        self.rng = random.Random(seed)
        self.initial_answers: list[str] = []
        self.cache: BestSoFarCache | None = None

    def _max_new_tokens(self, run: RunContext) -> int:
        return self.max_new_tokens or run.max_new_tokens

    def setup(self, run: RunContext) -> None:
        super().setup(run)
        questions = [r.question for r in run.benchmark.forget]
        self.initial_answers = greedy_answers(
            run.model, run.tokenizer, run.prompt_format, questions,
            max_new_tokens=self._max_new_tokens(run), batch_size=run.generation_batch_size, desc="pmc: initial answers",
        )
        self.cache = BestSoFarCache(len(questions))

    def on_epoch_start(self, run: RunContext) -> None:
        pending = self.cache.pending()
        if not pending:
            return
        questions = [run.benchmark.forget[i].question for i in pending]
        samples = generate_answers(
            run.model, run.tokenizer, run.prompt_format, questions,
            max_new_tokens=self._max_new_tokens(run), batch_size=run.generation_batch_size,
            num_samples=self.num_samples, temperature=self.temperature, top_p=self.top_p,
            desc=f"pmc: sampling epoch {run.epoch + 1}",
        )
        for index, candidates in zip(pending, samples):
            scores = [
                penalised_score(rouge_l_recall(self.initial_answers[index], c), c, self.min_length, self.length_penalty)
                for c in candidates
            ]
            chosen = select(scores, self.selection, self.bt_temperature, self.rng)
            self.cache.offer(index, candidates[chosen], scores[chosen])

    def forget_examples(self, run: RunContext) -> list[ForgetExample]:
        return [ForgetExample(r.question, a) for r, a in zip(run.benchmark.forget, self.cache.answers)]

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """NLL of the selected answers; the mean cached score shows how far collapse has got."""
        return answer_nll(model, forget), {"selected_score": torch.tensor(self.cache.mean_score())}

    def state_dict(self) -> dict:
        """Initial answers, the best-so-far cache and the selection RNG: what later epochs sample and train from."""
        return {"initial_answers": self.initial_answers, "answers": self.cache.answers, "scores": self.cache.scores,
                "rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.initial_answers = list(state["initial_answers"])
        self.cache.answers, self.cache.scores = list(state["answers"]), [float(s) for s in state["scores"]]
        set_rng_state(self.rng, state["rng"])
