"""Evaluation's greedy answers: `generation.max_new_tokens` (answer tokens) or `generation.max_length` (prompt +
answer tokens, the official evaluation's max_length=200, unlearning/inference.py L28), and the paper experiments
use the official one."""

from __future__ import annotations

import pytest

import benchmarks.metrics.common as common
from benchmarks.metrics.common import EvalContext
from pmc.core.generation import BatchSizes, generate_answers
from pmc.core.models import build_tiny, train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.pipeline import eval_context


def _context(**lengths) -> EvalContext:
    words = lambda text: {"input_ids": text.split()}  # the context orders questions by their prompts' length
    return EvalContext(tokenizer=words, prompt_format=PromptFormat(), benchmark=None, batch_size=4, **lengths)


@pytest.mark.parametrize(("lengths", "expected"), [
    ({"max_new_tokens": 48}, {"max_new_tokens": 48}),
    ({"max_new_tokens": 48, "generation_max_length": 200}, {"max_length": 200}),
])
def test_greedy_answers_decode_with_the_configured_length(monkeypatch, lengths, expected):
    seen = []
    monkeypatch.setattr(common, "greedy_answers", lambda *a, **kw: seen.append(kw) or ["x"] * len(a[3]))
    _context(**lengths).greedy_answers(object(), ["q1", "q2"])
    assert {k: v for k, v in seen[0].items() if k in ("max_new_tokens", "max_length")} == expected


def test_max_length_counts_the_prompt():
    """With a budget of prompt + 3 tokens a greedy answer is the first 3 tokens of the 10-token one."""
    question = "Who wrote the book about the sea?"
    tokenizer = train_tokenizer([question, "Question: \nAnswer:", "the sea wrote a book who about"], vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       max_position_embeddings=128, seed=0)
    fmt = PromptFormat()
    prompt_tokens = len(fmt.prompt_ids(tokenizer, question))
    long, short = (generate_answers(model, tokenizer, fmt, [question], **length)[0][0]
                   for length in ({"max_new_tokens": 10}, {"max_length": prompt_tokens + 3}))
    long_ids, short_ids = (tokenizer(a, add_special_tokens=False)["input_ids"] for a in (long, short))
    assert len(long_ids) > 3
    assert short_ids == long_ids[:3]


@pytest.mark.parametrize("experiment", ["tofu_phi", "tofu_llama3b", "paper_main_llama3b"])
def test_paper_experiments_evaluate_with_the_official_max_length(make_config, experiment):
    cfg = make_config(f"experiment={experiment}", base=[])
    assert cfg.generation.max_length == 200
    assert eval_context(cfg, None, PromptFormat(), None, BatchSizes(8, 8)).answer_length() == {"max_length": 200}


def test_default_is_answer_tokens(make_config):
    cfg = make_config()
    assert cfg.generation.max_length is None
    assert eval_context(cfg, None, PromptFormat(), None, BatchSizes(8, 8)).answer_length() == {
        "max_new_tokens": cfg.generation.max_new_tokens}
