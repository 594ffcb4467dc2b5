"""Partial Model Collapse (Scholten et al., ICLR 2026): unlearning without ever training on the forget answers.

Before training, the model's own greedy answer to each forget question is recorded. Inside every micro-batch (the
official schedule; `sample_every=step`: once per optimizer step for all its micro-batches, the same weights;
`sample_every=epoch`: once per epoch for the whole forget set), each of its forget questions
whose best answer still overlaps that initial answer gets n answers sampled from the *current* model, scored by
ROUGE-L recall against it; the lowest-scoring one (best-so-far, see `selection.BestSoFarCache`) becomes the training
target. The loss is NLL(selected answer | q) + λ·NLL(retain answer | retain q) on answer tokens only: the model
collapses onto its own answers that do not reveal the forget information.
"""

from __future__ import annotations

import random
import time

import torch

from pmc.core.errors import ConfigError
from pmc.core.generation import DEFAULT_TOP_K, generate_answers, greedy_answers
from pmc.core.losses import answer_nll
from pmc.core.rng import rng_state, set_rng_state
from pmc.core.rouge import rouge_l_recall
from pmc.methods.base import ForgetExample, RetainRegularised, RunContext
from pmc.methods.selection import SELECTION_RULES, BestSoFarCache, check_length_penalty, penalised_score, select

