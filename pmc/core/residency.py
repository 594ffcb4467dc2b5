"""Models that take turns on one device: each comes onto it when it is about to compute, and the one that was there
goes to host memory first, so the device holds one model's weights however many models a job scores.

Evaluation scores three models (target, retain, unlearned), and with Llama-3.1-8B their bf16 weights are 45 GiB, more
than a 40 or 48 GB GPU holds beside the decoding, though each model alone (15 GiB) fits. Taking turns costs two
transfers per turn (the model leaving, the one arriving), seconds for an 8B model against the minutes its scoring
takes (and where decoding is compiled, its CUDA graphs are recorded again for the weights' new addresses), so it is a
setting (`eval_one_model_on_device`), not the default.

Every place a model computes in evaluation reads its device through `device_of` first (`greedy_answers`' decoding,
`score_batches`' token scoring); that is where a model takes its turn. A model that takes no turns (training, or a
job that keeps every model on the device) is only read."""

from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from typing import Callable, Iterable

import torch

HOST = torch.device("cpu")

# model -> the DeviceTurns it belongs to, while the block of `taking_turns` runs
_TURNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class DeviceTurns:
    """The models sharing `device`, and which of them is on it (`current`). `on_park(model)` runs after a model has
    left the device, for what it keeps there besides its weights (`pmc.core.generation.release_kept_caches`)."""

    def __init__(self, device: torch.device, on_park: Callable[[torch.nn.Module], None] | None = None):
        self.device, self.on_park = torch.device(device), on_park
        self.current: torch.nn.Module | None = None
        self.moving_s = 0.0  # seconds spent moving models (results.json's timings_s "eval.turns")

    def take(self, model: torch.nn.Module) -> None:
        """`model` onto the device, the model that was there to host memory first (so the two are never on the
        device together)."""
        if model is self.current:
            return
        if self.current is not None:
            self.park(self.current)
        start = time.perf_counter()
        model.to(self.device)
        self.moving_s += time.perf_counter() - start
        self.current = model

    def park(self, model: torch.nn.Module) -> None:
        start = time.perf_counter()
        model.to(HOST)
        self.moving_s += time.perf_counter() - start
        if self.on_park is not None:
            self.on_park(model)
        if model is self.current:
            self.current = None


def device_of(model: torch.nn.Module) -> torch.device:
    """The device `model` computes on; a model taking turns (`taking_turns`) is brought onto it first."""
    turns = _TURNS.get(model)
    if turns is not None:
        turns.take(model)
    return next(model.parameters()).device


def on_host(model: torch.nn.Module) -> bool:
    return next(model.parameters()).device == HOST


@contextmanager
def taking_turns(models: Iterable[torch.nn.Module], device: torch.device, enabled: bool,
                 on_park: Callable[[torch.nn.Module], None] | None = None):
    """While the block runs, `models` take turns on `device` (`DeviceTurns`): the first of them found off the host
    stays where it is, any other there goes to host memory now, and each comes onto the device when it next computes
    (`device_of`). When the block ends they stay where their turns left them, one on the device and the others in
    host memory: bringing them all back could need the memory the turns saved. Disabled, nothing moves; on a CPU the
    host is the device, so the turns are kept but nothing moves either."""
    models = list(dict.fromkeys(models))
    if not enabled:
        yield None
        return
    turns = DeviceTurns(device, on_park)
    for model in models:
        if on_host(model):
            continue
        if turns.current is None:
            turns.current = model
        else:
            turns.park(model)
    for model in models:
        _TURNS[model] = turns
    try:
        yield turns
    finally:
        for model in models:
            _TURNS.pop(model, None)
