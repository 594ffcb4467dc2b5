"""Resume end to end: `python -m pmc.run` killed with SIGKILL in the middle of PMC unlearning, rerun with the same
hydra.run.dir, ends with the metrics and per-step log of an uninterrupted run, exactly (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, SMALL

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# SMALL: 10 forget questions in micro-batches of 8, 2 optimizer steps an epoch, 10 epochs; a checkpoint every step
OVERRIDES = [*SMALL, "generation.max_new_tokens=24", "checkpoint.every_steps=1",
             "checkpoint.min_interval_s=0"]


def command(run_dir, cache_dir) -> list[str]:
    return [sys.executable, "-m", "pmc.run", *OVERRIDES, f"cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]


def finished(run_dir, cache_dir) -> dict:
    done = subprocess.run(command(run_dir, cache_dir), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def newest_checkpoint_step(run_dir) -> int:
    complete = [int(p.name.removeprefix("step-")) for p in (run_dir / "checkpoints").glob("step-*")
                if (p / "trainer_state.json").is_file()]
    return max(complete, default=0)


@pytest.mark.slow
def test_a_run_killed_mid_unlearning_resumes_to_identical_metrics(tmp_path):
    cache = tmp_path / "cache"
    uninterrupted = finished(tmp_path / "uninterrupted", cache)  # also builds the stage-0 models both runs share
    assert not (tmp_path / "uninterrupted" / "checkpoints").exists()  # removed once results.json is written

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(command(run_dir, cache), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while newest_checkpoint_step(run_dir) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = newest_checkpoint_step(run_dir)
    assert 3 <= killed_at < 20 and not (run_dir / "results.json").exists()

    resumed = finished(run_dir, cache)
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert (resumed["resumed_from_step"], uninterrupted["resumed_from_step"]) == (killed_at, 0)
    log = (run_dir / "train_log.jsonl").read_text()
    assert log == (tmp_path / "uninterrupted" / "train_log.jsonl").read_text()  # every step once, same values
    assert len(log.splitlines()) == 20
    assert not (run_dir / "checkpoints").exists()


def task_processes(sweep_dir) -> list[int]:
    """Pids of the submitit task processes (python -m submitit.core._submit <sweep_dir>/.submitit/...)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
        if "submitit.core._submit" in cmdline and any(str(sweep_dir) in part for part in cmdline):
            pids.append(int(entry))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the job's process through /proc")
def test_a_preempted_submitit_job_requeues_itself_and_resumes(tmp_path):
    """The submitit launchers (local here, SLURM alike) requeue a job that gets the preemption / timeout signal
    (USR2: submitit's handler calls the launcher's `checkpoint`, which resubmits the same job); the requeued job
    runs in the same sweep subdirectory and resumes from the checkpoint the first attempt left."""
    sweep_dir = tmp_path / "sweep"
    overrides = [*OVERRIDES, "method.training.epochs=4", "model.pretrain.epochs=4", "model.finetune.epochs=6"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pmc.run", "-m", "hydra/launcher=local", *overrides, f"cache_dir={tmp_path / 'cache'}",
         f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    job_dir = sweep_dir / "0"
    try:
        deadline = time.monotonic() + 240
        while newest_checkpoint_step(job_dir) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        tasks = task_processes(sweep_dir)
        assert process.poll() is None and len(tasks) == 1, "the job ended before it could be preempted"
        os.kill(tasks[0], signal.SIGUSR2)
        preempted_at = newest_checkpoint_step(job_dir)
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert 3 <= preempted_at < 8
    job_log = next(sweep_dir.glob(".submitit/*/*_0_log.out")).read_text()
    assert "Caught signal SIGUSR2" in next(sweep_dir.glob(".submitit/*/*_0_log.err")).read_text()
    assert job_log.count("Loading pickle") == 2  # the job started twice: the second time from the requeue
    assert f"unlearn[pmc]: resuming from {job_dir / 'checkpoints'}" in job_log
    assert json.loads((job_dir / "results.json").read_text())["method"] == "pmc"
    steps = [json.loads(line)["step"] for line in (job_dir / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # 4 epochs x 2 steps, each logged once across the two attempts
