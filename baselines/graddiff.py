"""Gradient difference (GradDiff): −γ·NLL(forget answers) + α·(retain NLL, or KL to the frozen target on retain)."""

from __future__ import annotations

import torch

from pmc.core.losses import answer_nll
from pmc.methods.base import RetainRegularised


class GradDiff(RetainRegularised):
    name = "graddiff"

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        forget_nll = answer_nll(model, forget)
        return -forget_nll, {"forget_nll": forget_nll}
