"""IdkDPO (TOFU's preference baseline): DPO with the refusal preferred over the forget answer, plus retain NLL.

forget objective: −E[log σ(β·((log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))))],
y_w the refusal, y_l the forget answer, log π summed over answer tokens, π_ref the frozen target, β = 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.refusals import RefusalTargets
from pmc.errors import ConfigError
from pmc.losses import sequence_logprob
from pmc.method import RetainRegularised


def dpo_loss(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: float) -> torch.Tensor:
    """chosen/rejected_ratio: log π_θ − log π_ref of the preferred / dispreferred answer, per example."""
    return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()


class IdkDPO(RefusalTargets, RetainRegularised):
    name = "idkdpo"
    needs_reference = True
    compare_with_forget_answer = True

    def __init__(self, beta: float = 0.1, forget_weight: float = 1.0, retain_weight: float = 1.0,
                 retain_loss: str = "nll", seed: int = 0):
        if beta <= 0:
            raise ConfigError(f"method.handler.beta must be > 0, got {beta}")
        super().__init__(forget_weight, retain_weight, retain_loss)
        self.beta = beta
        self._init_refusals(seed)

    def _log_ratio(self, model, batch) -> torch.Tensor:
        logprob, _ = sequence_logprob(model, batch)
        with torch.no_grad():
            reference_logprob, _ = sequence_logprob(self.reference, batch)
        return logprob - reference_logprob

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen, rejected = self._log_ratio(model, forget), self._log_ratio(model, forget.paired)
        return dpo_loss(chosen, rejected, self.beta), {"margin": (chosen - rejected).mean()}
