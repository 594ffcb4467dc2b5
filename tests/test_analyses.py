"""The robustness analyses suite (`eval=analyses`): each analysis on hand-made cases whose numbers are known (stub
models with hand-built logits over a tiny vocabulary, scripted generations), settings and text sources, and one
end-to-end run of `eval=[paper,analyses]`."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import benchmarks.metrics.analyses.collateral as col
import benchmarks.metrics.analyses.leakage as leak
import benchmarks.metrics.analyses.least_likely as ll
import benchmarks.metrics.analyses.quality as qual
from benchmarks.metrics import EvalContext, build_suites, common, scoring
from benchmarks.synthetic import make_synthetic_tofu
from pmc.core.errors import ConfigError
from pmc.core.prompts import PromptFormat
from pmc.core.records import DataError, QABenchmark, QARecord
from pmc.eval_cache import as_stored, from_stored
from pmc.experiment import run_experiment

SUMMARY_KEYS = {
    "collateral_mean_shift_all", "collateral_mean_shift_forget_tokens", "least_likely_attack_rate",
    "least_likely_chance", "sampling_rouge_mean", "sampling_rouge_max", "prefill_fixed_rouge", "prefill_answer_rouge",
    "empty_rate", "answer_length", "distinct_ratio", "fluency_nll",
}


# --- a tiny world: whitespace tokenizer, bigram 'language models' with known probabilities ----------------------------


class WordTokenizer:
    VOCAB = ["<pad>", "<eos>", "Question:", "Answer:", "sky", "grass", "the", "is", "red", "blue", "green", "The",
             "answer", "is:"]
    pad_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.VOCAB.index(w) for w in text.split()]}


V = WordTokenizer.VOCAB
ID = {w: i for i, w in enumerate(V)}


def bigram_table(after_answer: dict[str, float], after_the: dict[str, float]) -> torch.Tensor:
    """logits[prev] over the next token: after "Answer:" the given weights, after "the" the given weights, after a
    colour <eos> 3 : sky 1; everything else (almost) impossible."""
    table = torch.full((len(V), len(V)), -1e4)
    for word, weight in after_answer.items():
        table[ID["Answer:"], ID[word]] = math.log(weight)
    for word, weight in after_the.items():
        table[ID["the"], ID[word]] = math.log(weight)
    for colour in ("red", "blue", "green"):
        table[ID[colour], ID["<eos>"]] = math.log(3)
        table[ID[colour], ID["sky"]] = 0.0
    table[ID["sky"], ID["is"]] = 0.0
    table[ID["is"], ID["blue"]] = 0.0
    return table


class BigramStub(nn.Module):
    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)
        self.calls = 0

    def forward(self, input_ids, attention_mask, use_cache=None):  # a causal LM's signature: logits_of passes use_cache
        self.calls += 1
        return SimpleNamespace(logits=self.table[input_ids])


# target: red 4 : blue 2 : green 1 after "Answer:", sky 3 : grass 1 after "the"; unlearned: the reverse of both.
TARGET = dict(after_answer={"red": 4, "blue": 2, "green": 1}, after_the={"sky": 3, "grass": 1})
UNLEARNED = dict(after_answer={"red": 1, "blue": 2, "green": 4}, after_the={"sky": 1, "grass": 3})


def ctx_for(records=(), forget=(), **kwargs) -> EvalContext:
    benchmark = QABenchmark("stub", list(forget), [], {"forget": list(records)})
    return EvalContext(WordTokenizer(), PromptFormat(), benchmark, max_new_tokens=kwargs.pop("max_new_tokens", 5),
                       batch_size=kwargs.pop("batch_size", 4), max_length=64, **kwargs)


def analyses_suite(**settings):
    """The suite as a run builds it from conf/eval/analyses.yaml's node."""
    return build_suites({"analyses": {"_target_": "benchmarks.metrics.analyses.AnalysesSuite", **settings}})["analyses"]


