"""ROUGE-L through rouge-score, the one ROUGE implementation of the harness: recall with stemming (the paper's PMC
reward and evaluation metric) and F1 without stemming (MUSE's VerbMem and KnowMem)."""

from __future__ import annotations

from functools import lru_cache

from rouge_score import rouge_scorer


@lru_cache(maxsize=2)
def _scorer(stem: bool) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)


def rouge_l_recall(reference: str, candidate: str) -> float:
    """Share of the reference's (stemmed) tokens covered by the longest common subsequence with the candidate.

    0 when either side has no tokens: an empty answer recalls nothing.
    """
    return _scorer(True).score(target=reference, prediction=candidate)["rougeL"].recall


def rouge_l_f1(reference: str, candidate: str) -> float:
    """ROUGE-L F-measure without stemming, as muse_bench scores (RougeScorer(["rougeL"], use_stemmer=False));
    0 when either side has no tokens."""
    return _scorer(False).score(target=reference, prediction=candidate)["rougeL"].fmeasure
