"""Copy one or more sweep (or run) directories' jobs into a folder that can be committed, with only the files
the reports read, so tables, figures and the claims table regenerate from the repository.

    python scripts/archive_runs.py multirun/smollm2_mini_paper/pmc_lr3e-5/2026-11-27_10-02-04 \\
        --out results/smollm2/runs/pmc_lr3e-5
    python scripts/claims.py results/smollm2/runs/pmc_lr3e-5 ...   # the reports read the archive as a sweep

Keeps results.json, eval/<model>/<suite>.json (gzipped, as <suite>.json.gz: the reports read either),
train_log.jsonl, .hydra/config.yaml and overrides.yaml, and failure.json; leaves out checkpoints, saved models and
logs (pmc.reporting.archive). --out must be new or empty.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the harness's own packages first
from pmc.reporting.archive import archive_jobs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, required=True, help="the archive folder (new or empty)")
    args = parser.parse_args(argv)
    written = archive_jobs(args.dirs, args.out)
    jobs = {path.parent for path in written if path.name == "results.json"}
    size = sum(path.stat().st_size for path in written)
    print(f"archived {len(jobs)} jobs with results ({len(written)} files, {size / 1e6:.1f} MB) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
