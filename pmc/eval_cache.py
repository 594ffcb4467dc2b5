"""Metric-suite results of the stage-0 models, cached beside the stage-0 cache: scored once per model, not per job.

Every job of a sweep (M methods × S seeds) that shares a target and retain model with the others (the stage-0
cache) would score them again, with the same outcome; evaluation dominates a job's time. So the first job scores
them and stores the results, and the others read them. One entry holds both stage-0 models' results of one suite
(summary and per-example rows, so every job still writes eval/<model>/<suite>.json in full): the two go together
because a stage-0 model's scores can depend on the other one (TOFU's forget quality and MUSE's PrivLeak compare
with the retain model, the analyses' collateral damage with the target). The same goes for what a method computes
from the target before unlearning, the same in every job that starts from it: PMC's initial answers
(`EvalCache.value`, through `RunContext.before_unlearning`).

An entry is keyed by everything that can change its results (`EvalCache.for_models`): both stage-0 checkpoints
(cache entry name and its stage0.json, so a rebuilt entry gets new results; or an explicit checkpoint's path, file
sizes and modification times), the benchmark's records (subset and split included), the prompt format, the
generation settings, the suite's name, class and every setting, the device type, the package versions that compute
scores and the harness source itself (any edit to pmc/ or benchmarks/ but the reporting code, NEVER_SCORES, scores
the stage-0 models once more).

Like the stage-0 cache, an entry is written under a file lock (concurrent jobs score once; the others wait, then
read) and appears atomically (a killed writer leaves nothing half-written, and the OS releases its lock).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from filelock import FileLock

import benchmarks
import pmc
from benchmarks.metrics.common import EvalContext, SuiteResult
from pmc.core.errors import CheckpointError
from pmc.results import installed_versions, write_json_atomic
from pmc.stage0 import fingerprint, records_digest

EVAL_CACHE_FORMAT = 1  # bump when an entry's layout changes
SCORING_PACKAGES = ("torch", "transformers", "rouge-score", "scipy", "numpy")
# Harness code that reads finished results and never scores a model (pmc.reporting imports no torch:
# tests/test_reporting.py): editing a table or a claim during a sweep must not make its jobs score target and retain
# again (~8 minutes per sweep for SmolLM2 on 2 CPU cores).
NEVER_SCORES = ("pmc/reporting",)
# where a model's result of a suite came from, as results.json reports it ("eval_cache")
HIT, MISS, OFF, SCORED = "hit", "miss", "off", "scored"

Score = Callable[[], dict[str, SuiteResult]]


def checkpoint_identity(path: str | Path) -> dict:
    """What tells one stage-0 checkpoint from another: a cache entry by its name (its key) and its stage0.json
    (written when it was built, so a rebuilt entry differs); an explicit checkpoint by its resolved path and the
    size and modification time of every file in it."""
    path = Path(path)
    marker = path / "stage0.json"
    if marker.is_file():
        return {"entry": path.name, "stage0": json.loads(marker.read_text())}
    files = sorted(p for p in path.iterdir() if p.is_file())
    return {"path": str(path.resolve()), "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


@functools.lru_cache(maxsize=1)
def harness_digest() -> str:
    """sha256 over the harness source that can change a score: every .py file of the pmc and benchmarks packages
    but those of NEVER_SCORES."""
    return sources_digest({package.__name__: Path(package.__file__).parent for package in (pmc, benchmarks)},
                          NEVER_SCORES)


def sources_digest(packages: dict[str, Path], skipped: tuple[str, ...] = ()) -> str:
    """sha256 over the .py files under each package's root (package name -> folder), by path and content; a file
    under a `skipped` folder ("package/sub/folder") is left out."""
    digest = hashlib.sha256()
    for name, root in packages.items():
        for source in sorted(root.rglob("*.py")):
            relative = f"{name}/{source.relative_to(root).as_posix()}"
            if any(relative.startswith(f"{folder}/") for folder in skipped):
                continue
            digest.update(f"{relative}\0".encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def benchmark_digest(benchmark) -> str:
    """The benchmark's name and every record a suite reads (the evaluation sets and the forget split)."""
    return fingerprint(benchmark.name, benchmark.raw_text, records_digest(benchmark.forget),
                       {name: records_digest(records) for name, records in sorted(benchmark.eval_sets.items())})


