"""Load the real TOFU benchmark (locuslab/TOFU) into a `QABenchmark`, from the hub or from a local copy.

Every split is a config of the hub dataset with one split, "train" (`load_dataset("locuslab/TOFU", "forget01")`, as
the references load it), whose data is one JSON-lines file at the repository root (forget01.json,
forget01_perturbed.json, full.json, ...); a local copy is a directory of the same files. Both go through
`datasets.load_dataset` (benchmarks.source) and the same strict validation, so every malformed record is reported as
file:line (hub: its row).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmarks.source import DatasetSource, Rows, Split
from pmc.core.records import DataError, QABenchmark, QARecord, parse_records

RETAIN_SPLIT = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
QUESTIONS_PER_AUTHOR = 20

# Fields each file must carry: the perturbed files feed the truth-ratio and paraphrase metrics, so a record
# without its extras would only fail later, mid-evaluation.
QA_FIELDS = ("question", "answer")
AUTHOR_EVAL_FIELDS = ("question", "answer", "paraphrased_question", "paraphrased_answer", "perturbed_answer")
UTILITY_EVAL_FIELDS = ("question", "answer", "perturbed_answer")

# TOFU's refusals: a file of the hub repository (one per line, not JSON despite the suffix) that no config names
IDK_SPLIT = Split(None, "train", ("idontknow.jsonl",), builder="text")


@dataclass(frozen=True)
class _File:
    """One file's records, where each came from ("file:line" or the hub row) and the file's name, for errors."""

    records: list[QARecord]
    places: list[str]
    name: str


def _read(source: DatasetSource, config: str, required: tuple[str, ...]) -> _File:
    """A required config's records (hub config `config`, split "train"; locally `{config}.json`)."""

    def parse(rows: Rows, name: str) -> _File:
        return _File(parse_records(rows, name, required), [where for where, _ in rows], name)

    return source.load(Split(config, "train", (f"{config}.json",)), parse)


def _refusals(rows: Rows, name: str) -> list[str]:
    lines = [row["text"].strip() for _, row in rows if row["text"].strip()]
    if not lines:
        raise DataError(f"{name}: contains no lines")
    return lines


