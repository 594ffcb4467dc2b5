"""Loss pieces shared by every method: answer-token log-probabilities and NLL.

Methods combine these (PMC: NLL of the selected answer + λ·NLL of the retain answer; NPO/DPO: summed sequence
log-probabilities), so each formula exists once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pmc.core.batches import IGNORE_INDEX, Batch


def logits_of(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The model's logits at every position, for training and scoring: without a KV cache, which transformers
    otherwise builds in every forward although nothing decodes after it (~4 operators per layer and step), and on
    which a regionally compiled decoder layer (training.compile) guards, tracing itself again for each layer index
    until dynamo's recompile limit sends the rest back to eager."""
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def token_logprobs(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token given its prefix, and the mask of answer tokens. Both [B, T-1].

    Computed as −cross-entropy, which never materialises a full log-softmax over the vocabulary (large for
    Llama's 128k tokens)."""
    logits = logits_of(model, batch.input_ids, batch.attention_mask)[:, :-1]
    targets = batch.labels[:, 1:]
    mask = targets != IGNORE_INDEX
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                          reduction="none").view_as(targets)
    return torch.where(mask, -nll, 0.0), mask


def sequence_logprob(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probability per sequence [B] and the number of answer tokens [B]."""
    picked, mask = token_logprobs(model, batch)
    return picked.sum(-1), mask.sum(-1)


def answer_nll(model, batch: Batch) -> torch.Tensor:
    """Mean negative log-likelihood over all answer tokens of the batch (what a causal LM's `.loss` reports)."""
    picked, mask = token_logprobs(model, batch)
    return -picked.sum() / mask.sum().clamp(min=1)


def mean_token_probability(model, batch: Batch) -> torch.Tensor:
    """Per sequence, the mean over answer tokens of each token's probability [B] (FLAT's P̄)."""
    picked, mask = token_logprobs(model, batch)
    probabilities = torch.where(mask, picked.exp(), 0.0)
    return probabilities.sum(-1) / mask.sum(-1).clamp(min=1)


def answer_kl(model, reference, batch: Batch) -> torch.Tensor:
    """KL(reference ‖ model) between next-token distributions, averaged over answer tokens: keeps the model's
    whole output distribution, not just the label's probability, where the frozen reference had it."""
    logits = logits_of(model, batch.input_ids, batch.attention_mask)[:, :-1]
    with torch.no_grad():
        reference_logits = logits_of(reference, batch.input_ids, batch.attention_mask)[:, :-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    reference_logprobs = torch.log_softmax(reference_logits.float(), dim=-1)
    per_token = (reference_logprobs.exp() * (reference_logprobs - logprobs)).sum(-1)
    mask = batch.labels[:, 1:] != IGNORE_INDEX
    return torch.where(mask, per_token, 0.0).sum() / mask.sum().clamp(min=1)
