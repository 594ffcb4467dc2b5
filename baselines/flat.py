"""FLAT (Wang et al., ICLR 2025): loss adjustment with forget data only, from the variational form of an
f-divergence between the refusal ("template") answer and the forget answer.

loss = −g*(P̄_e) + f*(g*(P̄_f)), P̄_e and P̄_f the token probabilities of the refusal and of the forget answer, g*
the output activation and f* the Fenchel conjugate of the chosen divergence (Nowozin et al., f-GAN, Table 2).
Total variation (default) gives −½tanh(P̄_e) + ½tanh(P̄_f); KL gives −P̄_e + exp(P̄_f − 1). No retain term.
The refusal is a random one from the benchmark's list per question and epoch (official data_module.py L624-625,
TOFU's idontknow.jsonl); `refusal=fixed` uses one `refusal_text`.

Estimators of P̄ (`estimator`):
  batch     (default, the official one: UCSC-REAL/FLAT dataloader.py L103-131 with ProbLossStable L793-804 and
            get_contrastive_loss L806-859) one scalar per batch and answer kind: the probability of each answer token,
            0 at every other position, averaged over all B·(T − 1) next-token positions of the padded batch, prompt
            and padding included; the divergence's functions are applied to these two scalars. The official code
            pads every sequence to max_length (data_module.py L40-66), so T = `padded_length` (the config passes
            the training max_length); padded_length=null uses the wider of the two batches as they are padded here.
  sequence  per sequence, the mean probability over its answer tokens only; the functions are applied per
            sequence and the losses averaged over the batch (the harness's earlier estimator). One might prefer it:
            it is the expectation the paper writes down, it does not depend on padding, prompt length or the other
            rows of the batch, and P̄ spans [0, 1], so the divergence's curvature acts. In the batch estimator the
            padding makes P̄ small (about answer length / max_length), where every divergence is nearly linear and
            FLAT reduces to raising Σ p(refusal tokens) and lowering Σ p(forget tokens) with fixed weights.

Divergences (`divergence`), (g*, f*) as the official get_contrastive_loss L806-852 has them:
  total_variation (½tanh v, t), kl (v, e^{t−1}), pearson (v, t²/4 + t), jensen_shannon (log 2 − log(1 + e^{−v}),
  −log(2 − e^t)), hellinger (1 − e^{v}, t/(1 − t)): the official squared Hellinger (L826-829), whose activation has
  the sign opposite to f-GAN's; its loss is e^{P̄_e} + e^{−P̄_f} − 2, which *lowers* the refusal's probability and
  *raises* the forget answer's when minimised. hellinger_fgan (1 − e^{−v}, t/(1 − t)): f-GAN's convention (the
  harness's earlier one), e^{−P̄_e} + e^{P̄_f} − 2, which moves both the unlearning way.
Logged: template_prob and forget_prob, the P̄ values the loss used (batch means for estimator=batch).
"""

from __future__ import annotations

import math

import torch

from baselines.refusals import PMC_REFUSAL, RefusalTargets
from pmc.core.batches import Batch
from pmc.core.errors import ConfigError
from pmc.core.losses import mean_token_probability, token_logprobs
from pmc.methods.base import ForgetObjective

# divergence -> (g*: output activation, f*: Fenchel conjugate); official UCSC-REAL/FLAT dataloader.py L806-852
DIVERGENCES = {
    "total_variation": (lambda v: 0.5 * torch.tanh(v), lambda t: t),  # L846-849
    "kl": (lambda v: v, lambda t: torch.exp(t - 1.0)),  # L811-814
    "jensen_shannon": (lambda v: math.log(2.0) - torch.log1p(torch.exp(-v)),  # L841-844
                       lambda t: -torch.log(2.0 - torch.exp(t))),
    "pearson": (lambda v: v, lambda t: t * t / 4.0 + t),  # L831-834
    "hellinger": (lambda v: 1.0 - torch.exp(v), lambda t: t / (1.0 - t)),  # L826-829: activation −(1 − e^x)
    "hellinger_fgan": (lambda v: 1.0 - torch.exp(-v), lambda t: t / (1.0 - t)),  # f-GAN Table 2
}
ESTIMATORS = ("batch", "sequence")


def flat_loss(template_prob: torch.Tensor, forget_prob: torch.Tensor, divergence: str) -> torch.Tensor:
    """−g*(P̄_e) + f*(g*(P̄_f)), averaged over whatever P̄ holds (one batch scalar, or one value per sequence)."""
    activation, conjugate = DIVERGENCES[divergence]
    return (-activation(template_prob) + conjugate(activation(forget_prob))).mean()


def batch_mean_probability(model, batch: Batch, positions: int) -> torch.Tensor:
    """Σ over the batch's answer tokens of p(token) / (B · positions): official ProbLossStable (dataloader.py
    L793-804, NLLLoss on softmax: −p at label positions, 0 where ignored) stacked over rows and averaged
    (L122-129), sign undone as in get_contrastive_loss L854-856."""
    picked, mask = token_logprobs(model, batch)
    return torch.where(mask, picked.exp(), 0.0).sum() / (batch.input_ids.shape[0] * positions)


class FLAT(RefusalTargets, ForgetObjective):
    name = "flat"
    compare_with_forget_answer = True

    def __init__(self, divergence: str = "total_variation", estimator: str = "batch",
                 padded_length: int | None = None, forget_weight: float = 1.0, refusal: str = "random",
                 refusal_text: str = PMC_REFUSAL, seed: int = 0):
        if divergence not in DIVERGENCES:
            raise ConfigError(f"method.handler.divergence must be one of {sorted(DIVERGENCES)}, got {divergence!r}")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"method.handler.estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
        if padded_length is not None and (isinstance(padded_length, bool) or not isinstance(padded_length, int)
                                          or padded_length < 2):
            raise ConfigError(f"method.handler.padded_length must be null or an integer >= 2, got {padded_length!r}")
        super().__init__(forget_weight)
        self.divergence, self.estimator, self.padded_length = divergence, estimator, padded_length
        self._init_refusals(seed, refusal, refusal_text)

    def _mean_probabilities(self, model, forget: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(P̄_refusal, P̄_forget) under the chosen estimator."""
        if self.estimator == "sequence":
            return mean_token_probability(model, forget), mean_token_probability(model, forget.paired)
        # both answers over the same number of positions, as in the official code, where both are padded to
        # max_length (a row cut to fit max_length keeps its prompt, so a batch can be wider than padded_length)
        width = max(self.padded_length or 0, forget.input_ids.shape[1], forget.paired.input_ids.shape[1])
        return (batch_mean_probability(model, forget, width - 1),
                batch_mean_probability(model, forget.paired, width - 1))

    def forget_loss(self, model, forget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        template_prob, forget_prob = self._mean_probabilities(model, forget)
        return flat_loss(template_prob, forget_prob, self.divergence), {
            "template_prob": template_prob.mean(), "forget_prob": forget_prob.mean()}
