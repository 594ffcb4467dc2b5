"""Sweep -> tables -> figures: a real LOCAL multirun through the submitit launcher (two seeds and one job with a bad
seed, which must fail alone), collected by scripts/collect.py and drawn by scripts/figures.py, checked against the
jobs' own results.json files."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys

import matplotlib
import pandas as pd
import pytest
import yaml
from conftest import REPO, SMALL

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402

from pmc.reporting import tables  # noqa: E402
from pmc.reporting.figures import distinguishing  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
SEEDS = (0, 1)
# SMALL's tiny model and benchmark, 2 unlearning epochs; the two seeds build their own stage-0 models concurrently,
# which dominates the run, so their pretraining and fine-tuning are cut short too (the metrics are not judged here).
OVERRIDES = [*SMALL, "method.training.epochs=2", "model.pretrain.epochs=4", "model.finetune.epochs=6",
             "generation.max_new_tokens=24"]
METRICS = {"unlearn quality": "unlearn_quality", "utility": "utility"}


def run(*args: str, cwd=REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:2]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


BAD_JOB = str(len(SEEDS))  # the job of seed=oops, launched with the others


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The sweep directory of `python -m pmc.run -m hydra/launcher=local seed=0,1,oops ...` and its two results."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "pmc.run", "-m", "hydra/launcher=local", f"seed={','.join(map(str, SEEDS))},oops",
         *OVERRIDES, f"cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, f"the failed job must fail the sweep:\n{done.stderr[-3000:]}"
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: 1 job(s) of the sweep failed (each has a failure.json): {sweep_dir / BAD_JOB}")
    results = [json.loads((sweep_dir / str(job) / "results.json").read_text()) for job in range(len(SEEDS))]
    return sweep_dir, results


def test_the_bad_job_failed_alone(sweep):
    sweep_dir, _ = sweep
    record = json.loads((sweep_dir / BAD_JOB / "failure.json").read_text())
    assert (record["stage"], record["error"]) == ("config", "seed must be an int, got 'oops'")
    assert not (sweep_dir / BAD_JOB / "results.json").exists()
    assert not any((sweep_dir / str(job) / "failure.json").exists() for job in range(len(SEEDS)))


def test_sweep_ran_every_seed_through_submitit(sweep):
    sweep_dir, results = sweep
    assert sorted(r["seed"] for r in results) == list(SEEDS)
    assert {r["method"] for r in results} == {"pmc"}
    assert list(sweep_dir.glob(".submitit/*/*_result.pkl")), "jobs did not go through the submitit launcher"
    for job in range(len(SEEDS)):
        log = [json.loads(line) for line in (sweep_dir / str(job) / "train_log.jsonl").read_text().splitlines()]
        assert len(log) == 2 * 2  # 2 epochs x ceil(10 forget questions / batch 8)


def test_collect_table_matches_the_jobs(sweep, tmp_path):
    sweep_dir, results = sweep
    per_job, summary, problems = tables.collect([sweep_dir])
    assert problems == {str(sweep_dir / BAD_JOB): ("failed", "in config: seed must be an int, got 'oops'")}

    unlearned = per_job[per_job["model"] == "unlearned"].set_index("seed")
    assert sorted(unlearned.index) == list(SEEDS)
    for r in results:
        for column, key in METRICS.items():
            assert unlearned.loc[r["seed"], column] == pytest.approx(r["metrics"]["unlearned"]["paper"][key])

    # one setting (seeds differ only), with mean and sample std over the two seeds
    rows = summary[summary["method"] == "pmc"]
    assert len(rows) == 1 and rows.iloc[0]["seeds"] == len(SEEDS) and rows.iloc[0]["setting"] == "(defaults)"
    expected = {}
    for column, key in METRICS.items():
        values = [r["metrics"]["unlearned"]["paper"][key] for r in results]
        expected[column] = (statistics.mean(values), statistics.stdev(values))
        assert rows.iloc[0][column] == pytest.approx(expected[column][0])
        assert rows.iloc[0][f"{column} std"] == pytest.approx(expected[column][1])
    # both seeds unlearned one target (stage0.seed): target and retain are one reference row each, of one build
    for model in ("target", "retain"):
        ref = summary[summary["method"] == model]
        assert len(ref) == 1 and ref.iloc[0]["seeds"] == 1 and ref.iloc[0]["jobs"] == 1
        values = {r["metrics"][model]["paper"]["unlearn_quality"] for r in results}
        assert len(values) == 1 and ref.iloc[0]["unlearn quality"] == pytest.approx(values.pop())

    # the command line: the same numbers in the markdown and CSV files, nothing failed
    out = run("scripts/collect.py", str(sweep_dir), "--name", "sweep", "--out", str(tmp_path))
    assert out.stdout.count("failed:") == 1 and "missing:" not in out.stdout
    assert "2 jobs collected" in out.stdout
    csv = pd.read_csv(tmp_path / "sweep.csv")
    assert sorted(csv.loc[csv["model"] == "unlearned", "seed"]) == list(SEEDS)
    md_row = next(line for line in (tmp_path / "sweep.md").read_text().splitlines() if "| pmc |" in line)
    cells = [c.strip() for c in md_row.strip("|").split("|")]
    assert cells[:3] == ["(defaults)", "pmc", "2"]
    for mean, std in expected.values():
        assert f"{mean:.2f} ± {std:.2f}" in cells
    assert (tmp_path / "sweep.tex").read_text().startswith(r"\begin{tabular}")


def test_collect_lists_a_job_without_results_as_missing(sweep, tmp_path):
    sweep_dir, results = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy, ignore=shutil.ignore_patterns(".submitit"))
    shutil.copytree(sweep_dir / "0" / ".hydra", copy / "9" / ".hydra")  # a job that died before results.json

    per_job, summary, problems = tables.collect([copy])
    assert problems[str(copy / "9")][0] == "missing" and problems[str(copy / BAD_JOB)][0] == "failed"
    assert summary.loc[summary["method"] == "pmc", "seeds"].tolist() == [len(SEEDS)]

    out = run("scripts/collect.py", str(copy), "--name", "sweep", "--out", str(tmp_path / "tables"))
    assert f"missing: {copy / '9'} (no results.json or failure.json: killed, preempted or still running)" in out.stdout
    assert out.stdout.count("missing:") == 1 and out.stdout.count("failed:") == 1


def check_png(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 100, (path, image.shape)
    assert image.std() > 0, f"{path} is blank"


def check_pdf(path):
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 1000, path
    assert b"%%EOF" in data[-64:], path


def test_figures_from_the_sweep(sweep, tmp_path):
    sweep_dir, _ = sweep
    # seed is the one setting that varies here; it is not among the overrides collect.py groups by, so this also
    # reads the value from the job's composed config (.hydra/config.yaml)
    out = run("scripts/figures.py", str(sweep_dir), "--name", "sweep", "--out", str(tmp_path), "--ablation", "seed")
    stems = ["sweep_pareto", "sweep_dynamics", "sweep_ablation_seed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "pdf"))
    for stem in stems:
        check_png(tmp_path / f"{stem}.png")
        check_pdf(tmp_path / f"{stem}.pdf")
        assert str(tmp_path / f"{stem}.png") in out.stdout


def test_figures_without_results_is_one_line_error(tmp_path):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    done = subprocess.run([sys.executable, "scripts/figures.py", str(tmp_path), "--name", "x", "--out",
                           str(tmp_path / "figures")], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: no results.json under {tmp_path}"]
    assert not (tmp_path / "figures").exists()


def test_dynamics_legend_keeps_only_what_tells_a_methods_settings_apart():
    """The SmolLM2 fronts: every PMC setting carries experiment=... and max_length=null; only the rate differs."""
    fronts = "experiment=mini_paper_smollm2_fronts method=pmc method.handler.max_length=null"
    settings = [f"method.training.learning_rate=3e-05 {fronts}", f"method.training.learning_rate=0.0001 {fronts}"]
    assert distinguishing(settings) == {settings[0]: "method.training.learning_rate=3e-05",
                                        settings[1]: "method.training.learning_rate=0.0001"}
    # a job at the defaults shares nothing with the others: each keeps all its overrides
    assert distinguishing(["(defaults)", "seed=1 lr=2"]) == {"(defaults)": "", "seed=1 lr=2": "seed=1 lr=2"}
    assert distinguishing(["seed=1"]) == {"seed=1": ""}


def test_an_ablation_value_from_the_overrides_equals_the_same_value_from_a_config(tmp_path):
    """A job that sets the ablated key on its command line and one that takes it from an experiment config hold the
    same value: read with YAML, the override 3e-05 was a string (YAML 1.1 floats need a dot), and the SmolLM2 mini
    paper's learning-rate figure drew two "3e-05" positions, in an order that changed from process to process."""
    from pmc.reporting.jobs import setting_value

    key = "method.training.learning_rate"
    for name, overrides, value in (("override", [f"{key}=3e-05"], 1.0), ("config", ["seed=0"], 3e-05),
                                   ("plus", [f"+{key}=1e-4"], 1.0), ("text", [f"{key}='3e-05'"], 1.0)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (tmp_path / name / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"method": {"training": {"learning_rate": value}}}))
    assert setting_value(tmp_path / "override", key) == setting_value(tmp_path / "config", key) == 3e-05
    assert isinstance(setting_value(tmp_path / "override", key), float)
    assert setting_value(tmp_path / "plus", key) == 1e-4  # the override wins over the config
    assert setting_value(tmp_path / "text", key) == "3e-05"  # quoted on the command line: a string, as Hydra reads it
