"""The one loader of a sweep's jobs, used by every report: which directories are jobs, which of them failed or are
missing, each job's setting (its overrides), and the files a job leaves (results.json, eval/<model>/<suite>.json,
train_log.jsonl, .hydra/). Reads files only.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

REFERENCES = ("target", "retain")  # the stage-0 models every job scores beside its unlearned one
# every file of a job the reports read (patterns under the job's directory): what an archive of a sweep keeps
# (eval files gzipped in an archive: pmc/reporting/archive.py)
REPORTED_FILES = ("results.json", "failure.json", "train_log.jsonl", ".hydra/config.yaml", ".hydra/overrides.yaml",
                  "eval/*/*.json", "eval/*/*.json.gz")
NOT_RECORDED = "not recorded (jobs from before 2026-11-27)"  # results.json without a machine or harness commit
DEFAULTS = "(defaults)"  # the setting of a job whose overrides are all shared with the other jobs


@dataclass(frozen=True)
class Job:
    """A job with results: its directory, its setting (the overrides that differ between the jobs read together,
    without the seed: jobs that differ only by seed are one setting) and its results.json."""

    path: Path
    setting: str
    results: dict


def same_scores(a, b) -> bool:
    """Whether two scores of a stage-0 model (numbers, or summaries of them) agree to a relative 1e-6: a model scored
    again (a sweep's later job, after the eval cache's key changed) decodes and scores in batches of another
    composition, which moves the last digits of a mean (docs/determinism.md); it is the same build, not another."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_scores(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_scores, a, b))
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) if numbers else a == b


def stage0_build(results: dict, model: str) -> tuple[str, dict | None]:
    """What names the build of a job's stage-0 `model` ("target", "retain"): its checkpoint's name (a cache entry's
    key, the same on every machine that built it) and its weights' sha256 digests (None for jobs before results.json
    recorded them)."""
    stage0 = results.get("stage0", {})
    return (Path(stage0.get("checkpoints", {}).get(model, model)).name,
            (stage0.get("weights_sha256") or {}).get(model))


def one_build(build: tuple, other: tuple) -> bool:
    """Whether two jobs' records of a stage-0 build, (model, checkpoint name, weights digests) as `stage0_build` gives
    them after the model, allow one build: the same model and checkpoint name, and the same digests unless a job
    recorded none (it is compared by its scores alone). The tables' reference rows and the analyses report's rows
    both ask this, then compare the scores."""
    (*name, digests), (*other_name, other_digests) = build, other
    return name == other_name and (digests is None or other_digests is None or digests == other_digests)


def natural_order(path: Path) -> list:
    """Sort key that puts job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in path.parts]


def job_dirs(roots: list[Path]) -> list[Path]:
    """Every directory under the roots that is a Hydra job (has .hydra/) or holds a results.json or failure.json."""
    found = set()
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"error: {root} is not a directory")
        found |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
        found |= {p.parent for name in ("results.json", "failure.json") for p in root.rglob(name)}
    return sorted(found, key=natural_order)


def job_problem(job: Path) -> tuple[str, str] | None:
    """Why a job has no results to collect: ("failed", "in <stage>: <error line>") or ("missing", why); None if it
    has some.

    A failure.json newer than the results.json (a rerun in the same directory that failed) counts as failed."""
    results, failure = job / "results.json", job / "failure.json"
    if failure.is_file() and (not results.is_file() or failure.stat().st_mtime > results.stat().st_mtime):
        try:
            record = json.loads(failure.read_text())
            return "failed", f"in {record.get('stage', '?')}: {record.get('error', '?')}"
        except (OSError, ValueError):
            return "failed", "its failure.json is unreadable"
    if not results.is_file():
        return "missing", "no results.json or failure.json: killed, preempted or still running"
    return None


# overrides that are not part of a setting: the seed (jobs that differ only by seed are one setting, its seeds) and
# how often a job saves its state, which changes no result (a resumed run matches one never cut off,
# tests/test_resume.py; gpu_check.sh sets checkpoint.min_interval_s in some sessions and not in others)
NOT_A_SETTING = ("seed=", "checkpoint.")


def overrides_of(job: Path) -> list[str]:
    """The job's command-line overrides that make its setting (NOT_A_SETTING left out)."""
    overrides_file = job / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    return [o for o in overrides or [] if not o.startswith(NOT_A_SETTING)]


