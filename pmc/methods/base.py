"""The method interface every unlearning method implements, PMC and baselines alike (README.md, "Adding a method").

The trainer owns optimisation, forget/retain pairing, answer-only masking, logging and seeds; a method owns only
what makes it that method: its loss, and optionally the forget targets it trains on and per-epoch work.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from pmc.core.batches import Batch
from pmc.core.errors import ConfigError
from pmc.core.losses import answer_kl, answer_nll
from pmc.core.models import weights_are_sharded
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark


@dataclass(frozen=True)
class ForgetExample:
    """One row of a forget batch: the (question, answer) the loss is computed on, and optionally a second pair the
    method compares it with (IdkDPO, FLAT: refusal vs. forget answer; ICU: the forget item's retain neighbour).
    The trainer encodes `paired` rows into `Batch.paired`, with the same answer-only masking."""

    question: str
    answer: str
    paired: tuple[str, str] | None = None


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model as it is now, in eval mode and without gradients: the reference of NPO, DPO and KL terms.

    Of a LoRA model (peft), the base model without the adapters: what the model was before unlearning. Its weights
    are the LoRA model's own frozen base weights, not copies (TRL's DPO reads a LoRA model's reference with the
    adapters disabled, for the same reason): only the adapters train, so the base stays as it was until the adapters
    are merged into it after training (`without_lora`), and a reference costs no second copy of the model (16 GB for
    Llama-3.1-8B in bf16). Under FSDP or DeepSpeed, whose preparation swaps the trained model's parameters for
    shards, the reference is a copy of its own."""
    shared = {}
    if hasattr(model, "get_base_model") and not weights_are_sharded():
        shared = {id(p): p for p in model.parameters() if not p.requires_grad}  # deepcopy keeps these as they are
    reference = copy.deepcopy(model, memo=shared)
    if hasattr(reference, "unload"):
        reference = reference.unload()
    reference.eval().requires_grad_(False)
    return reference


def computed_here(name: str, settings: dict, compute: Callable[[], Any]) -> Any:
    """`RunContext.before_unlearning` without a cache: computed in this run."""
    return compute()


@dataclass
class RunContext:
    """What a method may look at: the model being unlearned, how to prompt it, the data, decoding limits.

    `before_unlearning(name, settings, compute)` gives what `compute()` returns for the model before unlearning:
    every job that starts from the same stage-0 model gets the same, so pmc.run keeps it beside the eval cache and
    computes it once per model (`settings`: everything besides the model, data and generation settings that
    changes it); anything JSON holds, as JSON gives it back."""

    model: torch.nn.Module
    tokenizer: object
    prompt_format: PromptFormat
    benchmark: QABenchmark
    max_new_tokens: int
    generation_batch_size: int  # questions decoded per call (PMC decodes n rows per question)
    epoch: int = 0
    before_unlearning: Callable[[str, dict, Callable[[], Any]], Any] = computed_here
    scoring_batch_size: int | None = None  # rows scored per forward pass (ICU's check); None: generation_batch_size

    def __post_init__(self):
        if self.scoring_batch_size is None:
            self.scoring_batch_size = self.generation_batch_size


class Method:
    """Base class with the default hooks; subclasses override `loss` and whatever else they need."""

    name = "method"
    # Whether `loss` reads its `retain` micro-batch: the trainer pairs forget rows with retain examples (and encodes
    # them) only for methods that do; the others get retain=None. Methods without a retain term say False.
    uses_retain: bool = True

    def setup(self, run: RunContext) -> None:
        """Once before training, with the model as it was before unlearning: what `state_dict` does not hold
        (e.g. a frozen reference copy of the model)."""

    def init_state(self, run: RunContext) -> None:
        """Once before the first step of a run that starts afresh, after `setup`, with the model as it was before
        unlearning: the first value of what `state_dict` holds that needs the model (e.g. PMC's initial answers). A
        run resumed from a checkpoint gets it back through `load_state_dict` instead, without computing it again."""

    def on_epoch_start(self, run: RunContext) -> None:
        """Before each epoch (e.g. PMC's resampling with sample_every=epoch)."""

    def forget_examples(self, run: RunContext) -> list[ForgetExample]:
        """What this epoch's forget batches are built from; default: the forget set itself. May shrink between
        epochs (ICU drops forgotten items); an empty list ends training early."""
        return [ForgetExample(r.question, r.answer) for r in run.benchmark.forget]

    def on_optimizer_step_start(self, run: RunContext, examples: list[ForgetExample], indices: list[int]) -> None:
        """Before the first micro-batch of each optimizer step, with the forget rows (`indices` into this epoch's
        `examples`) of all its micro-batches: with gradient accumulation they all train with the same weights (e.g.
        PMC's sample_every=step samples them in one call)."""

    def forget_batch_examples(self, run: RunContext, examples: list[ForgetExample],
                              indices: list[int]) -> list[ForgetExample]:
        """The forget rows of one micro-batch: `indices` into this epoch's `examples`. The trainer asks right before
        the micro-batch's step, so the model has the weights that step trains, which lets PMC sample per micro-batch
        as the official code does. Default: those examples as they are."""
        return [examples[i] for i in indices]

    def loss(self, model, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
        """{"loss": the scalar to minimise, plus named terms to log}. `retain` is None unless `uses_retain`."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What this method has learnt or drawn during training, as JSON, for a checkpoint (pmc.checkpoint); what
        `setup` rebuilds from the pre-unlearning model and the data (e.g. a frozen reference) is not part of it."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Put back what `state_dict` gave, after `setup` (in place of `init_state`), when training resumes from a
        checkpoint."""

    def timings(self) -> dict[str, float]:
        """Seconds this process spent on the method's own work during unlearning, by name (results.json's
        timings_s as unlearn.<name>, beside the whole of unlearning; e.g. PMC's sampling and scoring)."""
        return {}


class ForgetObjective(Method):
    """forget_weight · (the method's forget objective), for methods with no retain term (GA, FLAT). Subclasses
    implement `forget_loss`."""

    forget_term = "forget_loss"  # the name the forget objective is logged under
    needs_reference = False  # True: setup keeps a frozen copy of the model in self.reference
    uses_retain = False

    def __init__(self, forget_weight: float = 1.0):
        self.forget_weight = forget_weight
        self.reference: torch.nn.Module | None = None

    def setup(self, run: RunContext) -> None:
        if self.needs_reference:
            self.reference = frozen_copy(run.model)

    def forget_loss(self, model, forget: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the forget objective to minimise, extra named terms to log)."""
        raise NotImplementedError

    def loss(self, model, forget: Batch, retain: Batch | None = None) -> dict[str, torch.Tensor]:
        forget_value, extra = self.forget_loss(model, forget)
        return {"loss": self.forget_weight * forget_value, self.forget_term: forget_value, **extra}


class RetainRegularised(ForgetObjective):
    """forget_weight · (the method's forget objective) + retain_weight · (retain term), the shape most methods share
    (open-unlearning's GradDiff family: γ and α). The retain term is the NLL of the retain answers, or
    (retain_loss="kl") the KL from the frozen pre-unlearning model on them; retain_weight = 0 drops it (and the
    retain batches with it)."""

    def __init__(self, forget_weight: float = 1.0, retain_weight: float = 1.0, retain_loss: str = "nll"):
        if retain_loss not in ("nll", "kl"):
            raise ConfigError(f"method.handler.retain_loss must be 'nll' or 'kl', got {retain_loss!r}")
        super().__init__(forget_weight)
        self.retain_weight, self.retain_loss = retain_weight, retain_loss

    @property
    def uses_retain(self) -> bool:
        return bool(self.retain_weight)

    def setup(self, run: RunContext) -> None:
        super().setup(run)
        if self.reference is None and self.retain_weight and self.retain_loss == "kl":
            self.reference = frozen_copy(run.model)

    def loss(self, model, forget: Batch, retain: Batch | None) -> dict[str, torch.Tensor]:
        terms = super().loss(model, forget)
        if self.retain_weight:
            if self.retain_loss == "nll":
                terms["retain_loss"] = answer_nll(model, retain)
            else:
                terms["retain_loss"] = answer_kl(model, self.reference, retain)
            terms["loss"] = terms["loss"] + self.retain_weight * terms["retain_loss"]
        return terms
