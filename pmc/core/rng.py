"""A random.Random's state as JSON, so that methods and the training loop can checkpoint their random streams
(pmc/checkpoint.py writes it; a resumed run draws the same numbers as an uninterrupted one)."""

from __future__ import annotations

import random


def rng_state(rng: random.Random) -> list:
    """A random.Random's state as JSON (version, 625 integers, gauss_next)."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def set_rng_state(rng: random.Random, state: list) -> None:
    version, internal, gauss_next = state
    rng.setstate((version, tuple(internal), gauss_next))
