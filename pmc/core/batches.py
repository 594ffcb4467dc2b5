"""QA pairs -> padded tensors with answer-only labels: the one place training data is tokenised.

Every method trains through `encode_pairs`, so the masking rule (loss on answer tokens only, never on the prompt
or on padding) holds for PMC and every baseline alike. Each prompt and answer is tokenised once per tokenizer and
prompt format (`PromptFormat.prompt_ids`, `answer_ids`): training encodes every record every epoch, and the suites
score the same pairs per model.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from pmc.core.prompts import PromptFormat

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy and our log-prob helpers skip


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, T], 1 on real tokens
    labels: torch.Tensor  # [B, T], token id on answer tokens, IGNORE_INDEX elsewhere
    paired: "Batch | None" = None  # row i's second (question, answer), for methods that compare two (see ForgetExample)

    def to(self, device) -> "Batch":
        paired = self.paired.to(device) if self.paired is not None else None
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), paired)


def pad_right(rows: Sequence[Sequence[int]], pad_id: int, multiple: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as right-padded input ids [B, T] and their attention mask (1 on real tokens); T is the longest row,
    rounded up to a multiple of `multiple` when given."""
    width = max(len(row) for row in rows)
    if multiple:
        width = -(-width // multiple) * multiple
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as left-padded input ids [B, T] and their attention mask, so every row ends at the last column
    and generation continues all of them at the same position."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask


def encode_pairs(tokenizer, fmt: PromptFormat, pairs: list[tuple[str, str]], max_length: int,
                 pad_to_multiple_of: int | None = None) -> Batch:
    """Tokenise (question, answer) pairs; an answer is cut at the end (never the prompt) to fit max_length. The batch
    is as wide as its longest row, or that rounded up to a multiple of `pad_to_multiple_of` (padding is masked and
    unlabelled, so the loss is the same)."""
    rows = []
    for question, answer in pairs:
        prompt, answer_ids = fmt.prompt_ids(tokenizer, question), fmt.answer_ids(tokenizer, answer)
        rows.append((prompt, answer_ids[: max(1, max_length - len(prompt))]))
    input_ids, attention_mask = pad_right([p + a for p, a in rows], tokenizer.pad_token_id, pad_to_multiple_of)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for i, (prompt, answer_ids) in enumerate(rows):
        labels[i, len(prompt) : len(prompt) + len(answer_ids)] = torch.tensor(answer_ids)
    return Batch(input_ids, attention_mask, labels)


def longest_first(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths` grouped into batches, longest first, so rows of similar length share a batch and
    little compute goes to padding (callers put results back in input order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pair_length(tokenizer, fmt: PromptFormat, question: str, answer: str) -> int:
    """Tokens of one pair as training encodes it (prompt and answer with its end-of-sequence token)."""
    return len(fmt.prompt_ids(tokenizer, question)) + len(fmt.answer_ids(tokenizer, answer))


def epoch_order(rng: random.Random, count: int, batch_size: int, lengths: Sequence[int] | None = None) -> list[int]:
    """One epoch's order of `count` rows, drawn from `rng`: a plain shuffle, or given the rows' token `lengths`, HF
    Trainer's `group_by_length` order (transformers' `get_length_grouped_indices`: shuffled, then sorted by length
    within mega-batches of up to 50 micro-batches, the longest micro-batch first), so that consecutive `batch_size`
    rows have similar lengths and little compute goes to padding."""
    if lengths is None:
        # sample() draws positions, so this is the permutation rng.sample(rows, len(rows)) gives
        return rng.sample(range(count), count)
    if len(lengths) != count:
        raise ValueError(f"epoch_order: {len(lengths)} lengths for {count} rows")
    if not count:  # an epoch with nothing left to train on (ICU once every item is forgotten)
        return []
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    return get_length_grouped_indices(list(lengths), batch_size, generator=generator)


@contextmanager
def eval_mode(model):
    """The model in eval mode for the block (no dropout while scoring or decoding), its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
