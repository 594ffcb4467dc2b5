"""What the metric suites report in result tables and figures: their summary columns and trade-off pairs.

Declared apart from the suites' scoring code, in a module that imports nothing heavy, so that reporting
(pmc.reporting: scripts/collect.py, figures.py, claims.py) reads them without torch or transformers and builds a
table of finished runs in a second or two, on a login node as on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A summary metric a suite declares for result tables and figures (pmc.reporting reads these, not its own
    lists): results.json's metrics[model][suite][key], shown under `title`, plotted with `axis_label`."""

    suite: str
    key: str
    title: str
    axis_label: str
    digits: int = 2
    log_scale: bool = False  # symlog axes: e.g. a KS-test p-value can be exactly 0


# per declaring suite (benchmarks/metrics/<suite>.py), in the order their columns appear in tables and their
# trade-offs in figures: the summary metrics tables show, and the pair a trade-off figure plots (x, y)
PAPER_COLUMNS = (
    Column("paper", "unlearn_quality", "unlearn quality", "unlearn quality (%)"),
    Column("paper", "utility", "utility", "utility (%)"),
)
PAPER_TRADE_OFF = ("unlearn_quality", "utility")
TOFU_COLUMNS = (
    Column("tofu", "forget_quality", "forget quality",
           "forget quality (KS-test p-value; log scale, linear below 1e-4)", digits=3, log_scale=True),
    Column("tofu", "model_utility", "model utility", "model utility (harmonic mean, 0-1)", digits=3),
)
TOFU_TRADE_OFF = ("forget_quality", "model_utility")
_DECLARING = ((PAPER_COLUMNS, PAPER_TRADE_OFF), (TOFU_COLUMNS, TOFU_TRADE_OFF))


def table_columns() -> tuple[Column, ...]:
    """Every summary metric the suites declare for tables, in table order."""
    return tuple(column for columns, _ in _DECLARING for column in columns)


def trade_offs() -> list[tuple[Column, Column]]:
    """(x, y) column pairs the suites declare for trade-off figures, the first with data is plotted."""
    by_key = {(c.suite, c.key): c for c in table_columns()}
    return [(by_key[columns[0].suite, x], by_key[columns[0].suite, y]) for columns, (x, y) in _DECLARING]
