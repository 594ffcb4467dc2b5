"""IDK-NLL (TOFU's "IDK" baseline): train the forget questions towards a refusal, plus the retain NLL.

By default the refusal is the PMC paper's: the fixed answer "I don't know." for every question (official PMC
unlearning/dataloader.py L80-84; loss NLL(refusal) + λ·NLL(retain), unlearning_trainer.py L53-57).
`refusal=random` draws TOFU's refusals instead (baselines.refusals).
"""

from __future__ import annotations

import torch

from baselines.refusals import PMC_REFUSAL, RefusalTargets
from pmc.core.losses import answer_nll
from pmc.methods.base import RetainRegularised


class IdkNLL(RefusalTargets, RetainRegularised):
    name = "idk"

    def __init__(self, forget_weight: float = 1.0, retain_weight: float = 1.0, retain_loss: str = "nll",
                 refusal: str = "fixed", refusal_text: str = PMC_REFUSAL, seed: int = 0):
        super().__init__(forget_weight, retain_weight, retain_loss)
        self._init_refusals(seed, refusal, refusal_text)

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return answer_nll(model, forget), {}
