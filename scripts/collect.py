"""Collect the results.json files of one or more sweep (or run) directories into one table.

    python scripts/collect.py multirun/comparison/2026-11-24/12-00-00 --name comparison

One row per setting (the job's Hydra overrides without the seed), mean ± std over seeds, for the unlearned model;
the target and retain models (stage 0, the same for every job that shares them) are added as reference rows.
Writes results/tables/<name>.{md,csv,tex} (the CSV has every job) and lists, beside the table, the failed jobs (a
failure.json: the stage and the error line) and the missing ones (a job directory with neither results.json nor
failure.json: killed, preempted or still running); neither is in the table. Reads files only; never imports the
training code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

# (suite, metric) -> column title; columns without data in any job are dropped
COLUMNS = {
    ("paper", "unlearn_quality"): "unlearn quality",
    ("paper", "utility"): "utility",
    ("tofu", "forget_quality"): "forget quality",
    ("tofu", "model_utility"): "model utility",
}


def job_dirs(roots: list[Path]) -> list[Path]:
    """Every directory under the roots that is a Hydra job (has .hydra/) or holds a results.json or failure.json."""
    found = set()
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"error: {root} is not a directory")
        found |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
        found |= {p.parent for name in ("results.json", "failure.json") for p in root.rglob(name)}
    return sorted(found, key=lambda p: [int(part) if part.isdigit() else part for part in p.parts])


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


def overrides_of(job: Path) -> list[str]:
    """The job's command-line overrides without the seed: jobs that differ only by seed are one setting."""
    overrides_file = job / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    return [o for o in overrides or [] if not o.startswith("seed=")]


def metric_row(results: dict, model: str) -> dict:
    return {title: results["metrics"][model].get(suite, {}).get(key) for (suite, key), title in COLUMNS.items()}


def collect(roots: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, tuple[str, str]]]:
    """(one row per job, one row per setting with mean and std, {job without results: job_problem(job)})."""
    rows, problems, references = [], {}, {}
    jobs = job_dirs(roots)
    overrides = {job: overrides_of(job) for job in jobs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if len(jobs) > 1 else set()
    for job in jobs:
        problem = job_problem(job)
        if problem:
            problems[str(job)] = problem
            continue
        results = json.loads((job / "results.json").read_text())
        setting = " ".join(o for o in overrides[job] if o not in shared) or "(defaults)"
        rows.append({"job": str(job), "model": "unlearned", "setting": setting, "method": results["method"],
                     "seed": results["seed"], **metric_row(results, "unlearned")})
        for model in ("target", "retain"):
            checkpoint = results.get("stage0", {}).get("checkpoints", {}).get(model, model)
            references.setdefault((model, checkpoint), {"job": str(job), "model": model,
                                                       "setting": f"{model} model (stage 0)",
                                                       "method": model, "seed": results["seed"],
                                                       **metric_row(results, model)})
    per_job = pd.DataFrame(rows + list(references.values()))
    if per_job.empty:
        return per_job, per_job, problems
    per_job = per_job.dropna(axis=1, how="all")
    metrics = [c for c in COLUMNS.values() if c in per_job]
    grouped = per_job.groupby(["setting", "method"], sort=False)[metrics]
    summary = grouped.mean().join(grouped.std().add_suffix(" std")).join(grouped.size().rename("seeds")).reset_index()
    return per_job, summary, problems


def report_problems(problems: dict[str, tuple[str, str]]) -> None:
    """One line per job without results, e.g. "failed: multirun/x/3 (in unlearn: loss became nan ...)"."""
    for job, (status, why) in problems.items():
        print(f"{status}: {job} ({why})")


def formatted(summary: pd.DataFrame) -> pd.DataFrame:
    """'mean ± std' cells (just the mean for a single seed)."""
    out = summary[["setting", "method", "seeds"]].copy()
    for column in (c for c in COLUMNS.values() if c in summary):
        std = summary[f"{column} std"]
        out[column] = [f"{m:.2f}" if pd.isna(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(summary[column], std)]
    return out


def markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def latex(table: pd.DataFrame) -> str:
    escape = lambda v: str(v).replace("_", r"\_").replace("±", r"$\pm$").replace("%", r"\%")
    lines = [r"\begin{tabular}{" + "l" * 2 + "r" * (len(table.columns) - 2) + "}", r"\toprule",
             " & ".join(escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--name", required=True, help="file name stem of the tables")
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    args = parser.parse_args(argv)

    per_job, summary, problems = collect(args.dirs)
    if per_job.empty:
        report_problems(problems)
        print(f"error: no results.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    table = formatted(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(markdown(table))
    (args.out / f"{args.name}.tex").write_text(latex(table))
    per_job.to_csv(args.out / f"{args.name}.csv", index=False)
    print(markdown(table))
    print(f"{(per_job['model'] == 'unlearned').sum()} jobs collected into {args.out / args.name}.{{md,csv,tex}}")
    report_problems(problems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