def load_jobs(roots: list[Path]) -> tuple[list[Job], dict[str, tuple[str, str]]]:
    """(the jobs with results, in natural order; {job without results: job_problem(job)}).

    A job's setting leaves out the overrides every job shares (failed and missing ones included), so a sweep's
    table shows what varies."""
    dirs = job_dirs(roots)
    overrides = {job: overrides_of(job) for job in dirs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if len(dirs) > 1 else set()
    jobs, problems = [], {}
    for job in dirs:
        problem = job_problem(job)
        if problem:
            problems[str(job)] = problem
            continue
        setting = " ".join(o for o in overrides[job] if o not in shared) or DEFAULTS
        jobs.append(Job(job, setting, json.loads((job / "results.json").read_text())))
    return jobs, problems


def machine_label(results: dict) -> str:
    """Where a job ran, from its results.json's `machine` and `versions`: the CPU model and the instruction set torch
    picked its kernels for (or the GPU), and torch's version. Numbers repeat bit for bit only on one such machine
    (docs/determinism.md), and a sweep spread over sessions can span several."""
    found = results.get("machine")
    if not found:
        return NOT_RECORDED
    where = found.get("gpu") or f"{found.get('processor', '?')} ({found.get('cpu_capability', '?')})"
    return f"{where}, torch {(results.get('versions') or {}).get('torch', '?')}"


def commit_label(results: dict) -> str:
    """The harness commit a job ran from (results.json's versions), its hash cut to 10 characters."""
    found = (results.get("versions") or {}).get("pmc-harness-commit")
    if not found:
        return NOT_RECORDED
    commit, plus, modified = found.partition("+")
    return commit[:10] + plus + modified if len(commit) == 40 else found


def read_json(path: Path) -> dict | None:
    """A JSON file's content, None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def suite_file(job: str | Path, model: str, suite: str) -> dict | None:
    """eval/<model>/<suite>.json of a job (summary and per-example rows), or its gzipped copy in an archive
    (`<suite>.json.gz`); None when the job did not run the suite."""
    path = Path(job) / "eval" / model / f"{suite}.json"
    if path.is_file():
        return read_json(path)
    packed = path.with_name(path.name + ".gz")
    return json.loads(gzip.decompress(packed.read_bytes())) if packed.is_file() else None


def read_train_log(job: Path) -> pd.DataFrame:
    """The numeric columns of a job's train_log.jsonl (empty when it has none)."""
    path = job / "train_log.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    log = pd.DataFrame(rows)
    return log.select_dtypes("number") if "step" in log else pd.DataFrame()


def nested(config: dict, key: str, missing=None):
    """config["a"]["b"]["c"] for key "a.b.c", `missing` when any part is missing."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return missing
        config = config[part]
    return config


def setting_value(job: Path, key: str):
    """KEY's value in the job's overrides (KEY=..., +KEY=..., ++KEY=...), read with Hydra's own override grammar
    (YAML would read 3e-05 as a string, which a figure then drew beside the float 3e-05 of a job that took the
    value from its config), else in its composed config."""
    parser = OverridesParser.create()
    for override in overrides_of(job):
        parsed = parser.parse_override(override)
        if parsed.key_or_group == key and not parsed.is_delete():
            return parsed.value()
    config_file = job / ".hydra" / "config.yaml"
    return nested(yaml.safe_load(config_file.read_text()), key) if config_file.is_file() else None
