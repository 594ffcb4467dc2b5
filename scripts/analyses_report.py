"""Report the robustness analyses (`eval=analyses`) of one or more sweep (or run) directories.

    python scripts/analyses_report.py multirun/analyses/<date>/<time> --name analyses

Writes results/analyses/<name>.md (one table per analysis with the target, the retain and every job's unlearned
model, then example answers) and PNG figures beside it: <name>_collateral.png (histograms of the per-token
log-probability shift against the target), <name>_attack.png (least-likely attack rate vs chance),
<name>_sampling.png, <name>_prefill.png (leakage) and <name>_quality.png (response quality). Reads only each job's
results.json and eval/<model>/*.json files; the target and retain rows come from the first job (stage 0 is shared
by every job of a sweep), and from any job whose stage-0 models scored differently (built again elsewhere). The work
is done by pmc.reporting.analyses. collect.py writes <name>.md too: a name whose results table is in --out is
refused, so the report never replaces the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the harness's own packages first
from pmc.reporting import analyses  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--name", required=True, help="file name stem of the report and figures")
    parser.add_argument("--out", type=Path, default=Path("results/analyses"))
    parser.add_argument("--examples", type=int, default=3, help="example questions shown in the report")
    args = parser.parse_args(argv)
    table = args.out / f"{args.name}.csv"
    if table.exists():
        print(f"error: {table} is a results table (collect.py) named {args.name!r}; the report would replace its "
              f"{args.name}.md: choose another --name (e.g. {args.name}_analyses)", file=sys.stderr)
        return 2

    models, first, skipped = analyses.load(args.dirs)
    if first is None:
        print(f"error: no run with eval/unlearned/analyses.json under {', '.join(map(str, args.dirs))} "
              "(run with eval=[...,analyses])", file=sys.stderr)
        return 1
    figures = analyses.write_report(models, first, args.out, args.name, args.examples)
    methods = [label for label in models if not analyses.reference_of(label)]
    print(f"{len(methods)} unlearned model(s) reported in {args.out / args.name}.md, figures {', '.join(figures)}")
    for job in skipped:
        print(f"skipped: {job} (no eval/unlearned/analyses.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
