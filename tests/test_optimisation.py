"""The learning-rate schedule is sized from the optimizer steps the method's epochs take: HF's numbers exactly while
every epoch takes the same steps, re-sized (and still reaching zero) when a later epoch takes fewer (ICU)."""

from __future__ import annotations

import pytest
import torch
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from pmc.optimisation import LearningRateSchedule, TrainingConfig
from pmc.trainer import optimise


def hf_factors(schedule: str, warmup: int, total: int) -> list[float]:
    """transformers' own multipliers for steps 0 .. total (its schedulers, not a copy of their formula)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    if schedule == "linear":
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    else:
        scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
    return [scheduler.lr_lambdas[0](step) for step in range(total + 1)]


@pytest.mark.parametrize("schedule, warmup, total", [
    ("linear", 0, 7), ("linear", 2, 10), ("linear", 25, 750), ("linear", 6, 6), ("constant", 3, 10),
])
def test_a_schedule_that_is_never_resized_is_hfs_exactly(schedule, warmup, total):
    ours = LearningRateSchedule(schedule, warmup, total)
    assert [ours(step) for step in range(total + 1)] == hf_factors(schedule, warmup, total)


def scalar_model() -> torch.nn.Module:
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    return model


def logged_lrs(training: TrainingConfig, epoch_sizes: list[int]) -> list[float]:
    logs = []
    optimise(scalar_model(), training, lambda epoch: [1.0] * epoch_sizes[epoch],
             lambda model, c: {"loss": model.weight.sum() * c}, logs.append)
    return [record["lr"] for record in logs]


def test_equal_epochs_keep_hfs_schedule_over_all_steps():
    # 5 micro-batches, accumulation 2: 3 steps per epoch, 3 epochs = 9 steps; one warm-up epoch = int(5 / 2) = 2
    training = TrainingConfig(epochs=3, learning_rate=1.0, gradient_accumulation_steps=2, warmup_epochs=1,
                              schedule="linear")
    assert logged_lrs(training, [5, 5, 5]) == hf_factors("linear", 2, 9)[:9]


def test_shrinking_epochs_resize_the_decay_to_the_steps_taken():
    """Epochs of 4, 4, 2, 2 steps (ICU forgetting items): planned 16 steps, warm-up 4. At the third epoch the plan
    becomes 8 + 2·2 = 12 steps, and the decay goes on from its factor there, (16 − 8)/12 = 2/3, to 0 at step 12."""
    training = TrainingConfig(epochs=4, learning_rate=1.0, warmup_epochs=1, schedule="linear")
    lrs = logged_lrs(training, [4, 4, 2, 2])
    expected = [0, 1 / 4, 2 / 4, 3 / 4,  # warm-up: step / 4
                1, 11 / 12, 10 / 12, 9 / 12,  # (16 − step) / 12
                2 / 3, 2 / 3 * 3 / 4, 2 / 3 * 2 / 4, 2 / 3 * 1 / 4]  # 2/3 · (12 − step) / 4
    assert lrs == pytest.approx(expected)
    # sized from the first epoch alone, the last step would still train at (16 − 11) / 12
    assert lrs[-1] < 5 / 12


def test_growing_epochs_resize_too_and_a_constant_schedule_stays_constant():
    linear = TrainingConfig(epochs=3, learning_rate=1.0, schedule="linear")
    # 2 steps planned 6; at epoch 2 (4 steps) 2 + 4·2 = 10: from (6 − 2)/6 = 2/3 down to 0 at step 10
    assert logged_lrs(linear, [2, 4, 4]) == pytest.approx(
        [1, 5 / 6] + [2 / 3 * (10 - step) / 8 for step in range(2, 10)])
    assert logged_lrs(TrainingConfig(epochs=3, learning_rate=0.5), [3, 1, 2]) == [0.5] * 6


def test_resizing_during_warmup_leaves_the_warmup_alone():
    schedule = LearningRateSchedule("linear", warmup=4, total=20)
    schedule.resize(2, 10)
    assert [schedule(step) for step in range(11)] == hf_factors("linear", 4, 10)


def test_the_resized_plan_travels_with_the_schedulers_state_dict():
    """A checkpoint keeps the scheduler's state_dict: a resumed run must decay as the interrupted one planned."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LearningRateSchedule("linear", 4, 16)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    schedule.resize(8, 12)
    fresh = LearningRateSchedule("linear", 4, 16)
    restored = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                                                 fresh)
    restored.load_state_dict(scheduler.state_dict())
    assert vars(fresh) == vars(schedule) and fresh(10) == pytest.approx(2 / 3 * 2 / 4)
