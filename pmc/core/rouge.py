"""ROUGE-L recall, the one similarity the paper uses both as PMC's reward and as its evaluation metric."""

from __future__ import annotations

from functools import lru_cache

from rouge_score import rouge_scorer


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(reference: str, candidate: str) -> float:
    """Share of the reference's (stemmed) tokens covered by the longest common subsequence with the candidate.

    0 when either side has no tokens: an empty answer recalls nothing.
    """
    return _scorer().score(target=reference, prediction=candidate)["rougeL"].recall
