"""Gradient difference (GradDiff): −γ·NLL(forget answers) + α·(retain NLL, or KL to the frozen target on retain):
gradient ascent with a retain term."""

from __future__ import annotations

import torch

from baselines.gradient_ascent import ascent_loss
from pmc.methods.base import RetainRegularised


class GradDiff(RetainRegularised):
    name = "graddiff"

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return ascent_loss(model, forget)
