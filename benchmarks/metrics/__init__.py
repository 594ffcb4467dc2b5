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
from benchmarks.metrics.common import Column, EvalContext, SuiteResult

SUITES: dict[str, Callable[[dict, EvalContext, Mapping[str, SuiteResult] | None], dict[str, SuiteResult]]] = {
    "paper": paper.evaluate,
    "tofu": tofu.evaluate,
    "muse": muse.evaluate,
    "analyses": analyses.evaluate,
}

# suites in the order their columns appear in tables and their trade-offs in figures
_DECLARING = (paper, tofu)


def table_columns() -> tuple[Column, ...]:
    """Every summary metric the suites declare for tables, in table order."""
    return tuple(column for suite in _DECLARING for column in suite.COLUMNS)


def trade_offs() -> list[tuple[Column, Column]]:
    """(x, y) column pairs the suites declare for trade-off figures, the first with data is plotted."""
    by_key = {(c.suite, c.key): c for c in table_columns()}
    return [(by_key[s.COLUMNS[0].suite, s.TRADE_OFF[0]], by_key[s.COLUMNS[0].suite, s.TRADE_OFF[1]])
            for s in _DECLARING]


__all__ = ["SUITES", "Column", "EvalContext", "SuiteResult", "table_columns", "trade_offs"]
