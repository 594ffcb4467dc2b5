"""benchmarks.source: one loading path through `datasets.load_dataset` for every benchmark split, with the strict
validation on top. Local loads need no network and leave no files; what `datasets` alone would accept (a whole-file
array, a number where a string belongs, a null) is still one error at file:line; hub rows are named by their row."""

from __future__ import annotations

import json
import socket
import tempfile

import pytest
from test_muse import write_parquet_snapshot
from test_tofu_validation import write_tiny_tofu

from benchmarks import source
from benchmarks.muse import load_muse
from benchmarks.source import DatasetSource, Split
from benchmarks.tofu import load_tofu
from pmc.core.records import DataError, QARecord, parse_records

QA = Split("qa", "train", ("qa.json",))


def read_qa(root, required=("question", "answer")):
    return DatasetSource("TOFU", str(root), "someone/TOFU", "the TOFU JSON files").load(
        QA, lambda rows, name: parse_records(rows, name, required))


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def files_of(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_local_loads_need_no_network_and_leave_no_files(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("a local load used the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    caches = {"datasets": tmp_path / "hf-datasets", "modules": tmp_path / "hf-modules", "hub": tmp_path / "hf-hub"}
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", caches["datasets"])
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", caches["modules"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(caches["hub"]))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    (tmp_path / "tofu").mkdir()
    tofu = write_tiny_tofu(tmp_path / "tofu")
    muse = write_parquet_snapshot(tmp_path / "muse")
    before = files_of(tofu), files_of(muse)

    assert len(load_tofu("forget01", data_dir=str(tofu)).forget) == 20
    assert len(load_muse(data_dir=str(muse)).eval_sets["mia_holdout"]) == 2
    assert (files_of(tofu), files_of(muse)) == before  # nothing written next to the data
    assert list(temp.iterdir()) == []  # the throw-away cache directories are gone
    assert not any(path.exists() for path in caches.values())  # and nothing went to the datasets / hub caches


@pytest.mark.parametrize("lines, message", [
    # datasets reads a whole-file JSON array as rows; TOFU's files are JSON lines
    ([json.dumps([{"question": "Q1?", "answer": "A1."}])], r"qa\.json:1: expected a JSON object, got list$"),
    # datasets (5.x) keeps a column whose type changes from line to line as JSON values
    ([json.dumps({"question": "Q1?", "answer": "A1."}), "", json.dumps({"question": "Q2?", "answer": 2})],
     r"qa\.json:3: field 'answer' is not a non-empty string$"),
    ([json.dumps({"question": "Q1?", "answer": None})], r"qa\.json:1: field 'answer' is missing$"),
    (["{}"], r"qa\.json:1: field 'question' is missing$"),
    ([json.dumps({"question": "Q1?", "answer": "A1."})] * 2, r"qa\.json:2: duplicate of the record at .*qa\.json:1$"),
    (["", " "], r"qa\.json: contains no records$"),
])
def test_what_datasets_would_read_is_still_checked_line_by_line(tmp_path, lines, message):
    write_lines(tmp_path / "qa.json", lines)
    with pytest.raises(DataError, match=message):
        read_qa(tmp_path)


def test_rows_keep_their_lines_and_a_null_is_an_absent_field(tmp_path):
    write_lines(tmp_path / "qa.json", [
        json.dumps({"question": "Q1?", "answer": "A1.", "perturbed_answer": ["W1."]}),
        "",
        json.dumps({"question": "Q2?", "answer": "A2.", "perturbed_answer": None, "paraphrased_question": None}),
    ])
    assert read_qa(tmp_path) == [QARecord("Q1?", "A1.", perturbed_answer=("W1.",)), QARecord("Q2?", "A2.")]
    with pytest.raises(DataError, match=r"qa\.json:3: field 'perturbed_answer' is missing or empty$"):
        read_qa(tmp_path, required=("question", "answer", "perturbed_answer"))


def test_datasets_failing_or_dropping_rows_on_valid_lines_is_one_error(tmp_path, monkeypatch):
    path = tmp_path / "qa.json"
    write_lines(path, [json.dumps({"question": f"Q{i}?", "answer": f"A{i}."}) for i in range(2)])

    def unreadable(path, builder):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(source, "load_local_file", unreadable)
    with pytest.raises(DataError) as e:
        read_qa(tmp_path)
    assert str(e.value) == f"{path}: datasets could not read it as JSON lines (ValueError: boom second line)"
    monkeypatch.setattr(source, "load_local_file", lambda path, builder: [{"question": "Q0?", "answer": "A0."}])
    with pytest.raises(DataError) as e:
        read_qa(tmp_path)
    assert str(e.value) == f"{path}: datasets read 1 rows from its 2 non-blank lines"


def test_hub_rows_are_named_by_dataset_split_and_row(monkeypatch):
    rows = [{"question": "Q1?", "answer": "A1.", "perturbed_answer": None}, {"question": "Q2?", "answer": " "}]
    monkeypatch.setattr(source, "load_hub_split", lambda repo, split: rows)
    hub = DatasetSource("TOFU", None, "someone/TOFU", "the TOFU JSON files")
    with pytest.raises(DataError) as e:
        hub.load(QA, parse_records)
    assert str(e.value) == "hub dataset someone/TOFU qa/train: row 2: field 'answer' is not a non-empty string"
    monkeypatch.setattr(source, "load_hub_split", lambda repo, split: rows[:1])
    assert hub.load(QA, parse_records) == [QARecord("Q1?", "A1.")]
