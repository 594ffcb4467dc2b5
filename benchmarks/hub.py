"""The one way benchmark loaders download a file of a Hugging Face hub dataset (the cluster path)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

from pmc.core.records import DataError


def fetch_dataset_file(filename: str, hub_repo: str, benchmark: str) -> Path | None:
    """Download one file of the dataset `hub_repo` (huggingface_hub caches it); None when the repo has no such file.

    Not reaching the hub (offline, network, auth, unknown repo) is an error that says to use a local copy.
    """
    try:
        return Path(hf_hub_download(repo_id=hub_repo, filename=filename, repo_type="dataset"))
    except LocalEntryNotFoundError as e:  # offline and not cached; a subclass of EntryNotFoundError, so caught first
        error: Exception = e
    except EntryNotFoundError:
        return None
    except Exception as e:  # network, auth, unknown repo: all mean the data cannot be had from here
        error = e
    raise DataError(
        f"{filename}: the Hugging Face hub dataset {hub_repo} could not be reached ({type(error).__name__}: {error}); "
        f"pass benchmark.data_dir to use a local copy of the {benchmark} files"
    ) from error


class DatasetSource:
    """Where a benchmark's files come from: a local directory when one is given, otherwise the hub dataset.

    Subclasses name the benchmark and describe the local layout (for the error when the directory is missing) and
    implement how a file is found in either place."""

    benchmark = "benchmark"
    layout = "its data files"

    def __init__(self, data_dir: str | None, hub_repo: str):
        self.root = None if data_dir is None else Path(data_dir)
        self.hub_repo = hub_repo
        if self.root is not None and not self.root.is_dir():
            raise DataError(
                f"{self.benchmark} data directory {self.root} does not exist; set benchmark.data_dir to a directory "
                f"holding {self.layout} (or leave it unset to download them from the hub)"
            )

    def __str__(self) -> str:
        return f"data directory {self.root}" if self.root is not None else f"hub dataset {self.hub_repo}"
