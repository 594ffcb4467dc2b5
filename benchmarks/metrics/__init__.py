"""Metric suites a run selects by name (`eval=[paper, ...]`), one config each in conf/eval/<name>.yaml.

Each suite is a `Suite` dataclass (benchmarks.metrics.common) whose fields are its settings; `build_suites` turns
the run config's `eval` node into Suite objects, checking every key and type. Suites share the scoring toolkit
(benchmarks.metrics.scoring) and pmc.core; no suite imports another.
"""

from __future__ import annotations

from benchmarks.metrics import paper, tofu
from benchmarks.metrics.analyses import AnalysesSuite
from benchmarks.metrics.common import Column, EvalContext, Suite, SuiteResult, build_suites
from benchmarks.metrics.muse import MuseSuite
from benchmarks.metrics.paper import PaperSuite
from benchmarks.metrics.tofu import TofuSuite

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


__all__ = ["AnalysesSuite", "Column", "EvalContext", "MuseSuite", "PaperSuite", "Suite", "SuiteResult", "TofuSuite",
           "build_suites", "table_columns", "trade_offs"]
