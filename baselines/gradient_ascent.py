"""Gradient ascent (GA): maximise the NLL of the forget answers, i.e. minimise −NLL_forget. No retain term."""

from __future__ import annotations

import torch

from pmc.losses import answer_nll
from pmc.method import Method


class GradientAscent(Method):
    name = "ga"

    def loss(self, model, forget, retain) -> dict[str, torch.Tensor]:
        forget_nll = answer_nll(model, forget)
        return {"loss": -forget_nll, "forget_nll": forget_nll}
