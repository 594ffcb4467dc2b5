"""What one optimizer step does and how many there are: the training settings (TrainingConfig), the optimizer's
parameter groups, the optimizer steps of an epoch, the warm-up and the learning-rate schedule. HF Trainer's rules, as
the references use it; the loop that takes the steps is pmc.trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pmc.core.errors import ConfigError
from pmc.core.models import compile_backend

# training.precision -> accelerate's mixed_precision. Both keep fp32 master weights: "bf16-mixed" runs the forward
# pass under bf16 autocast (the references: HF Trainer bf16=True through DeepSpeed, fp32 master weights).
PRECISIONS = {"fp32": "no", "bf16-mixed": "bf16"}
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int
    learning_rate: float
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.01  # on weights only, never on biases or normalisation weights (HF Trainer's rule)
    warmup_epochs: float = 0.0  # warm-up length in epochs (the references: 1) ...
    warmup_ratio: float = 0.0  # ... or as a fraction of all steps (HF's warmup_ratio); at most one of the two
    schedule: str = "constant"  # after warm-up: "constant" or "linear" decay to zero (HF Trainer's default)
    max_grad_norm: float = 1.0  # 0 = no clipping
    max_length: int = 256
    precision: str = "fp32"  # "fp32" or "bf16-mixed"; the model's own dtype is only how it is stored
    optimizer: str = "adamw"  # "adamw" (decoupled weight decay) or "adam" (weight decay as an L2 term)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    # torch's fused Adam/AdamW kernel (HF Trainer's default optimizer, adamw_torch_fused, since torch 2.8): the same
    # update in one pass over all parameters rather than ~8 operations per parameter tensor. SmolLM2-135M on 2 CPU
    # cores: 0.10-0.12 s per optimizer step instead of 0.46-0.76 s; on a GPU a few launches instead of dozens. It rounds
    # differently from the per-tensor loop: false reproduces runs made before it was the default (2026-11-27).
    fused_optimizer: bool = True
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, same result
    # HF Trainer's group_by_length: each epoch's micro-batches hold rows of similar length (less compute on padding);
    # off by default, as in the references
    group_by_length: bool = False
    # torch.compile the model's repeated decoder layers for training (accelerate's regional compilation: one compile
    # per layer class, dynamic shapes): false, true (inductor) or a backend of pmc.core.models.COMPILE_BACKENDS
    compile: bool | str = False
    # inductor's mode for `compile` (null: torch's default): reduce-overhead runs each compiled layer as a CUDA graph
    # (recorded once per micro-batch shape, replayed after), max-autotune tunes its kernels, and so on
    compile_mode: str | None = None
    # what `compile` compiles: true, the repeated decoder layer and the modules around it, each on its own
    # (accelerate's regional compilation: one short compile reused by every layer); false, the whole model as one
    # graph (one forward and one backward CUDA graph per shape under reduce-overhead, where regions replay one graph
    # per layer and go through Python between them; a longer compile)
    compile_regional: bool = True
    # pad each micro-batch to a multiple of this many positions (HF's `pad_to_multiple_of`; null: to its longest
    # row): a few widths rather than one per micro-batch, so that CUDA graphs, recorded per shape, are replayed
    pad_to_multiple_of: int | None = None
    # unlearning: a micro-batch's forget and retain rows (and paired rows) in one forward pass rather than one each,
    # half the kernel launches of a launch-bound small model (pmc.core.losses.one_forward); the same loss up to float
    # rounding. Off by default: the references run separate forwards. Stage 0 has one batch, so nothing to join.
    joint_forward: bool = False

    @property
    def compile_backend(self) -> str | None:
        """The torch.compile backend `compile` names (true = inductor); None: off."""
        return compile_backend(self.compile, "training.compile")

    def __post_init__(self):
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))  # YAML gives a list
        if self.epochs < 0 or self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ConfigError(f"training needs epochs >= 0, batch_size >= 1, gradient_accumulation_steps >= 1: {self}")
        for key, value, allowed in (("schedule", self.schedule, SCHEDULES), ("precision", self.precision, PRECISIONS),
                                    ("optimizer", self.optimizer, OPTIMIZERS)):
            if value not in allowed:
                raise ConfigError(f"training.{key} must be one of {list(allowed)}, got {value!r}")
        # a negative max_grad_norm would silently flip every gradient (clip_grad_norm_ scales by max_norm / norm)
        if (self.learning_rate < 0 or self.weight_decay < 0 or self.max_grad_norm < 0 or self.max_length < 1
                or not 0 <= self.warmup_ratio <= 1 or self.warmup_epochs < 0):
            raise ConfigError(
                "training needs learning_rate >= 0, weight_decay >= 0, max_grad_norm >= 0 (0 = no clipping), "
                f"max_length >= 1, warmup_epochs >= 0 and 0 <= warmup_ratio <= 1: {self}"
            )
        compile_backend(self.compile, "training.compile")
        if self.compile_mode is not None:
            modes = sorted(torch._inductor.list_mode_options())
            if self.compile_mode not in modes:
                raise ConfigError(f"training.compile_mode must be null or one of {modes}, got {self.compile_mode!r}")
            if self.compile_backend != "inductor":
                raise ConfigError(f"training.compile_mode={self.compile_mode} is an inductor mode: it needs "
                                  f"training.compile=true (inductor), got training.compile={self.compile!r}")
        if self.pad_to_multiple_of is not None and (isinstance(self.pad_to_multiple_of, bool)
                                                    or not isinstance(self.pad_to_multiple_of, int)
                                                    or self.pad_to_multiple_of < 1):
            raise ConfigError(f"training.pad_to_multiple_of must be null or a positive integer, got "
                              f"{self.pad_to_multiple_of!r}")
        if self.warmup_epochs and self.warmup_ratio:
            raise ConfigError(f"set training.warmup_epochs or training.warmup_ratio, not both: {self}")
        if (len(self.adam_betas) != 2 or not all(0 <= beta < 1 for beta in self.adam_betas)
                or not self.adam_epsilon > 0):
            raise ConfigError(
                f"training.adam_betas must be two numbers in [0, 1) and adam_epsilon > 0, got {list(self.adam_betas)} "
                f"and {self.adam_epsilon}"
            )


def optimizer_steps_per_epoch(micro_batches: int, accumulation: int) -> int:
    """Optimizer steps in an epoch of `micro_batches`: one per `accumulation` micro-batches, and one more for an
    epoch's last, shorter group, as the official PMC code's HF Trainer does (transformers 4.51.3, trainer.py
    L2517: do_sync_step at (step + 1) % accumulation == 0 or at the epoch's last micro-batch)."""
    return math.ceil(micro_batches / accumulation)


def warmup_steps(training: TrainingConfig, micro_batches: int, total_steps: int) -> int:
    """Warm-up length in optimizer steps. warmup_epochs: the references' one epoch is a whole number of full
    accumulation groups (official PMC unlearning.py L24/L34: len(data) // (batch_size · accumulation);
    open-unlearning src/trainer/__init__.py L33-42 the same); warmup_ratio: HF's ceil(ratio · total)."""
    if training.warmup_epochs:
        return int(training.warmup_epochs * micro_batches / training.gradient_accumulation_steps)
    return math.ceil(training.warmup_ratio * total_steps)


class LearningRateSchedule:
    """The learning-rate multiplier per optimizer step (0-based), sized from the optimizer steps the method's epochs
    take: HF's get_linear_schedule_with_warmup and get_constant_schedule_with_warmup (transformers optimization.py),
    a ramp from 0 over `warmup` steps, then constant, or linear decay reaching 0 at `total`.

    `total` starts as the first epoch's steps times training.epochs. An epoch with another step count (ICU trains on
    fewer items as it forgets them) re-sizes it: `resize` plans the remaining epochs at that epoch's size, and the
    decay goes on from the rate it has reached to 0 at the new end. While every epoch takes the same steps, nothing
    is re-sized and the factors are HF's. A callable object, not a function, so the scheduler's state_dict (and with
    it a checkpoint) keeps the re-sized plan."""

    def __init__(self, schedule: str, warmup: int, total: int):
        self.schedule, self.warmup, self.total = schedule, warmup, total
        self.decay_from, self.decay_from_factor = warmup, 1.0  # the decay runs from this step and factor to `total`

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        if self.schedule == "linear":
            return max(0.0, self.decay_from_factor * (self.total - step) / max(1, self.total - self.decay_from))
        return 1.0

    def resize(self, step: int, total: int) -> None:
        """From optimizer step `step` on, the schedule ends at `total` steps."""
        if total == self.total:
            return
        if step > self.decay_from:  # decay under way: it continues from where it is
            self.decay_from, self.decay_from_factor = step, self(step)
        self.total = total


def decay_parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters in two optimizer groups: with weight decay, and without it for biases and the
    weights of normalisation layers (HF Trainer's get_decay_parameter_names: transformers 4.51.3 trainer.py
    L1189-1198, which excludes nn.LayerNorm / LlamaRMSNorm layers and names containing "bias")."""
    decay, exempt = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            owner = model.get_submodule(name.rpartition(".")[0])
            is_exempt = "bias" in name.lower() or "norm" in type(owner).__name__.lower()
            (exempt if is_exempt else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]
