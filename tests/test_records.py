"""Tests for the strict QA record loaders every benchmark relies on."""

from __future__ import annotations

import json

import pytest
from conftest import load_jsonl

from pmc.core.records import DataError, QARecord, load_lines


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_reads_records_and_skips_blank_lines(tmp_path):
    path = write(tmp_path / "qa.json", [
        json.dumps({"question": "Q1?", "answer": "A1."}),
        "",
        json.dumps({"question": "Q2?", "answer": "A2.", "paraphrased_question": "Q2 again?",
                    "perturbed_answer": ["Wrong."]}),
    ])
    assert load_jsonl(path) == [
        QARecord("Q1?", "A1."),
        QARecord("Q2?", "A2.", paraphrased_question="Q2 again?", perturbed_answer=("Wrong.",)),
    ]


def test_bad_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "qa.json", [json.dumps({"question": "Q?", "answer": "A."}), '{"question": '])
    with pytest.raises(DataError, match=r"qa\.json:2: not valid JSON"):
        load_jsonl(path)


def test_non_object_line(tmp_path):
    path = write(tmp_path / "qa.json", ['["Q?", "A."]'])
    with pytest.raises(DataError, match=r"qa\.json:1: expected a JSON object, got list"):
        load_jsonl(path)


@pytest.mark.parametrize("row, message", [
    ({"question": "Q?"}, "field 'answer' is missing"),
    ({"question": "Q?", "answer": "  "}, "field 'answer' is not a non-empty string"),
    ({"question": 3, "answer": "A."}, "field 'question' is not a non-empty string"),
])
def test_missing_or_empty_field(tmp_path, row, message):
    path = write(tmp_path / "qa.json", [json.dumps(row)])
    with pytest.raises(DataError, match=rf"qa\.json:1: {message}"):
        load_jsonl(path)


def test_required_extra_fields(tmp_path):
    path = write(tmp_path / "qa.json", [json.dumps({"question": "Q?", "answer": "A."})])
    with pytest.raises(DataError, match=r"qa\.json:1: field 'paraphrased_answer' is missing"):
        load_jsonl(path, required=("question", "answer", "paraphrased_answer"))
    with pytest.raises(DataError, match=r"qa\.json:1: field 'perturbed_answer' is missing or empty"):
        load_jsonl(path, required=("question", "answer", "perturbed_answer"))


@pytest.mark.parametrize("perturbed", ["Wrong.", ["Wrong.", ""], [1]])
def test_perturbed_answer_must_be_a_list_of_strings(tmp_path, perturbed):
    path = write(tmp_path / "qa.json", [json.dumps({"question": "Q?", "answer": "A.", "perturbed_answer": perturbed})])
    with pytest.raises(DataError, match=r"qa\.json:1: field 'perturbed_answer' must be a list of non-empty strings"):
        load_jsonl(path)


def test_empty_file(tmp_path):
    path = write(tmp_path / "qa.json", ["", "  "])
    with pytest.raises(DataError, match=r"qa\.json: contains no records"):
        load_jsonl(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"absent\.json: data file not found"):
        load_jsonl(tmp_path / "absent.json")


def test_load_lines(tmp_path):
    idk = write(tmp_path / "idk.jsonl", ["I don't know.", "", " No idea. "])
    assert load_lines(idk) == ["I don't know.", "No idea."]
    with pytest.raises(DataError, match="contains no lines"):
        load_lines(write(tmp_path / "empty.jsonl", [""]))
