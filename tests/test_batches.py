"""Answer-only masking (`encode_pairs`) on a real tokenizer, and the shared loss pieces on hand-built logits."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pmc.core.batches import IGNORE_INDEX, Batch, encode_pairs
from pmc.core.losses import answer_nll, sequence_logprob, token_logprobs
from pmc.core.models import build_tiny, train_tokenizer
from pmc.core.prompts import PromptFormat

TEXTS = [
    "Question: Who wrote the book?\nAnswer: Jane wrote it.",
    "Question: Where is the cat?\nAnswer: The cat sat on the mat near the door.",
    "Question: What is the capital of France?\nAnswer: Paris is the capital of France.",
    "the quick brown fox jumps over the lazy dog",
]
PAIRS = [
    ("Who wrote the book?", "Jane wrote it."),
    ("Where is the cat?", "The cat sat on the mat near the door."),
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = train_tokenizer(TEXTS * 3, vocab_size=300)
    assert tok.pad_token_id != tok.eos_token_id  # so padding and end-of-sequence can be told apart below
    return tok


def prompt_and_answer(tokenizer, question, answer):
    """Expected ids, straight from the tokenizer: plain prompt, then ' ' + answer and end-of-sequence."""
    prompt = tokenizer(f"Question: {question}\nAnswer:")["input_ids"]
    answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt, answer_ids


# --- encode_pairs ------------------------------------------------------------------------------------------------


def test_labels_are_exactly_the_answer_tokens(tokenizer):
    batch = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256)
    rows = [prompt_and_answer(tokenizer, q, a) for q, a in PAIRS]
    width = max(len(p) + len(a) for p, a in rows)
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape == (2, width)
    for i, (prompt, answer) in enumerate(rows):
        n, m = len(prompt), len(answer)
        pad = width - n - m
        assert batch.input_ids[i].tolist() == prompt + answer + [tokenizer.pad_token_id] * pad
        assert batch.labels[i].tolist() == [IGNORE_INDEX] * n + answer + [IGNORE_INDEX] * pad
        assert batch.attention_mask[i].tolist() == [1] * (n + m) + [0] * pad
    # the two rows differ in length, so one of them really is padded
    assert (batch.attention_mask == 0).any()


@pytest.mark.parametrize("multiple", [1, 8, 16, 64])
def test_padding_to_a_multiple_adds_only_masked_unlabelled_positions(tokenizer, multiple):
    plain = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256)
    padded = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256, pad_to_multiple_of=multiple)
    width, wider = plain.input_ids.shape[1], padded.input_ids.shape[1]
    assert wider % multiple == 0 and width <= wider < width + multiple
    assert torch.equal(padded.input_ids[:, :width], plain.input_ids)
    assert torch.equal(padded.attention_mask[:, :width], plain.attention_mask)
    assert torch.equal(padded.labels[:, :width], plain.labels)
    assert (padded.input_ids[:, width:] == tokenizer.pad_token_id).all()
    assert (padded.attention_mask[:, width:] == 0).all() and (padded.labels[:, width:] == IGNORE_INDEX).all()


def test_label_tokens_decode_to_the_answer_and_end_with_eos(tokenizer):
    batch = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256)
    for i, (question, answer) in enumerate(PAIRS):
        labelled = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        assert labelled[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(labelled[:-1]) == " " + answer
        prompt_part = batch.input_ids[i][(batch.labels[i] == IGNORE_INDEX) & (batch.attention_mask[i] == 1)]
        assert tokenizer.decode(prompt_part.tolist()) == f"Question: {question}\nAnswer:"


def test_truncation_cuts_the_answer_not_the_prompt(tokenizer):
    question, answer = PAIRS[1]
    prompt, answer_ids = prompt_and_answer(tokenizer, question, answer)
    assert len(answer_ids) > 3
    max_length = len(prompt) + 3
    batch = encode_pairs(tokenizer, PromptFormat(), [(question, answer)], max_length=max_length)
    assert batch.input_ids.shape == (1, max_length)
    assert batch.input_ids[0].tolist() == prompt + answer_ids[:3]
    assert batch.labels[0].tolist() == [IGNORE_INDEX] * len(prompt) + answer_ids[:3]
    assert batch.attention_mask[0].tolist() == [1] * max_length
    assert tokenizer.eos_token_id not in batch.labels[0].tolist()  # the cut removed the end of the answer


def test_prompt_longer_than_max_length_is_kept_whole_with_one_answer_token(tokenizer):
    question, answer = PAIRS[0]
    prompt, answer_ids = prompt_and_answer(tokenizer, question, answer)
    batch = encode_pairs(tokenizer, PromptFormat(), [(question, answer)], max_length=len(prompt) - 2)
    assert batch.input_ids[0].tolist() == prompt + answer_ids[:1]
    assert batch.labels[0].tolist() == [IGNORE_INDEX] * len(prompt) + answer_ids[:1]


def test_truncation_is_per_row(tokenizer):
    # A short and a long answer under the same limit: only the long one is cut.
    (q0, a0), (q1, a1) = PAIRS
    p0, ans0 = prompt_and_answer(tokenizer, q0, a0)
    p1, ans1 = prompt_and_answer(tokenizer, q1, a1)
    max_length = len(p0) + len(ans0)
    assert len(p1) + len(ans1) > max_length
    batch = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=max_length)
    assert batch.labels[0][batch.labels[0] != IGNORE_INDEX].tolist() == ans0
    assert batch.labels[1][batch.labels[1] != IGNORE_INDEX].tolist() == ans1[: max_length - len(p1)]


def test_batch_to_moves_all_three_tensors(tokenizer):
    batch = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256)
    moved = batch.to("cpu")
    for name in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))


class CountingTokenizer:
    """Delegates to a real tokenizer and counts the texts it is asked to tokenise."""

    def __init__(self, inner):
        self.inner, self.texts = inner, []
        self.eos_token_id, self.pad_token_id = inner.eos_token_id, inner.pad_token_id

    def __call__(self, text, **kwargs):
        self.texts.append(text)
        return self.inner(text, **kwargs)


def test_a_prompt_is_tokenised_once_per_tokenizer_and_format(tokenizer):
    """Evaluation sorts and decodes the same questions for every model, PMC samples the same forget questions at
    every step: each prompt is tokenised once per tokenizer and format, and every caller gets its own list."""
    counting = CountingTokenizer(tokenizer)
    question, text = PAIRS[0][0], f"Question: {PAIRS[0][0]}\nAnswer:"
    first = PromptFormat().prompt_ids(counting, question)
    first.append(-1)  # the caller's list: changing it changes nothing remembered
    assert PromptFormat().prompt_ids(counting, question) == tokenizer(text)["input_ids"]
    assert counting.texts == [text]
    PromptFormat(question_template="Q: {question}\nA:").prompt_ids(counting, question)
    other = CountingTokenizer(tokenizer)
    PromptFormat().prompt_ids(other, question)
    assert counting.texts == [text, f"Q: {question}\nA:"] and other.texts == [text]


def test_each_pair_is_tokenised_once_per_tokenizer_and_format(tokenizer):
    counting = CountingTokenizer(tokenizer)
    expected = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256)
    first = encode_pairs(counting, PromptFormat(), PAIRS, max_length=256)
    assert len(counting.texts) == 4  # a prompt and an answer per pair
    again = encode_pairs(counting, PromptFormat(), PAIRS[::-1], max_length=256)  # the next epoch, reshuffled
    assert len(counting.texts) == 4
    reversed_expected = encode_pairs(tokenizer, PromptFormat(), PAIRS[::-1], max_length=256)
    assert again.labels.tolist() == reversed_expected.labels.tolist()
    assert torch.equal(first.input_ids, expected.input_ids)
    # a remembered pair is still cut to each call's max_length
    (question, answer) = PAIRS[1]
    prompt, answer_ids = prompt_and_answer(tokenizer, question, answer)
    cut = encode_pairs(counting, PromptFormat(), [(question, answer)], max_length=len(prompt) + 2)
    assert cut.input_ids[0].tolist() == prompt + answer_ids[:2] and len(counting.texts) == 4
    # another prompt format (or another tokenizer) is tokenised afresh
    other = PromptFormat(question_template="Q: {question}\nA:")
    encode_pairs(counting, other, PAIRS[:1], max_length=256)
    assert counting.texts[4:] == [f"Q: {PAIRS[0][0]}\nA:", " " + PAIRS[0][1]]


# --- losses on a stub model --------------------------------------------------------------------------------------


class FixedLogits(torch.nn.Module):
    """A 'model' whose forward returns the given logits, whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids, attention_mask, use_cache=None):  # a causal LM's signature: logits_of passes use_cache
        assert input_ids.shape == self.logits.shape[:2]
        return SimpleNamespace(logits=self.logits)


