"""Loss pieces shared by every method: answer-token log-probabilities and NLL.

Methods combine these (PMC: NLL of the selected answer + λ·NLL of the retain answer; NPO/DPO: summed sequence
log-probabilities), so each formula exists once.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from pmc.core.batches import IGNORE_INDEX, Batch


def logits_of(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The model's logits at every position, for training and scoring: without a KV cache, which transformers
    otherwise builds in every forward although nothing decodes after it (~4 operators per layer and step), and on
    which a regionally compiled decoder layer (training.compile) guards, tracing itself again for each layer index
    until dynamo's recompile limit sends the rest back to eager. Inside `one_forward` a batch it names gets its rows
    of the shared forward."""
    shared = _SHARED[-1] if _SHARED else None
    if shared is not None and shared.model is model and torch.is_grad_enabled():
        logits = shared.logits_for(input_ids)
        if logits is not None:
            return logits
    return _forward(model, input_ids, attention_mask)


def _forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class SharedForward:
    """One forward pass of `model` over the rows of several right-padded batches, run when the first of them is
    asked for (`logits_for`): each batch padded on the right to the widest (masked: with causal attention a row's
    logits at its real tokens do not depend on positions after them), the rows stacked, and each batch's logits
    sliced back out, at its own width."""

    def __init__(self, model, batches: list[Batch]):
        self.model, self.batches = model, batches
        self.logits: list[torch.Tensor] | None = None

    def logits_for(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """The logits of the named batch whose input ids are `input_ids` (the same tensor); None for any other."""
        index = next((i for i, b in enumerate(self.batches) if b.input_ids is input_ids), None)
        if index is None:
            return None
        if self.logits is None:
            width = max(b.input_ids.shape[1] for b in self.batches)
            widen = lambda t: F.pad(t, (0, width - t.shape[1]))  # noqa: E731  (pad id 0, masked)
            stacked = _forward(self.model, torch.cat([widen(b.input_ids) for b in self.batches]),
                               torch.cat([widen(b.attention_mask) for b in self.batches]))
            rows = stacked.split([b.input_ids.shape[0] for b in self.batches])
            self.logits = [r[:, : b.input_ids.shape[1]] for r, b in zip(rows, self.batches)]
        return self.logits[index]


_SHARED: list[SharedForward] = []  # the innermost `one_forward` last


@contextmanager
def one_forward(model, batches: list[Batch | None]):
    """Within the block, `logits_of(model, ...)` for any of `batches` (None entries left out) returns its rows of
    one forward pass over all of them (`training.joint_forward`: a micro-batch's forget and retain rows at once).

    Why: a small model on a GPU is bound by kernel launches, not arithmetic, and two forwards (then two backward
    passes through them) launch every layer's kernels twice; and a forward that starts while the previous one's
    backward is pending keeps CUDA graphs (compile_mode=reduce-overhead) off their fast path, as the H100 warned
    for GradDiff. The logits are those of separate forwards up to float rounding (other matrix shapes); the loss
    and its gradient are the same sum. Only forwards with gradients are served: a method's no-grad forward of the
    same batch runs on its own. A batch the method never forwards still costs its rows in the shared pass."""
    named = [b for b in batches if b is not None]
    if len(named) < 2:
        yield
        return
    _SHARED.append(SharedForward(model, named))
    try:
        yield
    finally:
        _SHARED.pop()


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
