"""The paper suite against the official PMC code: the paraphrased split's reference answer, the retain sample utility
scores (400 draws with replacement, numpy's default_rng(12345)), its settings, with scripted greedy answers whose
ROUGE-L recalls are worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TOFU_DIR

from benchmarks.metrics import build_suites, paper
from benchmarks.metrics.common import EvalContext
from benchmarks.tofu import load_tofu
from pmc.core.errors import ConfigError
from pmc.core.records import DataError, QABenchmark, QARecord


class ScriptedContext(EvalContext):
    """Greedy answers from a script (question -> answer; "" for anything unscripted), and the questions asked."""

    def __init__(self, benchmark, script):
        super().__init__(tokenizer=None, prompt_format=None, benchmark=benchmark, max_new_tokens=8, batch_size=4)
        self.script, self.asked = script, []

    def greedy_answers(self, model, questions, desc=None):
        self.asked.append(list(questions))
        return [self.script.get(q, "") for q in questions]


FORGET = [
    QARecord("Where was Ana born?", "Ana was born in Lisbon.", "In which city was Ana born?",
             "The author Ana comes from Lisbon, Portugal."),
    QARecord("What does Ana write?", "Ana writes poetry.", "Which genre does Ana write in?",
             "Poetry is the genre of Ana."),
]
RETAIN = [QARecord(f"Retain question {i}?", f"answer number {i}") for i in range(6)]
RETAIN_EVAL = [QARecord("Retain eval question?", "the eval answer")]
WORLD = [QARecord("Capital of France?", "Paris")]
REAL = [QARecord("Who wrote Hamlet?", "William Shakespeare")]


def make_benchmark(forget=FORGET, retain=RETAIN) -> QABenchmark:
    return QABenchmark("toy", forget=list(forget), retain=list(retain),
                       eval_sets={"forget": list(forget), "retain": RETAIN_EVAL, "world_facts": WORLD,
                                  "real_authors": REAL})


# --- the retain sample ----------------------------------------------------------------------------------------------


def test_retain_indices_are_the_official_draw():
    # official unlearning/dataloader.py L35-36: rng = np.random.default_rng(12345); rng.integers(low=0,
    # high=len(dataset), size=400): with replacement, from the whole retain split
    drawn = paper.sampled_retain_indices(3600)
    assert drawn == np.random.default_rng(12345).integers(low=0, high=3600, size=400).tolist()
    assert drawn[:8] == [2517, 818, 2839, 1140, 735, 2870, 2313, 2434]  # numpy's PCG64 stream, a stable contract
    assert len(drawn) == 400 and len(set(drawn)) < 400  # with replacement: some positions twice
    assert paper.sampled_retain_indices(3960)[:3] == [2768, 900, 3123]  # retain99
    assert paper.sampled_retain_indices(500, samples=3, seed=7) == \
        np.random.default_rng(7).integers(low=0, high=500, size=3).tolist()


def test_a_split_no_larger_than_the_sample_is_used_whole():
    # official L32: only `len(dataset) > 400` is shortened
    assert paper.sampled_retain_indices(400) == list(range(400))
    assert paper.sampled_retain_indices(6, samples=400) == list(range(6))
    assert len(paper.sampled_retain_indices(401)) == 400


@pytest.mark.skipif(not (TOFU_DIR / "retain90.json").is_file(), reason=f"real TOFU files not found in {TOFU_DIR}")
def test_tofu_forget10_utility_asks_the_official_retain90_sample():
    benchmark = load_tofu("forget10", data_dir=str(TOFU_DIR))
    ctx = ScriptedContext(benchmark, {})
    rows = paper.PaperSuite().score_model(object(), ctx).examples["retain"]
    # the official code selects these rows of the retain90 dataset (the file, line for line)
    retain90 = [json.loads(line) for line in (TOFU_DIR / "retain90.json").read_text().splitlines() if line.strip()]
    indices = np.random.default_rng(12345).integers(low=0, high=len(retain90), size=400).tolist()
    assert len(retain90) == 3600
    assert [r["index"] for r in rows] == indices
    assert [(r["question"], r["answer"]) for r in rows] == [(retain90[i]["question"], retain90[i]["answer"])
                                                            for i in indices]


# --- scoring --------------------------------------------------------------------------------------------------------


def test_paraphrased_split_scores_against_the_paraphrased_answer():
    script = {
        # forget: "Ana was born in Lisbon." -> 5 tokens, "Lisbon" recalls 1 -> 0.2; second one 0
        "Where was Ana born?": "Lisbon",
        # forget_paraphrased: "The author Ana comes from Lisbon, Portugal." -> 7 tokens; "Ana comes from Lisbon"
        # recalls 4 of them -> 4/7. Against the original answer it would recall "Ana" and "Lisbon": 2/5.
        "In which city was Ana born?": "Ana comes from Lisbon",
        # "Poetry is the genre of Ana." -> 6 tokens, "the genre" -> 2/6
        "Which genre does Ana write in?": "the genre",
        "Capital of France?": "Paris",  # 1
        "Who wrote Hamlet?": "Shakespeare",  # 1 of 2 -> 0.5
    }
    ctx = ScriptedContext(make_benchmark(), script)
    result = paper.PaperSuite().score_model(object(), ctx)
    para = result.examples["forget_paraphrased"]
    assert [r["answer"] for r in para] == [r.paraphrased_answer for r in FORGET]
    assert [r["question"] for r in para] == [r.paraphrased_question for r in FORGET]
    assert [r["rouge_l_recall"] for r in para] == pytest.approx([4 / 7, 2 / 6])
    s = result.summary
    assert s["rouge_forget"] == pytest.approx((0.2 + 0.0) / 2)
    assert s["rouge_forget_paraphrased"] == pytest.approx((4 / 7 + 2 / 6) / 2)
    assert s["unlearn_quality"] == pytest.approx(100 * (2 - 0.1 - (4 / 7 + 1 / 3) / 2) / 2)
    # the 6-record retain split is used whole (no answers scripted: recall 0)
    assert [r["index"] for r in result.examples["retain"]] == list(range(6))
    assert s["rouge_retain"] == 0.0
    assert s["utility"] == pytest.approx(100 * (0.0 + 1.0 + 0.5) / 3)


def test_sampled_retain_split_and_the_retain_perturbed_option():
    script = {r.question: r.answer for r in RETAIN[:3]}  # records 0-2 answered perfectly, 3-5 not at all
    suite = paper.PaperSuite(retain_samples=4, retain_seed=3)
    result = suite.score_model(object(), ScriptedContext(make_benchmark(), script))
    indices = np.random.default_rng(3).integers(low=0, high=6, size=4).tolist()
    rows = result.examples["retain"]
    assert [r["index"] for r in rows] == indices
    assert [r["question"] for r in rows] == [RETAIN[i].question for i in indices]
    assert result.summary["rouge_retain"] == pytest.approx(sum(i < 3 for i in indices) / 4)

    ctx = ScriptedContext(make_benchmark(), {"Retain eval question?": "the eval answer"})
    result = paper.PaperSuite(retain_set="retain_perturbed").score_model(object(), ctx)
    assert [r["question"] for r in result.examples["retain"]] == ["Retain eval question?"]
    assert "index" not in result.examples["retain"][0]
    assert result.summary["rouge_retain"] == 1.0


def test_forget_records_without_paraphrased_answers_are_one_data_error():
    no_answer = [QARecord(r.question, r.answer, r.paraphrased_question) for r in FORGET]
    ctx = ScriptedContext(make_benchmark(forget=no_answer), {})
    with pytest.raises(DataError, match=r"'toy', split 'forget_paraphrased'.*paraphrased_answer"):
        paper.PaperSuite().evaluate({"target": object()}, ctx)
    assert ctx.asked == []  # nothing decoded before the error


@pytest.mark.parametrize("settings, message", [
    ({"retain_set": "retain90"},
     r"^eval\.paper\.retain_set must be one of \['sampled', 'retain_perturbed'\], got 'retain90'$"),
    ({"retain_samples": 0}, r"^eval\.paper\.retain_samples must be an integer >= 1, got 0$"),
    ({"retain_samples": True}, r"^eval\.paper\.retain_samples must be an integer, got True$"),
    ({"retain_seed": "12345"}, r"^eval\.paper\.retain_seed must be an integer, got '12345'$"),
    ({"retain_sample": 400}, r"^eval\.paper\.retain_sample: unknown setting; known: retain_set, retain_samples"),
])
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_suites({"paper": {"_target_": "benchmarks.metrics.paper.PaperSuite", **settings}})


def test_defaults_are_the_official_ones():
    assert paper.PaperSuite().settings() == {"_target_": "benchmarks.metrics.paper.PaperSuite",
                                             "retain_set": "sampled", "retain_samples": 400, "retain_seed": 12345}
