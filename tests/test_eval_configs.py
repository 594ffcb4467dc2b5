"""Metric suites as a Hydra config group: conf/eval/<suite>.yaml names the suite class and lists its settings (each
with a comment, the class's defaults), `eval=[...]` selects suites on the command line and in experiments, one
setting is set as eval.<suite>.<key>=..., and a bad one fails with one line naming it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import yaml
from conftest import CONF_DIR, REPO

from benchmarks.metrics import AnalysesSuite, MuseSuite, PaperSuite, TofuSuite, build_suites
from benchmarks.metrics.analyses import SamplingSettings
from pmc.core.errors import ConfigError
from pmc.pipeline import metric_suites

SUITE_CONFIGS = sorted((CONF_DIR / "eval").glob("*.yaml"))


def test_every_suite_has_a_config_and_every_config_builds_its_suite_with_the_class_defaults():
    assert [p.stem for p in SUITE_CONFIGS] == ["analyses", "muse", "paper", "tofu"]
    for path in SUITE_CONFIGS:
        text = path.read_text(encoding="utf-8")
        assert text.startswith(f"# @package eval.{path.stem}\n")  # selected side by side under eval.<name>
        node = yaml.safe_load(text)
        suite = build_suites({path.stem: node})[path.stem]
        assert suite.name == path.stem
        # every setting is listed, with the value the class defaults to: the two cannot drift apart
        assert node == type(suite)().settings(), path.name


def test_every_setting_in_the_configs_has_a_comment():
    for path in SUITE_CONFIGS:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#") and not line.startswith("_target_:"):
                assert " # " in line, f"{path.name}: no comment on {line!r}"


def test_eval_selects_suites_in_order(make_config):
    assert list(metric_suites(make_config())) == ["paper"]  # the default
    suites = metric_suites(make_config("eval=[paper,tofu]"))
    assert list(suites) == ["paper", "tofu"]
    assert isinstance(suites["paper"], PaperSuite) and isinstance(suites["tofu"], TofuSuite)
    assert list(metric_suites(make_config("eval=[tofu,analyses,paper]"))) == ["tofu", "analyses", "paper"]
    assert metric_suites(make_config("eval=[]")) == {}
    assert list(make_config("eval=[paper,tofu]").eval) == ["paper", "tofu"]  # results.json keeps the selection


def test_one_setting_is_overridden_the_others_keep_their_defaults(make_config):
    suite = metric_suites(make_config("eval=[paper,analyses]", "eval.analyses.sampling.k=4"))["analyses"]
    assert suite == AnalysesSuite(sampling=SamplingSettings(k=4))
    assert suite.sampling.top_p == 0.95 and suite.collateral.max_texts == 200
    assert metric_suites(make_config("eval=[muse]", "eval.muse.privleak_reference=published"))["muse"] == \
        MuseSuite(privleak_reference="published")


def test_experiments_select_suites_and_set_their_settings(make_config):
    assert list(metric_suites(make_config("experiment=mini_paper", base=[]))) == ["paper", "tofu"]
    assert list(metric_suites(make_config("experiment=muse_tiny", base=[]))) == ["muse"]
    smollm2 = metric_suites(make_config("experiment=mini_paper_smollm2", base=[]))
    assert list(smollm2) == ["paper", "tofu", "analyses"] and smollm2["analyses"].sampling.k == 4
    # an experiment built on it that leaves the analyses out: their setting stays behind, unused
    assert list(metric_suites(make_config("experiment=ablation_samples_smollm2", base=[]))) == ["paper"]
    # the command line overrides an experiment's choice
    assert list(metric_suites(make_config("experiment=mini_paper", "eval=[paper]", base=[]))) == ["paper"]


@pytest.mark.parametrize("node, message", [
    ({"_target_": "benchmarks.metrics.paper.PaperSuite", "retain_seeds": 1},
     "eval.paper.retain_seeds: unknown setting; known: retain_set, retain_samples, retain_seed"),
    ({"_target_": "benchmarks.metrics.paper.PaperSuite", "retain_samples": 4.0},
     "eval.paper.retain_samples must be an integer, got 4.0"),
    ({"_target_": "benchmarks.metrics.muse.MuseSuite", "privleak_corpus": 3},
     "eval.paper.privleak_corpus must be a string or null, got 3"),
    ({"_target_": "benchmarks.metrics.tofu.TofuSuite", "k": 3}, "eval.paper.k: unknown setting; known: "),
    ({"_target_": "benchmarks.metrics.analyses.AnalysesSuite", "collateral": {"histogram": {"bins": "many"}}},
     "eval.paper.collateral.histogram.bins must be an integer, got 'many'"),
    ({"_target_": "benchmarks.metrics.analyses.AnalysesSuite", "quality": None},
     "eval.paper.quality must be a mapping of settings (empty_nll), got None"),
    ({"_target_": "benchmarks.metrics.common.EvalContext"},
     "eval.paper._target_ must name a metric suite class (e.g. benchmarks.metrics.paper.PaperSuite), got "
     "'benchmarks.metrics.common.EvalContext'"),
    ({"_target_": "benchmarks.nowhere.Suite"}, "eval.paper._target_ must name a metric suite class"),
])
def test_bad_settings_are_one_line_naming_the_key(node, message):
    with pytest.raises(ConfigError) as e:
        build_suites({"paper": node})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_settings_are_plain_data_with_the_class():
    settings = AnalysesSuite().settings()
    assert settings["_target_"] == "benchmarks.metrics.analyses.AnalysesSuite"
    assert settings["collateral"]["histogram"] == {"low": -5.0, "high": 5.0, "bins": 40}
    assert dataclasses.is_dataclass(AnalysesSuite) and settings == build_suites({"analyses": settings})[
        "analyses"].settings()


def test_cli_bad_setting_is_one_line_before_stage0(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pmc.run", "eval=[paper,analyses]", "eval.analyses.sampling.k=abc",
         f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PMC_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: eval.analyses.sampling.k must be an integer, got 'abc'"]
    assert not list(cache.iterdir()), "stage 0 was started"


def test_settings_of_an_unselected_suite_are_skipped_in_a_fresh_process():
    """The package loads its suites on first use: a setting for a shipped suite the run does not select (an
    experiment's `eval.analyses...` with eval=[paper]) is still known, in a process that imported only the paper
    suite, and a name no suite has is still an error listing all four."""
    code = ("from benchmarks.metrics.common import build_suites\n"
            "from pmc.core.errors import ConfigError\n"
            "suites = build_suites({'paper': {'_target_': 'benchmarks.metrics.paper.PaperSuite'},"
            " 'analyses': {'sampling': {'k': 4}}})\n"
            "print(sorted(suites))\n"
            "try:\n"
            "    build_suites({'nope': {'k': 1}})\n"
            "except ConfigError as e:\n"
            "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=True)
    assert done.stdout.splitlines() == ["['paper']",
                                        "eval.nope: no such metric suite; available: analyses, muse, paper, tofu"]
