"""Where a benchmark's splits come from, read the way the field reads them: `datasets.load_dataset`.

A split is named as on the hub, a (config, split) pair of a dataset repository: TOFU's forget set is
`load_dataset("locuslab/TOFU", "forget10", split="train")`, MUSE's raw forget corpus
`load_dataset("muse-bench/MUSE-News", "raw", split="forget")` (open-unlearning, src/data/utils.py L12-14 with
configs/data/datasets/TOFU_QA_forget.yaml L4-7 and MUSE_forget.yaml L4-7; official PMC, unlearning/dataloader.py
L13-25; muse_bench, load_data.py L9-31).
`DatasetSource` loads it from there, or from a local directory holding the same files:

- hub: `load_dataset(repo, config, split=split)`, downloaded and cached by `datasets` as in the references;
- local: `load_dataset("json" | "parquet" | "text", data_files=FILE, split="train", streaming=True)` with a cache
  directory that is deleted afterwards: it needs no network and leaves nothing behind, next to the data or in the
  `datasets` cache.

Either way the rows come back as (where, row) pairs for the benchmark's strict validation, `where` naming the record
in every error: "FILE:LINE" for JSON lines, "FILE: row N" for parquet, "hub dataset REPO CONFIG/SPLIT: row N".
`datasets` reads JSON leniently (a line that is a list, a whole-file array, numbers where strings belong, all
accepted) and reports no line numbers, so a local JSON-lines file is first read line by line with the standard json
module (pmc.core.records.jsonl_rows): bad UTF-8, over-long lines, bad JSON and non-object lines are errors at
file:line, exactly as before, and `datasets` must then read one row per line. A null field is a missing field, as
in `datasets`' columns.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pmc.core.records import DataError, jsonl_rows, numbered_lines, one_line_reason

Rows = list[tuple[str, dict]]
T = TypeVar("T")


@dataclass(frozen=True)
class Split:
    """One split of a benchmark: its hub name and where a local copy keeps it.

    config is None for a file the hub repository has but no config names (TOFU's idontknow.jsonl): it is read from
    the repository as `hf://datasets/REPO/FILE`. `files` are paths under the local directory, the first one present
    used; their suffix picks the `datasets` builder (.parquet: parquet; builder="text": one row per line; else JSON
    lines).
    """

    config: str | None
    split: str
    files: tuple[str, ...]
    builder: str = "json"

    @property
    def hub_name(self) -> str:
        return self.files[0] if self.config is None else f"{self.config}/{self.split}"


def _datasets():
    """The `datasets` package, imported when a benchmark is loaded (it takes seconds; synthetic runs never need it)."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"loading TOFU or MUSE needs the datasets package (pip install datasets): {e}") from None
    return datasets


def load_hub_split(repo: str, split: Split) -> list[dict]:
    """The split's rows from the hub dataset `repo`: the only code that talks to the hub (tests replace it)."""
    datasets = _datasets()
    if split.config is None:
        loaded = datasets.load_dataset(split.builder, data_files=f"hf://datasets/{repo}/{split.files[0]}",
                                       split="train")
    else:
        loaded = datasets.load_dataset(repo, split.config, split=split.split)
    return list(loaded)


def load_local_file(path: Path, builder: str) -> list[dict]:
    """A local file's rows through `datasets`, streamed, with a throw-away cache directory: no network, no files
    left behind (a non-streaming load would write an Arrow copy of the data into the cache)."""
    datasets = _datasets()
    with tempfile.TemporaryDirectory(prefix="pmc-datasets-") as cache:
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, cache_dir=cache)
        return list(loaded)


def _without_nulls(row: dict) -> dict:
    return {key: value for key, value in row.items() if value is not None}


