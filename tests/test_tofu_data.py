"""Tests for the real TOFU loader on the real files (skipped when they are absent).

Validation on tiny generated copies, and failures that need no real data, are in test_tofu_validation.py so they
always run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import source
from benchmarks.source import load_local_file
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


# --- the records themselves -----------------------------------------------------------------------------------

# Digests of the benchmarks b95532c's loader (the harness' own line-by-line JSON reader, before benchmarks were loaded
# through `datasets`) built from these files: loading through `datasets` must give the same records, in the same order.
B95532C_DIGESTS = [
    ("forget01", None, "8ea00433812f4b748ec22eda91d96623ba277c111d7ca143081a3028f380ac6d"),
    ("forget10", None, "c03334716a32706c8505358a6b43f91fcdba18207990a1ff7150535fa8e6dd70"),
    ("forget01", 10, "4bff3335382cae1d061c39f0c3c948a3a338e5d0335524ed09dd088299b718a0"),
]


def benchmark_digest(bench) -> str:
    return hashlib.sha256(json.dumps(asdict(bench), sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("forget_split, num_authors, digest", B95532C_DIGESTS)
def test_same_records_as_the_loader_of_b95532c(forget_split, num_authors, digest):
    assert benchmark_digest(load_tofu(forget_split, data_dir=str(TOFU_DIR), num_authors=num_authors)) == digest


def test_forget_records_are_the_file_lines_in_order():
    b = load_tofu("forget01", data_dir=str(TOFU_DIR))
    lines = (TOFU_DIR / "forget01_perturbed.json").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    assert [(r.question, r.answer, r.paraphrased_question, r.paraphrased_answer, r.perturbed_answer)
            for r in b.forget] == [(o["question"], o["answer"], o["paraphrased_question"], o["paraphrased_answer"],
                                    tuple(o["perturbed_answer"])) for o in rows]


# --- hub path ----------------------------------------------------------------------------------------------------


def serve_local(requested=None, missing=None):
    """A stand-in for the hub: each split is its local file, read by the `datasets` builder; `missing` is absent."""
    def load(repo, split):
        if requested is not None:
            requested.append((repo, split.hub_name))
        if split.files[0] == missing:
            raise FileNotFoundError(f"{repo} has no {missing}")
        return load_local_file(TOFU_DIR / split.files[0], split.builder)
    return load


def test_hub_path_loads_the_configs_as_the_references(monkeypatch):
    requested = []
    monkeypatch.setattr(source, "load_hub_split", serve_local(requested))
    b = load_tofu("forget01", hub_repo="someone/TOFU")
    assert b == load_tofu("forget01", data_dir=str(TOFU_DIR))
    assert (len(b.forget), len(b.retain), len(b.idk_answers)) == (40, 3960, 100)
    assert {repo for repo, _ in requested} == {"someone/TOFU"}
    # load_dataset("locuslab/TOFU", name, split="train"), as official PMC's unlearning/dataloader.py L13-25
    assert sorted(name for _, name in requested) == sorted([
        "full/train", "forget01_perturbed/train", "forget01/train", "retain99/train", "retain_perturbed/train",
        "real_authors_perturbed/train", "world_facts_perturbed/train", "idontknow.jsonl",
    ])


def test_hub_without_idk_file_gives_no_idk_answers(monkeypatch):
    monkeypatch.setattr(source, "load_hub_split", serve_local(missing="idontknow.jsonl"))
    assert load_tofu("forget01").idk_answers == []


def test_hub_without_a_required_file(monkeypatch):
    monkeypatch.setattr(source, "load_hub_split", serve_local(missing="retain99.json"))
    with pytest.raises(DataError, match=r"^retain99/train: not found in the TOFU hub dataset locuslab/TOFU "):
        load_tofu("forget01")
