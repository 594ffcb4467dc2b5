"""FLAT (Wang et al., ICLR 2025): loss adjustment with forget data only, from the variational form of an
f-divergence between the refusal ("template") answer and the forget answer.

loss = E[−g*(P̄_e) + f*(g*(P̄_f))], P̄_e and P̄_f the mean token probabilities of the refusal and of the forget
answer, g* the output activation and f* the Fenchel conjugate of the chosen divergence (Nowozin et al., f-GAN,
Table 2). Total variation (default) gives −½tanh(P̄_e) + ½tanh(P̄_f); KL gives −P̄_e + exp(P̄_f − 1).
No retain term.
"""

from __future__ import annotations

import math

import torch

from baselines.refusals import RefusalTargets
from pmc.errors import ConfigError
from pmc.losses import mean_token_probability
from pmc.method import RetainRegularised

# divergence -> (g*: output activation, f*: Fenchel conjugate)
DIVERGENCES = {
    "total_variation": (lambda v: 0.5 * torch.tanh(v), lambda t: t),
    "kl": (lambda v: v, lambda t: torch.exp(t - 1.0)),
    "jensen_shannon": (lambda v: math.log(2.0) - torch.log1p(torch.exp(-v)), lambda t: -torch.log(2.0 - torch.exp(t))),
    "pearson": (lambda v: v, lambda t: t * t / 4.0 + t),
    "hellinger": (lambda v: 1.0 - torch.exp(-v), lambda t: t / (1.0 - t)),
}


def flat_loss(template_prob: torch.Tensor, forget_prob: torch.Tensor, divergence: str) -> torch.Tensor:
    activation, conjugate = DIVERGENCES[divergence]
    return (-activation(template_prob) + conjugate(activation(forget_prob))).mean()


class FLAT(RefusalTargets, RetainRegularised):
    name = "flat"
    compare_with_forget_answer = True

    def __init__(self, divergence: str = "total_variation", forget_weight: float = 1.0, seed: int = 0):
        if divergence not in DIVERGENCES:
            raise ConfigError(f"method.handler.divergence must be one of {sorted(DIVERGENCES)}, got {divergence!r}")
        super().__init__(forget_weight, retain_weight=0.0)
        self.divergence = divergence
        self._init_refusals(seed)

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        template_prob, forget_prob = mean_token_probability(model, forget), mean_token_probability(model, forget.paired)
        return flat_loss(template_prob, forget_prob, self.divergence), {
            "template_prob": template_prob.mean(), "forget_prob": forget_prob.mean()}
