"""Result tables with pandas: one row per job, mean ± std per setting, written as Markdown, CSV and LaTeX.

The metric columns are the ones the suites declare (benchmarks.metrics.table_columns), in their order; a column
without data in any job is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from benchmarks.metrics import Column, table_columns
from pmc.reporting.jobs import REFERENCES, load_jobs, one_build, same_scores, stage0_build


def column(suite: str, key: str) -> Column:
    """The declared table column of results.json's metrics[model][suite][key]."""
    for declared in table_columns():
        if (declared.suite, declared.key) == (suite, key):
            return declared
    raise KeyError(f"no metric suite declares the table column {suite}.{key} (benchmarks.metrics.table_columns)")


def metric_row(results: dict, model: str) -> dict:
    """{column title: the model's value, None when its job did not run the suite}."""
    metrics = results["metrics"][model]
    return {c.title: metrics.get(c.suite, {}).get(c.key) for c in table_columns()}


def distinct_builds(references: list[tuple[tuple, dict]]) -> list[dict]:
    """The reference rows, one per build: of the rows [((model, checkpoint name, weights digests), row)] that are one
    build, the first of those with the most columns. Two rows of a model are one build when they name the same
    checkpoint, the same weights where both jobs recorded them, and agree in every column both have (`same_scores`:
    a build scored again moves the last digits) while one row's columns are all the other's: a job that ran fewer
    suites (an ablation scored by the paper suite alone) scored the same build as a job with those values and more."""
    distinct = {}  # the rows less exact repeats (every job of a sweep repeats its stage-0 rows), in order
    for build, row in references:
        scores = {c.title: row[c.title] for c in table_columns() if row[c.title] is not None}
        distinct.setdefault(json.dumps([build, scores], sort_keys=True, default=str), (build, scores, row))
    candidates = list(distinct.values())

    def same_build(a: tuple, b: tuple) -> bool:
        (build, scores, _), (other_build, other_scores, _) = a, b
        nested = scores.keys() <= other_scores.keys() or other_scores.keys() <= scores.keys()
        return (one_build(build, other_build) and nested
                and all(same_scores(scores[title], other_scores[title]) for title in scores.keys() & other_scores))

    def covered(index: int) -> bool:  # another row of its build has more columns, or as many and comes first
        rank = (len(candidates[index][1]), -index)
        return any(position != index and (len(other[1]), -position) > rank and same_build(candidates[index], other)
                   for position, other in enumerate(candidates))

    return [row for index, (_, _, row) in enumerate(candidates) if not covered(index)]


def collect(roots: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, tuple[str, str]]]:
    """(one row per job, one row per setting with mean and std, {job without results: jobs.job_problem(job)}).

    Rows are the unlearned models; the target and retain models (stage 0, the same for every job that shares them)
    are added as reference rows, once per checkpoint name and scores: a stage-0 cache entry built again on another
    machine has the same name (its key) but other weights, so jobs from two machines give two reference rows, whose
    mean and std the summary shows (`seeds` then counts the builds); one entry read from two cache directories
    (another `cache_dir`) is one row.

    A setting's mean and std are over its distinct seeds, `seeds` counts them and `jobs` its jobs: jobs that repeat
    a seed (a reproducibility check on another GPU, a rerun) are averaged into that seed first, so they neither
    weigh it twice nor show as seeds that agree to the last digit."""
    jobs, problems = load_jobs(roots)
    rows, references = [], []
    for job in jobs:
        results = job.results
        rows.append({"job": str(job.path), "model": "unlearned", "setting": job.setting, "method": results["method"],
                     "seed": results["seed"], **metric_row(results, "unlearned")})
        for model in REFERENCES:
            references.append(((model, *stage0_build(results, model)), {
                "job": str(job.path), "model": model, "setting": f"{model} model (stage 0)", "method": model,
                "seed": results["seed"], **metric_row(results, model)}))
    per_job = pd.DataFrame(rows + distinct_builds(references))
    if per_job.empty:
        return per_job, per_job, problems
    per_job = per_job.dropna(axis=1, how="all")
    metrics = [c.title for c in table_columns() if c.title in per_job]
    # what one seed is: an unlearned job's seed; for a reference row, its build (each row is one)
    units = per_job["seed"].astype(str).where(per_job["model"] == "unlearned", per_job.index.astype(str))
    keys = ["setting", "method"]
    per_seed = per_job.assign(unit=units).groupby([*keys, "unit"], sort=False)[metrics].mean()
    grouped = per_seed.groupby(level=keys, sort=False)
    summary = (grouped.mean().join(grouped.std().add_suffix(" std")).join(grouped.size().rename("seeds"))
               .join(per_job.groupby(keys, sort=False).size().rename("jobs")).reset_index())
    return per_job, summary, problems


def report_problems(problems: dict[str, tuple[str, str]]) -> None:
    """One line per job without results, e.g. "failed: multirun/x/3 (in unlearn: loss became nan ...)"."""
    for job, (status, why) in problems.items():
        print(f"{status}: {job} ({why})")


def formatted(summary: pd.DataFrame) -> pd.DataFrame:
    """'mean ± std' cells with two decimals (just the mean for a single seed); `seeds` names the jobs too where some
    repeat a seed ("1 (2 jobs)")."""
    out = summary[["setting", "method"]].copy()
    out["seeds"] = [str(seeds) if jobs == seeds else f"{seeds} ({jobs} jobs)"
                    for seeds, jobs in zip(summary["seeds"], summary["jobs"])]
    for title in (c.title for c in table_columns() if c.title in summary):
        std = summary[f"{title} std"]
        out[title] = [f"{m:.2f}" if pd.isna(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(summary[title], std)]
    return out


def markdown_table(headers: list[str], rows: Iterable, numeric: bool = False) -> str:
    """A Markdown table; with `numeric`, every column but the first right-aligned."""
    rule = ["---"] + ["---:" if numeric else "---"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(table: pd.DataFrame) -> str:
    return markdown_table(list(table.columns), table.itertuples(index=False))


def latex(table: pd.DataFrame) -> str:
    escape = lambda v: str(v).replace("_", r"\_").replace("±", r"$\pm$").replace("%", r"\%")
    lines = [r"\begin{tabular}{" + "l" * 2 + "r" * (len(table.columns) - 2) + "}", r"\toprule",
             " & ".join(escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def write_tables(per_job: pd.DataFrame, summary: pd.DataFrame, out: Path, name: str) -> str:
    """Write out/<name>.md and .tex (one row per setting) and .csv (one row per job); returns the Markdown."""
    table = formatted(summary)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table)
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.tex").write_text(latex(table))
    per_job.to_csv(out / f"{name}.csv", index=False)
    return text
