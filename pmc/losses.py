"""Loss pieces shared by every method: answer-token log-probabilities and NLL.

Methods combine these (PMC: NLL of the selected answer + λ·NLL of the retain answer; NPO/DPO: summed sequence
log-probabilities), so each formula exists once.
"""

from __future__ import annotations

import torch

from pmc.batches import IGNORE_INDEX, Batch


def token_logprobs(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token given its prefix, and the mask of answer tokens. Both [B, T-1]."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    targets = batch.labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, picked, 0.0), mask


def sequence_logprob(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probability per sequence [B] and the number of answer tokens [B]."""
    picked, mask = token_logprobs(model, batch)
    return picked.sum(-1), mask.sum(-1)


def answer_nll(model, batch: Batch) -> torch.Tensor:
    """Mean negative log-likelihood over all answer tokens of the batch (what a causal LM's `.loss` reports)."""
    picked, mask = token_logprobs(model, batch)
    return -picked.sum() / mask.sum().clamp(min=1)