def log_probs(*p):
    """Logits whose softmax is exactly the distribution p."""
    return torch.tensor([math.log(x) for x in p])


V = 4
# Row 0: prompt [0, 1], answer [2, 3].  Row 1: prompt [0], answer [1], then padding.
BATCH = Batch(
    input_ids=torch.tensor([[0, 1, 2, 3], [0, 1, 0, 0]]),
    attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
    labels=torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX]]),
)


def hand_logits() -> torch.Tensor:
    """Position t predicts token t+1: row 0 uses positions 1 (-> 2) and 2 (-> 3); row 1 uses position 0 (-> 1)."""
    logits = torch.zeros(2, 4, V)
    logits[0, 1] = log_probs(0.1, 0.2, 0.3, 0.4)  # p(2) = 0.3
    logits[0, 2] = log_probs(0.5, 0.125, 0.125, 0.25)  # p(3) = 0.25
    logits[1, 0] = log_probs(0.1, 0.2, 0.3, 0.4)  # p(1) = 0.2
    return logits


def test_uniform_logits_give_log_vocab_size():
    V_big = 50
    logits = torch.full((2, 4, V_big), 3.7)
    batch = Batch(BATCH.input_ids, BATCH.attention_mask, BATCH.labels)
    assert answer_nll(FixedLogits(logits), batch).item() == pytest.approx(math.log(V_big))


