"""Files in and out: checkpoints load through safetensors only (a pickle is never unpickled), and the JSON files a
run writes get the permissions the umask gives (a cluster group can read a sweep's results)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from pmc.core.errors import CheckpointError
from pmc.core.models import build_tiny, load_checkpoint, load_pretrained, save_checkpoint, train_tokenizer
from pmc.results import write_json_atomic


@pytest.fixture(scope="module")
def tiny_model():
    tokenizer = train_tokenizer(["a handful of words for a tokenizer", "and a few more"], 280)
    return build_tiny(tokenizer, 32, 1, 2, 64, 64, seed=0), tokenizer


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", refuse)


def pickle_checkpoint(model, tokenizer, path):
    """A save_pretrained directory as older tools write it: config, tokenizer, pytorch_model.bin."""
    model.config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    with open(path / "pytorch_model.bin", "wb") as f:  # torch.save, written without touching torch.load
        torch.save(model.state_dict(), f)


def test_pickle_only_checkpoint_is_rejected_with_one_line(tiny_model, tmp_path, no_unpickling):
    pickle_checkpoint(*tiny_model, tmp_path)
    expected = (f"{tmp_path}: has only pickle weights (pytorch_model.bin), which are never loaded; re-save it with "
                "model.save_pretrained(dir, safe_serialization=True)")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    assert str(e.value) == expected
    with pytest.raises(CheckpointError) as e:
        load_pretrained("local", str(tmp_path), "float32")
    assert str(e.value) == expected


def test_checkpoint_without_weights(tiny_model, tmp_path):
    tiny_model[0].config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r": no model\.safetensors weights$"):
        load_checkpoint(tmp_path)


def test_safetensors_checkpoint_loads_through_safetensors_only(tiny_model, tmp_path, no_unpickling, monkeypatch):
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_model
    save_checkpoint(model, tokenizer, tmp_path)
    pickle_checkpoint(model, tokenizer, tmp_path)  # a pickle beside it must be ignored, not preferred
    calls = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    loaded, _ = load_checkpoint(tmp_path)
    assert calls and all(kwargs.get("use_safetensors") is True for kwargs in calls)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_atomic_json_keeps_the_umask_permissions(tmp_path, umask, mode):
    """mkstemp creates 0600 files whatever the umask; results.json must be readable by whoever the umask allows."""
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "eval" / "target" / "paper.json", {"summary": {}})
        write_json_atomic(tmp_path / "results.json", {"metrics": {}})
        write_json_atomic(tmp_path / "results.json", {"metrics": {"again": 1}})  # replacing keeps it too
    finally:
        os.umask(previous)
    for path in (tmp_path / "results.json", tmp_path / "eval" / "target" / "paper.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert not [p for p in tmp_path.rglob(".*.tmp")], "a temporary file was left behind"