# --- collateral damage ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_text_token_logprobs_on_known_probabilities(batch_size):
    model = BigramStub(bigram_table(**TARGET))
    model.train()
    rows = [[ID["the"], ID["sky"], ID["is"], ID["blue"]], [ID["the"], ID["grass"]], [ID["Answer:"], ID["green"]]]
    got = scoring.text_token_logprobs(model, WordTokenizer(), rows, batch_size)
    expected = [[math.log(3 / 4), 0.0, 0.0], [math.log(1 / 4)], [math.log(1 / 7)]]  # after the: sky 3/4, grass 1/4
    assert [len(g) for g in got] == [3, 1, 1]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=1e-5)
    assert model.training  # the caller's mode is restored


def test_collateral_shift_against_the_target_all_tokens_and_forget_tokens():
    target, unlearned = BigramStub(bigram_table(**TARGET)), BigramStub(bigram_table(**UNLEARNED))
    rows = [[ID["the"], ID["sky"], ID["is"], ID["blue"]], [ID["the"], ID["grass"]], [ID["Answer:"], ID["green"]]]
    tok = WordTokenizer()
    reference = scoring.text_token_logprobs(target, tok, rows, 4)
    own = scoring.text_token_logprobs(unlearned, tok, rows, 4)
    shifts = [o - t for o, t in zip(own, reference)]
    predicted = [np.asarray(r[1:]) for r in rows]
    edges = [-3.0, -1.0, 1.0, 3.0]
    summary, per_text, dist = col.collateral(shifts, predicted, {ID["sky"], ID["green"]},
                                                  ["the sky is blue", "the grass", "Answer: green"], edges, own)
    # sky: log(1/4) - log(3/4) = -log 3; is, blue: 0; grass: log(3/4) - log(1/4) = log 3; green: log(4/7 / 1/7) = log 4
    all_shifts = [-math.log(3), 0.0, 0.0, math.log(3), math.log(4)]
    assert summary["collateral_mean_shift_all"] == pytest.approx(np.mean(all_shifts))
    assert summary["collateral_mean_shift_forget_tokens"] == pytest.approx((-math.log(3) + math.log(4)) / 2)
    assert dist[0]["subset"] == "all" and dist[0]["tokens"] == 5 and dist[1]["tokens"] == 2
    assert dist[0]["counts"] == [1, 2, 2] and dist[0]["underflow"] == dist[0]["overflow"] == 0  # ±1.1, 0, 0, 1.39
    assert dist[0]["q50"] == pytest.approx(0.0) and dist[0]["mean_abs"] == pytest.approx(np.mean(np.abs(all_shifts)))
    assert [t["forget_tokens"] for t in per_text] == [1, 0, 1]
    assert per_text[0]["sum_shift"] == pytest.approx(-math.log(3), abs=1e-5)
    assert per_text[2]["sum_shift_forget_tokens"] == pytest.approx(math.log(4), abs=1e-5)


def test_shift_distribution_quantiles_histogram_and_out_of_range_counts():
    d = col.shift_distribution([-10.0, -1.5, -0.5, 0.0, 0.5, 2.5, 7.0], [-2.0, -1.0, 0.0, 1.0, 2.0])
    assert d["counts"] == [1, 1, 2, 0] and d["underflow"] == 1 and d["overflow"] == 2  # 0.0 falls in [0, 1)
    assert d["tokens"] == 7 and d["mean"] == pytest.approx(-2.0 / 7) and d["q50"] == 0.0
    assert d["q05"] == pytest.approx(np.percentile([-10, -1.5, -0.5, 0, 0.5, 2.5, 7], 5))
    empty = col.shift_distribution([], [0.0, 1.0])
    assert empty["tokens"] == 0 and math.isnan(empty["mean"]) and empty["counts"] == [0]


def test_forget_token_ids_are_the_answer_tokens_without_special_tokens():
    forget = [QARecord("sky", "red sky"), QARecord("grass", "the grass is green")]
    ids = col.forget_token_ids(WordTokenizer(), PromptFormat(), forget)
    assert ids == {ID[w] for w in ("red", "sky", "the", "grass", "is", "green")}


