"""Gradient ascent (GA): minimise −NLL of the forget answers, with no retain term."""

from __future__ import annotations

import torch

from pmc.core.batches import Batch
from pmc.core.losses import answer_nll
from pmc.methods.base import ForgetObjective


def ascent_loss(model, forget: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """−NLL of the forget answers, and the NLL itself to log (GradDiff's forget objective too)."""
    forget_nll = answer_nll(model, forget)
    return -forget_nll, {"forget_nll": forget_nll}


class GradientAscent(ForgetObjective):
    name = "ga"

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return ascent_loss(model, forget)
