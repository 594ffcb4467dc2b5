"""IdkDPO (TOFU's preference baseline, as open-unlearning implements it): DPO with the refusal preferred over the
forget answer, plus the retain NLL.

forget objective: −(2/β)·E[log σ(β·((log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))))],
y_w the refusal, y_l the forget answer, log π summed over answer tokens, π_ref the frozen target
(open-unlearning src/trainer/utils.py L47-67 compute_dpo_loss, L66 the 2/β; src/trainer/unlearn/dpo.py L12-33).
Defaults from open-unlearning configs/trainer/DPO.yaml L5-9: β = 0.1, γ (forget_weight) = 1, α (retain_weight) = 1,
retain NLL. The 2/β keeps the forget term on the retain term's scale: at β = 0.1 it is 20× the plain DPO loss.
The preferred answer is a random refusal from the benchmark's list (open-unlearning's QAwithIdkDataset draws one
per example from TOFU's idk.jsonl, src/data/qa.py L85-89); `refusal=fixed` uses one `refusal_text` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.refusals import PMC_REFUSAL, RefusalTargets
from pmc.core.errors import ConfigError
from pmc.core.losses import sequence_logprob
from pmc.methods.base import RetainRegularised


def dpo_loss(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: float) -> torch.Tensor:
    """chosen/rejected_ratio: log π_θ − log π_ref of the preferred / dispreferred answer, per example."""
    # open-unlearning src/trainer/utils.py L66: loss = -2 / beta * F.logsigmoid(beta * (win - lose)).mean()
    return -(2.0 / beta) * F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()


class IdkDPO(RefusalTargets, RetainRegularised):
    name = "idkdpo"
    needs_reference = True
    compare_with_forget_answer = True

    def __init__(self, beta: float = 0.1, forget_weight: float = 1.0, retain_weight: float = 1.0,
                 retain_loss: str = "nll", refusal: str = "random", refusal_text: str = PMC_REFUSAL,
                 seed: int = 0):
        if beta <= 0:
            raise ConfigError(f"method.handler.beta must be > 0, got {beta}")
        super().__init__(forget_weight, retain_weight, retain_loss)
        self.beta = beta
        self._init_refusals(seed, refusal, refusal_text)

    def _log_ratio(self, model, batch) -> torch.Tensor:
        logprob, _ = sequence_logprob(model, batch)
        with torch.no_grad():
            reference_logprob, _ = sequence_logprob(self.reference, batch)
        return logprob - reference_logprob

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen, rejected = self._log_ratio(model, forget), self._log_ratio(model, forget.paired)
        return dpo_loss(chosen, rejected, self.beta), {"margin": (chosen - rejected).mean()}