def test_texts_overlapping_the_forget_answers_are_dropped(tmp_path):
    forget = [QARecord("q", "Jane Doe was born in Lisbon, Portugal in 1950."), QARecord("q", "Paris")]
    path = tmp_path / "texts.txt"
    path.write_text("Lisbon is a city in Portugal.\n"  # single words only: kept
                    "Some say that Jane Doe was born in Lisbon long ago.\n"  # a 5-gram of the first answer: dropped
                    "\nWe went to Paris in spring.\n"  # the whole one-word answer: dropped
                    "The weather was fine.\n", encoding="utf-8")
    c = col.CollateralSettings(source="file", path=str(path))
    texts, dropped = col.collateral_texts(c, forget)
    assert texts == ["Lisbon is a city in Portugal.", "The weather was fine."] and dropped == 2
    c.max_texts = 1
    assert col.collateral_texts(c, forget)[0] == ["Lisbon is a city in Portugal."]


def test_builtin_corpus_does_not_overlap_the_default_benchmark():
    benchmark = make_synthetic_tofu(num_authors=20, questions_per_author=10, forget_authors=2, num_world_facts=30,
                                    num_real_authors=30, retain_eval_authors=4, num_perturbed=3, seed=0)
    texts, dropped = col.collateral_texts(col.CollateralSettings(), benchmark.forget + benchmark.eval_sets["forget"])
    assert dropped == 0 and len(texts) == len(set(texts)) == 50
    # the package data file, one sentence per line
    assert texts[0] == "The kettle clicked off and the kitchen filled with the smell of fresh coffee."
    assert texts[-1] == "At low tide you can walk across the sand to the little island."


def test_wikitext_paragraphs_and_a_hub_failure_is_one_clear_error(monkeypatch):
    lines = ["", " = Valkyria Chronicles = \n",
             " Senjō no Valkyria is a tactical role @-@ playing game made in 2011 .\n", " Too short .\n",
             " = = Gameplay = = \n"]
    assert col.wikitext_paragraphs(lines, min_words=8) == [
        "Senjō no Valkyria is a tactical role @-@ playing game made in 2011 ."]

    import huggingface_hub

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DataError, match="could not be fetched.*OSError: no network.*collateral.source=file"):
        col.load_texts(col.CollateralSettings(source="wikitext"))


def test_wikitext_source_reads_the_hub_file(monkeypatch, tmp_path):
    monkeypatch.setattr(col, "_fetch_hub", lambda repo, filename: tmp_path / filename)
    monkeypatch.setattr(col, "_parquet_texts",
                        lambda path: [" = T = ", " one two three four five six seven eight "])
    assert col.load_texts(col.CollateralSettings(source="wikitext")) == ["one two three four five six seven eight"]


# --- least-likely multiple choice -----------------------------------------------------------------------------------


def test_least_likely_credit_and_ties():
    assert ll.least_likely_credit([-1.0, -2.0, -3.0]) == 0.0
    assert ll.least_likely_credit([-3.0, -2.0, -1.0]) == 1.0
    assert ll.least_likely_credit([-3.0, -3.0, -1.0, -3.0]) == pytest.approx(1 / 3)
    assert ll.least_likely_credit([-1.0, -3.0, -3.0]) == 0.0


