"""A sweep's jobs as the reports read them, copied where they can be committed: the files of REPORTED_FILES
(results.json, eval/<model>/<suite>.json, train_log.jsonl, .hydra/ config and overrides, failure.json), without
checkpoints, saved models or logs. Tables, figures, the analyses report and the claims table then regenerate from a
clone (`scripts/claims.py results/smollm2/runs/...`) instead of from sweep directories that live on one machine.

The per-example eval files are stored gzipped (`eval/<model>/<suite>.json.gz`, which the reports read as they read
the plain file): they are nearly all of an archive (~4 MB of JSON per SmolLM2 job at forget10 with three suites,
a fifth of that gzipped), and a lent GPU machine receives the whole checkout, results/ included, in calls of at most
64 MiB (docs/gpu.md). Files that are equal across jobs (the stage-0 models' eval files, read from the eval cache)
cost git one blob, but every job's copy counts in a checkout.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from pmc.reporting.jobs import REPORTED_FILES, job_dirs, job_problem


def copy_reported_file(source: Path, target: Path) -> Path:
    """Copy one reported file; a per-example eval file goes in gzipped (with no name or time in its header, so equal
    files stay equal bytes). Returns the path written."""
    if target.parent.parent.name != "eval" or target.suffix != ".json":
        shutil.copyfile(source, target)
        return target
    target = target.with_name(target.name + ".gz")
    with open(source, "rb") as plain, open(target, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        shutil.copyfileobj(plain, packed)
    return target


def archive_jobs(roots: list[Path], out: Path) -> list[Path]:
    """Copy every job under the roots into `out` (one root: its layout under out; several: under out/<root name>),
    its reported files only; returns the files written. `out` must be new or empty, so an archive never mixes two
    runs' jobs."""
    names = [root.name for root in roots]
    if len(set(names)) < len(names):
        raise SystemExit(f"error: sweep directories with the same name cannot share one archive: {names}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"error: {out} exists and is not an empty directory; archive into a new one")
    out.mkdir(parents=True, exist_ok=True)  # even for roots without jobs: the folder says they were archived
    written = []
    for root in roots:
        base = out if len(roots) == 1 else out / root.name
        for job in job_dirs([root]):
            # with both results.json and failure.json the newer counts (job_problem); neither a copy nor a git
            # checkout keeps their order, so the archive leaves out the one that does not count
            problem = job_problem(job)
            stale = "results.json" if problem and problem[0] == "failed" else "failure.json"
            for pattern in REPORTED_FILES:
                for source in sorted(job.glob(pattern)):
                    if source.is_file() and not source.is_symlink() and source.relative_to(job).as_posix() != stale:
                        target = base / job.relative_to(root) / source.relative_to(job)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        written.append(copy_reported_file(source, target))
    return written
