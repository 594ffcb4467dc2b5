"""What the claims read: the jobs of some sweep directories (as pmc.reporting.tables collects them) and their
suite files, a claim's row, and the number formatting of the claims table."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pmc.reporting.jobs import DEFAULTS, REFERENCES, stage0_build, suite_file
from pmc.reporting.tables import collect, column

UQ = column("paper", "unlearn_quality").title
UTILITY = column("paper", "utility").title
ANALYSES_MISSING = "eval/<model>/analyses.json (run with eval=[...,analyses])"


@dataclass
class Claim:
    """One row of the claims table: what the paper says, the rule that decides it, the numbers and the verdict."""

    id: str
    statement: str
    rule: str
    verdict: str = ""
    measured: list[str] = field(default_factory=list)
    details: str = ""

    def untestable(self, why: str) -> "Claim":
        self.verdict = f"not testable: {why}"
        return self

    def decide(self, holds: bool) -> "Claim":
        self.verdict = "holds" if holds else "does not hold"
        return self


def fmt(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_of(values) -> float:
    """Mean of the finite values, NaN when there is none (a suite writes NaN where nothing was left to average)."""
    kept = [v for v in values if finite(v)]
    return sum(kept) / len(kept) if kept else math.nan


def label(method: str, setting: str) -> str:
    """'pmc (learning_rate=3e-05)': the method and its setting's other overrides, by their last key part."""
    extra = []
    for override in ([] if setting == DEFAULTS else setting.split()):
        key, _, value = override.lstrip("+~").partition("=")
        if key not in ("method", "experiment"):
            extra.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return method + (f" ({', '.join(extra)})" if extra else "")


class Sweeps:
    """The jobs of some sweep directories as pmc.reporting.tables collects them, and their suite files."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs
        self.per_job, self.summary, self.failed = collect(dirs)
        self.unlearned = (self.per_job[self.per_job["model"] == "unlearned"] if not self.per_job.empty
                          else self.per_job)
        starts = {job: stage0_start(job) for job in self.unlearned["job"]} if not self.unlearned.empty else {}
        for part, why in (("checkpoints", "another stage0.seed or stage-0 setting"),
                          ("weights", "the same cache entries built twice, on machines whose weights differ")):
            recorded = {job: start[part] for job, start in starts.items() if start and start[part] is not None}
            if len(set(recorded.values())) > 1:
                raise SystemExit(f"error: the claims compare every job with one target and retain model, but these "
                                 f"jobs start from different {part} ({why}): " + "; ".join(
                                     f"{job}: {value}" for job, value in recorded.items()) + ". Report them apart.")

    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.unlearned["method"])) if not self.unlearned.empty else []

    def jobs(self, method: str, setting: str) -> list[str]:
        rows = self.unlearned
        return list(rows.loc[(rows["method"] == method) & (rows["setting"] == setting), "job"])

    def best_setting(self, method: str) -> tuple[str, list[str]] | None:
        """(label, jobs) of the method's setting with the highest unlearn quality (mean over seeds); the first
        setting when no job has one. None when the method has no job."""
        rows = self.summary[self.summary["method"] == method]
        if rows.empty:
            return None
        if UQ in rows and rows[UQ].notna().any():
            row = rows.loc[rows[UQ].idxmax()]
        else:
            row = rows.iloc[0]
        return label(method, row["setting"]), self.jobs(method, row["setting"])

    def reference(self, model: str, suite: str) -> dict | None:
        """The target's or retain model's suite file (stage 0 is shared: the first job that has one)."""
        for job in self.unlearned["job"] if not self.unlearned.empty else []:
            found = suite_file(job, model, suite)
            if found is not None:
                return found
        return None


def stage0_start(job: str) -> dict | None:
    """What a job's results.json says it started from, None if it has no record: "checkpoints", the target's and
    retain model's names, and "weights", their weight files' sha256 (None in jobs run before results.json held them,
    so those are compared by name only)."""
    path = Path(job) / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if not results.get("stage0", {}).get("checkpoints"):
        return None
    builds = [stage0_build(results, role) for role in REFERENCES]
    return {"checkpoints": tuple(name for name, _ in builds),
            "weights": None if any(weights is None for _, weights in builds) else tuple(
                tuple(sorted(weights.items())) for _, weights in builds)}


def analyses_at_best(sweeps: Sweeps, method: str) -> tuple[str, list[dict]] | str:
    """(label, the analyses files of the method's best setting), or why there are none."""
    best = sweeps.best_setting(method)
    if best is None:
        return f"no {method} run"
    name, jobs = best
    files = [suite_file(job, "unlearned", "analyses") for job in jobs]
    if any(f is None for f in files):
        return f"no {ANALYSES_MISSING.replace('<model>', 'unlearned')} for {name}"
    return name, files


def summary_mean(files: list[dict], key: str) -> float:
    return mean_of(f["summary"].get(key) for f in files)


def cell(text) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text or "*(empty)*"

