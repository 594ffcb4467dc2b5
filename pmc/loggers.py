"""Experiment loggers selected by `logger=<name>`; every run also writes train_log.jsonl itself (see pmc.run)."""

from __future__ import annotations


class NullLogger:
    """`logger=none`: log nowhere but the run directory."""

    def __init__(self, **_run_info):
        pass

    def log_step(self, record: dict) -> None:
        pass

    def log_results(self, results: dict, run_dir: str) -> None:
        pass

    def finish(self) -> None:
        pass
