"""The files a run leaves: results.json (only on success, written atomically), eval/<model>/<suite>.json, and
the summary table printed at the end."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "hydra-core", "rouge-score", "tokenizers", "pmc-harness")


def current_umask() -> int:
    """The process umask (Linux: read from /proc, so no other thread ever sees a changed one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, obj) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old file or the whole new one.

    The file gets the permissions any new file gets under the umask (mkstemp alone would make it 0600, unreadable
    to the rest of a cluster group sharing a sweep's results).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            json.dump(obj, f, indent=2, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def installed_versions(names) -> dict[str, str]:
    """Each named distribution's installed version, or "not installed"."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


HARNESS_ROOT = Path(__file__).resolve().parents[1]
# what a run executes and reads from the checkout: an edit here makes a job's commit "+modified"; results/, docs
# and tests do not (a run script appends its logs to results/ while its jobs run)
RUN_SOURCES = ("pmc", "baselines", "benchmarks", "conf", "pyproject.toml")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    """git in `root`; GIT_OPTIONAL_LOCKS=0: jobs side by side never lock the index."""
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})


def harness_commit(root: Path = HARNESS_ROOT, sources: tuple[str, ...] = RUN_SOURCES) -> str:
    """The git commit the harness ran from, "+modified" when a tracked file of `sources` differs from it: a sweep
    run over several sessions can span commits, and the package version alone does not say which."""
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *sources)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"
    if commit.returncode or changed.returncode:
        return f"unknown (git: {(commit.stderr or changed.stderr).strip().splitlines()[0]})"
    return commit.stdout.strip() + ("+modified" if changed.stdout.strip() else "")


def run_sources_tree(commit: str, root: Path = HARNESS_ROOT, sources: tuple[str, ...] = RUN_SOURCES) -> str | None:
    """The git object ids of `sources` at `commit`, joined: equal for two commits exactly when a run executes the
    same code from both (commits that differ only in results/, docs or tests give the same); None where this
    checkout's git does not know the commit (or `commit` is no hexadecimal hash)."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return None
    try:
        found = _git(root, "rev-parse", *(f"{commit}^{{commit}}:{path}" for path in sources))
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(found.stdout.split()) if found.returncode == 0 else None


def versions() -> dict[str, str]:
    """The packages' versions and the harness commit, read once per process (pmc.pipeline.pin_code_identity reads
    them as a run starts): a results.json names the code the run imported, not code edited on disk while it ran."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    return (("python", platform.python_version()), *installed_versions(PACKAGES).items(),
            ("pmc-harness-commit", harness_commit()))


def summary_table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    """Rows = models, columns = suite/metric: a plain-text table for the end of a run."""
    columns = list(dict.fromkeys((s, k) for suites in metrics.values() for s, values in suites.items() for k in values))
    headers = ["model"] + [key for _, key in columns]
    cell = lambda value: value if isinstance(value, str) else f"{value:.2f}"  # names, e.g. MUSE's privleak_reference
    rows = [[model] + [cell(suites.get(suite, {}).get(key, float("nan"))) for suite, key in columns]
            for model, suites in metrics.items()]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