class DatasetSource:
    """A benchmark's splits from the local directory `data_dir` when one is given, otherwise from the hub dataset
    `hub_repo`. `layout` describes the local files for the error when the directory is missing; `env_var` names the
    environment variable the benchmark's config takes `data_dir` from by default (conf/benchmark/tofu.yaml:
    TOFU_DATA_DIR), so that both errors say where a wrong or missing directory can come from."""

    def __init__(self, benchmark: str, data_dir: str | None, hub_repo: str, layout: str, env_var: str | None = None):
        self.benchmark, self.hub_repo, self.layout = benchmark, hub_repo, layout
        self.setting = "benchmark.data_dir" if env_var is None else f"benchmark.data_dir (default ${env_var})"
        self.root = None if data_dir is None else Path(data_dir)
        if self.root is not None and not self.root.is_dir():
            raise DataError(
                f"{benchmark} data directory {self.root} does not exist; set {self.setting} to a directory "
                f"holding {layout} (or leave it unset to download them from the hub)"
            )

    def __str__(self) -> str:
        return f"data directory {self.root}" if self.root is not None else f"hub dataset {self.hub_repo}"

    def load(self, split: Split, parse: Callable[[Rows, str], T], optional: bool = False) -> T | None:
        """`parse(rows, name)` of the split's rows, `name` the file or hub split for whole-file errors (e.g. "contains
        no records"); None when the split is absent and `optional`, a DataError when it is absent and required."""
        if self.root is None:
            rows = self._hub_rows(split, optional)
            return None if rows is None else parse(rows, f"hub dataset {self.hub_repo} {split.hub_name}")
        path = next((self.root / f for f in split.files if (self.root / f).is_file()), None)
        if path is None:
            if optional:
                return None
            raise DataError(f"{split.files[0]}: not found in the {self.benchmark} {self}")
        return parse(self._local_rows(path, split.builder, parse), str(path))

    def _hub_rows(self, split: Split, optional: bool) -> Rows | None:
        try:
            rows = load_hub_split(self.hub_repo, split)
        except ConnectionError as e:  # offline (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE) or no network
            raise DataError(
                f"{split.hub_name}: the Hugging Face hub dataset {self.hub_repo} could not be reached "
                f"({type(e).__name__}: {one_line_reason(e)}); set {self.setting} to a local copy of the "
                f"{self.benchmark} files ({self.layout}) instead"
            ) from None
        except FileNotFoundError as e:  # no such repository or file
            if optional:
                return None
            raise DataError(f"{split.hub_name}: not found in the {self.benchmark} hub dataset {self.hub_repo} "
                            f"({type(e).__name__}: {one_line_reason(e)})") from None
        except Exception as e:  # an unknown config or split (ValueError), a file datasets cannot read, ...
            raise DataError(f"{split.hub_name}: the {self.benchmark} hub dataset {self.hub_repo} could not be loaded "
                            f"({type(e).__name__}: {one_line_reason(e)})") from None
        where = f"hub dataset {self.hub_repo} {split.hub_name}: row"
        return [(f"{where} {number}", _without_nulls(row)) for number, row in enumerate(rows, start=1)]

    def _local_rows(self, path: Path, builder: str, parse: Callable[[Rows, str], object]) -> Rows:
        if path.suffix == ".parquet":
            rows = self._read(path, "parquet")
            return [(f"{path}: row {number}", _without_nulls(row)) for number, row in enumerate(rows, start=1)]
        if builder == "text":
            places = [f"{path}:{number}" for number, _ in numbered_lines(path)]  # UTF-8, line length at file:line
            return self._beside_lines(path, places, [row for row in self._read(path, "text") if row["text"].strip()])
        lines = jsonl_rows(path)  # UTF-8, line length and JSON syntax, at file:line
        for where, obj in lines:
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        try:
            return self._beside_lines(path, [where for where, _ in lines], load_local_file(path, "json"))
        except Exception as e:
            # every line is a JSON object, yet datasets cannot build a table of them or drops some (`{}` alone is a
            # table without columns; a field that is a string on one line and a number on another fails with a
            # datasets that does not encode such columns as JSON): validating the lines names the bad one
            parse([(where, _without_nulls(obj)) for where, obj in lines], str(path))
            if isinstance(e, DataError):
                raise
            raise DataError(f"{path}: datasets could not read it as JSON lines ({type(e).__name__}: "
                            f"{one_line_reason(e)})") from None

    @staticmethod
    def _beside_lines(path: Path, places: list[str], rows: list[dict]) -> Rows:
        """Each row with the line it came from; datasets must have read one row per non-blank line."""
        if len(rows) != len(places):
            raise DataError(f"{path}: datasets read {len(rows)} rows from its {len(places)} non-blank lines")
        return [(where, _without_nulls(row)) for where, row in zip(places, rows)]

    @staticmethod
    def _read(path: Path, builder: str) -> list[dict]:
        try:
            return load_local_file(path, builder)
        except Exception as e:  # pyarrow and datasets raise their own error types for corrupt or truncated files
            raise DataError(f"{path}: not a readable {builder} file ({type(e).__name__}: {one_line_reason(e)})"
                            ) from None
