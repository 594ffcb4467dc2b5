"""IDK-NLL (TOFU's "IDK" baseline): train the forget questions towards a random refusal, plus the retain NLL."""

from __future__ import annotations

import torch

from baselines.refusals import RefusalTargets
from pmc.losses import answer_nll
from pmc.method import RetainRegularised


class IdkNLL(RefusalTargets, RetainRegularised):
    name = "idk"

    def __init__(self, forget_weight: float = 1.0, retain_weight: float = 1.0, retain_loss: str = "nll",
                 seed: int = 0):
        super().__init__(forget_weight, retain_weight, retain_loss)
        self._init_refusals(seed)

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return answer_nll(model, forget), {}
