"""Load the real TOFU benchmark (locuslab/TOFU) into a `QABenchmark`, from a local copy or from the hub.

The hub dataset keeps every split as a JSON-lines file at the repository root (forget01.json,
forget01_perturbed.json, full.json, ...), which is also the layout of a local copy, so both sources read the same
files with the same strict loader and every malformed line is reported as file:line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from benchmarks.hub import DatasetSource, fetch_dataset_file
from pmc.core.records import DataError, QABenchmark, QARecord, load_jsonl, load_lines, numbered_lines

RETAIN_SPLIT = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
QUESTIONS_PER_AUTHOR = 20

# Fields each file must carry: the perturbed files feed the truth-ratio and paraphrase metrics, so a record
# without its extras would only fail later, mid-evaluation.
QA_FIELDS = ("question", "answer")
AUTHOR_EVAL_FIELDS = ("question", "answer", "paraphrased_question", "paraphrased_answer", "perturbed_answer")
UTILITY_EVAL_FIELDS = ("question", "answer", "perturbed_answer")


def _fetch(name: str, hub_repo: str) -> Path | None:
    """One file of the hub dataset, or None if it has none; the only code that talks to the hub (tests replace it)."""
    return fetch_dataset_file(name, hub_repo, "TOFU")


class _Source(DatasetSource):
    benchmark = "TOFU"
    layout = "the TOFU JSON files"

    def find(self, name: str) -> Path | None:
        """The file's local path, or None when this source does not have it."""
        if self.root is None:
            return _fetch(name, self.hub_repo)
        path = self.root / name
        return path if path.is_file() else None

    def records(self, name: str, required: tuple[str, ...]) -> tuple[list[QARecord], Path]:
        """A required file's records and path (the path is kept for error messages)."""
        path = self.find(name)
        if path is None:
            raise DataError(f"{name}: not found in the TOFU {self}")
        return load_jsonl(path, required), path


def _record_lines(path: Path) -> list[int]:
    """Line number of each record load_jsonl returned (it skips blank lines), so errors can point at the line."""
    return [number for number, _ in numbered_lines(path)]


def _author_index(full: list[QARecord], path: Path) -> dict[tuple[str, str], int]:
    """(question, answer) -> author, from full.json's author order (20 consecutive questions per author).

    Keyed on the pair, not the question alone: some generic questions ("What is the full name of the author?")
    are asked of several authors.
    """
    if len(full) % QUESTIONS_PER_AUTHOR:
        raise DataError(f"{path}: expected {QUESTIONS_PER_AUTHOR} questions per author, got {len(full)} records")
    # load_jsonl has rejected duplicate pairs, so every pair has one author
    return {(r.question, r.answer): position // QUESTIONS_PER_AUTHOR for position, r in enumerate(full)}


def _with_authors(records: list[QARecord], path: Path, index: dict[tuple[str, str], int]) -> list[QARecord]:
    """Copies of `records` carrying their author; a pair that full.json does not have is an error."""
    out = []
    for number, r in zip(_record_lines(path), records):
        author = index.get((r.question, r.answer))
        if author is None:
            raise DataError(f"{path}:{number}: question-answer pair not found in full.json, so it has no author")
        out.append(replace(r, author=author))
    return out


def _check_same_pairs(
    perturbed: list[QARecord], perturbed_path: Path, plain: list[QARecord], plain_path: Path
) -> None:
    """The forget records are read from the perturbed file; make sure it is the same forget set, in order."""
    if len(perturbed) != len(plain):
        raise DataError(f"{perturbed_path} has {len(perturbed)} records but {plain_path} has {len(plain)}")
    lines = zip(_record_lines(perturbed_path), _record_lines(plain_path))
    for (number, plain_number), p, q in zip(lines, perturbed, plain):
        if (p.question, p.answer) != (q.question, q.answer):
            raise DataError(
                f"{perturbed_path}:{number}: question-answer pair differs from {plain_path}:{plain_number}"
            )


def _authors(records: list[QARecord]) -> list[int]:
    return sorted({r.author for r in records})


def load_tofu(
    forget_split: str = "forget10",
    data_dir: str | None = None,
    hub_repo: str = "locuslab/TOFU",
    num_authors: int | None = None,
) -> QABenchmark:
    """Load TOFU for one forget split (forget01/05/10, trained against retain99/95/90).

    Files come from `data_dir` when given, else from the hub dataset `hub_repo`. `num_authors=N` keeps N of the
    authors for CPU-scale runs, with the split's forget share in whole authors: the last
    k = max(1, round(N * pct / 100)) authors of the forget split and the first N - k authors of the retain split
    (k < N always holds for N >= 2, since pct <= 10). Any unusable file or record raises one DataError.
    """
    if forget_split not in RETAIN_SPLIT:
        raise DataError(f"unknown TOFU forget_split {forget_split!r}; valid: {', '.join(RETAIN_SPLIT)}")
    source = _Source(data_dir, hub_repo)

    full, full_path = source.records("full.json", QA_FIELDS)
    index = _author_index(full, full_path)

    forget, forget_path = source.records(f"{forget_split}_perturbed.json", AUTHOR_EVAL_FIELDS)
    plain_forget, plain_forget_path = source.records(f"{forget_split}.json", QA_FIELDS)
    _check_same_pairs(forget, forget_path, plain_forget, plain_forget_path)
    forget = _with_authors(forget, forget_path, index)

    retain, retain_path = source.records(f"{RETAIN_SPLIT[forget_split]}.json", QA_FIELDS)
    retain = _with_authors(retain, retain_path, index)
    shared = set(_authors(forget)) & set(_authors(retain))
    if shared:
        raise DataError(f"{forget_path} and {retain_path} share authors {sorted(shared)}; forget would leak")

    retain_eval, retain_eval_path = source.records("retain_perturbed.json", AUTHOR_EVAL_FIELDS)
    retain_eval = _with_authors(retain_eval, retain_eval_path, index)
    real_authors, _ = source.records("real_authors_perturbed.json", UTILITY_EVAL_FIELDS)
    world_facts, _ = source.records("world_facts_perturbed.json", UTILITY_EVAL_FIELDS)
    idk_path = source.find("idontknow.jsonl")
    idk_answers = load_lines(idk_path) if idk_path is not None else []

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
