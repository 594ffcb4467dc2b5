"""Reporting: the application layer that turns finished sweeps into tables, figures, the analyses report and the
claims table (scripts/collect.py, figures.py, analyses_report.py and claims.py are its command lines).

It reads only what runs leave on disk (jobs.py is the one loader: job directories, failed and missing jobs,
overrides, results.json, eval/<model>/<suite>.json, train_log.jsonl) and takes its table columns and trade-off axes
from what the metric suites declare (benchmarks.metrics.table_columns, trade_offs). It never imports the training
code, and nothing below it imports it.
"""
