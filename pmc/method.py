"""The method interface every unlearning method implements, PMC and baselines alike (see DESIGN.md).

The trainer owns optimisation, forget/retain pairing, answer-only masking, logging and seeds; a method owns only
what makes it that method: its loss, and optionally the forget targets it trains on and per-epoch work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.records import QABenchmark
from pmc.batches import Batch
from pmc.prompts import PromptFormat


@dataclass
class RunContext:
    """What a method may look at: the model being unlearned, how to prompt it, the data, decoding limits."""

    model: torch.nn.Module
    tokenizer: object
    prompt_format: PromptFormat
    benchmark: QABenchmark
    max_new_tokens: int
    generation_batch_size: int
    epoch: int = 0


class Method:
    """Base class with the default hooks; subclasses override `loss` and whatever else they need."""

    name = "method"

    def setup(self, run: RunContext) -> None:
        """Once before training, with the model as it was before unlearning (e.g. PMC's initial answers)."""

    def on_epoch_start(self, run: RunContext) -> None:
        """Before each epoch (e.g. PMC's resampling)."""

    def forget_examples(self, run: RunContext) -> list[tuple[str, str]]:
        """(question, answer) pairs the forget batches are built from this epoch; default: the forget set itself."""
        return [(r.question, r.answer) for r in run.benchmark.forget]

    def loss(self, model, forget: Batch, retain: Batch) -> dict[str, torch.Tensor]:
        """{"loss": the scalar to minimise, plus named terms to log}."""
        raise NotImplementedError
