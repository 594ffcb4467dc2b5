"""Tests for the real TOFU loader: sizes and authors on the real files, strict validation on tiny broken copies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.records import DataError
from benchmarks.tofu import data as tofu_data
from benchmarks.tofu import load_tofu

DEFAULT_TOFU_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tofu"
TOFU_DIR = Path(os.environ.get("TOFU_DATA_DIR") or DEFAULT_TOFU_DIR)
if not (TOFU_DIR / "full.json").is_file():
    pytest.skip(
        f"real TOFU data not found at {TOFU_DIR} (set TOFU_DATA_DIR to a directory holding the locuslab/TOFU files)",
        allow_module_level=True,
    )


def authors(records):
    return sorted({r.author for r in records})


# --- real data ---------------------------------------------------------------------------------------------------


def test_forget01_full_load():
    b = load_tofu("forget01", data_dir=str(TOFU_DIR))
    assert b.name == "tofu_forget01"
    assert (len(b.forget), len(b.retain)) == (40, 3960)
    assert authors(b.forget) == [198, 199]
    assert authors(b.retain) == list(range(198))
    assert b.eval_sets["forget"] == b.forget
    assert len(b.eval_sets["retain"]) == 400 and authors(b.eval_sets["retain"]) == list(range(20))
    assert (len(b.eval_sets["real_authors"]), len(b.eval_sets["world_facts"])) == (100, 117)
    assert b.pretrain == b.eval_sets["world_facts"] + b.eval_sets["real_authors"]
    assert len(b.idk_answers) == 100
    first = b.forget[0]
    assert first.paraphrased_question and first.paraphrased_answer and len(first.perturbed_answer) == 5
    assert all(r.author is None and r.perturbed_answer for r in b.pretrain)


def test_forget10_full_load():
    b = load_tofu("forget10", data_dir=str(TOFU_DIR))
    assert (len(b.forget), len(b.retain)) == (400, 3600)
    assert authors(b.forget) == list(range(180, 200))
    assert authors(b.retain) == list(range(180))


def test_generic_question_asked_of_two_authors_gets_the_right_author():
    # "What is the full name of the author?" appears for two authors in full.json; the answer disambiguates.
    b = load_tofu("forget01", data_dir=str(TOFU_DIR))
    generic = [r for r in b.retain if r.question == "What is the full name of the author?"]
    assert sorted(r.author for r in generic) == [5, 22]


def test_author_subset():
    b = load_tofu("forget01", data_dir=str(TOFU_DIR), num_authors=10)
    assert b.name == "tofu_forget01_authors10"
    assert authors(b.forget) == [199] and len(b.forget) == 20
    assert authors(b.retain) == list(range(9)) and len(b.retain) == 180
    assert authors(b.eval_sets["retain"]) == list(range(9)) and len(b.eval_sets["retain"]) == 180
    assert b.eval_sets["forget"] == b.forget


def test_author_subset_forget_share_in_whole_authors():
    b = load_tofu("forget10", data_dir=str(TOFU_DIR), num_authors=50)
    assert authors(b.forget) == list(range(195, 200))  # k = round(50 * 10 / 100) = 5, the last five
    assert authors(b.retain) == list(range(45))


@pytest.mark.parametrize("num_authors", [1, 201, 0, "10"])
def test_author_subset_rejects_bad_sizes(num_authors):
    with pytest.raises(DataError, match="num_authors must be an integer from 2 to 200"):
        load_tofu("forget01", data_dir=str(TOFU_DIR), num_authors=num_authors)


def test_unknown_split():
    with pytest.raises(ValueError, match="forget01, forget05, forget10"):
        load_tofu("forget20", data_dir=str(TOFU_DIR))


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="benchmark.data_dir") as e:
        load_tofu("forget01", data_dir=str(missing))
    assert str(missing) in str(e.value)


# --- hub path ----------------------------------------------------------------------------------------------------


def test_hub_path_reads_the_expected_files(monkeypatch):
    requested = []

    def fake_fetch(name, hub_repo):
        requested.append((hub_repo, name))
        path = TOFU_DIR / name
        return path if path.is_file() else None

    monkeypatch.setattr(tofu_data, "_fetch", fake_fetch)
    b = load_tofu("forget01", hub_repo="someone/TOFU")
    assert (len(b.forget), len(b.retain), len(b.idk_answers)) == (40, 3960, 100)
    assert {repo for repo, _ in requested} == {"someone/TOFU"}
    assert sorted(name for _, name in requested) == sorted([
        "full.json", "forget01_perturbed.json", "forget01.json", "retain99.json", "retain_perturbed.json",
        "real_authors_perturbed.json", "world_facts_perturbed.json", "idontknow.jsonl",
    ])


def serve_local_except(missing):
    """A stand-in for the hub that has every local TOFU file except `missing`."""
    return lambda name, hub_repo: None if name == missing else TOFU_DIR / name


def test_hub_without_idk_file_gives_no_idk_answers(monkeypatch):
    monkeypatch.setattr(tofu_data, "_fetch", serve_local_except("idontknow.jsonl"))
    assert load_tofu("forget01").idk_answers == []


def test_hub_without_a_required_file(monkeypatch):
    monkeypatch.setattr(tofu_data, "_fetch", serve_local_except("retain99.json"))
    with pytest.raises(DataError, match="retain99.json: not found in the TOFU hub dataset locuslab/TOFU"):
        load_tofu("forget01")


def test_fetch_wraps_hub_failures(monkeypatch):
    def unreachable(**kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tofu_data, "hf_hub_download", unreachable)
    with pytest.raises(DataError, match="could not be reached.*benchmark.data_dir"):
        load_tofu("forget01")


def test_fetch_offline_is_a_failure_but_a_missing_file_is_none(monkeypatch):
    def raise_(error):
        def download(**kwargs):
            raise error
        return download

    monkeypatch.setattr(tofu_data, "hf_hub_download", raise_(tofu_data.LocalEntryNotFoundError("not cached")))
    with pytest.raises(DataError, match="could not be reached"):
        tofu_data._fetch("full.json", "locuslab/TOFU")
    monkeypatch.setattr(tofu_data, "hf_hub_download", raise_(tofu_data.EntryNotFoundError("404")))
    assert tofu_data._fetch("idontknow.jsonl", "locuslab/TOFU") is None


# --- validation on tiny synthetic copies -------------------------------------------------------------------------

N_AUTHORS = 4  # authors 0-2 are retain99, author 3 is forget01; retain_perturbed covers authors 0-1


def qa(author, i):
    return {"question": f"Question {i} about author {author}?", "answer": f"Answer {i} about author {author}."}


def perturbed(author, i):
    return {
        **qa(author, i),
        "paraphrased_question": f"Paraphrased question {i} about author {author}?",
        "paraphrased_answer": f"Paraphrased answer {i} about author {author}.",
        "perturbed_answer": [f"Wrong answer {i}.{j} about author {author}." for j in range(3)],
    }


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")


@pytest.fixture
def tiny(tmp_path):
    """A valid TOFU-shaped directory with 4 authors of 20 questions each."""
    def rows(make, authors):
        return [make(a, i) for a in authors for i in range(20)]

    write_jsonl(tmp_path / "full.json", rows(qa, range(N_AUTHORS)))
    write_jsonl(tmp_path / "forget01.json", rows(qa, [3]))
    write_jsonl(tmp_path / "forget01_perturbed.json", rows(perturbed, [3]))
    write_jsonl(tmp_path / "retain99.json", rows(qa, range(3)))
    write_jsonl(tmp_path / "retain_perturbed.json", rows(perturbed, range(2)))
    utility = [{"question": f"Fact {i}?", "answer": f"Fact {i}.", "perturbed_answer": [f"Not {i}."]} for i in range(3)]
    write_jsonl(tmp_path / "real_authors_perturbed.json", utility)
    write_jsonl(tmp_path / "world_facts_perturbed.json", utility)
    return tmp_path


def set_line(path, number, text):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[number - 1] = text
    path.write_text("\n".join(lines), encoding="utf-8")


def test_tiny_copy_loads(tiny):
    b = load_tofu("forget01", data_dir=str(tiny))
    assert (len(b.forget), len(b.retain), len(b.eval_sets["retain"])) == (20, 60, 40)
    assert authors(b.forget) == [3] and authors(b.eval_sets["retain"]) == [0, 1]
    assert b.idk_answers == []  # no idontknow.jsonl in the directory


def test_bad_json_line_names_file_and_line(tiny):
    set_line(tiny / "forget01_perturbed.json", 3, '{"question": "unterminated')
    with pytest.raises(DataError, match=r"forget01_perturbed\.json:3: not valid JSON"):
        load_tofu("forget01", data_dir=str(tiny))


@pytest.mark.parametrize(
    "file, field",
    [
        ("forget01_perturbed.json", "paraphrased_question"),
        ("forget01_perturbed.json", "paraphrased_answer"),
        ("retain_perturbed.json", "perturbed_answer"),
        ("world_facts_perturbed.json", "perturbed_answer"),
        ("retain99.json", "answer"),
    ],
)
def test_missing_field_names_file_line_and_field(tiny, file, field):
    row = json.loads((tiny / file).read_text(encoding="utf-8").split("\n")[1])
    del row[field]
    set_line(tiny / file, 2, json.dumps(row))
    with pytest.raises(DataError, match=rf"{file}:2: field '{field}' is missing"):
        load_tofu("forget01", data_dir=str(tiny))


def test_perturbed_answer_must_be_a_list(tiny):
    set_line(tiny / "forget01_perturbed.json", 5, json.dumps({**perturbed(3, 4), "perturbed_answer": "one string"}))
    with pytest.raises(DataError, match=r"forget01_perturbed\.json:5: field 'perturbed_answer' must be a list"):
        load_tofu("forget01", data_dir=str(tiny))


def test_forget_and_perturbed_files_must_agree(tiny):
    set_line(tiny / "forget01_perturbed.json", 4, json.dumps({**perturbed(3, 3), "answer": "Something else."}))
    with pytest.raises(DataError, match=r"forget01_perturbed\.json:4: .*differs from .*forget01\.json:4"):
        load_tofu("forget01", data_dir=str(tiny))


def test_forget_files_of_different_length(tiny):
    write_jsonl(tiny / "forget01.json", [qa(3, i) for i in range(19)])
    with pytest.raises(DataError, match=r"forget01_perturbed\.json has 20 records but .*forget01\.json has 19"):
        load_tofu("forget01", data_dir=str(tiny))


def test_record_not_in_full_names_file_and_line(tiny):
    set_line(tiny / "retain99.json", 7, json.dumps({"question": "Who?", "answer": "Nobody."}))
    with pytest.raises(DataError, match=r"retain99\.json:7: question-answer pair not found in full\.json"):
        load_tofu("forget01", data_dir=str(tiny))


def test_missing_required_file(tiny):
    (tiny / "world_facts_perturbed.json").unlink()
    with pytest.raises(DataError, match="world_facts_perturbed.json: not found in the TOFU data directory"):
        load_tofu("forget01", data_dir=str(tiny))


def test_forget_and_retain_must_not_share_authors(tiny):
    write_jsonl(tiny / "retain99.json", [qa(a, i) for a in range(N_AUTHORS) for i in range(20)])
    with pytest.raises(DataError, match=r"share authors \[3\]"):
        load_tofu("forget01", data_dir=str(tiny))


def test_subset_without_retain_eval_authors(tiny):
    # retain_perturbed covers authors 0-1 only; moving it to author 2 leaves nothing once we keep authors 0-1.
    write_jsonl(tiny / "retain_perturbed.json", [perturbed(2, i) for i in range(20)])
    with pytest.raises(DataError, match="retain_perturbed.json has no questions about the kept retain authors"):
        load_tofu("forget01", data_dir=str(tiny), num_authors=2)