def as_stored(results: dict[str, SuiteResult]) -> dict:
    """Results in the form an entry stores them (what json.dump writes and json.load reads back: floats exactly,
    infinities and NaN included, tuples as lists)."""
    return as_json({name: {"summary": r.summary, "examples": r.examples} for name, r in results.items()})


def as_json(value):
    """`value` as an entry gives it back (json.dump, then json.load), so a miss returns what a hit will."""
    return json.loads(json.dumps(value))


def from_stored(stored: dict) -> dict[str, SuiteResult]:
    return {name: SuiteResult(r["summary"], r["examples"]) for name, r in stored.items()}


class EvalCache:
    """Results of the stage-0 models (`roles`) per suite; directory None: nothing is stored (eval_cache=false), the
    models are scored in every job, through the same code path."""

    def __init__(self, directory: str | Path | None, label: str, parts: dict):
        self.directory = Path(directory) if directory is not None else None
        self.label = label  # names the entry files (the model config's name)
        self.parts = parts  # the key's ingredients shared by every suite, kept in each entry for inspection

    @classmethod
    def for_models(cls, directory: str | Path | None, label: str, checkpoints: dict[str, str], benchmark,
                   ctx: EvalContext, generation: dict, device) -> "EvalCache":
        """The cache for the stage-0 models at `checkpoints` (role -> path) scored with `ctx` on `device`;
        `generation` is every generation setting (batch size resolved, KV cache, compile)."""
        parts = {
            "format": EVAL_CACHE_FORMAT,
            "stage0": {role: checkpoint_identity(path) for role, path in checkpoints.items()},
            "benchmark": benchmark_digest(benchmark),
            "prompt_format": asdict(ctx.prompt_format),
            "generation": generation,
            "max_length": ctx.max_length,
            "device": str(getattr(device, "type", device)),
            "versions": installed_versions(SCORING_PACKAGES),
            "harness": harness_digest(),
        }
        return cls(directory, label, parts)

    @property
    def roles(self) -> list[str]:
        return list(self.parts["stage0"])

    def key(self, suite: str, settings: dict) -> str:
        return fingerprint(self.parts, suite, settings)

    def path(self, suite: str, settings: dict) -> Path:
        return self.directory / f"{self.label}-{suite}-{self.key(suite, settings)[:16]}.json"

    def results(self, suite: str, settings: dict, score: Score) -> tuple[dict[str, SuiteResult], str]:
        """(the stage-0 models' results of `suite`, HIT / MISS / OFF). `score()` computes them on a miss, under the
        entry's lock; a concurrent job asking for the same entry waits and then reads it."""
        stored, status = self.value(suite, settings, lambda: as_stored(score()))
        return from_stored(stored), status

    def value(self, name: str, settings: dict, compute: Callable[[], object]) -> tuple[object, str]:
        """(what `compute()` returns for the stage-0 models as JSON holds it, HIT / MISS / OFF): the entry `name`
        with `settings`, computed on a miss under the entry's lock (a concurrent job waits, then reads it). Suite
        results are such values; so are PMC's initial answers (the target's greedy answers before unlearning)."""
        if self.directory is None:
            return as_json(compute()), OFF
        key, path = self.key(name, settings), self.path(name, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                return self._read(path, key), HIT
            stored = as_json(compute())
            write_json_atomic(path, {"key": key, "suite": name, "settings": settings, "created": time.time(),
                                     "parts": self.parts, "results": stored})
        return stored, MISS

    @staticmethod
    def _read(path: Path, key: str) -> object:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["key"] != key:
                raise ValueError(f"it holds the results of key {entry['key'][:16]}..., not {key[:16]}...")
            return entry["results"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable eval-cache entry ({e}); delete it to compute it from the "
                                  "stage-0 models again") from None
