"""ROUGE-L as the harness computes it (pmc.core.rouge): rouge-score's scores, with each word stemmed once."""

from __future__ import annotations

import json

import pytest
from conftest import TOFU_DIR
from rouge_score import rouge_scorer

from pmc.core.rouge import StemmingOnce, rouge_l_f1, rouge_l_recall

# punctuation, case, digits, short words (not stemmed), words stemmed alike, empty and space-only texts
TEXTS = ["The cats sat.", "a cat sat down", "Running, runners RAN; they run!", "", "   ", "42 is the answer",
         "Hsiao Yun-Hwa's books: 'The Immutable Laws'", "an answer that repeats repeats repeats itself",
         "Ünïcode wörds and émigrés", "was is as us"]


def test_recall_by_hand():
    # stemmed tokens: the cat sat / a cat sat down: the common subsequence "cat sat" covers 2 of the 3
    assert rouge_l_recall("The cats sat.", "a cat sat down") == pytest.approx(2 / 3)
    assert rouge_l_recall("The cats sat.", "") == 0.0 and rouge_l_recall("", "anything") == 0.0
    # without stemming "cats" and "cat" differ: F1 of "the cats sat" against "a cat sat down" is 2PR/(P+R) of 1/3, 1/4
    assert rouge_l_f1("The cats sat.", "a cat sat down") == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))


def assert_rouge_scores(pairs):
    stemmed, plain = (rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem) for stem in (True, False))
    for reference, candidate in pairs:
        assert rouge_l_recall(reference, candidate) == stemmed.score(reference, candidate)["rougeL"].recall
        assert rouge_l_f1(reference, candidate) == plain.score(reference, candidate)["rougeL"].fmeasure


def test_the_scores_are_rouge_scores():
    assert_rouge_scores([(a, b) for a in TEXTS for b in TEXTS])


@pytest.mark.skipif(not (TOFU_DIR / "full.json").is_file(), reason=f"real TOFU data not found at {TOFU_DIR}")
def test_the_scores_are_rouge_scores_on_tofu_answers():
    """Each answer against its paraphrase and against the next author's answer, over 1000 TOFU questions."""
    with open(TOFU_DIR / "retain_perturbed.json", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    with open(TOFU_DIR / "full.json", encoding="utf-8") as f:
        answers = [json.loads(line)["answer"] for line in f][:1000]
    pairs = [(r["answer"], r["paraphrased_answer"]) for r in rows]
    pairs += list(zip(answers, answers[20:] + answers[:20]))
    assert len(pairs) == 1400
    assert_rouge_scores(pairs)


def test_each_word_is_stemmed_once():
    tokenizer = StemmingOnce()
    assert tokenizer.tokenize("Running runs, running!") == ["run", "run", "run"]
    info = tokenizer.stem.cache_info()
    assert (info.misses, info.hits) == (2, 1)  # "running" twice, "runs" once
