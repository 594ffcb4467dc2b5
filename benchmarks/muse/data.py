"""Load the real MUSE benchmark (muse-bench/MUSE-News, muse-bench/MUSE-Books) into a raw-text `QABenchmark`.

Hub layout (the datasets' `main` branch): one parquet file per config and split,
`{config}/{split}-00000-of-00001.parquet`:

    raw/       forget, retain1, retain2, holdout       {"text"}   the corpora (News: one article per row;
                                                                   Books: a few whole books)
    verbmem/   forget                                  {"prompt", "gt"}   opening of a forget text -> continuation
    knowmem/   forget_qa, retain_qa,                   {"question", "answer"}
               forget_qa_icl, retain_qa_icl                       (the *_icl splits: MUSE's few-shot examples)
    privleak/  forget, retain, holdout                 {"text"}   membership-attack texts (100 each)

A local copy (`data_dir`) has the same configs and splits as files, `{data_dir}/{config}/{split}.jsonl` (JSON lines,
one object per line with the fields above, e.g. `{data_dir}/knowmem/forget_qa.jsonl`) or the hub's own
`{config}/{split}-00000-of-00001.parquet`, so a snapshot of the hub repository (`huggingface-cli download
muse-bench/MUSE-News --repo-type dataset --local-dir DIR`) works as it is; where both are present the `.jsonl` file
is read. Hub and local files alike are read by `datasets.load_dataset` (benchmarks.source): the hub as
`load_dataset("muse-bench/MUSE-News", config, split=split)`, as MUSE's own load_data.py and open-unlearning's MUSE
configs do, local files with the json or parquet builder. A split can be written as JSON lines with
`datasets.load_dataset(repo, config, split=split).to_json(path)`.

Only the files listed above are read (`raw/holdout` is not: the membership attacks use `privleak/holdout`). Any
malformed row is one DataError naming the file and the line (parquet and hub: the row).
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.muse.text import (
    KNOWMEM_FORGET,
    KNOWMEM_FORGET_ICL,
    KNOWMEM_RETAIN,
    KNOWMEM_RETAIN_ICL,
    MIA_FORGET,
    MIA_HOLDOUT,
    MIA_RETAIN,
    VERBMEM_FORGET,
    mia_record,
    text_records,
)
from benchmarks.source import DatasetSource, Rows, Split
from pmc.core.records import DataError, QABenchmark, QARecord, reject_duplicates

HUB_REPOS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
RETAIN_SPLITS = ("retain1", "retain2")


def muse_split(config: str, split: str) -> Split:
    """A MUSE split: hub config and split; locally JSON lines, or the hub's parquet file at the same place."""
    return Split(config, split, (f"{config}/{split}.jsonl", f"{config}/{split}-00000-of-00001.parquet"))


def string_fields(fields: tuple[str, ...]) -> Callable[[Rows, str], list[dict[str, str]]]:
    """A parser of rows that must each carry every one of `fields` as a non-empty string; the first bad row, a
    duplicate row or a file without rows is one DataError naming the row (or the file)."""

    def parse(rows: Rows, name: str) -> list[dict[str, str]]:
        out = []
        for where, row in rows:
            for key in fields:
                value = row.get(key)
                if not isinstance(value, str) or not value.strip():
                    problem = "missing" if value is None else "not a non-empty string"
                    raise DataError(f"{where}: field '{key}' is {problem}")
            out.append({key: row[key] for key in fields})
        reject_duplicates([(where, tuple(row.values())) for (where, _), row in zip(rows, out)])
        if not out:
            raise DataError(f"{name}: contains no records")
        return out

    return parse


def load_muse(
    corpus: str = "news",
    data_dir: str | None = None,
    hub_repo: str | None = None,
    max_words: int = 256,
    prefix_words: int = 4,
    retain_splits: tuple[str, ...] | list[str] = ("retain1",),
) -> QABenchmark:
    """Load MUSE-News or MUSE-Books from `data_dir`, else from the hub (`hub_repo`, default muse-bench/MUSE-<corpus>).

    Training records: the raw forget texts and the raw texts of `retain_splits` (MUSE's unlearning baselines
    regularise on retain1; its knowmem retain QA are about retain2, so by default the retain set does not contain
    the answers that utility is measured on), each cut into chunks of at most `max_words` words, a chunk's first
    `prefix_words` words its prompt and the rest its continuation. Evaluation sets: verbmem_forget (prompt -> gt),
    knowmem_forget / knowmem_retain with their *_icl few-shot splits, mia_forget / mia_retain / mia_holdout (the
    privleak texts). MUSE's published target and retrained models (muse-bench/MUSE-News_target, ..._retrain)
    are what its numbers are about: download them and pass the directories as stage0.target_path / retain_path.
    """
    if corpus not in HUB_REPOS:
        raise DataError(f"unknown MUSE corpus {corpus!r}; valid: {', '.join(HUB_REPOS)}")
    unknown = [s for s in retain_splits if s not in RETAIN_SPLITS]
    if unknown or not retain_splits:
        raise DataError(f"retain_splits must be a non-empty list of {', '.join(RETAIN_SPLITS)}; "
                        f"got {list(retain_splits)}")
    if max_words < 2 or prefix_words < 1 or prefix_words >= max_words:
        raise DataError(f"need max_words >= 2 and 1 <= prefix_words < max_words, got {max_words}, {prefix_words}")
    source = DatasetSource("MUSE", data_dir, hub_repo or HUB_REPOS[corpus], "{config}/{split}.jsonl files")

    def rows(config: str, split: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
        return source.load(muse_split(config, split), string_fields(fields))

    def corpus_records(split: str) -> list[QARecord]:
        return [r for row in rows("raw", split, ("text",)) for r in text_records(row["text"], max_words, prefix_words)]

    def qa(split: str) -> list[QARecord]:
        return [QARecord(row["question"], row["answer"]) for row in rows("knowmem", split, ("question", "answer"))]

    def texts(split: str) -> list[QARecord]:
        return [mia_record(row["text"]) for row in rows("privleak", split, ("text",))]

    forget = corpus_records("forget")
    retain = [r for split in retain_splits for r in corpus_records(split)]
    verbmem = [QARecord(row["prompt"], row["gt"]) for row in rows("verbmem", "forget", ("prompt", "gt"))]
    return QABenchmark(
        name=f"muse_{corpus}",
        forget=forget,
        retain=retain,
        eval_sets={
            VERBMEM_FORGET: verbmem,
            KNOWMEM_FORGET: qa("forget_qa"),
            KNOWMEM_RETAIN: qa("retain_qa"),
            KNOWMEM_FORGET_ICL: qa("forget_qa_icl"),
            KNOWMEM_RETAIN_ICL: qa("retain_qa_icl"),
            MIA_FORGET: texts("forget"),
            MIA_RETAIN: texts("retain"),
            MIA_HOLDOUT: texts("holdout"),
        },
        raw_text=True,
    )
