"""Collect the results.json files of one or more sweep (or run) directories into one table.

    python scripts/collect.py multirun/comparison/2026-11-24/12-00-00 --name comparison

One row per setting (the job's Hydra overrides without the seed), mean ± std over seeds, for the unlearned model;
the target and retain models (stage 0, the same for every job that shares them) are added as reference rows.
Writes results/tables/<name>.{md,csv,tex} (the CSV has every job) and lists, beside the table, the failed jobs (a
failure.json: the stage and the error line) and the missing ones (a job directory with neither results.json nor
failure.json: killed, preempted or still running); neither is in the table. The columns are the metrics the suites
declare; the work is done by pmc.reporting.tables. Reads files only; never imports the training code.
analyses_report.py writes <name>.md too: a name whose analyses report is in --out is refused, so the table never
replaces the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the harness's own packages first
from pmc.reporting import tables  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--name", required=True, help="file name stem of the tables")
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    args = parser.parse_args(argv)
    report = args.out / f"{args.name}_collateral.png"
    if report.exists():  # analyses_report.py writes <name>.md beside its figures
        print(f"error: {args.out / args.name}.md is an analyses report (analyses_report.py, beside {report.name}); "
              f"the table would replace it: choose another --name", file=sys.stderr)
        return 2

    per_job, summary, problems = tables.collect(args.dirs)
    if per_job.empty:
        tables.report_problems(problems)
        print(f"error: no results.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    print(tables.write_tables(per_job, summary, args.out, args.name))
    print(f"{(per_job['model'] == 'unlearned').sum()} jobs collected into {args.out / args.name}.{{md,csv,tex}}")
    tables.report_problems(problems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
