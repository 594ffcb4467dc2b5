"""`generation.drop_finished_rows`: rows that have ended leave an eager decoding batch (decode_dropping_finished).
What is decoded must not change: the same greedy answers, each row's own budget, the right row for every answer."""

from __future__ import annotations

import pytest
import torch
from test_generation_speed import QUESTIONS as SPEED_QUESTIONS
from test_generation_speed import TEXTS

from pmc.core.errors import ConfigError
from pmc.core.generation import (
    DROP_EVERY,
    check_generation_options,
    configure_generation,
    drops_finished_rows,
    generate_answers,
    greedy_answers,
    greedy_continuations,
)
from pmc.core.models import build_tiny, train_tokenizer
from pmc.core.prompts import PromptFormat

QUESTIONS = SPEED_QUESTIONS + ["Why is the dog lazy?", "When did Jane write it?", "Is the door near?"]
FMT = PromptFormat()


@pytest.fixture(scope="module")
def tiny():
    """A random 2-layer Llama whose end-of-sequence logit is scaled up: its answers end after a few tokens to
    dozens, each row at its own length."""
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                       max_position_embeddings=256, seed=0).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for weights in model.parameters():
            if weights.dim() > 1:
                weights.normal_(0.0, 0.3)
        model.lm_head.weight[tokenizer.eos_token_id] *= 2.0  # tied: the input embedding too (EOS is never an input)
    return model, tokenizer


@pytest.fixture
def widths(tiny, monkeypatch):
    """The number of rows of every generate call."""
    model, _ = tiny
    calls = []
    generate = model.generate

    def recorded(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recorded)
    return calls


def dropping(model, on: bool):
    configure_generation(model, drop_finished_rows=on)
    assert drops_finished_rows(model) == on


def test_the_same_greedy_answers_with_fewer_rows_decoded(tiny, widths):
    model, tokenizer = tiny
    decode = lambda: greedy_answers(model, tokenizer, FMT, QUESTIONS, max_new_tokens=40, batch_size=8)
    try:
        dropping(model, False)
        kept = decode()
        assert widths == [8]  # one call, every row to the end
        prompts = [FMT.prompt_ids(tokenizer, q) for q in QUESTIONS]
        lengths = [len(c) for c in greedy_continuations(model, prompts, [40] * 8, pad_id=tokenizer.pad_token_id,
                                                        eos_id=tokenizer.eos_token_id, batch_size=8)]
        assert min(lengths) < DROP_EVERY and max(lengths) == 40 and len(set(lengths)) > 4  # rows end at many lengths
        widths.clear()
        dropping(model, True)
        assert decode() == kept
    finally:
        configure_generation(model)
    assert widths[0] == 8 and widths[-1] < 8  # calls of DROP_EVERY tokens, finished rows left out
    assert widths == sorted(widths, reverse=True) and len(widths) <= 40 // DROP_EVERY


def test_each_row_keeps_its_own_budget(tiny):
    """max_length counts each row's own prompt, so rows of one batch have other budgets: a row leaves when its
    budget is decoded, and its answer is cut there, as in one generate call."""
    model, tokenizer = tiny
    decode = lambda: greedy_answers(model, tokenizer, FMT, QUESTIONS, max_length=70, batch_size=8)
    try:
        dropping(model, False)
        kept = decode()
        uncut = greedy_answers(model, tokenizer, FMT, QUESTIONS, max_new_tokens=70, batch_size=8)
        assert 0 < sum(a != b for a, b in zip(kept, uncut)) < len(QUESTIONS)  # some rows are cut by their budget
        dropping(model, True)
        assert decode() == kept
    finally:
        configure_generation(model)


def test_greedy_continuations_are_the_same(tiny):
    model, tokenizer = tiny
    prompts = [FMT.prompt_ids(tokenizer, q) for q in QUESTIONS]
    lengths = [3, 30, 9, 17, 30, 5, 22, 12]
    continue_ = lambda: greedy_continuations(model, prompts, lengths, pad_id=tokenizer.pad_token_id,
                                             eos_id=tokenizer.eos_token_id, batch_size=4)
    try:
        dropping(model, False)
        kept = continue_()
        dropping(model, True)
        assert continue_() == kept
    finally:
        configure_generation(model)
    assert [len(c) for c in kept] != lengths  # some end before their length: the end-of-sequence rule is exercised


def test_sampled_rows_stay_with_their_question(tiny, widths):
    """Sampling repeats each question n times (row r is sample r % n of question r // n). At a temperature near 0 a
    sample is the greedy answer, so each question's samples must equal its greedy answer after rows have left."""
    model, tokenizer = tiny
    try:
        dropping(model, True)
        greedy = greedy_answers(model, tokenizer, FMT, QUESTIONS, max_new_tokens=40, batch_size=4)
        widths.clear()
        torch.manual_seed(0)
        sampled = generate_answers(model, tokenizer, FMT, QUESTIONS, max_new_tokens=40, batch_size=4,
                                   num_samples=3, temperature=1e-4, top_p=0.9)
    finally:
        configure_generation(model)
    assert sampled == [[a] * 3 for a in greedy]
    assert widths[0] == 12 and min(widths) < 12  # 4 questions x 3 samples per call, rows left out


def test_sampling_with_transformers_draw_and_beam_search_keep_one_call(tiny, widths):
    """generate expands those rows itself (num_return_sequences, beams), so they are decoded in one call."""
    model, tokenizer = tiny
    try:
        dropping(model, True)
        generate_answers(model, tokenizer, FMT, QUESTIONS[:2], max_new_tokens=12, batch_size=2, num_samples=2,
                         temperature=1.0, top_p=0.9, top_p_within_top_k=False)
        generate_answers(model, tokenizer, FMT, QUESTIONS[:2], max_new_tokens=12, batch_size=2, num_beams=2)
    finally:
        configure_generation(model)
    assert widths == [2, 2]


def test_the_setting(tiny):
    model, _ = tiny
    try:
        configure_generation(model, drop_finished_rows="auto")
        assert drops_finished_rows(model)  # off CUDA
        configure_generation(model, "static", drop_finished_rows=True)
        assert not drops_finished_rows(model)  # a static cache keeps its widths
    finally:
        configure_generation(model)
    assert not drops_finished_rows(model)  # the default leaves generate as it is
    with pytest.raises(ConfigError, match="generation.drop_finished_rows must be auto"):
        check_generation_options(8, None, False, drop_finished_rows="yes")
