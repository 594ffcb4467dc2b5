"""Negative Preference Optimisation (Zhang et al., 2024), NPO+GD variant.

forget objective: −(2/β)·E[log σ(−β·(log π_θ(y|x) − log π_ref(y|x)))], log π summed over the answer tokens and
π_ref the frozen target. As β → 0 it becomes gradient ascent (its gradient tends to that of −log π_θ); unlike GA
it is bounded below, so the forget loss cannot run away. Plus the retain term (α = retain_weight; 0 = plain NPO).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pmc.core.errors import ConfigError
from pmc.core.losses import sequence_logprob
from pmc.methods.base import RetainRegularised


def npo_loss(logprob: torch.Tensor, reference_logprob: torch.Tensor, beta: float) -> torch.Tensor:
    return -(2.0 / beta) * F.logsigmoid(-beta * (logprob - reference_logprob)).mean()


class NPO(RetainRegularised):
    name = "npo"
    needs_reference = True

    def __init__(self, beta: float = 0.1, forget_weight: float = 1.0, retain_weight: float = 1.0,
                 retain_loss: str = "nll"):
        if beta <= 0:
            raise ConfigError(f"method.handler.beta must be > 0, got {beta}")
        super().__init__(forget_weight, retain_weight, retain_loss)
        self.beta = beta

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logprob, _ = sequence_logprob(model, forget)
        with torch.no_grad():
            reference_logprob, _ = sequence_logprob(self.reference, forget)
        return npo_loss(logprob, reference_logprob, self.beta), {"log_ratio": (logprob - reference_logprob).mean()}
