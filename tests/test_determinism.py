"""Same seed, same machine -> the same metrics, bit for bit; and the `deterministic` switch (docs/determinism.md)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL

import pmc.experiment
import pmc.pipeline
from pmc.core.generation import BatchSizes, GenerationSizes
from pmc.core.models import enable_tf32
from pmc.experiment import run_experiment
from pmc.methods.base import Method
from pmc.pipeline import seed_everything

# SMALL, cut to the least that still trains stage 0 and unlearns with PMC's sampling
QUICK = [*SMALL, "model.pretrain.epochs=4", "model.finetune.epochs=6", "method.training.epochs=2",
         "generation.max_new_tokens=24"]


@pytest.fixture
def torch_flags():
    """Restore torch's process-wide determinism settings after a test changes them."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:3]
    if saved[3] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


def sha256_files(checkpoint: Path) -> dict[str, str]:
    """Every file of a stage-0 checkpoint but its manifest (which records when it was written)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(checkpoint.iterdir())
            if p.is_file() and p.name != "stage0.json"}


def run_twice(make_config, tmp_path, shared_cache: bool) -> list[tuple[dict, Path]]:
    runs = []
    for name in ("first", "second"):
        cache = tmp_path / ("cache" if shared_cache else f"cache_{name}")
        run_dir = tmp_path / name
        run_dir.mkdir()
        run_experiment(make_config(*QUICK, "deterministic=true", f"cache_dir={cache}"), run_dir)
        runs.append((json.loads((run_dir / "results.json").read_text()), run_dir))
    return runs


def test_two_runs_give_identical_results(make_config, tmp_path, torch_flags):
    """Same seed, same machine: the two runs' results.json metrics and training logs are identical, exactly
    (deterministic=true also exercises the switch on every op a run uses)."""
    (first, first_dir), (second, second_dir) = run_twice(make_config, tmp_path, shared_cache=True)
    assert second["stage0"]["built_in_this_run"] == []
    assert first["metrics"] == second["metrics"]
    assert (first_dir / "train_log.jsonl").read_text() == (second_dir / "train_log.jsonl").read_text()


@pytest.mark.slow
def test_two_runs_each_training_stage0_give_identical_results(make_config, tmp_path, torch_flags):
    """Stage 0 included: each run trains its own target and retain model in its own cache; the checkpoints are
    the same bytes and the metrics the same numbers."""
    (first, _), (second, _) = run_twice(make_config, tmp_path, shared_cache=False)
    assert first["stage0"]["built_in_this_run"] and second["stage0"]["built_in_this_run"]
    assert first["metrics"] == second["metrics"]
    for role in ("target", "retain"):
        a, b = Path(first["stage0"]["checkpoints"][role]), Path(second["stage0"]["checkpoints"][role])
        assert a != b and sha256_files(a) == sha256_files(b)


class StopBeforeStage0(Exception):
    pass


def test_deterministic_switch_is_applied_before_stage0(make_config, tmp_path, monkeypatch, torch_flags):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    seen = {}

    def record_flags(*args, **kwargs):
        seen.update(algorithms=torch.are_deterministic_algorithms_enabled(),
                    cudnn=(torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
                    cublas=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        raise StopBeforeStage0

    monkeypatch.setattr(pmc.experiment, "load_stage0", record_flags)
    with pytest.raises(StopBeforeStage0):
        run_experiment(make_config("deterministic=true"), tmp_path)
    assert seen == {"algorithms": True, "cudnn": (True, False), "cublas": ":4096:8"}


def test_deterministic_false_leaves_torch_alone(make_config, tmp_path, monkeypatch, torch_flags):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True

    def stop(*args, **kwargs):
        raise StopBeforeStage0

    monkeypatch.setattr(pmc.experiment, "load_stage0", stop)
    with pytest.raises(StopBeforeStage0):
        run_experiment(make_config(), tmp_path)  # deterministic: false is the default
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


@pytest.fixture
def matmul_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_is_on_for_a_cuda_device_only(matmul_flags):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    enable_tf32(torch.device("cpu"))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    enable_tf32(torch.device("cuda"))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("job", ["run", "evaluate"])
def test_every_job_sets_its_matmul_precision_before_any_model_runs(make_config, tmp_path, monkeypatch, job):
    """TF32 from the job's start, not from the first training step: a model decodes and scores at one precision
    whether or not its process has trained yet (PMC's initial answers, pmc.evaluate's scores)."""
    calls = []
    monkeypatch.setattr(pmc.pipeline, "enable_tf32", lambda device: calls.append(device))

    def stop(*args, **kwargs):
        assert calls == [torch.device("cpu")]
        raise StopBeforeStage0

    monkeypatch.setattr(pmc.experiment, "load_benchmark", stop)
    with pytest.raises(StopBeforeStage0):
        if job == "run":
            run_experiment(make_config(), tmp_path)
        else:
            pmc.experiment.evaluate_checkpoint(make_config(f"checkpoint={tmp_path}", config_name="evaluate"), tmp_path)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


class DrawingMethod(Method):
    """A method whose constructor consumes the global RNGs (no method here does; a future one might)."""

    name = "drawing"

    def __init__(self, **settings):
        draws()


class StopAtUnlearning(Exception):
    pass


@pytest.mark.parametrize("handler", [None, "test_determinism.DrawingMethod"])
def test_unlearning_sees_the_freshly_seeded_rng(make_config, tmp_path, monkeypatch, handler):
    """Building the method before stage 0 (to check it early) must not change the random numbers unlearning
    draws: the run re-seeds right before unlearning, whatever the constructor drew."""
    seed_everything(0)
    expected = draws()
    seen = []

    class FakeStage0:
        target = torch.nn.Linear(2, 2)
        retain, tokenizer, checkpoints, built = target, None, {}, []

    def fake_unlearn(*args, **kwargs):
        seen.append(draws())
        raise StopAtUnlearning

    monkeypatch.setattr(pmc.experiment, "load_stage0", lambda *args, **kwargs: FakeStage0())
    monkeypatch.setattr(pmc.experiment, "unlearn", fake_unlearn)
    monkeypatch.setattr(pmc.experiment, "prepare_generation",  # fakes do not decode
                        lambda *args, **kwargs: GenerationSizes(BatchSizes(8, 8), BatchSizes(8, 8)))
    overrides = [f"method.handler._target_={handler}"] if handler else []
    with pytest.raises(StopAtUnlearning):
        run_experiment(make_config(*overrides), tmp_path)
    assert seen == [expected]