def test_sequence_logprob_sums_and_counts_answer_tokens():
    total, count = sequence_logprob(FixedLogits(hand_logits()), BATCH)
    assert total.tolist() == pytest.approx([math.log(0.3) + math.log(0.25), math.log(0.2)])
    assert count.tolist() == [2, 1]


def test_answer_nll_is_the_token_weighted_mean():
    nll = answer_nll(FixedLogits(hand_logits()), BATCH).item()
    expected = -(math.log(0.3) + math.log(0.25) + math.log(0.2)) / 3
    assert nll == pytest.approx(expected)
    # not the mean of per-sequence means, which would weigh row 1's single token as much as row 0's two
    per_sequence_mean = (-(math.log(0.3) + math.log(0.25)) / 2 - math.log(0.2)) / 2
    assert nll != pytest.approx(per_sequence_mean)


def test_token_logprobs_mask_and_values():
    picked, mask = token_logprobs(FixedLogits(hand_logits()), BATCH)
    assert mask.tolist() == [[False, True, True], [True, False, False]]
    expected = [0.0, math.log(0.3), math.log(0.25), math.log(0.2), 0.0, 0.0]
    assert picked.flatten().tolist() == pytest.approx(expected)


def test_logits_at_non_answer_positions_do_not_matter():
    base = hand_logits()
    changed = base.clone()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, V, generator=g) * 30
    # positions whose prediction is a prompt token, padding, or past the end of the row
    for row, position in [(0, 0), (0, 3), (1, 1), (1, 2), (1, 3)]:
        changed[row, position] = noise[row, position]
    changed[0, 0, 0] = -1e4  # even an extreme logit for the clamped padding/prompt target id
    for fn in (answer_nll, lambda m, b: sequence_logprob(m, b)[0]):
        a = fn(FixedLogits(base), BATCH)
        b = fn(FixedLogits(changed), BATCH)
        assert torch.allclose(a, b)
    # but changing an answer position does matter
    changed[0, 1] = log_probs(0.25, 0.25, 0.25, 0.25)
    assert answer_nll(FixedLogits(changed), BATCH).item() != pytest.approx(answer_nll(FixedLogits(base), BATCH).item())


def test_no_gradient_reaches_non_answer_positions():
    model = FixedLogits(hand_logits())
    answer_nll(model, BATCH).backward()
    grad = model.logits.grad
    used = {(0, 1), (0, 2), (1, 0)}
    for row in range(2):
        for position in range(4):
            has_grad = bool(grad[row, position].abs().sum() > 0)
            assert has_grad == ((row, position) in used), (row, position)


def test_answer_nll_matches_the_causal_lm_loss(tokenizer):
    # With a real (tiny) Llama, answer_nll equals what transformers reports as .loss for the same labels.
    model = build_tiny(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128, seed=0)
    batch = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256)
    reference = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    assert answer_nll(model, batch).item() == pytest.approx(reference.item(), rel=1e-5)


def test_answer_nll_is_the_same_on_a_batch_padded_to_a_multiple(tokenizer):
    model = build_tiny(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128, seed=0)
    plain = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256)
    padded = encode_pairs(tokenizer, PromptFormat(), PAIRS, max_length=256, pad_to_multiple_of=64)
    assert padded.input_ids.shape[1] > plain.input_ids.shape[1]
    assert answer_nll(model, padded).item() == pytest.approx(answer_nll(model, plain).item(), rel=1e-6)
