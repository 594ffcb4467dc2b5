"""Tests for the real TOFU loader on the real files (skipped when they are absent).

Validation on tiny generated copies, and failures that need no real data, are in test_tofu_validation.py so they
always run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.tofu import data as tofu_data
from benchmarks.tofu import load_tofu
from pmc.core.records import DataError

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
