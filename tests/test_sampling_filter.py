"""PMC's and the analyses' sampling filter (`TopPWithinTopK`): temperature, top-k and top-p as transformers applies
them, with the nucleus sorted among the top-k candidates only. It must keep the same tokens with the same scores,
so every sampled answer is the one transformers' own warpers would draw."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from pmc.core.generation import TopPWithinTopK, generate_answers, sampling_filter
from pmc.core.models import build_tiny, train_tokenizer
from pmc.core.prompts import PromptFormat

INF = float("inf")
IDS = torch.zeros(1, 1, dtype=torch.long)  # the tokens so far: no warper here reads them


def transformers_warpers(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """What generate applies with do_sample, temperature, top_k and top_p (in `_get_logits_processor`'s order)."""
    ids = torch.zeros(scores.shape[0], 1, dtype=torch.long)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(ids, scores)
    return TopPLogitsWarper(top_p)(ids, TopKLogitsWarper(top_k)(ids, scores))


def test_a_hand_computed_row():
    # top-3 of [3, 1, 2, 0, -1] at T = 1: probabilities e^3, e^2, e^1 over their sum = 0.665, 0.245, 0.090;
    # ascending cumulative 0.090, 0.335, 1. top-p 0.7 removes what stays <= 0.3 (token 1); 0.6 also token 2.
    row = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0]])
    assert TopPWithinTopK(1.0, 3, 0.7)(IDS, row).tolist() == [[3.0, -INF, 2.0, -INF, -INF]]
    assert TopPWithinTopK(1.0, 3, 0.6)(IDS, row).tolist() == [[3.0, -INF, -INF, -INF, -INF]]
    # temperature before top-p: T = 2 halves the scores and flattens the distribution to 0.506, 0.307, 0.186
    # (cumulative 0.186, 0.493, 1), so top-p 0.6 keeps two tokens where at T = 1 it kept one; 0.9 keeps all three
    assert TopPWithinTopK(2.0, 3, 0.6)(IDS, row).tolist() == [[1.5, -INF, 1.0, -INF, -INF]]
    assert TopPWithinTopK(2.0, 3, 0.9)(IDS, row).tolist() == [[1.5, 0.5, 1.0, -INF, -INF]]


@pytest.mark.parametrize("temperature", [1.0, 0.9, 1.25])
@pytest.mark.parametrize("top_k", [1, 5, 50, 5000])
@pytest.mark.parametrize("top_p", [0.3, 0.95, 0.999])
def test_the_same_scores_as_transformers_warpers(temperature, top_k, top_p):
    generator = torch.Generator().manual_seed(top_k)
    scores = torch.randn(64, 3000, generator=generator) * 4
    scores[:8, :40] = -INF  # masked by an earlier processor (fewer finite scores than k in a small vocabulary)
    scores[8:16, 100:110] = scores[8:16, :1].clone() + 20  # ten tied leaders: ties at the k-th score for k <= 10
    scores[16:24, 200:203] = 50.0  # one token certain: every other removed by top-p
    ids = torch.zeros(scores.shape[0], 1, dtype=torch.long)
    expected = transformers_warpers(scores.clone(), temperature, top_k, top_p)
    assert torch.equal(TopPWithinTopK(temperature, top_k, top_p)(ids, scores.clone()), expected)
    # rows without ties on their own: none of them goes through transformers' warper
    rows = torch.cat([scores[:8], scores[24:]])
    filtered = TopPWithinTopK(temperature, top_k, top_p)
    filtered.ties = None
    assert torch.equal(filtered(ids[: len(rows)], rows.clone()), transformers_warpers(rows.clone(), temperature,
                                                                                     top_k, top_p))


def test_generate_draws_the_same_answers_as_with_transformers_warpers():
    texts = ["Question: Who wrote the book?\nAnswer: Jane wrote it.", "the quick brown fox jumps over the lazy dog"]
    tokenizer = train_tokenizer(texts * 4, vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                       max_position_embeddings=256, seed=0)
    with torch.no_grad():  # larger weights than the initialisation's: the distributions are far from uniform
        for weights in model.parameters():
            if weights.dim() > 1:
                weights.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    fmt = PromptFormat(style="plain")
    questions = ["Who wrote the book?", "Where is the quick brown fox going?", "Who?"]

    def draw(within: bool) -> list[list[str]]:
        torch.manual_seed(0)
        return generate_answers(model, tokenizer, fmt, questions, max_new_tokens=24, num_samples=5,
                                temperature=1.25, top_p=0.8, top_k=20, top_p_within_top_k=within)

    fast, reference = draw(True), draw(False)
    assert fast == reference
    assert len({a for row in fast for a in row}) > 5  # the answers vary: the filter decided many draws


def test_which_filter_generate_gets():
    assert sampling_filter(None, 50, None, True) == {"temperature": None, "top_p": None, "top_k": None}  # greedy
    fast = sampling_filter(1.25, 50, 0.95, True)
    assert (fast["temperature"], fast["top_k"], fast["top_p"]) == (1.0, 0, 1.0)  # transformers' warpers off
    (processor,) = fast["logits_processor"]
    assert (processor.temperature, processor.top_k, processor.top_p) == (1.25, 50, 0.95)
    # no top-k (nothing to sort within), no top-p, or asked for: transformers' warpers
    assert sampling_filter(1.25, 0, 0.95, True) == {"temperature": 1.25, "top_p": 0.95, "top_k": 0}
    assert sampling_filter(1.25, 50, 1.0, True) == {"temperature": 1.25, "top_p": 1.0, "top_k": 50}
    assert sampling_filter(1.25, 50, 0.95, False) == {"temperature": 1.25, "top_p": 0.95, "top_k": 50}
