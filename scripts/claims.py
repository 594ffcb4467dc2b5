"""Which of the PMC paper's claims the collected sweeps reproduce: a generated claims table (results/claims.md).

    python scripts/claims.py SWEEP_DIR [SWEEP_DIR ...] [--ablation NAME=DIR ...] [--out results/claims.md]

One row per claim of the paper (C1-C6; pmc.reporting.claims describes each): the rule that decides it, the measured
numbers, and a verdict: "holds", "does not hold", or "not testable: <what is missing>". The rules are in
pmc/reporting/claims/rules.py and ablations.py, their thresholds in pmc/reporting/claims/thresholds.py. Reads files
only; never imports the training code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the harness's own packages first
from pmc.reporting import claims  # noqa: E402


def parse_ablations(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, list[Path]]:
    """{ablation name: its directories} from the --ablation NAME=DIR arguments."""
    ablations: dict[str, list[Path]] = {}
    for item in given:
        name, sep, directory = item.partition("=")
        if not sep or name not in claims.ABLATIONS:
            parser.error(f"--ablation {item!r}: expected NAME=DIR with NAME one of {list(claims.ABLATIONS)}")
        if not Path(directory).is_dir():
            parser.error(f"--ablation {item!r}: {directory} is not a directory")
        ablations.setdefault(name, []).append(Path(directory))
    return ablations


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories (the mini paper's sweeps)")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=DIR",
                        help=f"an ablation sweep, NAME one of {', '.join(claims.ABLATIONS)}; repeat a NAME to add "
                             "directories (jobs are paired by config, e.g. the ablation's n=1 with the main "
                             "sweep's n=5)")
    parser.add_argument("--out", type=Path, default=Path("results/claims.md"))
    args = parser.parse_args(argv)
    ablations = parse_ablations(parser, args.ablation)

    sweeps = claims.Sweeps(args.dirs)
    if sweeps.unlearned.empty:
        print(f"error: no results.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    verdicts = claims.evaluate(sweeps, ablations)
    text = claims.report(sweeps, verdicts, "python scripts/claims.py " + " ".join(argv), ablations)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    for c in verdicts:
        print(f"{c.id}: {c.verdict}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
