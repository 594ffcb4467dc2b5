"""Tests for the TOFU loader that need no real TOFU files: strict validation on tiny generated copies in tmp_path,
a missing data directory, and hub failures. They always run (the real-data tests are in test_tofu_data.py)."""

from __future__ import annotations

import json

import pytest

from benchmarks import source as source_module
from benchmarks.source import DatasetSource, Split
from benchmarks.tofu import data as tofu_data
from benchmarks.tofu import load_tofu
from pmc.core.records import DataError


def authors(records):
    return sorted({r.author for r in records})


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="benchmark.data_dir") as e:
        load_tofu("forget01", data_dir=str(missing))
    assert str(missing) in str(e.value)


@pytest.mark.parametrize("experiment", ["tofu_subset_tiny", "tofu_subset_smollm2", "tofu_phi"])
def test_tofu_data_dir_defaults_to_the_environment_else_the_hub(make_config, monkeypatch, tmp_path, experiment):
    """No TOFU experiment names a machine's folder: TOFU_DATA_DIR when set, else the hub (null), and an explicit
    benchmark.data_dir wins over both."""
    monkeypatch.setenv("TOFU_DATA_DIR", str(tmp_path))
    assert make_config(f"experiment={experiment}", base=[]).benchmark.data_dir == str(tmp_path)
    assert make_config(f"experiment={experiment}", "benchmark.data_dir=/data/tofu", base=[]).benchmark.data_dir \
        == "/data/tofu"
    monkeypatch.delenv("TOFU_DATA_DIR")
    assert make_config(f"experiment={experiment}", base=[]).benchmark.data_dir is None


# --- hub failures ------------------------------------------------------------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """datasets and huggingface_hub in offline mode with empty caches, as on a machine without the network."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_hub_offline_is_one_error_naming_the_dataset_and_the_local_option(offline_hub):
    with pytest.raises(DataError) as e:
        load_tofu("forget01", hub_repo="someone/TOFU")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("full/train: the Hugging Face hub dataset someone/TOFU could not be reached (")
    assert message.endswith("set benchmark.data_dir (default $TOFU_DATA_DIR) to a local copy of the TOFU files (the "
                            "TOFU JSON files) instead")


def failing_hub(error):
    def load(repo, split):
        raise error
    return load


def test_hub_errors_are_data_errors_and_an_absent_optional_file_is_none(monkeypatch):
    source = DatasetSource("TOFU", None, "locuslab/TOFU", "the TOFU JSON files")
    parse = tofu_data._refusals
    monkeypatch.setattr(source_module, "load_hub_split", failing_hub(FileNotFoundError("no idontknow.jsonl")))
    assert source.load(tofu_data.IDK_SPLIT, parse, optional=True) is None
    with pytest.raises(DataError, match=r"^idontknow\.jsonl: not found in the TOFU hub dataset locuslab/TOFU "
                                        r"\(FileNotFoundError: no idontknow\.jsonl\)$"):
        source.load(tofu_data.IDK_SPLIT, parse)
    monkeypatch.setattr(source_module, "load_hub_split", failing_hub(ValueError("BuilderConfig 'x' not found")))
    with pytest.raises(DataError, match=r"^x/train: the TOFU hub dataset locuslab/TOFU could not be loaded "
                                        r"\(ValueError: BuilderConfig 'x' not found\)$"):
        source.load(Split("x", "train", ("x.json",)), parse, optional=True)


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


def write_tiny_tofu(root):
    """A valid TOFU-shaped directory with 4 authors of 20 questions each."""
    def rows(make, authors):
        return [make(a, i) for a in authors for i in range(20)]

    write_jsonl(root / "full.json", rows(qa, range(N_AUTHORS)))
    write_jsonl(root / "forget01.json", rows(qa, [3]))
    write_jsonl(root / "forget01_perturbed.json", rows(perturbed, [3]))
    write_jsonl(root / "retain99.json", rows(qa, range(3)))
    write_jsonl(root / "retain_perturbed.json", rows(perturbed, range(2)))
    utility = [{"question": f"Fact {i}?", "answer": f"Fact {i}.", "perturbed_answer": [f"Not {i}."]} for i in range(3)]
    write_jsonl(root / "real_authors_perturbed.json", utility)
    write_jsonl(root / "world_facts_perturbed.json", utility)
    return root


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_tofu(tmp_path)


def set_line(path, number, text):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[number - 1] = text
    path.write_text("\n".join(lines), encoding="utf-8")


def test_tiny_copy_loads(tiny):
    b = load_tofu("forget01", data_dir=str(tiny))
    assert (len(b.forget), len(b.retain), len(b.eval_sets["retain"])) == (20, 60, 40)
    assert authors(b.forget) == [3] and authors(b.eval_sets["retain"]) == [0, 1]
    assert b.idk_answers == []  # no idontknow.jsonl in the directory


def test_bad_json_line_names_file_line_and_column(tiny):
    set_line(tiny / "forget01_perturbed.json", 3, '{"question": "unterminated')
    truncated = r"forget01_perturbed\.json:3: not valid JSON at column 14 \(Unterminated string starting\)$"
    with pytest.raises(DataError, match=truncated):
        load_tofu("forget01", data_dir=str(tiny))
    # the new-user report: a raw control character lost its position ("Invalid control character at)")
    set_line(tiny / "forget01_perturbed.json", 3, '{"question": "a\tb", "answer": "c"}')
    with pytest.raises(DataError) as e:
        load_tofu("forget01", data_dir=str(tiny))
    assert str(e.value) == (f"{tiny / 'forget01_perturbed.json'}:3: not valid JSON at column 16 "
                            "(Invalid control character)")


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
