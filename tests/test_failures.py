"""Failure isolation: a failed job leaves a failure.json (never a results.json), the other jobs of a multirun still
run, the sweep exits 1 naming the failed job, and collect.py / figures.py list it beside the table and skip it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SMALL, SMALL_MODEL
from omegaconf.errors import MissingMandatoryValue

from pmc.core.errors import CheckpointError, ConfigError, TrainingDiverged, one_line
from pmc.core.records import DataError
from pmc.experiment import run_experiment
from pmc.failures import describe, failure_record, with_group_options
from pmc.reporting import jobs, tables

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# the smallest run that trains, unlearns and scores: a 1-layer model on 3 synthetic authors, 1 epoch of GA
TINY_RUN = [
    "model.architecture.vocab_size=300", "model.architecture.hidden_size=32", "model.architecture.num_layers=1",
    "model.architecture.num_heads=2", "model.architecture.intermediate_size=64", "model.pretrain.epochs=2",
    "model.finetune.epochs=3", "benchmark.num_authors=3", "benchmark.forget_authors=1",
    "benchmark.retain_eval_authors=1", "benchmark.num_world_facts=5", "benchmark.num_real_authors=5",
    "method=ga", "method.training.epochs=1", "generation.max_new_tokens=8", "device=cpu",
]


# --- one line per failure, and what failure.json records -------------------------------------------------------


@pytest.mark.parametrize("error, line, user_error", [
    (DataError("data/full.json:3: field 'answer' is missing"), "data/full.json:3: field 'answer' is missing", True),
    (TrainingDiverged("unlearn[ga]: loss became nan"), "unlearn[ga]: loss became nan", True),
    (MissingMandatoryValue("missing"), None, True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n(GPU 0; 79 GiB total)"),
     "out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB; (GPU 0; 79 GiB total)); lower "
     "method.training.batch_size (raising gradient_accumulation_steps to keep the effective batch) or "
     "generation.batch_size", True),
    (RuntimeError("cumsum_cuda_kernel does not have a deterministic implementation, but you set "
                  "'torch.use_deterministic_algorithms(True)'."), None, True),
    (KeyError("rouge_forget"), "KeyError: 'rouge_forget'", False),
])
def test_every_failure_is_one_line(error, line, user_error):
    described, is_user_error = describe(error)
    assert "\n" not in described and is_user_error == user_error
    if line is not None:
        assert described == line
    if isinstance(error, RuntimeError) and "cumsum" in str(error):
        assert described.startswith("deterministic=true, but cumsum_cuda_kernel has no deterministic implementation")


def test_one_line_keeps_hydra_option_lists_readable():
    message = "In 'config': Could not find 'method/x'\n\nAvailable options in 'method':\n\tflat\n\tga\n\tpmc"
    assert one_line(message) == "In 'config': Could not find 'method/x'; Available options in 'method': flat, ga, pmc"


def test_unknown_option_in_a_list_names_the_group_options(tmp_path):
    (tmp_path / "eval").mkdir()
    for name in ("tofu", "paper", "notes.txt"):
        (tmp_path / "eval" / (name if "." in name else f"{name}.yaml")).write_text("")
    message = "In 'config': Could not load 'eval/nope'."
    assert with_group_options(message, tmp_path) == (
        "In 'config': Could not load 'eval/nope'; Available options in 'eval': paper, tofu")
    assert with_group_options("In 'config': Could not load 'model/x'.", tmp_path).endswith("'model/x'.")  # no folder
    assert with_group_options("Could not override 'a.b'", tmp_path) == "Could not override 'a.b'"


def test_failure_record_names_stage_error_and_overrides():
    def diverge():
        raise TrainingDiverged("unlearn[pmc]: loss became nan at epoch 2, step 3")

    try:
        diverge()
    except TrainingDiverged as e:
        e.pmc_stage = "unlearn"
        record = failure_record(e, ["method=pmc", "seed=1"])
    assert record["status"] == "failed" and record["stage"] == "unlearn" and record["user_error"] is True
    assert record["error_type"] == "TrainingDiverged" and record["error"].startswith("unlearn[pmc]: loss became nan")
    assert record["overrides"] == ["method=pmc", "seed=1"]
    assert any("in diverge" in line for line in record["traceback_tail"])


@pytest.mark.parametrize("overrides, patch_stage0, stage", [
    (["method.handler.num_samples=abc"], False, "config"),
    (["benchmark=tofu", "benchmark.data_dir=/nonexistent/tofu"], False, "data"),
    ([], True, "stage0"),
])
def test_errors_are_tagged_with_their_stage(make_config, tmp_path, monkeypatch, overrides, patch_stage0, stage):
    def unreadable(*args, **kwargs):
        raise CheckpointError("cache/tiny-target: checkpoint is incomplete")

    if patch_stage0:
        monkeypatch.setattr("pmc.pipeline.prepare_models", unreadable)
    base = SMALL_MODEL if "benchmark=tofu" in overrides else SMALL
    with pytest.raises((ConfigError, DataError, CheckpointError)) as e:
        run_experiment(make_config(*overrides, base=base), tmp_path)
    assert e.value.pmc_stage == stage
    assert not (tmp_path / "results.json").exists()


# --- a 3-job sweep with one bad job (basic launcher: jobs one after another in one process) --------------------


@pytest.fixture(scope="module")
def failed_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failed_sweep")
    sweep_dir = tmp / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "pmc.run", "-m", "method.handler.forget_weight=1.0,abc,0.5", *TINY_RUN,
         f"cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    return sweep_dir, done


def test_a_failed_job_does_not_stop_the_sweep(failed_sweep):
    sweep_dir, done = failed_sweep
    assert done.returncode == 1, done.stderr[-3000:]
    for job in ("0", "2"):
        assert (sweep_dir / job / "results.json").is_file(), f"job {job} did not finish:\n{done.stderr[-3000:]}"
        assert not (sweep_dir / job / "failure.json").exists()
    assert not (sweep_dir / "1" / "results.json").exists()
    record = json.loads((sweep_dir / "1" / "failure.json").read_text())
    assert record["stage"] == "config" and record["error_type"] == "ConfigError"
    assert record["error"] == "method.handler.forget_weight must be a number, got 'abc'"
    assert "method.handler.forget_weight=abc" in record["overrides"]
    stderr = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert stderr[0].startswith("error: job 1 failed in config: method.handler.forget_weight must be a number")
    assert stderr[-1] == f"error: 1 job(s) of the sweep failed (each has a failure.json): {sweep_dir / '1'}"


def test_collect_lists_the_failed_job_with_its_error(failed_sweep, tmp_path):
    sweep_dir, _ = failed_sweep
    per_job, summary, problems = tables.collect([sweep_dir])
    assert problems == {str(sweep_dir / "1"): ("failed", "in config: method.handler.forget_weight must be a number, "
                                                         "got 'abc'")}
    assert sorted(per_job.loc[per_job["model"] == "unlearned", "job"]) == [str(sweep_dir / "0"), str(sweep_dir / "2")]

    done = subprocess.run([sys.executable, "scripts/collect.py", str(sweep_dir), "--name", "t", "--out",
                           str(tmp_path / "tables")], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 jobs collected" in done.stdout
    assert (f"failed: {sweep_dir / '1'} (in config: method.handler.forget_weight must be a number, got 'abc')"
            in done.stdout.splitlines())


def test_figures_skip_the_failed_job(failed_sweep, tmp_path):
    sweep_dir, _ = failed_sweep
    done = subprocess.run([sys.executable, "scripts/figures.py", str(sweep_dir), "--name", "t", "--out",
                           str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"failed: {sweep_dir / '1'}" in done.stdout
    assert (tmp_path / "t_pareto.png").is_file()


def test_a_later_success_in_the_same_directory_clears_the_failure(failed_sweep, tmp_path):
    """collect.py trusts the newer of results.json and failure.json (a job rerun into its old directory)."""
    import shutil

    sweep_dir, _ = failed_sweep
    job = tmp_path / "job"
    shutil.copytree(sweep_dir / "0", job)
    shutil.copy(sweep_dir / "1" / "failure.json", job / "failure.json")  # newer than the results
    assert jobs.job_problem(job)[0] == "failed"
    os.utime(job / "failure.json", (0, 0))
    assert jobs.job_problem(job) is None
