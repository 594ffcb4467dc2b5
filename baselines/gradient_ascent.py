"""Gradient ascent (GA): minimise −NLL of the forget answers, with no retain term (GradDiff with α = 0)."""

from __future__ import annotations

from baselines.graddiff import GradDiff


class GradientAscent(GradDiff):
    name = "ga"

    def __init__(self, forget_weight: float = 1.0):
        super().__init__(forget_weight=forget_weight, retain_weight=0.0)
