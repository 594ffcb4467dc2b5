"""The one way benchmark loaders download a file of a Hugging Face hub dataset (the cluster path)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

from benchmarks.records import DataError


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