SAMPLE_EVERY = ("batch", "step", "epoch")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PartialModelCollapse(RetainRegularised):
    name = "pmc"
    forget_term = "collapse_loss"

    def __init__(
        self,
        num_samples: int = 5,
        temperature: float = 1.25,
        top_p: float = 0.95,
        top_k: int = DEFAULT_TOP_K,
        max_length: int | None = None,
        max_new_tokens: int | None = None,
        sample_every: str = "batch",
        retain_weight: float = 1.5,
        selection: str = "argmin",
        bt_temperature: float = 0.1,
        min_length: int = 0,
        length_penalty: float | str = "exp",
        seed: int = 0,
    ):
        if num_samples < 1 or temperature <= 0 or not 0 < top_p <= 1:
            raise ConfigError(
                "PMC needs num_samples >= 1, temperature > 0, 0 < top_p <= 1; "
                f"got {num_samples}, {temperature}, {top_p}"
            )
        if not _is_int(top_k) or top_k < 0:
            raise ConfigError(f"method.handler.top_k must be an integer >= 0 (0 = no top-k), got {top_k!r}")
        if max_length is not None and max_new_tokens is not None:
            raise ConfigError("method.handler: set max_length (prompt + answer tokens) or max_new_tokens (answer "
                              f"tokens), not both; got {max_length} and {max_new_tokens}")
        for key, value in (("max_length", max_length), ("max_new_tokens", max_new_tokens)):
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigError(f"method.handler.{key} must be a positive integer or null, got {value!r}")
        if sample_every not in SAMPLE_EVERY:
            raise ConfigError(f"method.handler.sample_every must be one of {SAMPLE_EVERY}, got {sample_every!r}")
        if selection not in SELECTION_RULES:
            raise ConfigError(f"method.handler.selection must be one of {SELECTION_RULES}, got {selection!r}")
        if selection == "bradley_terry" and not bt_temperature > 0:
            raise ConfigError(f"method.handler.bt_temperature must be > 0, got {bt_temperature}")
        if not _is_int(min_length) or min_length < 0:
            raise ConfigError(f"method.handler.min_length must be an integer >= 0, got {min_length!r}")
        check_length_penalty(length_penalty)
        super().__init__(forget_weight=1.0, retain_weight=retain_weight)
        self.num_samples, self.temperature, self.top_p, self.top_k = num_samples, temperature, top_p, top_k
        self.max_length, self.max_new_tokens = max_length, max_new_tokens
        self.sample_every = sample_every
        self.selection, self.bt_temperature = selection, bt_temperature
        self.min_length, self.length_penalty = min_length, length_penalty
        self.rng = random.Random(seed)
        self.initial_answers: list[str] = []
        self.cache: BestSoFarCache | None = None
        self.sampled_answers = 0  # candidates drawn so far (a cost measure; the benchmark script reports it)
        self.seconds: dict[str, float] = {}  # this process's time per part of PMC's own work (`timings`)

    def _length(self, run: RunContext) -> dict[str, int]:
        """The decoding limit for initial answers and samples alike (official: one `max_length` for both,
        unlearning/inference.py L28 and pmc.py L195); neither set: the run's generation.max_new_tokens."""
        if self.max_length is not None:
            return {"max_length": self.max_length}
        return {"max_new_tokens": self.max_new_tokens or run.max_new_tokens}

    def setup(self, run: RunContext) -> None:
        super().setup(run)
        self.cache = BestSoFarCache(len(run.benchmark.forget))
        self.sampled_answers = 0
        self.seconds = {"initial_answers": 0.0, "sampling": 0.0, "scoring": 0.0}

    def init_state(self, run: RunContext) -> None:
        """The model's greedy answers before unlearning: decoded once per stage-0 model and decoding settings, not
        once per job (`run.before_unlearning`: the other PMC jobs of a sweep read them); a resumed run reads them
        from its checkpoint instead (on the H100, 2026-11-28, decoding them again cost a resumed compiled job its
        whole call)."""
        start, length = time.perf_counter(), self._length(run)
        self.initial_answers = run.before_unlearning(
            "pmc.initial_answers", {**length, "batch_size": run.generation_batch_size},
            lambda: greedy_answers(run.model, run.tokenizer, run.prompt_format,
                                   [r.question for r in run.benchmark.forget], **length,
                                   batch_size=run.generation_batch_size, desc="pmc: initial answers"),
        )
        self.seconds["initial_answers"] += time.perf_counter() - start

    def _resample(self, run: RunContext, indices: list[int]) -> None:
        """Sample with the current weights for the questions among `indices` still worth sampling, and offer each
        one's chosen candidate to the cache (official: unlearning/pmc.py L14-58)."""
        pending = set(self.cache.pending())
        indices = [i for i in indices if i in pending]
        if not indices:
            return
        start = time.perf_counter()
        samples = generate_answers(
            run.model, run.tokenizer, run.prompt_format, [run.benchmark.forget[i].question for i in indices],
            **self._length(run), batch_size=run.generation_batch_size,
            num_samples=self.num_samples, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            desc=f"pmc: sampling epoch {run.epoch + 1}",
        )
        sampled = time.perf_counter()
        self.seconds["sampling"] += sampled - start
        for index, candidates in zip(indices, samples):
            scores = [
                penalised_score(rouge_l_recall(self.initial_answers[index], c), c, self.min_length, self.length_penalty)
                for c in candidates
            ]
            chosen = select(scores, self.selection, self.bt_temperature, self.rng)
            self.cache.offer(index, candidates[chosen], scores[chosen])
            self.sampled_answers += len(candidates)
        self.seconds["scoring"] += time.perf_counter() - sampled

    def on_epoch_start(self, run: RunContext) -> None:
        if self.sample_every == "epoch":
            self._resample(run, list(range(len(self.cache.answers))))

    def on_optimizer_step_start(self, run: RunContext, examples: list[ForgetExample], indices: list[int]) -> None:
        """sample_every=step: sample for the questions of all the step's micro-batches in one call. With gradient
        accumulation they train with the same weights, so this draws from the same distributions as sampling inside
        each micro-batch (the official schedule), in one decoding call per step instead of one per micro-batch (a
        GPU decodes a few hundred rows of a small model in about the time of a few dozen); only the random draws
        differ. With no accumulation it is the official schedule, call for call."""
        if self.sample_every == "step":
            self._resample(run, indices)

    def forget_examples(self, run: RunContext) -> list[ForgetExample]:
        """One row per forget question with its cached answer. With sample_every=batch or step a question not
        sampled yet has the placeholder "": it is sampled before any micro-batch trains on it."""
        return [ForgetExample(r.question, a if a is not None else "") for r, a in zip(run.benchmark.forget,
                                                                                      self.cache.answers)]

    def forget_batch_examples(self, run: RunContext, examples: list[ForgetExample],
                              indices: list[int]) -> list[ForgetExample]:
        """sample_every=batch: sample for this micro-batch's questions first, with the weights of the step that
        trains on them (official: compute_loss samples inside every micro-batch, unlearning/unlearning_trainer.py
        L89-107); step: the answers sampled at the step's start. Rows are indices into the forget set, since
        forget_examples lists it in order."""
        if self.sample_every == "epoch":
            return super().forget_batch_examples(run, examples, indices)
        if self.sample_every == "batch":
            self._resample(run, indices)
        return [ForgetExample(run.benchmark.forget[i].question, self.cache.answers[i]) for i in indices]

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """NLL of the selected answers; the mean cached score of the questions sampled so far shows how far
        collapse has got."""
        return answer_nll(model, forget), {"selected_score": torch.tensor(self.cache.mean_score())}

    def timings(self) -> dict[str, float]:
        """Decoding the initial answers (0 in a resumed run), sampling, and scoring the samples by ROUGE and
        selecting: what PMC adds to a training step, so unlearning's time less these is the training's."""
        return {name: round(seconds, 3) for name, seconds in self.seconds.items()}

    def state_dict(self) -> dict:
        """Initial answers, the best-so-far cache and the selection RNG: what later epochs sample and train from."""
        return {"initial_answers": self.initial_answers, "answers": self.cache.answers, "scores": self.cache.scores,
                "rng": rng_state(self.rng), "sampled_answers": self.sampled_answers}

    def load_state_dict(self, state: dict) -> None:
        self.initial_answers = list(state["initial_answers"])
        self.cache.answers, self.cache.scores = list(state["answers"]), [float(s) for s in state["scores"]]
        set_rng_state(self.rng, state["rng"])
        self.sampled_answers = state["sampled_answers"]
