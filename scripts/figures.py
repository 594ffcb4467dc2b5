"""Paper-style figures from one or more sweep (or run) directories.

    python scripts/figures.py multirun/method_comparison/2026-11-24/12-05-02 --name method_comparison
    python scripts/figures.py multirun/pmc_samples/... --name pmc_samples --ablation method.handler.num_samples

Writes results/figures/<name>_pareto.{png,pdf} (unlearn quality vs utility of the unlearned models, mean ± std over
seeds per setting, each method's Pareto front, the target and retain models as references),
<name>_dynamics.{png,pdf} (the loss terms of train_log.jsonl vs optimiser step, mean ± std over seeds, one row per
method) and, with --ablation KEY, <name>_ablation_<KEY>.{png,pdf} (unlearn quality and utility vs the value of that
override). The axes are the first trade-off pair the suites declare that has data. Jobs are found and read as
collect.py reads them; the work is done by pmc.reporting.figures. Reads files only, never imports the training code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the harness's own packages first
from pmc.reporting import figures, tables  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--name", required=True, help="file name stem of the figures")
    parser.add_argument("--ablation", metavar="KEY", help="also plot the metrics vs this override, e.g. "
                                                          "method.handler.num_samples")
    parser.add_argument("--out", type=Path, default=Path("results/figures"))
    args = parser.parse_args(argv)

    per_job, summary, problems = tables.collect(args.dirs)  # failed and missing jobs are not in per_job
    tables.report_problems(problems)
    if per_job.empty or not (per_job["model"] == "unlearned").any():
        print(f"error: no results.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    for path in sorted(figures.write_figures(per_job, summary, args.out, args.name, args.ablation)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
