"""The shared training loop: divergence check, accumulation, schedule, clipping, and forget/retain pairing."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from benchmarks.records import QABenchmark, QARecord
from pmc.errors import ConfigError, TrainingDiverged
from pmc.method import ForgetExample, Method, RunContext
from pmc.models import train_tokenizer
from pmc.prompts import PromptFormat
from pmc.trainer import LazyMicroBatches, TrainingConfig, _lr_factor, optimise, unlearn


class Scalar(torch.nn.Module):
    def __init__(self, value: float = 1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(value))


def constant_loss(w: torch.Tensor, c: float) -> torch.Tensor:
    """A loss whose value is c and whose gradient w.r.t. w is c, whatever w is."""
    return c * w - (c * w).detach() + c


# --- divergence --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_loss_raises_training_diverged(bad):
    model = Scalar()
    calls = []

    def compute_loss(c):
        calls.append(c)
        return {"loss": model.w * (bad if c == 2 else c)}

    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 2"):
        optimise(model, TrainingConfig(epochs=3, learning_rate=0.1), 3, lambda e: [1.0, 2.0, 3.0], compute_loss)
    assert calls == [1.0, 2.0]  # stopped at the bad micro-batch


def test_nan_on_first_step_leaves_parameters_untouched():
    model = Scalar(0.5)
    with pytest.raises(TrainingDiverged):
        optimise(model, TrainingConfig(epochs=1, learning_rate=0.1), 1, lambda e: [0],
                 lambda _: {"loss": model.w * float("nan")})
    assert model.w.item() == 0.5


# --- accumulation, logging, clipping ---------------------------------------------------------------------------


def run_recorded(training: TrainingConfig, coefficients: list[float]):
    """optimise() on a scalar model; returns (step logs, epochs asked for, gradient seen at each optimizer step)."""
    model = Scalar()
    logs, asked, grads = [], [], []

    def pre_step(optimizer, args, kwargs):
        grads.append(model.w.grad.item())

    handle = register_optimizer_step_pre_hook(pre_step)
    try:
        def epoch_batches(epoch):
            asked.append(epoch)
            return list(coefficients)

        optimise(model, training, len(coefficients), epoch_batches,
                 lambda c: {"loss": constant_loss(model.w, c), "aux": torch.tensor(10 * c)}, logs.append)
    finally:
        handle.remove()
    return logs, asked, grads


def test_gradient_accumulation_step_count_and_logged_means():
    training = TrainingConfig(epochs=2, learning_rate=1.0, gradient_accumulation_steps=2, max_grad_norm=0.0,
                              weight_decay=0.0)
    logs, asked, grads = run_recorded(training, [1.0, 2.0, 3.0, 4.0, 10.0])
    # 5 micro-batches in groups of 2 -> [1, 2], [3, 4], [10]: 3 optimizer steps per epoch
    assert asked == [0, 1]
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in logs] == [1, 1, 1, 2, 2, 2]
    assert [r["loss"] for r in logs] == pytest.approx([1.5, 3.5, 10.0] * 2)  # mean over the group's micro-batches
    assert [r["aux"] for r in logs] == pytest.approx([15.0, 35.0, 100.0] * 2)
    # the accumulated gradient is the group mean as well (the last, short group divides by 1)
    assert grads == pytest.approx([1.5, 3.5, 10.0] * 2)


def test_gradient_clipping():
    training = TrainingConfig(epochs=1, learning_rate=1.0, gradient_accumulation_steps=2, max_grad_norm=2.0)
    _, _, grads = run_recorded(training, [1.0, 2.0, 3.0, 4.0, 10.0])
    assert grads == pytest.approx([1.5, 2.0, 2.0], rel=1e-5)  # norms 1.5, 3.5, 10 clipped to at most 2


def test_logged_learning_rate_follows_warmup_and_linear_decay():
    # 3 steps/epoch x 2 epochs = 6 steps; warm-up int(0.5 * 6) = 3 steps: 1/4, 2/4, 3/4; then (6 - s) / 3
    training = TrainingConfig(epochs=2, learning_rate=1.0, gradient_accumulation_steps=2, warmup_ratio=0.5,
                              schedule="linear")
    logs, _, _ = run_recorded(training, [1.0, 2.0, 3.0, 4.0, 10.0])
    assert [r["lr"] for r in logs] == pytest.approx([0.25, 0.5, 0.75, 1.0, 2 / 3, 1 / 3])


def test_constant_schedule_without_warmup():
    logs, _, _ = run_recorded(TrainingConfig(epochs=1, learning_rate=0.01), [1.0, 2.0, 3.0])
    assert [r["lr"] for r in logs] == pytest.approx([0.01, 0.01, 0.01])


def test_model_left_in_eval_mode():
    model = Scalar()
    model.train()
    optimise(model, TrainingConfig(epochs=1, learning_rate=0.1), 1, lambda e: [1.0],
             lambda c: {"loss": constant_loss(model.w, c)})
    assert not model.training


# --- schedule ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, total, warmup, schedule, expected",
    [
        (0, 10, 2, "linear", 1 / 3),  # warm-up: (step + 1) / (warmup + 1)
        (1, 10, 2, "linear", 2 / 3),
        (2, 10, 2, "linear", 1.0),  # first step after warm-up: (10 - 2) / (10 - 2)
        (5, 10, 2, "linear", 5 / 8),
        (9, 10, 2, "linear", 1 / 8),  # last step still trains
        (10, 10, 2, "linear", 0.0),
        (0, 10, 0, "linear", 1.0),
        (4, 10, 0, "linear", 0.6),
        (0, 10, 3, "constant", 0.25),
        (3, 10, 3, "constant", 1.0),
        (9, 10, 3, "constant", 1.0),
    ],
)
def test_lr_factor(step, total, warmup, schedule, expected):
    assert _lr_factor(step, total, warmup, schedule) == pytest.approx(expected)


# --- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": -1},
        {"batch_size": 0},
        {"gradient_accumulation_steps": 0},
        {"schedule": "cosine"},
        {"learning_rate": -1e-5},
        {"warmup_ratio": -0.1},
        {"warmup_ratio": 1.5},
        {"max_grad_norm": -1.0},
        {"weight_decay": -0.01},
        {"max_length": 0},
    ],
)
def test_training_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        TrainingConfig(**{"epochs": 1, "learning_rate": 1e-5, **kwargs})


def test_training_config_accepts_edge_values():
    TrainingConfig(epochs=0, learning_rate=0.0, warmup_ratio=1.0, max_grad_norm=0.0, weight_decay=0.0, max_length=1)


# --- unlearn: forget/retain pairing ------------------------------------------------------------------------------

FORGET = [QARecord(f"Forget question {i}?", f"Forget answer {i}.") for i in range(5)]
RETAIN = [QARecord(f"Retain question {i}?", f"Retain answer {i}.") for i in range(4)]
EVAL_ONLY = [QARecord(f"Eval question {i}?", f"Eval answer {i}.") for i in range(3)]
PRETRAIN = [QARecord(f"World fact {i}?", f"Fact {i}.") for i in range(3)]


class Recording(Method):
    """Records, per epoch, the decoded (question, answer) pairs of every forget and retain batch."""

    name = "recording"

    def __init__(self, tokenizer, relabel: bool):
        self.tokenizer, self.relabel = tokenizer, relabel
        self.events: list = []
        self.param: torch.nn.Parameter | None = None

    def setup(self, run):
        self.events.append(("setup",))

    def on_epoch_start(self, run):
        self.events.append(("epoch", run.epoch))

    def forget_examples(self, run):
        if not self.relabel:
            return super().forget_examples(run)
        return [ForgetExample(r.question, f"Made up {run.epoch}.") for r in run.benchmark.forget]

    def _decode(self, batch) -> list[tuple[str, str]]:
        pairs = []
        for ids, mask in zip(batch.input_ids, batch.attention_mask):
            text = self.tokenizer.decode(ids[mask == 1].tolist(), skip_special_tokens=True)
            question, answer = text.removeprefix("Question: ").split("\nAnswer: ")
            pairs.append((question, answer))
        return pairs

    def loss(self, model, forget, retain):
        self.events.append(("batch", self._decode(forget), self._decode(retain)))
        return {"loss": model.weight.sum() * 0.0 + 1.0}


@pytest.fixture(scope="module")
def pairing_tokenizer():
    texts = [t for r in FORGET + RETAIN + EVAL_ONLY + PRETRAIN for t in (r.question, r.answer)]
    return train_tokenizer(texts + ["Question: \nAnswer:", "Made up 0."], vocab_size=300)


def run_unlearn(tokenizer, relabel: bool, epochs: int = 3):
    bench = QABenchmark(
        name="pairing", forget=list(FORGET), retain=list(RETAIN),
        eval_sets={"forget": list(FORGET), "retain": list(EVAL_ONLY), "world_facts": list(PRETRAIN)},
        pretrain=list(PRETRAIN),
    )
    run = RunContext(torch.nn.Linear(1, 1), tokenizer, PromptFormat(), bench, max_new_tokens=8,
                     generation_batch_size=2)
    method = Recording(tokenizer, relabel)
    logs = []
    training = TrainingConfig(epochs=epochs, learning_rate=1e-3, batch_size=2, gradient_accumulation_steps=2)
    unlearn(method, run, training, seed=0, log_step=logs.append)
    return method.events, logs


def by_epoch(events):
    assert events[0] == ("setup",) and events.count(("setup",)) == 1
    epochs: list[list] = []
    for event in events[1:]:
        if event[0] == "epoch":
            assert event[1] == len(epochs)
            epochs.append([])
        else:
            epochs[-1].append(event[1:])
    return epochs


def test_every_forget_example_once_per_epoch_with_equal_size_retain_batches(pairing_tokenizer):
    events, logs = run_unlearn(pairing_tokenizer, relabel=False)
    epochs = by_epoch(events)
    assert len(epochs) == 3
    forget_pairs = [(r.question, r.answer) for r in FORGET]
    retain_pairs = {(r.question, r.answer) for r in RETAIN}
    seen_retain = set()
    orders = []
    for batches in epochs:
        assert [len(f) for f, _ in batches] == [2, 2, 1]  # 5 examples, batch_size 2
        seen = [pair for f, _ in batches for pair in f]
        assert Counter(seen) == Counter(forget_pairs)  # each exactly once
        orders.append(seen)
        for forget, retain in batches:
            assert len(retain) == len(forget)
            assert all(pair in retain_pairs for pair in retain)  # retain split only: never eval or pretrain records
            seen_retain.update(retain)
    assert len(seen_retain) > 1  # partners are drawn, not fixed
    assert len({tuple(o) for o in orders}) > 1  # forget order is reshuffled between epochs
    # 3 micro-batches with accumulation 2 -> 2 optimizer steps per epoch
    assert [r["epoch"] for r in logs] == [1, 1, 2, 2, 3, 3]


def test_forget_batches_come_from_the_methods_examples_of_that_epoch(pairing_tokenizer):
    events, _ = run_unlearn(pairing_tokenizer, relabel=True, epochs=2)
    for number, batches in enumerate(by_epoch(events)):
        questions = [q for f, _ in batches for q, _ in f]
        answers = {a for f, _ in batches for _, a in f}
        assert sorted(questions) == sorted(r.question for r in FORGET)
        assert answers == {f"Made up {number}."}


def test_unlearn_is_reproducible_for_a_seed(pairing_tokenizer):
    assert run_unlearn(pairing_tokenizer, relabel=False, epochs=2)[0] == run_unlearn(
        pairing_tokenizer, relabel=False, epochs=2
    )[0]


# --- unlearn: each micro-batch built when the loop reaches it ---------------------------------------------------


def test_lazy_micro_batches_know_their_length_and_build_each_item_once_in_order():
    built = []
    lazy = LazyMicroBatches(3, lambda k: built.append(k) or f"batch {k}")
    assert len(lazy) == 3 and built == []  # the length costs nothing
    assert next(iter(lazy)) == "batch 0" and built == [0]
    assert lazy[0:2] == ["batch 0", "batch 1"] and built == [0, 1]
    assert list(lazy) == ["batch 0", "batch 1", "batch 2"] and built == [0, 1, 2]  # never built twice
    assert lazy[-1] == "batch 2"
    with pytest.raises(IndexError):
        lazy[3]


class ChoosingRows(Recording):
    """Also records when the trainer asks for a micro-batch's forget rows."""

    def forget_batch_examples(self, run, examples, indices):
        self.events.append(("rows", [examples[i].question for i in indices]))
        return super().forget_batch_examples(run, examples, indices)


def test_each_micro_batchs_forget_rows_are_chosen_right_before_its_step(pairing_tokenizer):
    bench = QABenchmark(name="pairing", forget=list(FORGET), retain=list(RETAIN), eval_sets={})
    run = RunContext(torch.nn.Linear(1, 1), pairing_tokenizer, PromptFormat(), bench, max_new_tokens=8,
                     generation_batch_size=2)
    method = ChoosingRows(pairing_tokenizer, relabel=False)
    unlearn(method, run, TrainingConfig(epochs=2, learning_rate=1e-3, batch_size=2), seed=0)
    kinds = [event[0] for event in method.events]
    assert kinds == ["setup"] + (["epoch"] + ["rows", "batch"] * 3) * 2  # 5 examples, batch_size 2, 2 epochs
    steps = [event for event in method.events if event[0] in ("rows", "batch")]
    for (_, asked), (_, forget, _) in zip(steps[0::2], steps[1::2]):
        assert asked == [q for q, _ in forget]
