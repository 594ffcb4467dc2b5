"""SimNPO (Fan et al., 2024): NPO without a reference model, with length normalisation and a reward margin.

forget objective: −(2/β)·E[log σ(−(β/|y|)·log π_θ(y|x) − γ)], |y| the number of answer tokens and γ the reward
margin of the SimNPO paper (`margin`; open-unlearning's δ enters as β·δ, so margin = β·δ), plus the retain term.
Defaults follow open-unlearning's TOFU config: β = 4.5, margin 0, forget weight 0.125, retain weight 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pmc.core.errors import ConfigError
from pmc.core.losses import sequence_logprob
from pmc.methods.base import RetainRegularised


def simnpo_loss(logprob: torch.Tensor, lengths: torch.Tensor, beta: float, margin: float) -> torch.Tensor:
    return -(2.0 / beta) * F.logsigmoid(-(beta / lengths) * logprob - margin).mean()


class SimNPO(RetainRegularised):
    name = "simnpo"

    def __init__(self, beta: float = 4.5, margin: float = 0.0, forget_weight: float = 0.125,
                 retain_weight: float = 1.0, retain_loss: str = "nll"):
        if beta <= 0:
            raise ConfigError(f"method.handler.beta must be > 0, got {beta}")
        super().__init__(forget_weight, retain_weight, retain_loss)
        self.beta, self.margin = beta, margin

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logprob, lengths = sequence_logprob(model, forget)
        mean_logprob = (logprob / lengths.clamp(min=1)).mean()
        return simnpo_loss(logprob, lengths.clamp(min=1), self.beta, self.margin), {"mean_token_logprob": mean_logprob}
