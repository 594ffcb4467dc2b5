"""pmc.reporting on hand-built job directories: the one job loader, the table's mean ± std per setting (numbers
computed here by hand), columns and trade-off axes taken from what the suites declare, and the package's place in
the layers (it imports no training code; nothing below it imports it)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO, load_script

from benchmarks.metrics import Column, table_columns
from benchmarks.metrics.analyses import AnalysesSuite
from pmc.reporting import figures, jobs, tables

REFERENCE_METRICS = {"target": {"paper": {"unlearn_quality": 30.0, "utility": 95.0}},
                     "retain": {"paper": {"unlearn_quality": 90.0, "utility": 96.0}}}


def write_job(job, overrides, unlearned_metrics, method="pmc", seed=0):
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides + [f"seed={seed}"]))
    (job / "results.json").write_text(json.dumps({
        "method": method, "seed": seed, "metrics": {"unlearned": unlearned_metrics, **REFERENCE_METRICS},
        "stage0": {"checkpoints": {"target": "cache/target", "retain": "cache/retain"}}}))


@pytest.fixture
def sweep(tmp_path):
    """PMC with two seeds (70 / 90 and 80 / 94), NPO with one (60 / 50), a failed job and a missing one."""
    root = tmp_path / "sweep"
    write_job(root / "0", ["lr=1"], {"paper": {"unlearn_quality": 70.0, "utility": 90.0}}, seed=0)
    write_job(root / "1", ["lr=1"], {"paper": {"unlearn_quality": 80.0, "utility": 94.0}}, seed=1)
    write_job(root / "10", ["lr=2"], {"paper": {"unlearn_quality": 60.0, "utility": 50.0}}, method="npo")
    (root / "2").mkdir()
    (root / "2" / "failure.json").write_text(json.dumps({"stage": "unlearn", "error": "loss became nan"}))
    (root / "3" / ".hydra").mkdir(parents=True)
    (root / "3" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return root


def test_load_jobs_orders_naturally_and_names_the_jobs_without_results(sweep):
    found, problems = jobs.load_jobs([sweep])
    assert [job.path.name for job in found] == ["0", "1", "10"]  # 10 after 1, not between 1 and 2
    assert [job.setting for job in found] == ["lr=1", "lr=1", "lr=2"]  # seeds dropped; no override is shared
    assert problems == {str(sweep / "2"): ("failed", "in unlearn: loss became nan"),
                        str(sweep / "3"): ("missing", "no results.json or failure.json: killed, preempted or "
                                                      "still running")}


def test_how_often_a_job_saved_its_state_does_not_split_a_setting(tmp_path):
    """The GPU sessions' jobs of one setting ran with checkpoint.min_interval_s=60 in one session and without it
    in another: one setting, two seeds; a training override still splits."""
    write_job(tmp_path / "0", ["method=npo"], {"paper": {"unlearn_quality": 70.0}}, seed=0)
    write_job(tmp_path / "1", ["checkpoint.min_interval_s=60", "method=npo"], {"paper": {"unlearn_quality": 72.0}},
              seed=1)
    write_job(tmp_path / "2", ["checkpoint.keep=true", "method=npo", "method.training.learning_rate=1e-4"],
              {"paper": {"unlearn_quality": 76.0}})
    found, _ = jobs.load_jobs([tmp_path])
    assert [job.setting for job in found] == ["(defaults)", "(defaults)", "method.training.learning_rate=1e-4"]


def test_table_means_and_stds_per_setting(sweep, tmp_path):
    per_job, summary, _ = tables.collect([sweep])
    text = tables.write_tables(per_job, summary, tmp_path / "out", "t")
    # std over seeds (n - 1): unlearn quality 70, 80 -> 7.07; utility 90, 94 -> 2.83; the TOFU columns have no data
    assert text == ("| setting | method | seeds | unlearn quality | utility |\n"
                    "|---|---|---|---|---|\n"
                    "| lr=1 | pmc | 2 | 75.00 ± 7.07 | 92.00 ± 2.83 |\n"
                    "| lr=2 | npo | 1 | 60.00 | 50.00 |\n"
                    "| target model (stage 0) | target | 1 | 30.00 | 95.00 |\n"
                    "| retain model (stage 0) | retain | 1 | 90.00 | 96.00 |\n")
    assert (tmp_path / "out" / "t.md").read_text() == text
    assert len(pd.read_csv(tmp_path / "out" / "t.csv")) == 5  # every job plus the two reference rows
    assert r"75.00 $\pm$ 7.07" in (tmp_path / "out" / "t.tex").read_text()


def test_jobs_that_repeat_a_seed_count_once(sweep, tmp_path):
    """The GPU sessions ran GradDiff at seed 0 on an H200 and again on an H100 (a reproducibility check): one seed,
    two jobs. The seed's value is their mean, and the setting's mean and std are over seeds, not jobs."""
    again = tmp_path / "again"
    write_job(again / "0", ["lr=1"], {"paper": {"unlearn_quality": 74.0, "utility": 90.0}}, seed=0)
    per_job, summary, _ = tables.collect([sweep, again])
    pmc = summary.set_index("method").loc["pmc"]
    assert (pmc["seeds"], pmc["jobs"]) == (2, 3)
    # seed 0: (70 + 74) / 2 = 72, seed 1: 80 -> mean 76, std of 72 and 80 = 5.66; utility 90, 94 -> 92 ± 2.83
    assert pmc["unlearn quality"] == pytest.approx(76.0)
    assert pmc["unlearn quality std"] == pytest.approx(8 / 2 ** 0.5)
    text = tables.write_tables(per_job, summary, tmp_path / "out", "t")
    assert "| lr=1 | pmc | 2 (3 jobs) | 76.00 ± 5.66 | 92.00 ± 2.83 |" in text
    assert "| lr=2 | npo | 1 | 60.00 | 50.00 |" in text
    assert len(pd.read_csv(tmp_path / "out" / "t.csv")) == 6  # the CSV still has every job


def test_a_stage0_model_built_again_on_another_machine_is_another_reference_row(sweep, tmp_path):
    """A sweep spread over machines: each built its own stage 0 under the same cache key (the same checkpoint name)
    with other weights. Its scores are another target / retain model, not dropped as a duplicate: the reference rows
    show the mean and std over the builds; the same scores under the same name stay one row, also when read from
    another cache directory."""
    elsewhere = tmp_path / "elsewhere"
    write_job(elsewhere / "0", ["lr=1"], {"paper": {"unlearn_quality": 78.0, "utility": 93.0}}, seed=2)
    results = json.loads((elsewhere / "0" / "results.json").read_text())
    results["metrics"]["target"] = {"paper": {"unlearn_quality": 34.0, "utility": 95.0}}  # retain: the same scores
    results["stage0"]["checkpoints"]["retain"] = "/abs/other_cache/retain"
    (elsewhere / "0" / "results.json").write_text(json.dumps(results))
    _, summary, _ = tables.collect([sweep, elsewhere])
    references = summary.set_index("method").loc[["target", "retain"]]
    assert references["seeds"].tolist() == [2, 1]
    assert references.loc["target", "unlearn quality"] == pytest.approx(32.0)  # (30 + 34) / 2
    assert references.loc["target", "unlearn quality std"] == pytest.approx(2 ** 0.5 * 2)  # std of 30, 34: 2.83
    assert references.loc["retain", "unlearn quality"] == 90.0


def test_a_job_that_scored_a_build_with_fewer_suites_adds_no_reference_row(sweep, tmp_path):
    """The SmolLM2 ablations score the paper suite alone: their target row (the paper's values, no TOFU ones) is the
    build that the sweep's jobs scored with both suites, not another; values that differ in the shared columns are
    another build."""
    def with_tofu(job, target_forget_quality):
        results = json.loads((job / "results.json").read_text())
        results["metrics"]["target"] = {**REFERENCE_METRICS["target"],
                                        "tofu": {"forget_quality": target_forget_quality, "model_utility": 0.5}}
        (job / "results.json").write_text(json.dumps(results))

    for job in ("0", "1", "10"):
        with_tofu(sweep / job, 0.01)
    ablation = tmp_path / "ablation"
    write_job(ablation / "0", ["temperature=2"], {"paper": {"unlearn_quality": 66.0, "utility": 50.0}})
    _, summary, _ = tables.collect([sweep, ablation])
    references = summary.set_index("method").loc[["target", "retain"]]
    assert references["seeds"].tolist() == [1, 1]
    assert references.loc["target", "forget quality"] == 0.01
    other = tmp_path / "other"
    write_job(other / "0", ["temperature=2"], {"paper": {"unlearn_quality": 66.0, "utility": 50.0}})
    results = json.loads((other / "0" / "results.json").read_text())
    results["metrics"]["target"] = {"paper": {"unlearn_quality": 31.0, "utility": 95.0}}
    (other / "0" / "results.json").write_text(json.dumps(results))
    _, summary, _ = tables.collect([sweep, ablation, other])
    target = summary.set_index("method").loc["target"]
    assert (target["seeds"], target["unlearn quality"]) == (2, 30.5)


def test_a_build_scored_again_is_one_reference_row_and_recorded_weights_tell_builds_apart(sweep, tmp_path):
    """A stage-0 model scored again (the eval cache's key changed) moves the last digits: scores within a relative
    1e-6 of a row's are that build (1e-8 off: one row, its first scores), 1e-3 off another build. Jobs that recorded
    the weights' digests are told apart by them: other weights with equal scores are another build, and a job that
    recorded none is compared by its scores alone."""
    def job(name, target_unlearn_quality, target_weights=None):
        write_job(tmp_path / name / "0", ["lr=1"], {"paper": {"unlearn_quality": 75.0, "utility": 92.0}})
        results = json.loads((tmp_path / name / "0" / "results.json").read_text())
        results["metrics"]["target"] = {"paper": {"unlearn_quality": target_unlearn_quality, "utility": 95.0}}
        if target_weights is not None:
            results["stage0"]["weights_sha256"] = {"target": {"model.safetensors": target_weights},
                                                   "retain": {"model.safetensors": "bb"}}
        (tmp_path / name / "0" / "results.json").write_text(json.dumps(results))
        return tmp_path / name

    def target(*roots):
        per_job, summary, _ = tables.collect([sweep, *roots])
        row = summary.set_index("method").loc["target"]
        return row["seeds"], row["unlearn quality"], len(per_job[per_job["model"] == "target"])

    assert target(job("z_rescored", 30.0 * (1 + 1e-8))) == (1, 30.0, 1)
    assert target(job("z_another", 30.0 * (1 + 1e-3))) == (2, pytest.approx(30.015), 2)
    assert target(job("digest_a", 30.0, "aa"), job("digest_a_again", 30.0 * (1 + 1e-8), "aa")) == (1, 30.0, 1)
    assert target(job("digest_b", 30.0, "bb"), tmp_path / "digest_a") == (2, 30.0, 2)


def test_columns_are_the_ones_the_suites_declare(sweep, monkeypatch):
    assert [c.title for c in table_columns()] == ["unlearn quality", "utility", "forget quality", "model utility"]
    declared = (Column("muse", "privleak", "privacy leak", "PrivLeak (%)"), *table_columns())
    monkeypatch.setattr(tables, "table_columns", lambda: declared)
    job = sweep / "0"
    results = json.loads((job / "results.json").read_text())
    results["metrics"]["unlearned"]["muse"] = {"privleak": -12.5}
    (job / "results.json").write_text(json.dumps(results))
    per_job, summary, _ = tables.collect([sweep])
    assert list(tables.formatted(summary).columns) == ["setting", "method", "seeds", "privacy leak",
                                                       "unlearn quality", "utility"]
    unlearned = per_job[per_job["model"] == "unlearned"]
    assert unlearned.loc[unlearned["job"] == str(job), "privacy leak"].item() == -12.5


def test_trade_off_axes_are_the_first_declared_pair_with_data():
    x, y = figures.trade_off(pd.DataFrame({"unlearn quality": [None, 80.0], "utility": [90.0, None],
                                           "forget quality": [0.5, 0.1], "model utility": [0.6, 0.7]}))
    assert (x.suite, x.key, y.key) == ("tofu", "forget_quality", "model_utility")  # no job has both paper values
    assert x.log_scale and x.axis_label.startswith("forget quality (KS-test p-value")
    x, y = figures.trade_off(pd.DataFrame({"unlearn quality": [70.0], "utility": [90.0]}))
    assert (x.title, y.title, y.axis_label) == ("unlearn quality", "utility", "utility (%)")
    with pytest.raises(SystemExit, match=r"neither unlearn quality/utility \(paper\) nor forget quality/model "
                                         r"utility \(tofu\) metrics"):
        figures.trade_off(pd.DataFrame({"privacy leak": [1.0]}))


def test_reporting_imports_no_training_code_and_no_torch():
    """Nothing of the training code, nor torch, transformers or the ROUGE toolkit: collecting a sweep takes a second
    or two where it took ten (the suites' columns come from benchmarks.metrics.columns, the suites stay unloaded)."""
    code = ("import sys; import pmc.reporting.tables, pmc.reporting.figures, pmc.reporting.analyses, "
            "pmc.reporting.claims, pmc.reporting.archive; print(sorted(m for m in sys.modules if m.startswith(("
            "'pmc.run', 'pmc.trainer', 'pmc.stage0', 'pmc.methods', 'pmc.experiment', 'baselines', 'torch', "
            "'transformers', 'rouge_score', 'benchmarks.metrics.common'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_the_package_names_its_suites_on_first_use():
    from benchmarks import metrics
    from benchmarks.metrics.paper import PaperSuite

    assert metrics.PaperSuite is PaperSuite
    assert metrics.table_columns()[0].suite == "paper"
    with pytest.raises(AttributeError, match="no attribute 'NoSuchSuite'"):
        metrics.NoSuchSuite  # noqa: B018


def test_nothing_below_the_application_imports_reporting():
    below = [*(REPO / "pmc" / "core").rglob("*.py"), *(REPO / "pmc" / "methods").rglob("*.py"),
             *(REPO / "benchmarks").rglob("*.py"), *(REPO / "baselines").rglob("*.py")]
    importers = []
    for path in below:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "pmc.reporting" or name.startswith("pmc.reporting.") for name in names):
                importers.append(str(path.relative_to(REPO)))
    assert below and importers == []


def test_analyses_report_names_the_settings_a_run_changed_in_both_config_formats():
    from pmc.reporting.analyses import run_settings

    defaults = AnalysesSuite().settings()
    changed = {**defaults, "sampling": {**defaults["sampling"], "k": 4}}
    assert run_settings({"eval": {"analyses": changed}})[1] == ["sampling.k=4"]
    assert run_settings({"eval": {"analyses": defaults}})[1] == []
    # runs from before conf/eval recorded only the overrides, under eval_settings
    old = {"eval": ["paper", "analyses"], "eval_settings": {"analyses": {"sampling": {"k": 4}}}}
    assert run_settings(old) == ({"sampling": {"k": 4}}, ["sampling.k=4"])
    assert run_settings({"eval": ["analyses"]})[1] == []


def test_analyses_report_names_a_methods_second_setting_by_what_it_changed(tmp_path):
    """Two NPO jobs (the default retain weight and 0) and a PMC job are told apart by the override that sets one NPO
    job apart from the other, not by job directories' numbers; PMC, run once, keeps its plain name."""
    from pmc.reporting.analyses import load

    for number, method, extra in (("0", "npo", []), ("1", "npo", ["method.handler.retain_weight=0"]),
                                  ("2", "pmc", ["method.handler.retain_weight=0"])):
        job = tmp_path / number
        write_job(job, [f"method={method}", *extra], {}, method=method)
        for model in ("target", "retain", "unlearned"):
            (job / "eval" / model).mkdir(parents=True)
            (job / "eval" / model / "analyses.json").write_text(json.dumps({"summary": {}, "examples": {}}))
    models, _, skipped = load([tmp_path])
    assert not skipped
    assert list(models) == ["target", "retain", "npo", "npo [method.handler.retain_weight=0]", "pmc"]


def test_analyses_report_shows_each_build_of_the_stage0_models(tmp_path):
    """Jobs of one sweep share stage 0 and give one target and one retain row; a job whose stage-0 models scored
    differently (built again on another machine, a mini paper spread over sessions) adds its own rows, named by the
    job, and they are drawn as references, not as methods."""
    from pmc.reporting.analyses import colour, load, reference_of

    for name, method, target_shift in (("a_first", "npo", 0.0), ("b_same_build", "pmc", 0.0),
                                       ("c_other_machine", "graddiff", 0.5)):
        job = tmp_path / name
        write_job(job, [f"method={method}"], {}, method=method)
        for model in ("target", "retain", "unlearned"):
            (job / "eval" / model).mkdir(parents=True)
            summary = {"shift": target_shift if model == "target" else 1.0}
            (job / "eval" / model / "analyses.json").write_text(json.dumps({"summary": summary, "examples": {}}))
    models, _, _ = load([tmp_path])
    assert list(models) == ["target", "retain", "npo", "pmc", "target [c_other_machine]", "graddiff"]
    assert models["target [c_other_machine]"]["analyses"]["summary"] == {"shift": 0.5}
    assert models["target [c_other_machine]"]["job"] == str(tmp_path / "c_other_machine")
    methods = [label for label in models if not reference_of(label)]
    assert methods == ["npo", "pmc", "graddiff"]
    assert colour("target [c_other_machine]", methods) == colour("target", methods)
    # other weights, as the jobs recorded them, are another build even where the scores agree
    for name, target_weights in (("b_same_build", "aa"), ("a_first", "bb")):
        results = json.loads((tmp_path / name / "results.json").read_text())
        results["stage0"]["weights_sha256"] = {"target": {"model.safetensors": target_weights},
                                               "retain": {"model.safetensors": "cc"}}
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    models, _, _ = load([tmp_path])
    assert list(models) == ["target", "retain", "npo", "target [b_same_build]", "pmc", "target [c_other_machine]",
                            "graddiff"]
    # another checkpoint name (another cache key: another recipe) is another build even with the same weights and
    # scores, as in the tables
    for name in ("a_first", "b_same_build"):
        results = json.loads((tmp_path / name / "results.json").read_text())
        results["stage0"]["weights_sha256"]["target"] = {"model.safetensors": "aa"}
        results["stage0"]["checkpoints"]["target"] = f"cache/{name}-target"
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    models, _, _ = load([tmp_path])
    assert list(models) == ["target", "retain", "npo", "target [b_same_build]", "pmc", "target [c_other_machine]",
                            "graddiff"]


def test_analyses_report_keeps_every_seed_of_archived_units_and_one_row_per_build(tmp_path):
    """The SmolLM2 mini paper's archives name every job "0" (runs/<unit>/0): PMC at three seeds gives three rows,
    labelled by seed, none replacing another; the target scored again by a later unit with the last digits moved (a
    relative 1e-8: batches of another composition) is the same build, a relative 1e-3 another, named by unit."""
    from pmc.reporting.analyses import load
    from pmc.reporting.jobs import same_scores

    for unit, seed, target_nll in (("pmc", 0, 3.0964558436705283), ("pmc_seed1", 1, 3.0964558436705283),
                                   ("pmc_seed2", 2, 3.0964558335154098), ("pmc_seed3", 3, 3.0995)):
        job = tmp_path / unit / "0"
        write_job(job, ["method=pmc"], {}, seed=seed)
        for model in ("target", "retain", "unlearned"):
            (job / "eval" / model).mkdir(parents=True)
            nll = {"target": target_nll, "retain": 2.5, "unlearned": 1.0 + seed}[model]
            summary = {"fluency_nll": nll, "rates": [0.5, 0.25]}
            (job / "eval" / model / "analyses.json").write_text(json.dumps({"summary": summary, "examples": {}}))
    models, _, _ = load([tmp_path])
    assert list(models) == ["target", "retain", "pmc", "pmc [seed 1]", "pmc [seed 2]", "target [pmc_seed3/0]",
                            "pmc [seed 3]"]
    assert [models[label]["analyses"]["summary"]["fluency_nll"] for label in ("pmc", "pmc [seed 1]",
                                                                             "pmc [seed 2]")] == [1.0, 2.0, 3.0]
    assert not same_scores({"a": [1.0, 2.0]}, {"a": [1.0]}) and not same_scores({"a": 1}, {"b": 1})
    assert not same_scores("0.5", 0.5) and same_scores({"a": [0, "x"]}, {"a": [1e-13, "x"]})


def test_a_table_and_an_analyses_report_of_one_name_never_replace_each_other(tmp_path, capsys):
    """collect.py and analyses_report.py both write <out>/<name>.md: given the name of the other's files in the same
    folder, each stops with one error naming the file and writes nothing (docs/gpu.md once gave both one name)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.csv").write_text("setting\n")
    (out / "run.md").write_text("| setting |\n")
    assert load_script("analyses_report").main([str(tmp_path), "--name", "run", "--out", str(out)]) == 2
    assert f"error: {out / 'run.csv'} is a results table (collect.py) named 'run'" in capsys.readouterr().err
    (out / "report_collateral.png").write_bytes(b"png")
    (out / "report.md").write_text("# Robustness analyses: report\n")
    assert load_script("collect").main([str(tmp_path), "--name", "report", "--out", str(out)]) == 2
    assert f"error: {out / 'report.md'} is an analyses report (analyses_report.py" in capsys.readouterr().err
    assert (out / "run.md").read_text() == "| setting |\n"
    assert (out / "report.md").read_text() == "# Robustness analyses: report\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "report_collateral.png", "run.csv", "run.md"]