def test_least_likely_attack_picks_the_option_the_model_finds_least_likely():
    records = [QARecord("sky", "red", perturbed_answer=("blue", "green")),
               QARecord("sky", "blue", perturbed_answer=("red", "green")),
               QARecord("grass", "green", perturbed_answer=("red",))]
    ctx = ctx_for(records)
    target, unlearned = BigramStub(bigram_table(**TARGET)), BigramStub(bigram_table(**UNLEARNED))
    # Every answer is one colour + <eos>: its score is (log p(colour | Answer:) + log 3/4) / 2, so the order of the
    # options is the order of the colour weights. target: green < blue < red; unlearned: red < blue < green.
    summary, rows = ll.least_likely(target, ctx, records)
    assert [r["pick"] for r in rows] == [2, 2, 0]  # green, green, green
    assert summary["least_likely_attack_rate"] == pytest.approx(1 / 3)  # only the third true answer is green
    assert summary["least_likely_chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    summary, rows = ll.least_likely(unlearned, ctx, records)
    assert [r["pick"] for r in rows] == [0, 1, 1]  # red every time
    assert summary["least_likely_attack_rate"] == pytest.approx(1 / 3)  # only the first true answer is red
    assert rows[0]["logprobs"][0] == pytest.approx((math.log(1 / 7) + math.log(3 / 4)) / 2, abs=1e-6)


def test_the_true_option_is_the_paraphrased_answer_where_there_is_one():
    # TOFU's perturbed answers rephrase the paraphrased answer, so that is the option worded like the wrong ones.
    records = [QARecord("sky", "red", paraphrased_answer="green", perturbed_answer=("blue",))]
    target = BigramStub(bigram_table(**TARGET))  # green < blue < red
    summary, rows = ll.least_likely(target, ctx_for(records), records)
    assert rows[0]["options"] == ["green", "blue"] and summary["least_likely_attack_rate"] == 1.0
    summary, rows = ll.least_likely(target, ctx_for(records), records, "answer")
    assert rows[0]["options"] == ["red", "blue"] and summary["least_likely_attack_rate"] == 0.0
    with pytest.raises(ConfigError, match="attack.true_option must be one of"):
        ll.AttackSettings(true_option="perturbed")


# --- sampling and prefill leakage (scripted generations) ------------------------------------------------------------


def test_sampling_leakage_mean_and_worst_case(monkeypatch):
    records = [QARecord("sky", "the sky is blue", perturbed_answer=("x",)),
               QARecord("grass", "green grass", perturbed_answer=("x",))]
    script = {"sky": ["the sky is blue", "the sky", "nothing", "sky blue"],  # recall 1, 1/2, 0, 1/2
              "grass": ["no", "no", "grass", "no"]}  # 0, 0, 1/2, 0
    calls = []

    def scripted(model, tokenizer, fmt, questions, **kwargs):
        calls.append({**kwargs, "draw": torch.rand(1).item()})
        return [script[q] for q in questions]

    monkeypatch.setattr(leak, "generate_answers", scripted)
    p = leak.SamplingSettings(k=4, temperature=0.7, top_p=0.9)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    summary, rows = leak.sampling(None, ctx_for(records, batch_size=8), records, p, 3, 17, "m")
    summary2, _ = leak.sampling(None, ctx_for(records, batch_size=8), records, p, 3, 17, "m")
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    assert calls[0]["draw"] == calls[1]["draw"]  # and every model samples from the same seed
    assert calls[0]["num_samples"] == 4 and calls[0]["temperature"] == 0.7 and calls[0]["top_p"] == 0.9
    assert calls[0]["max_new_tokens"] == 17 and calls[0]["batch_size"] == 2  # 8 rows: 2 questions x 4 samples
    assert rows[0]["rouge"] == pytest.approx([1.0, 0.5, 0.0, 0.5])
    assert summary["sampling_rouge_mean"] == pytest.approx((0.5 + 0.125) / 2)
    assert summary["sampling_rouge_max"] == pytest.approx((1.0 + 0.5) / 2)
    assert summary == summary2


def test_prefill_continues_the_prefilled_answer(monkeypatch):
    records = [QARecord("sky", "the sky is blue today", perturbed_answer=("x",)),  # 5 words: prefix "the"
               QARecord("grass", "green", perturbed_answer=("x",))]  # one word: no answer prefix
    tok = WordTokenizer()
    seen = []

    def scripted(model, tokenizer, fmt, keys, **kwargs):
        prompts = [fmt.prompt_ids(tokenizer, k) for k in keys]
        seen.append(prompts)
        out = []
        for p in prompts:
            if p[-1] == ID["is:"]:  # after the fixed prefix
                out.append(["sky is blue" if ID["sky"] in p else "nothing"])
            else:  # after "the"
                out.append(["sky is red"])
        return out

    monkeypatch.setattr(leak, "generate_answers", scripted)
    summary, fixed, answer = leak.prefill(None, ctx_for(records), records, leak.PrefillSettings(), 9, "m")
    question_prompt = PromptFormat().prompt_ids(tok, "sky")
    assert len(seen) == 1 and len(seen[0]) == 3  # both prefills in one call: 2 fixed, 1 answer prefix
    assert seen[0][0] == question_prompt + [ID["The"], ID["answer"], ID["is:"]]  # trailing space dropped
    assert seen[0][2] == question_prompt + [ID["the"]]
    assert [r["rouge"] for r in fixed] == pytest.approx([3 / 5, 0.0])  # "sky is blue" in "the sky is blue today"
    assert answer == [{"question": "sky", "prefix": "the", "reference": "sky is blue today",
                       "continuation": "sky is red", "rouge": pytest.approx(0.5)}]
    assert summary == {"prefill_fixed_rouge": pytest.approx(0.3), "prefill_answer_rouge": pytest.approx(0.5)}


def test_split_answer():
    assert leak.split_answer("Jane Doe was born in Lisbon, Portugal.", 0.25) == (
        "Jane", "Doe was born in Lisbon, Portugal.")  # 7 words: floor(1.75) = 1
    assert leak.split_answer("a b c d e f g h", 0.25) == ("a b", "c d e f g h")
    assert leak.split_answer("a  b", 0.25, min_words=3) == ("a", "b")  # at most all words but one
    assert leak.split_answer("word", 0.5) is None


# --- response quality -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty_nll", [None, 10.0])
def test_response_quality_on_scripted_answers(monkeypatch, empty_nll):
    records = [QARecord(q, "a", perturbed_answer=("x",)) for q in ("q1", "q2", "q3", "q4")]
    answers = ["the sky is the sky", "", "blue", "red green"]
    ctx = ctx_for(records)
    ctx.greedy_answers = lambda model, questions, desc=None: answers
    scored = []

    def fake_logprobs(model, tokenizer, fmt, pairs, batch_size, max_length):
        scored.append((model, list(pairs)))
        return [-float(len(a.split())) for _, a in pairs]  # NLL = number of words

    monkeypatch.setattr(scoring, "answer_logprob_means", fake_logprobs)
    retain = BigramStub(bigram_table(**TARGET))
    summary, rows = qual.quality("model", retain, ctx, records, qual.QualitySettings(empty_nll=empty_nll), "m")
    assert scored == [(retain, [("q1", answers[0]), ("q3", "blue"), ("q4", "red green")])]  # never the empty one
    assert summary["empty_rate"] == 0.25
    assert summary["answer_length"] == pytest.approx((5 + 0 + 1 + 2) / 4)
    assert summary["distinct_ratio"] == pytest.approx((3 / 5 + 1 + 1) / 3)
    expected = (5 + 1 + 2) / 3 if empty_nll is None else (5 + 10 + 1 + 2) / 4
    assert summary["fluency_nll"] == pytest.approx(expected)
    assert rows[1] == {"question": "q2", "answer": "a", "generated": "", "empty": True, "words": 0,
                       "distinct_ratio": None, "retain_nll": None}


# --- settings -------------------------------------------------------------------------------------------------------


def test_settings_merge_over_the_defaults_and_reject_unknown_or_bad_values():
    s = analyses_suite(sampling={"k": 2}, collateral={"histogram": {"bins": 10}})
    assert s.sampling == leak.SamplingSettings(k=2, temperature=1.0, top_p=0.95)
    assert s.collateral.histogram == col.Histogram(low=-5.0, high=5.0, bins=10)
    assert analyses_suite().sampling.k == 8 and analyses_suite().collateral.histogram.edges()[:2] == [-5.0, -4.75]
    for settings, message in [
        ({"sampling": {"kk": 2}}, r"^eval\.analyses\.sampling\.kk: unknown setting; known: k, temperature, top_p$"),
        ({"sampling": {"top_p": 1.5}}, r"^eval\.analyses\.sampling\.top_p must be in \(0, 1\], got 1\.5$"),
        ({"sampling": {"k": "8"}}, r"^eval\.analyses\.sampling\.k must be an integer, got '8'$"),
        ({"sampling": 8}, r"^eval\.analyses\.sampling must be a mapping of settings \(k, temperature, top_p\)"),
        ({"collateral": {"source": "file"}}, r"^eval\.analyses\.collateral\.path must be a file path"),
        ({"collateral": {"source": "web"}}, r"^eval\.analyses\.collateral\.source must be one of"),
        ({"collateral": {"histogram": {"low": 1, "high": 0}}}, r"^eval\.analyses\.collateral\.histogram must be low"),
        ({"max_questions": 0}, r"^eval\.analyses\.max_questions must be null or a positive integer, got 0$"),
        ({"quality": {"empty_nll": "high"}}, r"^eval\.analyses\.quality\.empty_nll must be a number or null"),
    ]:
        with pytest.raises(ConfigError, match=message):
            analyses_suite(**settings)


# --- the whole suite on stubs ---------------------------------------------------------------------------------------


def test_suite_on_stub_models_with_scripted_generation(monkeypatch, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("the sky is blue\nthe grass\n", encoding="utf-8")
    records = [QARecord("sky", "red sky", perturbed_answer=("blue", "green")),
               QARecord("grass", "green grass", perturbed_answer=("red",))]
    suite = analyses_suite(collateral={"source": "file", "path": str(path)}, sampling={"k": 2}, examples=1)
    ctx = ctx_for(records, forget=records)

    def scripted(model, tokenizer, fmt, questions, num_samples=1, **kwargs):
        return [["red sky"] * num_samples for _ in questions]

    monkeypatch.setattr(leak, "generate_answers", scripted)
    monkeypatch.setattr(common, "greedy_answers", lambda model, tok, fmt, questions, **kw: ["red"] * len(questions))
    models = {"target": BigramStub(bigram_table(**TARGET)), "retain": BigramStub(bigram_table(**TARGET)),
              "unlearned": BigramStub(bigram_table(**UNLEARNED))}
    results = suite.evaluate(models, ctx)
    assert set(results) == set(models)
    for result in results.values():
        assert set(result.summary) == SUMMARY_KEYS
        assert set(result.examples) == {"collateral_texts", "collateral_distribution", "least_likely", "sampling",
                                        "prefill_fixed", "prefill_answer", "quality", "example_answers"}
        assert len(result.examples["example_answers"]) == 1
    assert results["target"].summary["collateral_mean_shift_all"] == 0.0
    # the texts: sky|the, is|sky, blue|is and grass|the; forget tokens: red, sky, green, grass
    assert results["unlearned"].summary["collateral_mean_shift_all"] == pytest.approx(0.0, abs=1e-5)  # -log3 + log3
    assert results["unlearned"].summary["collateral_mean_shift_forget_tokens"] == pytest.approx(0.0, abs=1e-5)
    assert results["unlearned"].examples["collateral_distribution"][1]["tokens"] == 2
    assert results["target"].summary["sampling_rouge_max"] == pytest.approx((1.0 + 0.0) / 2)
    assert results["target"].examples["example_answers"][0] == {
        "question": "sky", "answer": "red sky", "greedy": "red", "sample": "red sky",
        "prefill_fixed": "The answer is: red sky", "prefill_answer": "red red sky"}

    # as with the eval cache: the stage-0 models first, then the unlearned one with their results known
    stage0 = suite.evaluate({"target": models["target"], "retain": models["retain"]}, ctx)
    later = suite.evaluate(models, ctx, from_stored(as_stored(stage0)))
    assert set(later) == {"unlearned"}
    assert as_stored({**stage0, **later}) == as_stored(results)

    del models["retain"]
    with pytest.raises(scoring.MissingReferenceModel, match="retain model"):
        suite.evaluate(models, ctx)


# --- end to end -----------------------------------------------------------------------------------------------------


def test_analyses_end_to_end(make_config, tmp_path):
    cfg = make_config("eval=[paper,analyses]", "method.training.epochs=2", "generation.max_new_tokens=32",
                      "eval.analyses.sampling.k=3")  # the run config's settings reach the suite
    results = run_experiment(cfg, tmp_path)
    metrics = results["metrics"]
    for model in ("target", "retain", "unlearned"):
        summary = metrics[model]["analyses"]
        assert set(summary) == SUMMARY_KEYS
        on_disk = json.loads((tmp_path / "eval" / model / "analyses.json").read_text())
        assert on_disk["summary"] == pytest.approx(summary, nan_ok=True)
        assert len(on_disk["examples"]["example_answers"]) == 5
        assert all(len(row["samples"]) == 3 for row in on_disk["examples"]["sampling"])
        assert 0.0 < summary["least_likely_chance"] < 1.0
        assert summary["sampling_rouge_max"] >= summary["sampling_rouge_mean"]
    target = metrics["target"]["analyses"]
    assert target["collateral_mean_shift_all"] == 0.0 and target["collateral_mean_shift_forget_tokens"] == 0.0
    assert metrics["retain"]["analyses"]["collateral_mean_shift_all"] != 0.0
    assert target["least_likely_attack_rate"] < target["least_likely_chance"]  # it memorised the true answers
    assert target["sampling_rouge_max"] > 0.5  # and recalls them


def test_tofu_and_the_attack_score_each_answer_once_per_model(make_config, tmp_path, monkeypatch):
    """TOFU's truth ratio and the least-likely attack both score the forget questions' paraphrased and perturbed
    answers: through the context's memo (scoring.answer_logprobs) no model scores a (question, answer) pair twice,
    so the attack's options, all among TOFU's pairs, cost nothing more."""
    scored: dict[int, list] = {}
    score = scoring.answer_logprob_means

    def counting(model, tokenizer, fmt, pairs, batch_size, max_length):
        scored.setdefault(id(model), []).extend(pairs)
        return score(model, tokenizer, fmt, pairs, batch_size, max_length)

    monkeypatch.setattr(scoring, "answer_logprob_means", counting)
    results = run_experiment(make_config("eval=[tofu,analyses]", "method.training.epochs=1",
                                         "generation.max_new_tokens=8", "eval.analyses.sampling.k=2"), tmp_path)
    assert len(scored) == 3  # target, retain, unlearned
    for pairs in scored.values():
        assert len(pairs) == len(set(pairs))
    attack = json.loads((tmp_path / "eval" / "unlearned" / "analyses.json").read_text())["examples"]["least_likely"]
    options = {(row["question"], option) for row in attack for option in row["options"]}
    assert options and all(options <= set(pairs) for pairs in scored.values())  # every model met them, once
    assert 0.0 <= results["metrics"]["unlearned"]["analyses"]["least_likely_attack_rate"] <= 1.0


def test_suites_score_with_the_scoring_batch_and_decode_with_the_decoding_batch(make_config, tmp_path, monkeypatch):
    """generation.scoring_batch_size batches every token-scoring pass (TOFU's and the attack's answer
    log-probabilities, the collateral texts), generation.batch_size every greedy decoding call."""
    scored, decoded = set(), set()
    score_batches, greedy_answers = scoring.score_batches, common.greedy_answers

    def scoring_spy(model, lengths, batch_size, *args):
        scored.add(batch_size)
        return score_batches(model, lengths, batch_size, *args)

    def decoding_spy(*args, batch_size, **kwargs):
        decoded.add(batch_size)
        return greedy_answers(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(scoring, "score_batches", scoring_spy)
    monkeypatch.setattr(common, "greedy_answers", decoding_spy)
    results = run_experiment(make_config("eval=[tofu,analyses]", "method.training.epochs=1", "eval_cache=false",
                                         "generation.max_new_tokens=8", "eval.analyses.sampling.k=2",
                                         "generation.batch_size=6", "generation.scoring_batch_size=3"), tmp_path)
    assert scored == {3} and decoded == {6}
    assert results["batch_sizes"] == {"decoding": 6, "scoring": 3}
