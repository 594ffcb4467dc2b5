"""Hostile inputs, property-based: whatever is wrong with a data line or a command-line value, the user gets one
DataError / ConfigError line naming the file and line (or the config key), never a traceback from deeper down.

Example counts are small (the suite runs on 2 cores); each property still covers every kind of damage."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from conftest import load_jsonl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_muse import FILES as MUSE_FILES
from test_muse import write_muse
from test_tofu_validation import write_tiny_tofu

from benchmarks.muse import load_muse
from benchmarks.tofu import load_tofu
from benchmarks.tofu.data import AUTHOR_EVAL_FIELDS, QA_FIELDS, UTILITY_EVAL_FIELDS
from pmc.core import records
from pmc.core.records import DataError

FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL_LINE_LIMIT = 4096  # MAX_LINE_BYTES while these tests run, so an "enormous" line stays cheap to write

TOFU_REQUIRED = {
    "full.json": QA_FIELDS, "forget01.json": QA_FIELDS, "retain99.json": QA_FIELDS,
    "forget01_perturbed.json": AUTHOR_EVAL_FIELDS, "retain_perturbed.json": AUTHOR_EVAL_FIELDS,
    "real_authors_perturbed.json": UTILITY_EVAL_FIELDS, "world_facts_perturbed.json": UTILITY_EVAL_FIELDS,
}
DAMAGE = ("truncated", "not_utf8", "missing_field", "wrong_type", "empty_answer", "enormous", "duplicate")
NOT_A_STRING = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))
BAD_UTF8 = st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3(", b"\xe2\x28\xa1", b"\xed\xa0\x80", b"\xf0\x28\x8c"])


@st.composite
def damaged_line(draw, lines: list[str], required: tuple[str, ...]):
    """(line number, new bytes of that line, the line the error must name, what the message must contain)."""
    number = draw(st.integers(1, len(lines)))
    line = lines[number - 1]
    row = json.loads(line)
    damage = draw(st.sampled_from([d for d in DAMAGE if (d != "duplicate" or len(lines) > 1)
                                   and (d != "empty_answer" or "answer" in row)]))
    if damage == "truncated":
        return number, line[: draw(st.integers(1, len(line) - 1))].encode(), number, "not valid JSON at column"
    if damage == "not_utf8":
        at = draw(st.integers(0, len(line)))
        return number, line[:at].encode() + draw(BAD_UTF8) + line[at:].encode(), number, "not valid UTF-8"
    if damage == "missing_field":
        field = draw(st.sampled_from([f for f in required if f in row]))
        del row[field]
        return number, json.dumps(row).encode(), number, f"field '{field}' is missing"
    if damage == "wrong_type":
        field = draw(st.sampled_from(sorted(row)))
        row[field] = draw(NOT_A_STRING)
        assume(field != "perturbed_answer" or row[field] != [] or field in required)  # [] is fine where optional
        return number, json.dumps(row).encode(), number, f"field '{field}'"
    if damage == "empty_answer":
        row["answer"] = draw(st.sampled_from(["", " ", "\t", " \n "]))
        return number, json.dumps(row).encode(), number, "field 'answer' is not a non-empty string"
    if damage == "enormous":
        row["padding"] = "x" * SMALL_LINE_LIMIT  # an extra field: only the length is wrong
        return number, json.dumps(row).encode(), number, f"line longer than {SMALL_LINE_LIMIT} bytes"
    other = draw(st.integers(1, len(lines)).filter(lambda n: n != number))  # duplicate: another line's record
    first, second = sorted((number, other))
    return number, lines[other - 1].encode(), second, "duplicate of the record at "


def damage_file(path: Path, number: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = new
    path.write_bytes(b"\n".join(lines))


def assert_one_line_at(error: DataError, path: Path, line: int, fragment: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


@FEW
@given(data=st.data(), name=st.sampled_from(sorted(TOFU_REQUIRED)))
def test_damaged_tofu_line_is_one_error_naming_file_and_line(data, name):
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(records, "MAX_LINE_BYTES", SMALL_LINE_LIMIT):
        root = write_tiny_tofu(Path(tmp))
        path = root / name
        lines = path.read_text(encoding="utf-8").split("\n")
        number, new, reported, fragment = data.draw(damaged_line(lines, TOFU_REQUIRED[name]))
        damage_file(path, number, new)
        with pytest.raises(DataError) as e:
            load_tofu("forget01", data_dir=str(root))
        assert_one_line_at(e.value, path, reported, fragment)


MUSE_FIELDS = {("raw", s): ("text",) for s in ("forget", "retain1", "retain2")} | {
    ("verbmem", "forget"): ("prompt", "gt"), ("privleak", "forget"): ("text",), ("privleak", "retain"): ("text",),
    ("privleak", "holdout"): ("text",),
    **{("knowmem", s): ("question", "answer") for s in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")},
}


@settings(FEW, max_examples=15)  # each example loads a MUSE directory through datasets (~0.7 s)
@given(data=st.data(), file=st.sampled_from(sorted(MUSE_FIELDS)))
def test_damaged_muse_line_is_one_error_naming_file_and_line(data, file):
    config, split = file
    rows = MUSE_FILES[file]
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(records, "MAX_LINE_BYTES", SMALL_LINE_LIMIT):
        root = write_muse(Path(tmp))
        path = root / config / f"{split}.jsonl"
        lines = [json.dumps(r) for r in rows]
        number, new, reported, fragment = data.draw(damaged_line(lines, MUSE_FIELDS[file]))
        damage_file(path, number, new)
        with pytest.raises(DataError) as e:
            load_muse("news", data_dir=str(root), retain_splits=["retain1", "retain2"])
        assert_one_line_at(e.value, path, reported, fragment)


@settings(max_examples=60, deadline=None)
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_any_bytes_load_or_fail_with_one_data_error(content):
    """Arbitrary file contents: records or a DataError naming the file, nothing else (no UnicodeDecodeError,
    RecursionError, TypeError, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qa.json"
        path.write_bytes(content)
        try:
            records_ = load_jsonl(path, required=("question", "answer", "perturbed_answer"))
        except DataError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{path}")
        else:
            assert all(r.question.strip() and r.answer.strip() for r in records_)


def test_deeply_nested_json_is_a_data_error(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text("[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"qa\.json:1: not valid JSON"):
        load_jsonl(path)


# --- wrong value types on the command line -----------------------------------------------------------------------

# key -> what the message says it must be; the values drawn below are never that
TYPED_KEYS = {
    "seed": "an int", "method.handler.num_samples": "an int", "method.handler.temperature": "a number",
    "method.handler.top_p": "a number", "method.training.epochs": "an int", "method.training.batch_size": "an int",
    "method.training.learning_rate": "a number", "generation.max_new_tokens": "an int",
    "benchmark.num_authors": "an int", "model.finetune.epochs": "an int",
    "save_unlearned": "true or false", "deterministic": "true or false",
}
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
    lambda w: w not in ("true", "false", "null", "nan", "inf", "infinity"))
# as typed on the command line: words, lists, mappings, floats where an int is due, ints where a bool is due
LISTS = st.lists(st.integers(0, 9), min_size=1, max_size=3).map(lambda v: f"[{','.join(map(str, v))}]")
VALUES = st.one_of(WORDS, LISTS, st.just("{a: 1}"), st.floats(0.1, 9.9).map(lambda f: f"{f:.2f}"),
                   st.integers(2, 9).map(str))


def wrongly_typed(key: str, value: str) -> bool:
    kind = TYPED_KEYS[key]
    is_float, is_int = value.replace(".", "", 1).isdigit() and "." in value, value.isdigit()
    if kind == "a number":
        return not (is_float or is_int)
    if kind == "an int":
        return not is_int
    return True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(TYPED_KEYS)), value=VALUES)
def test_wrongly_typed_value_names_the_key(make_config, key, value):
    from pmc.checks import check_run_config, check_unlearning_config
    from pmc.core.errors import ConfigError

    assume(wrongly_typed(key, value))
    cfg = make_config(f"{key}={value}")
    with pytest.raises(ConfigError) as e:
        check_run_config(cfg)
        check_unlearning_config(cfg)
    message = str(e.value)
    assert message.startswith(f"{key} must be {TYPED_KEYS[key]}") and "\n" not in message, message
