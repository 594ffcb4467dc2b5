"""Metric suites a run can select by name (`eval=[paper, ...]`).

A suite scores several models at once (some metrics compare models, e.g. TOFU's forget quality needs the retain
model) and returns, per model, a flat summary and per-example values from which every summary number can be
recomputed.
"""

from __future__ import annotations

from typing import Callable

from benchmarks.metrics import analyses, muse, paper, tofu
from benchmarks.metrics.common import EvalContext, SuiteResult

SUITES: dict[str, Callable[[dict, EvalContext], dict[str, SuiteResult]]] = {
    "paper": paper.evaluate,
    "tofu": tofu.evaluate,
    "muse": muse.evaluate,
    "analyses": analyses.evaluate,
}

__all__ = ["SUITES", "EvalContext", "SuiteResult"]
