"""The eval cache: stage-0 models are scored once per stage-0 pair and settings, and every job still gets the same
metrics and per-example files; entries are keyed by what changes them and written safely under concurrency."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers.generation.utils import GenerationMixin

import pmc.pipeline
from benchmarks.metrics.analyses import AnalysesSuite, SamplingSettings
from benchmarks.metrics.common import EvalContext, SuiteResult
from benchmarks.synthetic import make_synthetic_tofu
from pmc.core.errors import CheckpointError
from pmc.core.prompts import PromptFormat
from pmc.eval_cache import HIT, MISS, NEVER_SCORES, OFF, SCORED, EvalCache, harness_digest, sources_digest
from pmc.experiment import run_experiment

MODELS = ("target", "retain", "unlearned")
SUITES = ("paper", "tofu")


def count_forward(counts: dict, watched, module, inputs) -> None:
    if module is watched:  # the unlearned model, a deep copy of the target, inherits the hook
        counts["forward"] += 1


class Spy:
    """Records, per stage-0 model of each run, its generate calls and forward passes."""

    def __init__(self, monkeypatch):
        self.runs: list[dict] = []
        prepare, generate = pmc.pipeline.prepare_models, GenerationMixin.generate

        def prepare_and_watch(*args, **kwargs):
            stage0 = prepare(*args, **kwargs)
            counts = {role: {"generate": 0, "forward": 0} for role in ("target", "retain")}
            for role, model in (("target", stage0.target), ("retain", stage0.retain)):
                model.register_forward_pre_hook(functools.partial(count_forward, counts[role], model))
            self.runs.append({"models": {"target": stage0.target, "retain": stage0.retain}, "counts": counts})
            return stage0

        def generate_and_count(model, *args, **kwargs):
            if self.runs:
                for role, watched in self.runs[-1]["models"].items():
                    if model is watched:
                        self.runs[-1]["counts"][role]["generate"] += 1
            return generate(model, *args, **kwargs)

        monkeypatch.setattr(pmc.pipeline, "prepare_models", prepare_and_watch)
        monkeypatch.setattr(GenerationMixin, "generate", generate_and_count)


def eval_files(run_dir: Path) -> dict[str, str]:
    return {f"{m}/{s}": (run_dir / "eval" / m / f"{s}.json").read_text() for m in MODELS for s in SUITES}


def test_second_run_reads_the_stage0_scores_and_gets_the_same_metrics(make_config, stage0_cache, tmp_path,
                                                                      monkeypatch):
    shutil.rmtree(stage0_cache / "eval", ignore_errors=True)  # the other tests' entries: this one starts empty
    spy = Spy(monkeypatch)
    overrides = ("eval=[paper,tofu]", "method.training.epochs=1")
    dirs = [tmp_path / name for name in ("first", "second", "off")]
    for run_dir in dirs:
        run_dir.mkdir()
    first = run_experiment(make_config(*overrides), dirs[0])
    second = run_experiment(make_config(*overrides), dirs[1])

    stage0_status = lambda status: {"target": dict.fromkeys(SUITES, status), "retain": dict.fromkeys(SUITES, status),
                                    "unlearned": dict.fromkeys(SUITES, SCORED)}
    assert first["eval_cache"] == stage0_status(MISS)
    assert second["eval_cache"] == stage0_status(HIT)
    # PMC's initial answers (the target's greedy answers before unlearning) are kept beside them: the second run
    # read the first run's, so both unlearned alike (the same metrics, below)
    assert first["initial_state_cache"] == {"pmc.initial_answers": MISS}
    assert second["initial_state_cache"] == {"pmc.initial_answers": HIT}
    assert json.loads((dirs[1] / "results.json").read_text())["eval_cache"] == stage0_status(HIT)
    assert second["metrics"] == first["metrics"]
    assert set(second["metrics"]) == set(MODELS) and all(set(m) == set(SUITES) for m in second["metrics"].values())
    assert eval_files(dirs[1]) == eval_files(dirs[0])  # summaries and per-example rows, byte for byte

    # the first run decoded and scored target and retain; the second ran neither model at all
    assert all(spy.runs[0]["counts"][role]["generate"] > 0 for role in ("target", "retain"))
    assert spy.runs[1]["counts"] == {role: {"generate": 0, "forward": 0} for role in ("target", "retain")}
    entries = sorted(p.name for p in (stage0_cache / "eval").glob("*.json"))
    assert [name.split("-")[:2] for name in entries] == [["tiny", "paper"], ["tiny", "pmc.initial_answers"],
                                                         ["tiny", "tofu"]]
    # keyed by every setting of the suite, the defaults of conf/eval/paper.yaml included, and by its class
    paper_entry = json.loads((stage0_cache / "eval" / entries[0]).read_text())
    assert paper_entry["settings"] == {"_target_": "benchmarks.metrics.paper.PaperSuite", "retain_set": "sampled",
                                       "retain_samples": 400, "retain_seed": 12345}
    # the initial answers, keyed by PMC's decoding limit, the questions per call and the LoRA settings; one per
    # forget question
    cfg = make_config(*overrides)
    answers_entry = json.loads((stage0_cache / "eval" / entries[1]).read_text())
    assert answers_entry["settings"] == {"max_length": 200, "batch_size": cfg.generation.batch_size,
                                         "lora": OmegaConf.to_container(cfg.model.lora)}
    benchmark = instantiate(cfg.benchmark)
    assert len(answers_entry["results"]) == len(benchmark.forget) and all(
        isinstance(a, str) for a in answers_entry["results"])

    # eval_cache=false scores them again, with the same results, and stores nothing
    off = run_experiment(make_config(*overrides, "eval_cache=false"), dirs[2])
    assert off["eval_cache"] == stage0_status(OFF) and off["initial_state_cache"] == {"pmc.initial_answers": OFF}
    assert off["metrics"] == first["metrics"] and eval_files(dirs[2]) == eval_files(dirs[0])
    assert spy.runs[2]["counts"]["target"]["generate"] > 0
    assert sorted(p.name for p in (stage0_cache / "eval").glob("*.json")) == entries


def test_a_sweeps_seeds_unlearn_one_target_scored_once(make_config, tmp_path):
    """`seed` seeds unlearning, `stage0.seed` (0 unless set) the fine-tuning of target and retain: seed=1 starts from
    seed 0's stage-0 models and reads their scores (open-unlearning's seeds share TOFU's one published target).
    Setting stage0.seed builds other models."""
    overrides = ("eval=[paper]", "method.training.epochs=1")
    runs = {}
    for name, extra in (("seed0", ()), ("seed1", ("seed=1",)), ("stage0_seed1", ("seed=1", "stage0.seed=1"))):
        (tmp_path / name).mkdir()
        runs[name] = run_experiment(make_config(*overrides, *extra), tmp_path / name)
    checkpoints = {name: run["stage0"]["checkpoints"] for name, run in runs.items()}
    assert checkpoints["seed1"] == checkpoints["seed0"]
    assert runs["seed1"]["stage0"]["built_in_this_run"] == []
    assert runs["seed1"]["eval_cache"]["target"] == {"paper": HIT} == runs["seed1"]["eval_cache"]["retain"]
    assert runs["seed1"]["metrics"]["target"] == runs["seed0"]["metrics"]["target"]
    assert runs["seed1"]["seed"] == 1 and runs["seed1"]["config"]["stage0"]["seed"] == 0
    # PMC's draws follow `seed`: the same target, another unlearned model
    assert runs["seed1"]["metrics"]["unlearned"] != runs["seed0"]["metrics"]["unlearned"]

    # built in that run: both models (and the tiny model's pre-trained base, seeded too)
    assert {Path(path).name for path in checkpoints["stage0_seed1"].values()} <= set(
        runs["stage0_seed1"]["stage0"]["built_in_this_run"])
    assert set(checkpoints["stage0_seed1"].values()).isdisjoint(checkpoints["seed0"].values())
    assert runs["stage0_seed1"]["eval_cache"]["target"] == {"paper": MISS}


# --- the key --------------------------------------------------------------------------------------------------------


def fake_checkpoint(path: Path, stage0: dict | None) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if stage0 is not None:
        (path / "stage0.json").write_text(json.dumps(stage0))
    return str(path)


def keyed(tmp_path, *, benchmark=None, fmt=PromptFormat(), generation=None, checkpoints=None, device="cpu",
          suite="tofu", settings=None) -> str:
    benchmark = benchmark or make_synthetic_tofu(num_authors=3, forget_authors=1, retain_eval_authors=1)
    checkpoints = checkpoints or {"target": str(tmp_path / "tiny-target-0123"),
                                  "retain": str(tmp_path / "tiny-retain-4567")}
    ctx = EvalContext(None, fmt, benchmark, max_new_tokens=8, batch_size=4)
    cache = EvalCache.for_models(tmp_path / "eval", "tiny", checkpoints, benchmark, ctx,
                                 generation or {"max_new_tokens": 8, "batch_size": 4}, device)
    return cache.key(suite, settings or {})


def test_the_key_changes_with_everything_that_changes_the_scores(tmp_path):
    fake_checkpoint(tmp_path / "tiny-target-0123", {"created": 1.0})
    fake_checkpoint(tmp_path / "tiny-retain-4567", {"created": 2.0})
    base = keyed(tmp_path)
    assert keyed(tmp_path) == base  # deterministic
    other_subset = make_synthetic_tofu(num_authors=4, forget_authors=1, retain_eval_authors=1)
    variants = {
        "benchmark subset": keyed(tmp_path, benchmark=other_subset),
        "prompt format": keyed(tmp_path, fmt=PromptFormat(question_template="Q: {question}\nA:")),
        "generation": keyed(tmp_path, generation={"max_new_tokens": 16, "batch_size": 4}),
        "batch size": keyed(tmp_path, generation={"max_new_tokens": 8, "batch_size": 8}),
        "device": keyed(tmp_path, device="cuda"),
        "suite": keyed(tmp_path, suite="paper"),
        "suite settings": keyed(tmp_path, suite="analyses", settings=AnalysesSuite(
            sampling=SamplingSettings(k=16)).settings()),
    }
    assert keyed(tmp_path, suite="analyses", settings=AnalysesSuite().settings()) != variants["suite settings"]
    # a stage-0 entry rebuilt under the same name (its stage0.json is new) is another model
    fake_checkpoint(tmp_path / "tiny-retain-4567", {"created": 3.0})
    variants["rebuilt retain entry"] = keyed(tmp_path)
    # an explicit checkpoint (no stage0.json) is known by its files: rewriting one changes the key
    explicit = {"target": fake_checkpoint(tmp_path / "published-target", None),
                "retain": fake_checkpoint(tmp_path / "published-retain", None)}
    before = keyed(tmp_path, checkpoints=explicit)
    weights = tmp_path / "published-target" / "model.safetensors"
    weights.write_bytes(b"other weights")
    variants["explicit checkpoint rewritten"] = keyed(tmp_path, checkpoints=explicit)
    assert len({base, before, *variants.values()}) == len(variants) + 2, variants


def test_how_a_compiled_step_is_traced_keys_only_compiled_runs(make_config, tmp_path):
    """generation.compile_dynamic decides how a compiled decoding step is traced: part of a compiled run's key, left
    out where nothing is compiled (a default that changes must not make every eager run score its stage-0 models
    again)."""
    from types import SimpleNamespace

    benchmark = make_synthetic_tofu(num_authors=3, forget_authors=1, retain_eval_authors=1)
    ctx = EvalContext(None, PromptFormat(), benchmark, max_new_tokens=8, batch_size=4)
    stage0 = SimpleNamespace(checkpoints={"target": fake_checkpoint(tmp_path / "tiny-target-0123", None)})

    def key(*overrides):
        return pmc.pipeline.eval_cache(make_config(*overrides), stage0, benchmark, ctx).key("tofu", {})

    eager = [key(f"generation.compile_dynamic={mode}") for mode in ("true", "null", "varying")]
    assert len(set(eager)) == 1
    compiled = [key("generation.cache_implementation=static", "generation.compile=true",
                    f"generation.compile_dynamic={mode}") for mode in ("true", "null", "varying")]
    assert len(set(compiled)) == 3 and eager[0] not in compiled


def test_the_harness_digest_follows_scoring_code_and_not_reporting_code(tmp_path):
    """An edit to code that scores (pmc/, benchmarks/) changes the key's harness digest; an edit to the reporting code
    (tables, figures, claims), which never scores, does not, so a sweep's later jobs still read the stage-0 scores.
    Checked on a copy of the two packages, whose digest is the installed harness's."""
    copies = {name: tmp_path / name for name in ("pmc", "benchmarks")}
    for name, copy in copies.items():
        shutil.copytree(REPO / name, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert sources_digest(copies, NEVER_SCORES) == harness_digest()

    with (copies["pmc"] / "reporting" / "tables.py").open("a") as source:
        source.write("# a reporting edit\n")
    assert sources_digest(copies, NEVER_SCORES) == harness_digest()
    for scoring in (copies["pmc"] / "core" / "rouge.py", copies["benchmarks"] / "metrics" / "paper.py"):
        before = sources_digest(copies, NEVER_SCORES)
        with scoring.open("a") as source:
            source.write("# a scoring edit\n")
        assert sources_digest(copies, NEVER_SCORES) != before, scoring


def test_a_run_names_and_keys_the_code_it_imported_not_code_saved_while_it_runs(tmp_path):
    """The eval cache's harness digest and results.json's harness commit are read from disk; a run reads both as it
    starts (pmc.pipeline.pin_code_identity), so a scoring file saved while it runs (a sweep runs for hours) neither
    keys the run's scores as the new code's nor names its results by a commit it did not run. Checked in processes
    running from a committed copy of the two packages: one pins, then the file is saved, then it reads both."""
    copies = {name: tmp_path / name for name in ("pmc", "benchmarks")}
    for name, copy in copies.items():
        shutil.copytree(REPO / name, copy, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "pmc", "benchmarks"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *command], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    imported = sources_digest(copies, NEVER_SCORES)
    read = ("from pmc.eval_cache import harness_digest; from pmc.results import versions; "
            "print(harness_digest(), versions()['pmc-harness-commit'])")
    edit = 'open("pmc/core/rouge.py", "a").write("# saved while the run goes on\\n"); '
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", f"from pmc.pipeline import pin_code_identity; pin_code_identity(); "
                          f"{edit}{read}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [imported, head]
    fresh = subprocess.run([sys.executable, "-c", read], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split() == [sources_digest(copies, NEVER_SCORES), head + "+modified"]
    assert sources_digest(copies, NEVER_SCORES) != imported


def test_an_unreadable_entry_is_one_clear_error(tmp_path):
    cache = EvalCache(tmp_path, "tiny", {"stage0": {"target": {}, "retain": {}}})
    path = cache.path("paper", {})
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable eval-cache entry.*delete it"):
        cache.results("paper", {}, lambda: pytest.fail("an entry exists: nothing is scored"))


def test_results_round_trip_exactly(tmp_path):
    """What a miss returns is what a later hit reads: floats exactly, infinities included."""
    cache = EvalCache(tmp_path, "tiny", {"stage0": {"target": {}, "retain": {}}})
    results = {"target": SuiteResult({"p": 0.1 + 0.2, "q": float("inf")}, {"forget": [{"truth_ratio": 1 / 3}]}),
               "retain": SuiteResult({"p": 1e-300, "q": 2.0}, {"forget": [{"truth_ratio": (1.5, 2.5)}]})}
    stored, status = cache.results("tofu", {}, lambda: results)
    read, again = cache.results("tofu", {}, lambda: pytest.fail("scored twice"))
    assert (status, again) == (MISS, HIT)
    assert {n: (r.summary, r.examples) for n, r in stored.items()} == {n: (r.summary, r.examples)
                                                                     for n, r in read.items()}
    assert read["target"].summary == {"p": 0.1 + 0.2, "q": float("inf")}
    assert read["retain"].examples["forget"][0]["truth_ratio"] == [1.5, 2.5]


# --- concurrency ------------------------------------------------------------------------------------------------------

# A job asking for one suite's stage-0 results: scoring takes `seconds` and leaves a mark in marks/.
JOB = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from benchmarks.metrics.common import SuiteResult
    from pmc.eval_cache import EvalCache
    directory, seconds = Path(sys.argv[1]), float(sys.argv[2])

    def score():  # the mark first: the test kills a job as soon as it reads "scoring"
        (directory / "marks").mkdir(parents=True, exist_ok=True)
        (directory / "marks" / str(os.getpid())).touch()
        print("scoring", flush=True)
        time.sleep(seconds)
        return {"target": SuiteResult({"x": 1.0}, {"rows": [{"v": 0.5}]}), "retain": SuiteResult({"x": 2.0})}

    cache = EvalCache(directory / "eval", "tiny", {"stage0": {"target": {}, "retain": {}}})
    results, status = cache.results("paper", {}, score)
    print(json.dumps({"status": status, "x": {name: r.summary["x"] for name, r in results.items()}}), flush=True)
""")


def start_job(directory: Path, seconds: float) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", JOB, str(directory), str(seconds)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(job: subprocess.Popen) -> dict:
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_concurrent_jobs_score_once_and_a_killed_writer_leaves_nothing_behind(tmp_path):
    """A job killed while scoring (SIGKILL: no cleanup runs) leaves no entry, no temporary file and no stale lock;
    of two jobs then asking for the same entry, one scores and the other waits and reads its results."""
    writer = start_job(tmp_path, 600.0)
    assert writer.stdout.readline().strip() == "scoring"  # it holds the entry's lock now
    jobs = [start_job(tmp_path, 2.0), start_job(tmp_path, 2.0)]
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=30)
    outcomes = [finish(job) for job in jobs]
    assert sorted(o["status"] for o in outcomes) == [HIT, MISS]
    assert all(o["x"] == {"target": 1.0, "retain": 2.0} for o in outcomes)
    assert len(list((tmp_path / "marks").iterdir())) == 2, "scored by the killed writer and by one job only"
    entries = [p.name for p in (tmp_path / "eval").iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1 and entries[0].startswith("tiny-paper-")  # the finished entry, no temporary file
