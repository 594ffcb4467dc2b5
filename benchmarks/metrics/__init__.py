"""Metric suites a run can select by name (`eval=[paper, ...]`).

A suite scores several models at once (some metrics compare models, e.g. TOFU's forget quality needs the retain
model) and returns, per model, a flat summary and per-example values from which every summary number can be
recomputed. `evaluate(models, ctx, known)`: `known` holds results already at hand for some of the models (the
stage-0 models' from the eval cache, pmc.eval_cache); the suite scores only the others and returns their results,
taking what a comparison needs from the known results (or, where it needs the model itself, from `models`).
"""

from __future__ import annotations

from typing import Callable, Mapping

from benchmarks.metrics import analyses, muse, paper, tofu
from benchmarks.metrics.common import EvalContext, SuiteResult

SUITES: dict[str, Callable[[dict, EvalContext, Mapping[str, SuiteResult] | None], dict[str, SuiteResult]]] = {
    "paper": paper.evaluate,
    "tofu": tofu.evaluate,
    "muse": muse.evaluate,
    "analyses": analyses.evaluate,
}

__all__ = ["SUITES", "EvalContext", "SuiteResult"]
