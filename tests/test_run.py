"""End to end: `python -m pmc.run` composes, trains, unlearns, evaluates and writes its files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SMALL_MODEL, TOFU_DIR
from hydra.errors import MissingConfigException

from pmc.experiment import run_experiment
from pmc.results import current_umask, harness_commit, run_sources_tree


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# PMC with its official per-micro-batch sampling on SMALL's 10 forget questions: unlearn quality after 10 epochs
# varies from 60 to 98 across seeds 0-2, after 15 epochs it is 90-98 (target: 40-43).
PMC_EPOCHS = 15


@pytest.fixture(scope="module")
def pmc_run(tmp_path_factory, stage0_cache):
    """One PMC run on the small benchmark, shared by the assertions below."""
    from conftest import CONF_DIR, SMALL
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"cache_dir={stage0_cache}", f"method.training.epochs={PMC_EPOCHS}"])
    run_dir = tmp_path_factory.mktemp("pmc_run")
    return run_experiment(cfg, run_dir), run_dir


def test_pmc_raises_unlearn_quality_and_keeps_utility(pmc_run):
    results, _ = pmc_run
    target, unlearned = results["metrics"]["target"]["paper"], results["metrics"]["unlearned"]["paper"]
    assert unlearned["unlearn_quality"] >= target["unlearn_quality"] + 20
    assert unlearned["utility"] >= 0.9 * target["utility"]
    assert target["rouge_forget"] > 0.9  # stage 0 really memorised the forget set


def test_run_leaves_its_files(pmc_run):
    results, run_dir = pmc_run
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["metrics"] == results["metrics"]
    assert on_disk["method"] == "pmc" and on_disk["seed"] == 0 and on_disk["benchmark"] == "synthetic"
    timings = on_disk["timings_s"]
    assert set(timings) == {"data", "stage0", "unlearn", "eval", "eval.greedy_answers", "eval.paper", "unlearn.setup",
                            "unlearn.initial_answers", "unlearn.sampling", "unlearn.scoring"}
    # unlearn's parts: before the first step (PMC's initial answers in it), then PMC's sampling and scoring
    assert 0 <= timings["unlearn.initial_answers"] <= timings["unlearn.setup"]  # read from the eval cache: ~0
    assert timings["unlearn.sampling"] > 0 and timings["unlearn.scoring"] > 0
    assert timings["unlearn.setup"] + timings["unlearn.sampling"] + timings["unlearn.scoring"] < timings["unlearn"]
    # eval's parts: the greedy answers of every model, and the suite's own time without them
    assert timings["eval.greedy_answers"] > 0 and timings["eval.paper"] > 0
    assert timings["eval.greedy_answers"] + timings["eval.paper"] == pytest.approx(timings["eval"], abs=0.05)
    assert on_disk["eval_cache"]["unlearned"] == {"paper": "scored"}
    assert on_disk["eval_cache"]["target"]["paper"] in ("hit", "miss")  # another test may have scored it first
    assert on_disk["versions"]["torch"] and on_disk["config"]["method"]["handler"]["num_samples"] == 5
    rows = on_disk["config"]["generation"]["batch_size"]  # an int: scoring follows it
    assert on_disk["batch_sizes"] == {"decoding": rows, "scoring": rows}
    # the machine it ran on: CPU results repeat bit for bit only with the same kernels, picked by instruction set
    machine = on_disk["machine"]
    assert machine["device"] == "cpu" and machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["processor"] and machine["torch_threads"] == torch.get_num_threads()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert on_disk["versions"]["pmc-harness-commit"].removesuffix("+modified") == head  # which code made it
    assert set(on_disk["stage0"]["checkpoints"]) == {"target", "retain"}
    for role, entry in on_disk["stage0"]["checkpoints"].items():  # which weights, not only which entry name
        weights = (Path(entry) / "model.safetensors").read_bytes()
        assert on_disk["stage0"]["weights_sha256"][role] == {"model.safetensors": hashlib.sha256(weights).hexdigest()}
    for model in ("target", "retain", "unlearned"):
        per_example = json.loads((run_dir / "eval" / model / "paper.json").read_text())
        forget = per_example["examples"]["forget"]
        assert len(forget) == 10  # one forget author x 10 questions
        mean_recall = sum(row["rouge_l_recall"] for row in forget) / len(forget)
        assert mean_recall == pytest.approx(per_example["summary"]["rouge_forget"])
    umask_mode = 0o666 & ~current_umask()  # not mkstemp's 0600: the rest of a cluster group may read the results
    for written in (run_dir / "results.json", *run_dir.glob("eval/*/*.json")):
        assert written.stat().st_mode & 0o777 == umask_mode, written
    assert not (run_dir / "failure.json").exists()
    log = read_jsonl(run_dir / "train_log.jsonl")
    assert len(log) == PMC_EPOCHS * 2  # epochs x ceil(10 forget questions / batch 8)
    assert {"loss", "collapse_loss", "retain_loss", "selected_score", "lr", "epoch", "step"} <= set(log[0])
    assert log[-1]["selected_score"] < log[0]["selected_score"]


def test_same_seed_same_results_and_stage0_reused(pmc_run, make_config, tmp_path):
    first, first_dir = pmc_run
    second = run_experiment(make_config(f"method.training.epochs={PMC_EPOCHS}"), tmp_path)
    assert second["stage0"]["built_in_this_run"] == []  # target and retain came from the cache
    assert second["eval_cache"]["retain"] == {"paper": "hit"}  # ... and so did their scores
    assert second["metrics"] == first["metrics"]
    assert read_jsonl(tmp_path / "train_log.jsonl") == read_jsonl(first_dir / "train_log.jsonl")


def test_other_seed_changes_unlearning(pmc_run, make_config, tmp_path):
    first, _ = pmc_run
    other = run_experiment(make_config("method.handler.seed=1", "method.training.epochs=2"), tmp_path)
    assert other["metrics"]["target"] == first["metrics"]["target"]
    assert other["metrics"]["unlearned"] != first["metrics"]["unlearned"]


def test_gradient_ascent_through_the_same_loop(make_config, tmp_path):
    results = run_experiment(make_config("method=ga", "method.training.epochs=2", "method.training.learning_rate=1e-3",
                                         "method.training.gradient_accumulation_steps=1"), tmp_path)
    assert results["method"] == "ga"
    log = read_jsonl(tmp_path / "train_log.jsonl")
    assert all(step["loss"] == pytest.approx(-step["forget_nll"]) for step in log)
    assert log[-1]["forget_nll"] > log[0]["forget_nll"]  # ascent pushes the forget NLL up
    assert (tmp_path / "results.json").is_file()


def test_unknown_eval_suite_is_refused_when_the_config_is_composed(make_config):
    """Suites are a config group (conf/eval/): an unknown one fails before any run exists."""
    with pytest.raises(MissingConfigException, match="eval/nope"):
        make_config("eval=[paper,nope]")


@pytest.mark.skipif(not (TOFU_DIR / "full.json").is_file(), reason=f"real TOFU data not found at {TOFU_DIR}")
def test_real_tofu_author_subset_runs(make_config, tmp_path):
    """The pipeline on real TOFU files: forget01's last author among 3 authors, a few epochs only."""
    cfg = make_config(
        "experiment=tofu_subset_tiny", f"benchmark.data_dir={TOFU_DIR}", "benchmark.num_authors=3",
        "model.pretrain.epochs=2", "model.finetune.epochs=3", "method.training.epochs=1",
        "generation.max_new_tokens=16",
        base=SMALL_MODEL,
    )
    results = run_experiment(cfg, tmp_path)
    assert results["benchmark"] == "tofu_forget01_authors3"
    per_example = json.loads((tmp_path / "eval" / "unlearned" / "paper.json").read_text())["examples"]
    assert len(per_example["forget"]) == 20 and len(per_example["world_facts"]) == 117
    assert {r["question"] for r in per_example["forget"]}.isdisjoint({r["question"] for r in per_example["retain"]})


