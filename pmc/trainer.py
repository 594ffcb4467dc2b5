"""The one training loop: stage-0 fine-tuning and every unlearning method run through `optimise`.

`optimise` knows nothing about methods: it gets the micro-batches of each epoch and a function from a micro-batch
to named loss terms, and does AdamW, warm-up, gradient accumulation and clipping, the non-finite-loss check, the
per-step log and the progress bar.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from benchmarks.records import QARecord
from pmc.batches import encode_pairs
from pmc.errors import ConfigError, TrainingDiverged
from pmc.losses import answer_nll
from pmc.method import Method, RunContext

StepLog = Callable[[dict], None]


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int
    learning_rate: float
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    schedule: str = "constant"  # after warm-up: "constant" or "linear" decay to zero
    max_grad_norm: float = 1.0
    max_length: int = 256

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ConfigError(f"training needs epochs >= 0, batch_size >= 1, gradient_accumulation_steps >= 1: {self}")
        if self.schedule not in ("constant", "linear"):
            raise ConfigError(f"training.schedule must be 'constant' or 'linear', got {self.schedule!r}")
        # a negative max_grad_norm would silently flip every gradient (clip_grad_norm_ scales by max_norm / norm)
        if (self.learning_rate < 0 or self.weight_decay < 0 or self.max_grad_norm < 0 or self.max_length < 1
                or not 0 <= self.warmup_ratio <= 1):
            raise ConfigError(
                "training needs learning_rate >= 0, weight_decay >= 0, max_grad_norm >= 0 (0 = no clipping), "
                f"max_length >= 1 and 0 <= warmup_ratio <= 1: {self}"
            )


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return 1.0


def optimise(
    model,
    training: TrainingConfig,
    micro_batches_per_epoch: int,
    epoch_batches: Callable[[int], Sequence],
    compute_loss: Callable[[object], dict[str, torch.Tensor]],
    log_step: StepLog | None = None,
    desc: str = "train",
) -> None:
    """Run training.epochs epochs; epoch_batches(epoch) gives that epoch's micro-batches (the same count each time)."""
    accumulation = training.gradient_accumulation_steps
    steps_per_epoch = math.ceil(micro_batches_per_epoch / accumulation)
    total = steps_per_epoch * training.epochs
    warmup = int(training.warmup_ratio * total)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=training.learning_rate, weight_decay=training.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, total, warmup, training.schedule)
    )
    model.train()
    step = 0
    with tqdm(total=total, desc=desc, leave=False) as bar:
        for epoch in range(training.epochs):
            micro_batches = epoch_batches(epoch)
            if not micro_batches:  # nothing left to unlearn (e.g. ICU has forgotten every item)
                break
            for start in range(0, len(micro_batches), accumulation):
                group = micro_batches[start : start + accumulation]
                logged: dict[str, float] = {}
                for micro_batch in group:
                    terms = compute_loss(micro_batch)
                    loss = terms["loss"]
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                            "lower the learning rate or check the data"
                        )
                    (loss / len(group)).backward()
                    for name, value in terms.items():
                        logged[name] = logged.get(name, 0.0) + float(value.detach()) / len(group)
                if training.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if log_step:
                    log_step({"step": step, "epoch": epoch + 1, "lr": lr, **logged})
                bar.update(1)
                bar.set_postfix(loss=f"{logged['loss']:.3f}")
    model.eval()


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def finetune(
    model, tokenizer, fmt, records: list[QARecord], training: TrainingConfig, seed: int,
    log_step: StepLog | None = None, desc: str = "finetune",
) -> None:
    """Plain supervised fine-tuning on QA records (stage 0: target, retain and tiny-model pre-training)."""
    rng = random.Random(seed)
    pairs = [(r.question, r.answer) for r in records]
    device = _device(model)

    def epoch_batches(_epoch):
        shuffled = rng.sample(pairs, len(pairs))
        return [encode_pairs(tokenizer, fmt, c, training.max_length) for c in _chunks(shuffled, training.batch_size)]

    optimise(
        model, training, math.ceil(len(pairs) / training.batch_size), epoch_batches,
        lambda batch: {"loss": answer_nll(model, batch.to(device))}, log_step, desc,
    )


class LazyMicroBatches:
    """One epoch's micro-batches whose count is known up front but each of which is built only when first asked for
    (in order, once): a method then chooses a micro-batch's forget targets with the weights of the step that trains
    on it (PMC samples per micro-batch). Supports len(), iteration and indexing (slices too)."""

    def __init__(self, count: int, build: Callable[[int], object]):
        self._count, self._build, self._built = count, build, []

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"micro-batch {index} of {self._count}")
        while len(self._built) <= index:
            self._built.append(self._build(len(self._built)))
        return self._built[index]

    def __iter__(self):
        return (self[i] for i in range(self._count))


def unlearn(
    method: Method, run: RunContext, training: TrainingConfig, seed: int, log_step: StepLog | None = None
) -> None:
    """Unlearn run.model with `method`: each epoch, every forget example once, each paired with a random retain example.

    The forget order and retain partners of an epoch are drawn from the seeded RNG when the epoch starts; each
    micro-batch is built when the training loop reaches it, its forget rows from `method.forget_batch_examples`."""
    rng = random.Random(seed)
    model, retain = run.model, run.benchmark.retain
    device = _device(model)
    method.setup(run)
    encode = lambda pairs: encode_pairs(run.tokenizer, run.prompt_format, pairs, training.max_length)

    def epoch_batches(epoch):
        run.epoch = epoch
        method.on_epoch_start(run)
        examples = method.forget_examples(run)
        order = rng.sample(range(len(examples)), len(examples))
        chunks = _chunks(order, training.batch_size)
        partners = [[retain[rng.randrange(len(retain))] for _ in chunk] for chunk in chunks]

        def build(k):
            rows = method.forget_batch_examples(run, examples, chunks[k])
            forget = encode([(e.question, e.answer) for e in rows])
            if rows[0].paired is not None:
                forget.paired = encode([e.paired for e in rows])
            return forget, encode([(r.question, r.answer) for r in partners[k]])

        return LazyMicroBatches(len(chunks), build)

    optimise(
        model, training, math.ceil(len(run.benchmark.forget) / training.batch_size), epoch_batches,
        lambda pair: method.loss(model, pair[0].to(device), pair[1].to(device)), log_step, f"unlearn[{method.name}]",
    )
