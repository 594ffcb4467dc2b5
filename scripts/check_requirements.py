"""The harness's requirements (pyproject.toml's [project] dependencies, and the extras named) that this Python
environment does not meet, or that a list of distributions does not cover. A requirement left out of the GPU
machine's payload stopped a job where it was first imported: on the H100 (2026-11-28) bert-score was not carried,
and ICU's job failed after 128 s of a 15-minute session. scripts/prepare_device.sh checks here that every
requirement is carried or on the machine (`--covered-by`), and scripts/gpu_check.sh that the machine meets them
once the carried wheels are installed, before any job starts.

    python scripts/check_requirements.py --extra smollm2                     # this environment
    python scripts/check_requirements.py --extra smollm2 --covered-by torch transformers ...

Exit 0 when everything is met (covered), 1 with one line per requirement that is not. Only the direct requirements
are checked, not theirs: a distribution may declare ones it never imports (bert-score: requests). Python 3.11 or
later (tomllib), as here and on the GPU machines (3.12).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(pyproject: Path, extras: list[str]) -> list[Requirement]:
    """The [project] dependencies and those of `extras` whose environment markers hold here."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"error: {pyproject}: no optional dependencies {unknown}; it has {sorted(optional)}")
    lines = project.get("dependencies", []) + [line for extra in extras for line in optional[extra]]
    parsed = [Requirement(line) for line in lines]
    return [req for req in parsed if req.marker is None or req.marker.evaluate()]


def unmet(reqs: list[Requirement]) -> list[str]:
    """Each requirement this environment has not installed, or not at a version it allows."""
    problems = []
    for req in reqs:
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{req}: not installed")
            continue
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req}: {version} installed")
    return problems


def uncovered(reqs: list[Requirement], names: list[str]) -> list[str]:
    """Each requirement none of `names` (distribution names, any spelling) provides."""
    covered = {canonicalize_name(name) for name in names}
    return [f"{req}: neither carried nor on the machine" for req in reqs if canonicalize_name(req.name) not in covered]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to check too")
    parser.add_argument("--covered-by", nargs="+", metavar="NAME",
                        help="check against these distributions instead of this environment")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    args = parser.parse_args(argv)
    reqs = requirements(args.pyproject, args.extra)
    problems = uncovered(reqs, args.covered_by) if args.covered_by else unmet(reqs)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
