"""The record schema every QA benchmark shares, and strict loading of JSONL files into it.

Real TOFU and the offline synthetic benchmark produce the same `QARecord`s and the same `QABenchmark`, so nothing
downstream (training, PMC, evaluation) needs to know which one it is looking at.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from pmc.core.errors import DataError


@dataclass(frozen=True)
class QARecord:
    """One question-answer pair, with the optional extras TOFU-style evaluation needs.

    `author` is the index of the fictitious author the pair is about (for author subsets); None for utility sets.
    """

    question: str
    answer: str
    paraphrased_question: str | None = None
    paraphrased_answer: str | None = None
    perturbed_answer: tuple[str, ...] = ()
    author: int | None = None


@dataclass
class QABenchmark:
    """Everything one unlearning experiment needs from a benchmark.

    forget / retain: the training splits (the forget records also carry paraphrases and perturbed answers).
    eval_sets: "forget", "retain", "real_authors", "world_facts" -> records scored by the metric modules.
    pretrain: what a model trained from scratch must know before stage 0 (the utility sets), so that
        utility means something for tiny models.
    idk_answers: "I don't know"-style refusals for IDK baselines (may be empty when the data has none).
    raw_text: records are text split into a prefix ("question") and its continuation ("answer"), trained and
        scored as plain text rather than in the model's QA prompt format (MUSE-style corpora).
    """

    name: str
    forget: list[QARecord]
    retain: list[QARecord]
    eval_sets: dict[str, list[QARecord]]
    pretrain: list[QARecord] = field(default_factory=list)
    idk_answers: list[str] = field(default_factory=list)
    raw_text: bool = False

    @property
    def full(self) -> list[QARecord]:
        """The target model's fine-tuning set: every fictitious-author record, retain first."""
        return self.retain + self.forget

    def texts(self) -> list[str]:
        """All text in the benchmark, e.g. to train a tokenizer for a model built from scratch."""
        records = self.full + self.pretrain + [r for records in self.eval_sets.values() for r in records]
        out: list[str] = []
        for r in records:
            out += [r.question, r.answer, *(t for t in (r.paraphrased_question, r.paraphrased_answer) if t)]
            out += list(r.perturbed_answer)
        return out + list(self.idk_answers)


_OPTIONAL_STRINGS = ("paraphrased_question", "paraphrased_answer")


def parse_record(obj: object, where: str, required: tuple[str, ...] = ("question", "answer")) -> QARecord:
    """Validate one decoded JSON value as a QA record; `where` ("file:line") prefixes every error."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("question", "answer", *required):
        value = obj.get(key)
        if key == "perturbed_answer":
            continue
        if not isinstance(value, str) or not value.strip():
            problem = "missing" if value is None else "not a non-empty string"
            raise DataError(f"{where}: field '{key}' is {problem}")
    for key in _OPTIONAL_STRINGS:
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise DataError(f"{where}: field '{key}' is not a non-empty string")
    perturbed = obj.get("perturbed_answer", [])
    if "perturbed_answer" in required and not perturbed:
        raise DataError(f"{where}: field 'perturbed_answer' is missing or empty")
    if not isinstance(perturbed, list) or not all(isinstance(p, str) and p.strip() for p in perturbed):
        raise DataError(f"{where}: field 'perturbed_answer' must be a list of non-empty strings")
    return QARecord(
        question=obj["question"],
        answer=obj["answer"],
        paraphrased_question=obj.get("paraphrased_question"),
        paraphrased_answer=obj.get("paraphrased_answer"),
        perturbed_answer=tuple(perturbed),
    )


MAX_LINE_BYTES = 64 * 2**20  # longer than any real record (MUSE-Books rows are whole books, a few MB at most)


def numbered_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line of a UTF-8 text file, lines split at "\\n" only.

    Bytes that are not UTF-8 and lines over MAX_LINE_BYTES (a file that is not line-oriented, or a runaway write)
    are DataErrors naming file:line, read without ever holding more than one such line in memory.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    lines = []
    with path.open("rb") as f:
        for number in itertools.count(1):
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{path}:{number}: line longer than {MAX_LINE_BYTES} bytes; is this a JSON-lines file?")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                                ) from None
            if text.strip():
                lines.append((number, text))
    return lines


def one_line_reason(error: Exception) -> str:
    return " ".join(str(error).split())


def jsonl_rows(path: str | Path) -> list[tuple[str, object]]:
    """("file:line", decoded value) for each non-blank line of a JSON-lines file; bad JSON is a DataError there."""
    rows = []
    for number, line in numbered_lines(path):
        try:
            rows.append((f"{path}:{number}", json.loads(line.rstrip("\r\n"))))  # a cut line: "Unterminated string"
        except json.JSONDecodeError as e:
            reason = e.msg.removesuffix(" at")  # "Invalid control character at" reads as if the position follows
            raise DataError(f"{path}:{number}: not valid JSON at column {e.colno} ({reason})") from None
        except (RecursionError, ValueError) as e:  # "[[[[..." deeper than the parser's stack; a 5000-digit number
            reason = "nested too deeply" if isinstance(e, RecursionError) else one_line_reason(e)
            raise DataError(f"{path}:{number}: not valid JSON ({reason})") from None
    return rows


def reject_duplicates(keyed: list[tuple[str, object]]) -> None:
    """(where, key) per record: a key seen twice in one file (a record that would be trained and scored twice) is
    a DataError naming both places."""
    first_seen: dict = {}
    for where, key in keyed:
        if key in first_seen:
            raise DataError(f"{where}: duplicate of the record at {first_seen[key]}")
        first_seen[key] = where


def parse_records(
    rows: list[tuple[str, object]], name: str, required: tuple[str, ...] = ("question", "answer")
) -> list[QARecord]:
    """QA records of one file's ("where", decoded value) rows, `name` the file: a malformed row, a missing field or a
    duplicate question-answer pair is one DataError naming the row; a file without records is one naming `name`."""
    records = [parse_record(obj, where, required) for where, obj in rows]
    reject_duplicates([(where, (r.question, r.answer)) for (where, _), r in zip(rows, records)])
    if not records:
        raise DataError(f"{name}: contains no records")
    return records


def load_lines(path: str | Path) -> list[str]:
    """Read a plain list of non-empty lines (e.g. TOFU's idontknow.jsonl, which is one refusal per line)."""
    lines = [line.strip() for _, line in numbered_lines(path)]
    if not lines:
        raise DataError(f"{path}: contains no lines")
    return lines