def run_cli(*args, cwd=REPO, env=None):
    return subprocess.run([sys.executable, "-m", "pmc.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_missing_data_dir_is_one_clear_error(tmp_path):
    """A wrong TOFU_DATA_DIR (benchmark.data_dir's default) is named with where it came from."""
    out = run_cli("benchmark=tofu", f"hydra.run.dir={tmp_path / 'run'}",
                  env={**os.environ, "TOFU_DATA_DIR": str(tmp_path / "nowhere")})
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: TOFU data directory {tmp_path / 'nowhere'} does not exist; set benchmark.data_dir (default "
        "$TOFU_DATA_DIR) to a directory holding the TOFU JSON files (or leave it unset to download them from the hub)"
    ]
    assert not (tmp_path / "run" / "results.json").exists()


def test_cli_malformed_record_names_file_and_line(tmp_path):
    data = tmp_path / "tofu"
    data.mkdir()
    (data / "full.json").write_text('{"question": "q", "answer": "a"}\n{"question": "q2"}\n')
    out = run_cli("benchmark=tofu", f"benchmark.data_dir={data}", f"hydra.run.dir={tmp_path / 'run'}",
                  f"cache_dir={tmp_path / 'cache'}")
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {data / 'full.json'}:2: field 'answer' is missing"
    assert not (tmp_path / "cache").exists(), "a data error must stop the run before the stage-0 cache"
    assert not (tmp_path / "run" / "results.json").exists()
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert failure["stage"] == "data" and failure["error"] == f"{data / 'full.json'}:2: field 'answer' is missing"


def test_cli_unknown_method_names_the_group(tmp_path):
    out = run_cli("method=nonsense", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()  # Hydra's many-line report, on one line
    assert "method/nonsense" in line and "pmc" in line  # the available options are listed


def wandb_records(run_file):
    """The protobuf records of an offline W&B run file (a LevelDB-style log: 32 KiB blocks of chunks with a
    7-byte header each, after a 7-byte file header), read without W&B's own tools."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, records = run_file.read_bytes(), 32768, 7, [], []
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer padding
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            break
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def test_wandb_offline_run_records_steps_and_summary(make_config, tmp_path):
    pytest.importorskip("wandb")
    results = run_experiment(make_config("logger=wandb", "method.training.epochs=2", "experiment_name=wandb_test"),
                             tmp_path)
    run_files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, "expected one offline W&B run in the run directory"
    # W&B's service process may still be writing the file after run.finish() returns: wait for its exit record
    deadline = time.monotonic() + 60
    records = wandb_records(run_files[0])
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, "the offline W&B run file never got its exit record"
        time.sleep(0.5)
        records = wandb_records(run_files[0])
    by_type = lambda name: [r for r in records if r.WhichOneof("record_type") == name]

    summary = {item.key: json.loads(item.value_json) for r in by_type("summary") for item in r.summary.update}
    expected = results["metrics"]["unlearned"]["paper"]["unlearn_quality"]
    assert summary["unlearned/paper/unlearn_quality"] == pytest.approx(expected)
    assert {"target/paper/utility", "retain/paper/unlearn_quality", "timings_s/unlearn"} <= set(summary)
    steps = read_jsonl(tmp_path / "train_log.jsonl")
    history = by_type("history")
    assert len(history) == len(steps) == 4  # 2 epochs x 2 steps, one W&B history row each
    logged = {item.key or "/".join(item.nested_key) for item in history[0].history.item}
    assert {"collapse_loss", "retain_loss", "selected_score", "loss"} <= logged
    run = by_type("run")[0].run
    assert run.run_group == "wandb_test" and run.job_type == "unlearn" and "tiny" in run.tags
    assert results["method"] == "pmc" and "pmc" in run.tags  # the method named as results.json names it
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["method"]["handler"]["_target_"] == "pmc.methods.collapse.PartialModelCollapse"
    assert by_type("artifact"), "results.json was not logged as an artifact"


def test_unreachable_wandb_never_fails_the_run(make_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import wandb

    def unreachable(**_):
        raise wandb.errors.CommError("network unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    results = run_experiment(make_config("logger=wandb", "logger.mode=online", "method.training.epochs=1"), tmp_path)
    assert (tmp_path / "results.json").is_file() and results["method"] == "pmc"


def test_cli_slurm_launcher_dry_run(tmp_path):
    """`--cfg hydra` shows the sweep as it would go to SLURM through submitit, without submitting anything."""
    out = run_cli("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600",
                  "--cfg", "hydra")
    assert out.returncode == 0, out.stderr
    launcher = out.stdout.split("  launcher:\n", 1)[1]
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in launcher
    assert "partition: gpu" in launcher and "timeout_min: 600" in launcher and "array_parallelism: 32" in launcher
    assert "max_num_timeout: 3" in launcher  # a job that hits the time limit is requeued, not lost


def test_the_harness_commit_says_which_commit_and_whether_the_code_changed(tmp_path):
    """results.json's versions name the commit the harness ran from, "+modified" when a tracked file of the code
    differs from it (not results/, where a run script appends its logs; not an untracked file), and say why when
    there is no commit to name."""
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    assert harness_commit(tmp_path).startswith("unknown (git: fatal: not a git repository")
    subprocess.run([*git, "init", "-q"], check=True)
    for path in ("pmc/code.py", "results/run.log"):
        (tmp_path / path).parent.mkdir()
        (tmp_path / path).write_text("first\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert len(head) == 40 and harness_commit(tmp_path) == head
    (tmp_path / "pmc" / "new.py").write_text("untracked\n")
    (tmp_path / "results" / "run.log").write_text("first\nsecond\n")
    assert harness_commit(tmp_path) == head
    (tmp_path / "pmc" / "code.py").write_text("changed\n")
    assert harness_commit(tmp_path) == head + "+modified"


def test_commits_that_differ_only_outside_the_run_sources_ran_the_same_code(tmp_path):
    """The claims table groups a sweep's commits by the code a run executes: two commits whose run sources hold the
    same files give the same trees, a change there gives others, and a commit git does not know (or a label that is
    no hash) gives None."""
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)

    def commit(path: str, text: str) -> str:
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", path], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    first = commit("pmc/code.py", "first\n")
    results_only = commit("results/run.log", "a result\n")
    code_changed = commit("pmc/code.py", "changed\n")
    tree = lambda label: run_sources_tree(label, tmp_path, sources=("pmc",))  # noqa: E731
    assert tree(first) is not None and tree(first) == tree(results_only[:10]) != tree(code_changed)
    assert tree("0123456789") is None  # no such commit here
    assert tree(first[:10] + "+modified") is None and tree("--help") is None
