"""The files a run leaves: results.json (only on success, written atomically), eval/<model>/<suite>.json, and
the summary table printed at the end."""

from __future__ import annotations

import json
import os
import platform
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


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), **installed_versions(PACKAGES)}


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
