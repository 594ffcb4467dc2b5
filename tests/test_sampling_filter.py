"""PMC's and the analyses' sampler (`SampleWithinTopK`): temperature, top-k and top-p as transformers applies them,
with the nucleus sorted and the token drawn among the top-k candidates only. It must keep the same tokens with the
same scores as transformers' warpers and draw from their distribution; generate, run greedy, must take its draw."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from pmc.core.generation import SampleWithinTopK, decoding_rule, generate_answers
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
    assert SampleWithinTopK(1.0, 3, 0.7).filtered(IDS, row).tolist() == [[3.0, -INF, 2.0, -INF, -INF]]
    assert SampleWithinTopK(1.0, 3, 0.6).filtered(IDS, row).tolist() == [[3.0, -INF, -INF, -INF, -INF]]
    # temperature before top-p: T = 2 halves the scores and flattens the distribution to 0.506, 0.307, 0.186
    # (cumulative 0.186, 0.493, 1), so top-p 0.6 keeps two tokens where at T = 1 it kept one; 0.9 keeps all three
    assert SampleWithinTopK(2.0, 3, 0.6).filtered(IDS, row).tolist() == [[1.5, -INF, 1.0, -INF, -INF]]
    assert SampleWithinTopK(2.0, 3, 0.9).filtered(IDS, row).tolist() == [[1.5, 0.5, 1.0, -INF, -INF]]


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
    assert torch.equal(SampleWithinTopK(temperature, top_k, top_p).filtered(ids, scores.clone()), expected)
    # rows without ties on their own: none of them goes through transformers' warper
    rows = torch.cat([scores[:8], scores[24:]])
    sampler = SampleWithinTopK(temperature, top_k, top_p)
    sampler.ties = None
    assert torch.equal(sampler.filtered(ids[: len(rows)], rows.clone()),
                       transformers_warpers(rows.clone(), temperature, top_k, top_p))


def frequencies(tokens: torch.Tensor, size: int) -> list[float]:
    return (torch.bincount(tokens.flatten(), minlength=size) / tokens.numel()).tolist()


@pytest.mark.parametrize("row, top_k, top_p, expected", [
    # top-3 of [3, 1, 2, 0, -1] at T = 1: e^3, e^2, e^1 over their sum = 0.665, 0.245, 0.090; top-p 0.95 keeps
    # all three (ascending cumulative 0.090 > 0.05)
    ([3.0, 1.0, 2.0, 0.0, -1.0], 3, 0.95, [0.665, 0.090, 0.245, 0.0, 0.0]),
    # top-p 0.7 removes token 1 (ascending cumulative 0.090 <= 0.3): e^3, e^2 over their sum = 0.731, 0.269
    ([3.0, 1.0, 2.0, 0.0, -1.0], 3, 0.7, [0.731, 0.0, 0.269, 0.0, 0.0]),
    # ties at the k-th score: top-2 of [3, 1, 1, 0] keeps all three tokens of score >= 1, as TopKLogitsWarper does
    # (transformers' warper filters the row): e^3 / (e^3 + 2e) = 0.787, e / (e^3 + 2e) = 0.106 each
    ([3.0, 1.0, 1.0, 0.0], 2, 0.99, [0.787, 0.106, 0.106, 0.0]),
])
def test_draws_follow_the_hand_computed_distribution(row, top_k, top_p, expected):
    scores = torch.tensor([row]).repeat(20_000, 1)
    torch.manual_seed(0)
    out = SampleWithinTopK(1.0, top_k, top_p)(IDS.repeat(len(scores), 1), scores)
    assert torch.equal(torch.isfinite(out).sum(-1), torch.ones(len(scores), dtype=torch.long))  # one token a row
    assert out.max() == 0.0
    observed = frequencies(out.argmax(-1), len(row))
    assert observed == pytest.approx(expected, abs=0.012)  # 20,000 draws: standard error <= 0.0035
    assert [f for f, e in zip(observed, expected) if e == 0.0] == [0.0] * expected.count(0.0)  # never a removed one


def tiny_model_and_tokenizer():
    texts = ["Question: Who wrote the book?\nAnswer: Jane wrote it.", "the quick brown fox jumps over the lazy dog"]
    tokenizer = train_tokenizer(texts * 4, vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                       max_position_embeddings=256, seed=0)
    with torch.no_grad():  # larger weights than the initialisation's: the distributions are far from uniform
        for weights in model.parameters():
            if weights.dim() > 1:
                weights.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    return model.eval(), tokenizer


def test_generate_takes_every_token_the_sampler_draws(monkeypatch):
    model, tokenizer = tiny_model_and_tokenizer()
    drawn = []
    call = SampleWithinTopK.__call__

    def recorded(self, input_ids, scores):
        out = call(self, input_ids, scores)
        drawn.append(out.argmax(-1))
        return out

    monkeypatch.setattr(SampleWithinTopK, "__call__", recorded)
    fmt = PromptFormat(style="plain")
    questions = ["Who wrote the book?", "Where is the quick brown fox going?", "Who?"]
    torch.manual_seed(0)
    answers = generate_answers(model, tokenizer, fmt, questions, max_new_tokens=24, num_samples=5,
                               temperature=1.25, top_p=0.8, top_k=20)
    assert [len(a) for a in answers] == [5, 5, 5]
    assert len({a for row in answers for a in row}) > 5  # the answers vary: the sampler decided many draws
    steps = torch.stack(drawn, 1)  # 15 rows, one drawn token per decoding step
    assert steps.shape[0] == 15
    for r, row in enumerate(steps.tolist()):  # row r is sample r % 5 of question r // 5
        tokens = row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
        assert answers[r // 5][r % 5] == tokenizer.decode(tokens, skip_special_tokens=True).strip()


def test_generate_samples_first_tokens_with_transformers_probabilities():
    """The whole path (rows repeated, the sampler's draw, generate's greedy pick) against the distribution
    transformers' warpers give the model's next-token logits."""
    model, tokenizer = tiny_model_and_tokenizer()
    fmt = PromptFormat(style="plain")
    question, temperature, top_k, top_p = "Who wrote the book?", 1.25, 20, 0.8
    prompt = torch.tensor([fmt.prompt_ids(tokenizer, question)])
    with torch.no_grad():
        logits = model(prompt).logits[:, -1]
    probabilities = transformers_warpers(logits, temperature, top_k, top_p).softmax(-1)[0]
    assert (probabilities > 0.05).sum() >= 3  # several likely first tokens: the test can tell distributions apart
    draws = 4000
    torch.manual_seed(0)
    (answers,) = generate_answers(model, tokenizer, fmt, [question], max_new_tokens=1, num_samples=draws,
                                  temperature=temperature, top_p=top_p, top_k=top_k, batch_size=1)
    first = {t: tokenizer.decode([t], skip_special_tokens=True).strip() for t in range(len(probabilities))}
    for token in probabilities.nonzero().flatten().tolist():
        expected = sum(float(probabilities[t]) for t in first if first[t] == first[token])
        assert answers.count(first[token]) / draws == pytest.approx(expected, abs=0.03)
    kept = {first[t] for t in probabilities.nonzero().flatten().tolist()}
    assert set(answers) <= kept


def test_the_decoding_rule_generate_gets():
    greedy, repeats = decoding_rule(None, 50, None, 1, True)
    assert greedy == {"do_sample": False, "temperature": None, "top_p": None, "top_k": None,
                      "num_return_sequences": 1} and repeats == 1
    fast, repeats = decoding_rule(1.25, 50, 0.95, 5, True)
    assert (fast["do_sample"], fast["num_return_sequences"], repeats) == (False, 1, 5)  # generate takes the draws
    assert (fast["temperature"], fast["top_k"], fast["top_p"]) == (None, None, None)  # transformers' warpers off
    (sampler,) = fast["logits_processor"]
    assert (sampler.temperature, sampler.top_k, sampler.top_p) == (1.25, 50, 0.95)
    # no top-k (nothing to sort within), no top-p, or asked for: transformers' warpers and draw, rows expanded there
    for temperature, top_k, top_p, within in [(1.25, 0, 0.95, True), (1.25, 50, 1.0, True), (1.25, 50, 0.95, False)]:
        assert decoding_rule(temperature, top_k, top_p, 5, within) == (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k,
             "num_return_sequences": 5}, 1)
