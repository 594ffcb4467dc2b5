"""ROUGE-L through rouge-score, the one ROUGE implementation of the harness: recall with stemming (the paper's PMC
reward and evaluation metric) and F1 without stemming (MUSE's VerbMem and KnowMem)."""

from __future__ import annotations

from functools import lru_cache

from nltk.stem.porter import PorterStemmer  # rouge-score's stemmer (its dependency)
from rouge_score import rouge_scorer, tokenize, tokenizers


class StemmingOnce(tokenizers.Tokenizer):
    """rouge-score's default tokenizer with stemming (`tokenize.tokenize` with a Porter stemmer), each distinct word
    stemmed once per process. Why: Porter stemming was ~70 % of a score's time, and the same words come back all
    the time (PMC scores n samples per forget question, at every sampling, against the same initial answer;
    evaluation scores every model against the same references). Stemming is a pure function of the word, so the
    tokens, and the scores, are rouge-score's own (tests/test_rouge.py compares them on TOFU's answers)."""

    def __init__(self, words: int = 1 << 17):
        self.stem = lru_cache(maxsize=words)(PorterStemmer().stem)  # what tokenize.tokenize calls, word by word

    def tokenize(self, text: str) -> list[str]:
        return tokenize.tokenize(text, self)


@lru_cache(maxsize=2)
def _scorer(stem: bool) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=StemmingOnce() if stem else None)


def rouge_l_recall(reference: str, candidate: str) -> float:
    """Share of the reference's (stemmed) tokens covered by the longest common subsequence with the candidate.

    0 when either side has no tokens: an empty answer recalls nothing.
    """
    return _scorer(True).score(target=reference, prediction=candidate)["rougeL"].recall


def rouge_l_f1(reference: str, candidate: str) -> float:
    """ROUGE-L F-measure without stemming, as muse_bench scores (RougeScorer(["rougeL"], use_stemmer=False));
    0 when either side has no tokens."""
    return _scorer(False).score(target=reference, prediction=candidate)["rougeL"].fmeasure
