"""Metric suites a run selects by name (`eval=[paper, ...]`), one config each in conf/eval/<name>.yaml.

Each suite is a `Suite` dataclass (benchmarks.metrics.common) whose fields are its settings; `build_suites` turns
the run config's `eval` node into Suite objects, checking every key and type. Suites share the scoring toolkit
(benchmarks.metrics.scoring) and pmc.core; no suite imports another.

What the suites report in tables and figures (`Column`, `table_columns`, `trade_offs`: benchmarks.metrics.columns)
is imported with the package; the suites and their toolkit (torch, transformers) only when first named, so that
reporting never pays for them.
"""

from __future__ import annotations

import importlib

from benchmarks.metrics.columns import Column, table_columns, trade_offs

# name -> the module defining it, imported on first use (PEP 562)
_SUITE_NAMES = {
    "AnalysesSuite": "benchmarks.metrics.analyses",
    "EvalContext": "benchmarks.metrics.common",
    "MuseSuite": "benchmarks.metrics.muse",
    "PaperSuite": "benchmarks.metrics.paper",
    "Suite": "benchmarks.metrics.common",
    "SuiteResult": "benchmarks.metrics.common",
    "TofuSuite": "benchmarks.metrics.tofu",
    "build_suites": "benchmarks.metrics.common",
}


def __getattr__(name: str):
    if name in _SUITE_NAMES:
        return getattr(importlib.import_module(_SUITE_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AnalysesSuite", "Column", "EvalContext", "MuseSuite", "PaperSuite", "Suite", "SuiteResult", "TofuSuite",
           "build_suites", "table_columns", "trade_offs"]