def _author_index(full: _File) -> dict[tuple[str, str], int]:
    """(question, answer) -> author, from full.json's author order (20 consecutive questions per author).

    Keyed on the pair, not the question alone: some generic questions ("What is the full name of the author?")
    are asked of several authors.
    """
    if len(full.records) % QUESTIONS_PER_AUTHOR:
        raise DataError(f"{full.name}: expected {QUESTIONS_PER_AUTHOR} questions per author, "
                        f"got {len(full.records)} records")
    # parse_records has rejected duplicate pairs, so every pair has one author
    return {(r.question, r.answer): position // QUESTIONS_PER_AUTHOR for position, r in enumerate(full.records)}


def _with_authors(file: _File, index: dict[tuple[str, str], int]) -> list[QARecord]:
    """Copies of the file's records carrying their author; a pair that full.json does not have is an error."""
    out = []
    for where, r in zip(file.places, file.records):
        author = index.get((r.question, r.answer))
        if author is None:
            raise DataError(f"{where}: question-answer pair not found in full.json, so it has no author")
        out.append(replace(r, author=author))
    return out


def _check_same_pairs(perturbed: _File, plain: _File) -> None:
    """The forget records are read from the perturbed file; make sure it is the same forget set, in order."""
    if len(perturbed.records) != len(plain.records):
        raise DataError(f"{perturbed.name} has {len(perturbed.records)} records but {plain.name} has "
                        f"{len(plain.records)}")
    for where, plain_where, p, q in zip(perturbed.places, plain.places, perturbed.records, plain.records):
        if (p.question, p.answer) != (q.question, q.answer):
            raise DataError(f"{where}: question-answer pair differs from {plain_where}")


def _authors(records: list[QARecord]) -> list[int]:
    return sorted({r.author for r in records})


def load_tofu(
    forget_split: str = "forget10",
    data_dir: str | None = None,
    hub_repo: str = "locuslab/TOFU",
    num_authors: int | None = None,
) -> QABenchmark:
    """Load TOFU for one forget split (forget01/05/10, trained against retain99/95/90).

    Splits come from `data_dir` when given, else from the hub dataset `hub_repo`. `num_authors=N` keeps N of the
    authors for CPU-scale runs, with the split's forget share in whole authors: the last
    k = max(1, round(N * pct / 100)) authors of the forget split and the first N - k authors of the retain split
    (k < N always holds for N >= 2, since pct <= 10). Any unusable file or record raises one DataError.
    """
    if forget_split not in RETAIN_SPLIT:
        raise DataError(f"unknown TOFU forget_split {forget_split!r}; valid: {', '.join(RETAIN_SPLIT)}")
    source = DatasetSource("TOFU", data_dir, hub_repo, "the TOFU JSON files", env_var="TOFU_DATA_DIR")

    full = _read(source, "full", QA_FIELDS)
    index = _author_index(full)

    forget_file = _read(source, f"{forget_split}_perturbed", AUTHOR_EVAL_FIELDS)
    _check_same_pairs(forget_file, _read(source, forget_split, QA_FIELDS))
    forget = _with_authors(forget_file, index)

    retain_file = _read(source, RETAIN_SPLIT[forget_split], QA_FIELDS)
    retain = _with_authors(retain_file, index)
    shared = set(_authors(forget)) & set(_authors(retain))
    if shared:
        raise DataError(f"{forget_file.name} and {retain_file.name} share authors {sorted(shared)}; forget would leak")

    retain_eval = _with_authors(_read(source, "retain_perturbed", AUTHOR_EVAL_FIELDS), index)
    real_authors = _read(source, "real_authors_perturbed", UTILITY_EVAL_FIELDS).records
    world_facts = _read(source, "world_facts_perturbed", UTILITY_EVAL_FIELDS).records
    idk_answers = source.load(IDK_SPLIT, _refusals, optional=True) or []

    name = f"tofu_{forget_split}"
    if num_authors is not None:
        forget, retain, retain_eval = _author_subset(
            forget_split, num_authors, len(index) // QUESTIONS_PER_AUTHOR, forget, retain, retain_eval
        )
        name += f"_authors{num_authors}"

    return QABenchmark(
        name=name,
        forget=forget,
        retain=retain,
        eval_sets={"forget": forget, "retain": retain_eval, "real_authors": real_authors, "world_facts": world_facts},
        pretrain=world_facts + real_authors,
        idk_answers=idk_answers,
    )


def _author_subset(
    forget_split: str,
    num_authors: int,
    total_authors: int,
    forget: list[QARecord],
    retain: list[QARecord],
    retain_eval: list[QARecord],
) -> tuple[list[QARecord], list[QARecord], list[QARecord]]:
    """Keep `num_authors` whole authors (see load_tofu), deterministically, so small runs are reproducible."""
    if isinstance(num_authors, bool) or not isinstance(num_authors, int) or not 2 <= num_authors <= total_authors:
        raise DataError(f"num_authors must be an integer from 2 to {total_authors}, got {num_authors!r}")
    n_forget = max(1, round(num_authors * int(forget_split[-2:]) / 100))
    forget_authors, retain_authors = _authors(forget), _authors(retain)
    if n_forget > len(forget_authors) or num_authors - n_forget > len(retain_authors):
        raise DataError(
            f"num_authors={num_authors} needs {n_forget} forget and {num_authors - n_forget} retain authors, but "
            f"{forget_split} has {len(forget_authors)} and its retain split {len(retain_authors)}"
        )
    kept_forget = set(forget_authors[-n_forget:])
    kept_retain = set(retain_authors[: num_authors - n_forget])
    retain_eval = [r for r in retain_eval if r.author in kept_retain]
    if not retain_eval:
        raise DataError(
            f"num_authors={num_authors}: retain_perturbed.json has no questions about the kept retain authors "
            f"{sorted(kept_retain)}, so retain quality could not be measured"
        )
    return (
        [r for r in forget if r.author in kept_forget],
        [r for r in retain if r.author in kept_retain],
        retain_eval,
    )
