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

# the suites this package ships, class name -> its module; build_suites lists them by name (common.py)
SHIPPED_SUITES = {
    "AnalysesSuite": "benchmarks.metrics.analyses",
    "MuseSuite": "benchmarks.metrics.muse",
    "PaperSuite": "benchmarks.metrics.paper",
    "TofuSuite": "benchmarks.metrics.tofu",
}
# name -> the module defining it, imported on first use (PEP 562)
_LAZY = {**SHIPPED_SUITES, **{name: "benchmarks.metrics.common"
                              for name in ("EvalContext", "Suite", "SuiteResult", "build_suites")}}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AnalysesSuite", "Column", "EvalContext", "MuseSuite", "PaperSuite", "Suite", "SuiteResult", "TofuSuite",
           "build_suites", "table_columns", "trade_offs"]
