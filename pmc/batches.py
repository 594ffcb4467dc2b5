"""QA pairs -> padded tensors with answer-only labels: the one place training data is tokenised.

Every method trains through `encode_pairs`, so the masking rule (loss on answer tokens only, never on the prompt
or on padding) holds for PMC and every baseline alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pmc.prompts import PromptFormat

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


def encode_pairs(tokenizer, fmt: PromptFormat, pairs: list[tuple[str, str]], max_length: int) -> Batch:
    """Tokenise (question, answer) pairs; an answer is cut at the end (never the prompt) to fit max_length."""
    rows = []
    for question, answer in pairs:
        prompt = fmt.prompt_ids(tokenizer, question)
        answer_ids = fmt.answer_ids(tokenizer, answer)[: max(1, max_length - len(prompt))]
        rows.append((prompt, answer_ids))
    width = max(len(p) + len(a) for p, a in rows)
    pad_id = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt, answer_ids) in enumerate(rows):
        n, m = len(prompt), len(answer_ids)
        input_ids[i, : n + m] = torch.tensor(prompt + answer_ids)
        attention_mask[i, : n + m] = 1
        labels[i, n : n + m] = torch.tensor(answer_ids)
    return Batch(input_ids, attention_mask, labels)
