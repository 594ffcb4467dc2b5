"""The baselines against their formulas: loss functions on tiny tensors with hand-computed values, the shared
FLAT/KL pieces on hand-built logits, each method's loss composition on a tiny real model and refusal targets
(ICU's tests are in test_icu.py).

Every expected value is written out here (literal numbers or the formula in plain math), never taken from the
code under test.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny

from baselines.flat import DIVERGENCES, FLAT, batch_mean_probability, flat_loss
from baselines.graddiff import GradDiff
from baselines.gradient_ascent import GradientAscent
from baselines.idk import IdkNLL
from baselines.idkdpo import IdkDPO, dpo_loss
from baselines.npo import NPO, npo_loss
from baselines.simnpo import SimNPO, simnpo_loss
from pmc.core.batches import IGNORE_INDEX, Batch, encode_pairs
from pmc.core.errors import ConfigError
from pmc.core.losses import answer_kl, answer_nll, mean_token_probability, sequence_logprob, token_logprobs
from pmc.core.models import train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.methods.base import ForgetExample, RunContext

LOG2 = math.log(2.0)


def softplus(x: float) -> float:
    """log(1 + e^x) = −log σ(−x)."""
    return math.log1p(math.exp(x))


# --- loss functions on tiny tensors ----------------------------------------------------------------------------


def test_npo_loss_hand_value():
    # r = logπ − logπ_ref = [−1, 0.5]; β = 0.5: −(2/β)·mean log σ(−β r) = (2/β)·mean log(1 + e^{β r})
    #   = 4 · ½ · (log(1 + e^{−0.5}) + log(1 + e^{0.25})) = 2 · (0.474077 + 0.825939) = 2.600032
    loss = npo_loss(torch.tensor([-2.0, -1.0]), torch.tensor([-1.0, -1.5]), beta=0.5)
    assert loss.item() == pytest.approx(2.0 * (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.25))), rel=1e-6)
    assert loss.item() == pytest.approx(2.600032, abs=1e-5)


def test_npo_loss_is_2_log2_over_beta_at_zero_ratio():
    for beta in (0.1, 1.0, 3.0):
        loss = npo_loss(torch.tensor([-4.0, -7.0]), torch.tensor([-4.0, -7.0]), beta=beta)
        assert loss.item() == pytest.approx(2.0 / beta * LOG2, rel=1e-6)


def test_npo_gradient_by_hand_and_tends_to_gradient_ascent():
    # d/dr_i of −(2/β)·(1/B)·Σ log σ(−β r_i) = (2/B)·σ(β r_i). Gradient ascent minimises −NLL = mean_i logπ_i, whose
    # gradient w.r.t. each logπ_i is +1/B; (2/B)·σ(β r_i) → (2/B)·½ = 1/B as β → 0.
    reference = torch.tensor([-1.0, -1.0, -1.0])
    ratios = [-3.0, 0.5, 2.0]
    B = 3
    for beta in (1.0, 0.1):
        logprob = (reference + torch.tensor(ratios)).requires_grad_()
        npo_loss(logprob, reference, beta).backward()
        expected = [2.0 / B / (1.0 + math.exp(-beta * r)) for r in ratios]
        assert logprob.grad.tolist() == pytest.approx(expected, rel=1e-5)

    logprob = (reference + torch.tensor(ratios)).requires_grad_()
    npo_loss(logprob, reference, beta=1e-4).backward()
    ga_logprob = (reference + torch.tensor(ratios)).requires_grad_()
    ga_logprob.mean().backward()  # GA's loss as a function of the per-sequence log-probabilities
    assert ga_logprob.grad.tolist() == pytest.approx([1 / B] * B)
    assert logprob.grad.tolist() == pytest.approx([1 / B] * B, abs=1e-4)
    # and further from GA for a larger β
    logprob = (reference + torch.tensor(ratios)).requires_grad_()
    npo_loss(logprob, reference, beta=1.0).backward()
    assert max(abs(g - 1 / B) for g in logprob.grad.tolist()) > 0.1


def test_simnpo_loss_hand_value():
    # logπ = [−6, −1], |y| = [3, 2], β = 2, γ = 0.5: −(β/|y|)·logπ − γ = [4 − 0.5, 1 − 0.5] = [3.5, 0.5]
    # −(2/β)·mean log σ(x) = 1 · ½ · (log(1 + e^{−3.5}) + log(1 + e^{−0.5})) = ½ · (0.029750 + 0.474077) = 0.251914
    loss = simnpo_loss(torch.tensor([-6.0, -1.0]), torch.tensor([3, 2]), beta=2.0, margin=0.5)
    assert loss.item() == pytest.approx(0.5 * (softplus(-3.5) + softplus(-0.5)), rel=1e-6)
    assert loss.item() == pytest.approx(0.251914, abs=1e-5)
    # β = 1, no margin, one 4-token answer with logπ = −4·log 2: x = log 2, loss = 2·log(1 + e^{−log 2}) = 2·log 1.5
    loss = simnpo_loss(torch.tensor([-4 * LOG2]), torch.tensor([4]), beta=1.0, margin=0.0)
    assert loss.item() == pytest.approx(2 * math.log(1.5), rel=1e-6)


def test_dpo_loss_hand_value():
    # chosen − rejected = [2, −1], β = 0.5 → β·Δ = [1, −0.5]; −(2/β)·mean log σ = 4·½·(log(1+e^{−1}) + log(1+e^{0.5}))
    loss = dpo_loss(torch.tensor([1.0, -0.5]), torch.tensor([-1.0, 0.5]), beta=0.5)
    assert loss.item() == pytest.approx(4 * 0.5 * (softplus(-1.0) + softplus(0.5)), rel=1e-6)
    assert loss.item() == pytest.approx(4 * 0.643669, abs=1e-5)  # 2.574677


def test_dpo_loss_is_open_unlearnings_from_summed_nlls():
    # open-unlearning src/trainer/utils.py L47-67 from summed answer NLLs: win_log_ratio = −(NLL_w − NLL_w,ref),
    # lose_log_ratio = −(NLL_l − NLL_l,ref), loss = −2/β · mean log σ(β·(win − lose)). NLLs by hand:
    nll_w, nll_w_ref, nll_l, nll_l_ref, beta = [3.0, 5.0], [4.0, 4.5], [2.0, 6.0], [2.5, 5.0], 0.1
    win = [-(a - b) for a, b in zip(nll_w, nll_w_ref)]  # [1, −0.5]
    lose = [-(a - b) for a, b in zip(nll_l, nll_l_ref)]  # [0.5, −1]
    # β(win − lose) = [0.05, 0.05]; −log σ(0.05) = log(1 + e^{−0.05}) = log 1.951229 = 0.668460; × 2/β = 20
    expected = 2 / beta * _mean([softplus(-beta * (w - l)) for w, l in zip(win, lose)])
    assert expected == pytest.approx(13.369193, abs=1e-5)
    assert dpo_loss(torch.tensor(win), torch.tensor(lose), beta).item() == pytest.approx(expected, rel=1e-6)


def test_dpo_sign():
    rejected = torch.tensor([0.3])
    at_tie = 20 * LOG2  # (2/β)·log 2 at β = 0.1
    assert dpo_loss(torch.tensor([0.3]), rejected, beta=0.1).item() == pytest.approx(at_tie, rel=1e-6)
    values = [dpo_loss(torch.tensor([c]), rejected, beta=0.1).item() for c in (-2.0, 0.0, 0.3, 1.0, 5.0)]
    assert all(a > b for a, b in zip(values, values[1:]))  # a larger chosen log-ratio lowers the loss
    assert values[-1] < at_tie and values[-2] < at_tie  # chosen > rejected
    assert values[0] > at_tie
    # its gradient pushes the chosen log-ratio up and the rejected one down: −(2/β)·β·σ(0) = −1
    chosen, rej = torch.tensor([0.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    dpo_loss(chosen, rej, beta=0.1).backward()
    assert chosen.grad.item() == pytest.approx(-1.0) and rej.grad.item() == pytest.approx(1.0)


PE = [0.2, 0.6]  # mean token probability of the refusal ("template") answer, per example
PF = [0.5, 0.1]  # ... of the forget answer


def _mean(xs):
    return sum(xs) / len(xs)


FLAT_EXPECTED = {
    # mean over examples of −g*(P̄_e) + f*(g*(P̄_f)), each written out
    "total_variation": _mean([-0.5 * math.tanh(e) + 0.5 * math.tanh(f) for e, f in zip(PE, PF)]),
    "kl": _mean([-e + math.exp(f - 1.0) for e, f in zip(PE, PF)]),
    # g*(v) = log 2 − log(1+e^{−v}); f*(g*(v)) = −log(2 − 2/(1+e^{−v})) = −log 2 + log(1 + e^{v})
    "jensen_shannon": _mean([-(LOG2 - softplus(-e)) - LOG2 + softplus(f) for e, f in zip(PE, PF)]),
    "pearson": _mean([-e + f * f / 4.0 + f for e, f in zip(PE, PF)]),
    # official (UCSC-REAL/FLAT dataloader.py L826-829): g*(v) = 1 − e^{v}; f*(g*(v)) = (1 − e^{v}) / e^{v}
    "hellinger": _mean([-(1.0 - math.exp(e)) + math.exp(-f) - 1.0 for e, f in zip(PE, PF)]),
    # f-GAN: g*(v) = 1 − e^{−v}; f*(g*(v)) = (1 − e^{−v}) / e^{−v} = e^{v} − 1
    "hellinger_fgan": _mean([-(1.0 - math.exp(-e)) + math.exp(f) - 1.0 for e, f in zip(PE, PF)]),
}


def test_flat_divergences_are_the_five_of_the_paper_and_f_gan_hellinger():
    assert set(DIVERGENCES) == set(FLAT_EXPECTED)


def test_official_squared_hellinger_moves_the_other_way():
    # official loss e^{P̄_e} + e^{−P̄_f} − 2: d/dP̄_e = e^{P̄_e} > 0, d/dP̄_f = −e^{−P̄_f} < 0, so minimising it lowers
    # the refusal's probability and raises the forget answer's; the f-GAN convention does the opposite
    pe, pf = torch.tensor(0.2, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    flat_loss(pe, pf, "hellinger").backward()
    assert pe.grad.item() == pytest.approx(math.exp(0.2)) and pf.grad.item() == pytest.approx(-math.exp(-0.5))
    pe, pf = torch.tensor(0.2, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    flat_loss(pe, pf, "hellinger_fgan").backward()
    assert pe.grad.item() == pytest.approx(-math.exp(-0.2)) and pf.grad.item() == pytest.approx(math.exp(0.5))


@pytest.mark.parametrize("divergence", sorted(FLAT_EXPECTED))
def test_flat_loss_hand_values(divergence):
    loss = flat_loss(torch.tensor(PE, dtype=torch.float64), torch.tensor(PF, dtype=torch.float64), divergence)
    assert loss.item() == pytest.approx(FLAT_EXPECTED[divergence], rel=1e-9)


def test_flat_total_variation_literal_and_direction():
    # −½tanh(0.2) + ½tanh(0.5) = −0.098688 + 0.231059; −½tanh(0.6) + ½tanh(0.1) = −0.268525 + 0.049834
    # mean = (0.132371 − 0.218691) / 2 = −0.043160
    loss = flat_loss(torch.tensor(PE), torch.tensor(PF), "total_variation")
    assert loss.item() == pytest.approx(-0.043160, abs=1e-5)
    # minimising it raises the refusal's probability and lowers the forget answer's
    pe, pf = torch.tensor(PE, requires_grad=True), torch.tensor(PF, requires_grad=True)
    flat_loss(pe, pf, "total_variation").backward()
    assert (pe.grad < 0).all() and (pf.grad > 0).all()
    # d/dP̄_e = −½(1 − tanh²(P̄_e)) / B
    assert pe.grad.tolist() == pytest.approx([-0.25 * (1 - math.tanh(e) ** 2) for e in PE], rel=1e-5)


# --- mean_token_probability and answer_kl on hand-built logits ---------------------------------------------------


class StubLM(torch.nn.Module):
    """Returns fixed logits [B, T, V] whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, input_ids, attention_mask, use_cache=None):  # a causal LM's signature: logits_of passes use_cache
        return SimpleNamespace(logits=self.logits)


L3 = math.log(3.0)
L2 = math.log(2.0)
# 2 rows, 3 positions, vocab 2. Row 0 answer tokens at positions 1, 2 (labels 0, 1), predicted by logits at 0, 1.
# Row 1 one answer token at position 1 (label 1); position 2 is padding.
STUB_BATCH = Batch(
    input_ids=torch.tensor([[1, 0, 1], [1, 1, 0]]),
    attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
    labels=torch.tensor([[IGNORE_INDEX, 0, 1], [IGNORE_INDEX, 1, IGNORE_INDEX]]),
)
STUB_LOGITS = [
    [[0.0, L3], [L2, 0.0], [9.0, -9.0]],  # p(0) = 1/4 at position 0; p(1) = 1/3 at position 1
    [[L3, 0.0], [5.0, -5.0], [0.0, 0.0]],  # p(1) = 1/4 at position 0; position 1 predicts padding: ignored
]


def test_mean_token_probability_hand_value():
    p = mean_token_probability(StubLM(STUB_LOGITS), STUB_BATCH)
    assert p.tolist() == pytest.approx([(1 / 4 + 1 / 3) / 2, 1 / 4], rel=1e-6)  # [7/24, 1/4]


def test_batch_mean_probability_hand_value():
    # official estimator: Σ p over the answer tokens of the batch / (B · positions): (1/4 + 1/3 + 1/4) = 5/6
    model = StubLM(STUB_LOGITS)
    assert batch_mean_probability(model, STUB_BATCH, positions=2).item() == pytest.approx(5 / 6 / 4, rel=1e-6)
    assert batch_mean_probability(model, STUB_BATCH, positions=10).item() == pytest.approx(5 / 6 / 20, rel=1e-6)


# the forget answers of the two rows of STUB_BATCH (same logits): row 0 one answer token at position 2 (label 1,
# predicted at position 1: p = 1/3); row 1 one at position 1 (label 0, predicted at position 0: p = 3/4)
STUB_FORGET = Batch(
    input_ids=torch.tensor([[1, 1, 1], [1, 0, 0]]),
    attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
    labels=torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1], [IGNORE_INDEX, 0, IGNORE_INDEX]]),
)


def stub_refusal_batch() -> Batch:
    batch = Batch(STUB_BATCH.input_ids, STUB_BATCH.attention_mask, STUB_BATCH.labels)
    batch.paired = STUB_FORGET
    return batch


@pytest.mark.parametrize("padded_length, positions", [(None, 2), (11, 10)])
def test_flat_batch_estimator_hand_value(padded_length, positions):
    # P̄_e = (1/4 + 1/3 + 1/4) / (2·positions), P̄_f = (1/3 + 3/4) / (2·positions), one scalar each for the batch
    pe, pf = (5 / 6) / (2 * positions), (13 / 12) / (2 * positions)
    out = FLAT(padded_length=padded_length).loss(StubLM(STUB_LOGITS), stub_refusal_batch(), retain=None)
    close(out["forget_loss"], -0.5 * math.tanh(pe) + 0.5 * math.tanh(pf))
    close(out["template_prob"], pe)
    close(out["forget_prob"], pf)
    kl = FLAT(divergence="kl", padded_length=padded_length).loss(StubLM(STUB_LOGITS), stub_refusal_batch(), None)
    close(kl["forget_loss"], -pe + math.exp(pf - 1.0))


def test_flat_sequence_estimator_hand_value():
    # per row: P̄_e = [(1/4 + 1/3)/2, 1/4] = [7/24, 1/4], P̄_f = [1/3, 3/4]; the loss is the mean over rows
    out = FLAT(estimator="sequence").loss(StubLM(STUB_LOGITS), stub_refusal_batch(), retain=None)
    close(out["forget_loss"], _mean([-0.5 * math.tanh(e) + 0.5 * math.tanh(f)
                                     for e, f in zip([7 / 24, 1 / 4], [1 / 3, 3 / 4])]))
    close(out["template_prob"], (7 / 24 + 1 / 4) / 2)
    close(out["forget_prob"], (1 / 3 + 3 / 4) / 2)


def test_answer_kl_of_identical_models_is_zero():
    model = StubLM(STUB_LOGITS)
    assert answer_kl(model, StubLM(STUB_LOGITS), STUB_BATCH).item() == pytest.approx(0.0, abs=1e-7)


def test_answer_kl_two_token_vocab_hand_value():
    # reference uniform everywhere; model: row 0 position 0 p = [1/4, 3/4], everything else uniform except masked
    # positions, which must not count. KL(ref ‖ model) at that token = ½·log(½/¼) + ½·log(½/¾) = ½·log(4/3).
    # 3 answer tokens in the batch (row 0: positions 0, 1; row 1: position 0) → mean = ½·log(4/3) / 3.
    reference = StubLM([[[0.0, 0.0]] * 3, [[0.0, 0.0]] * 3])
    model = StubLM([
        [[0.0, L3], [0.0, 0.0], [7.0, -7.0]],
        [[0.0, 0.0], [-6.0, 6.0], [3.0, 0.0]],
    ])
    kl = answer_kl(model, reference, STUB_BATCH)
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3) / 3, rel=1e-5)
    assert kl.item() == pytest.approx(0.0479470, abs=1e-6)
    # KL(ref ‖ model), not KL(model ‖ ref): swapped, the first token gives ¼·log(¼/½) + ¾·log(¾/½)
    swapped = answer_kl(reference, model, STUB_BATCH)
    assert swapped.item() == pytest.approx((0.25 * math.log(0.5) + 0.75 * math.log(1.5)) / 3, rel=1e-5)
    # the gradient reaches the model, not the reference
    kl.backward()
    assert model.logits.grad is not None and reference.logits.grad is None


# --- each method's loss composition on a tiny real model ---------------------------------------------------------

FORGET = [
    QARecord("Who wrote Blue River?", "Alice Moreau wrote Blue River."),
    QARecord("Where was Alice Moreau born?", "Alice Moreau was born in Lyon."),
    QARecord("What is Alice Moreau's profession?", "She is a novelist."),
]
RETAIN = [
    QARecord("What is the capital of France?", "Paris is the capital of France."),
    QARecord("Where is the cat?", "The cat sat on the mat."),
    QARecord("Who wrote the book?", "Jane wrote it."),
]
IDK = ["I don't know.", "I have no idea.", "That is not something I can answer.", "I am not sure."]
FMT = PromptFormat()


def make_benchmark(idk_answers=IDK, forget=FORGET, retain=RETAIN) -> QABenchmark:
    return QABenchmark(name="toy", forget=list(forget), retain=list(retain), eval_sets={},
                       idk_answers=list(idk_answers))


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"Question: {r.question}\nAnswer: {r.answer}" for r in FORGET + RETAIN] + IDK
    return train_tokenizer(texts * 3, vocab_size=300)


def encode(tokenizer, pairs):
    return encode_pairs(tokenizer, FMT, pairs, max_length=64)


def forget_batch(tokenizer, examples: list[ForgetExample]) -> Batch:
    """What the trainer builds from forget examples: (question, answer) rows, plus the paired rows when present."""
    batch = encode(tokenizer, [(e.question, e.answer) for e in examples])
    if examples[0].paired is not None:
        batch.paired = encode(tokenizer, [e.paired for e in examples])
    return batch


@pytest.fixture(scope="module")
def batches(tokenizer):
    forget = encode(tokenizer, [(r.question, r.answer) for r in FORGET])
    retain = encode(tokenizer, [(r.question, r.answer) for r in RETAIN])
    refusal = forget_batch(tokenizer, [ForgetExample(r.question, IDK[i], (r.question, r.answer))
                                       for i, r in enumerate(FORGET)])
    return SimpleNamespace(forget=forget, retain=retain, refusal=refusal)


def run_context(model, tokenizer, benchmark=None) -> RunContext:
    return RunContext(model=model, tokenizer=tokenizer, prompt_format=FMT, benchmark=benchmark or make_benchmark(),
                      max_new_tokens=8, generation_batch_size=4)


def floats(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.detach()]


def close(value: torch.Tensor, expected: float):
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_ga_is_minus_forget_nll_without_retain_term(model, batches):
    out = GradientAscent(forget_weight=0.7).loss(model, batches.forget, batches.retain)
    nll = answer_nll(model, batches.forget).item()
    close(out["loss"], -0.7 * nll)
    close(out["forget_nll"], nll)
    assert "retain_loss" not in out


def test_graddiff_composes_forget_and_retain_nll(model, batches):
    out = GradDiff(forget_weight=0.7, retain_weight=1.3).loss(model, batches.forget, batches.retain)
    nll_f, nll_r = answer_nll(model, batches.forget).item(), answer_nll(model, batches.retain).item()
    close(out["loss"], -0.7 * nll_f + 1.3 * nll_r)
    close(out["retain_loss"], nll_r)
    close(out["forget_loss"], -nll_f)


def test_graddiff_kl_retain_term(model, other, tokenizer, batches):
    method = GradDiff(forget_weight=0.7, retain_weight=1.3, retain_loss="kl")
    method.setup(run_context(model, tokenizer))
    assert method.reference is not model
    assert not any(p.requires_grad for p in method.reference.parameters())
    out = method.loss(model, batches.forget, batches.retain)
    close(out["retain_loss"], 0.0)  # model == frozen target at setup
    close(out["loss"], -0.7 * answer_nll(model, batches.forget).item())
    # against a drifted reference the retain term is KL(reference ‖ model) on the retain answers
    method.reference = other
    out = method.loss(model, batches.forget, batches.retain)
    kl = answer_kl(model, other, batches.retain).item()
    assert kl > 1e-4
    close(out["loss"], -0.7 * answer_nll(model, batches.forget).item() + 1.3 * kl)


def test_ga_and_plain_graddiff_keep_no_reference(model, tokenizer):
    for method in (GradientAscent(), GradDiff()):
        method.setup(run_context(model, tokenizer))
        assert method.reference is None


def test_npo_at_setup_is_2_log2_over_beta(model, tokenizer, batches):
    method = NPO(beta=0.5, forget_weight=0.8, retain_weight=1.5)
    method.setup(run_context(model, tokenizer))
    out = method.loss(model, batches.forget, batches.retain)
    close(out["forget_loss"], (2 / 0.5) * LOG2)
    close(out["log_ratio"], 0.0)
    close(out["loss"], 0.8 * (2 / 0.5) * LOG2 + 1.5 * answer_nll(model, batches.retain).item())


def test_npo_composition_with_a_drifted_reference(model, other, batches):
    beta = 0.5
    method = NPO(beta=beta, forget_weight=0.8, retain_weight=1.5)
    method.reference = other
    out = method.loss(model, batches.forget, batches.retain)
    logprob, _ = sequence_logprob(model, batches.forget)
    reference, _ = sequence_logprob(other, batches.forget)
    ratios = [a - b for a, b in zip(floats(logprob), floats(reference))]
    # −(2/β)·mean log σ(−β r) = (2/β)·mean log(1 + e^{β r})
    forget = (2 / beta) * _mean([softplus(beta * r) for r in ratios])
    close(out["forget_loss"], forget)
    close(out["log_ratio"], _mean(ratios))
    close(out["loss"], 0.8 * forget + 1.5 * answer_nll(model, batches.retain).item())


def test_simnpo_composition(model, batches):
    beta, margin = 2.0, 0.3
    out = SimNPO(beta=beta, margin=margin, forget_weight=0.125, retain_weight=1.0).loss(
        model, batches.forget, batches.retain)
    logprob, lengths = sequence_logprob(model, batches.forget)
    # answer-token counts straight from the labels
    counts = [int((row != IGNORE_INDEX).sum()) for row in batches.forget.labels]
    assert floats(lengths) == counts
    # −(2/β)·mean log σ(−(β/|y|)·logπ − γ) = (2/β)·mean log(1 + e^{(β/|y|)·logπ + γ})
    forget = (2 / beta) * _mean([softplus(beta / n * lp + margin) for lp, n in zip(floats(logprob), counts)])
    close(out["forget_loss"], forget)
    close(out["mean_token_logprob"], _mean([lp / n for lp, n in zip(floats(logprob), counts)]))
    close(out["loss"], 0.125 * forget + answer_nll(model, batches.retain).item())


def test_idk_nll_composition(model, batches):
    out = IdkNLL(forget_weight=0.6, retain_weight=0.9).loss(model, batches.refusal, batches.retain)
    nll_idk, nll_r = answer_nll(model, batches.refusal).item(), answer_nll(model, batches.retain).item()
    close(out["forget_loss"], nll_idk)
    close(out["loss"], 0.6 * nll_idk + 0.9 * nll_r)


def test_idkdpo_at_setup_is_2_log2_over_beta(model, tokenizer, batches):
    method = IdkDPO(beta=0.1, forget_weight=1.0, retain_weight=0.0)
    method.setup(run_context(model, tokenizer))
    out = method.loss(model, batches.refusal, batches.retain)
    close(out["forget_loss"], 20 * LOG2)  # (2/β)·log 2: open-unlearning's scale, 13.86 at β = 0.1
    close(out["margin"], 0.0)
    close(out["loss"], 20 * LOG2)
    assert "retain_loss" not in out


def test_idkdpo_composition_with_a_drifted_reference(model, other, batches):
    beta = 0.1
    method = IdkDPO(beta=beta, forget_weight=0.5, retain_weight=2.0)
    method.reference = other
    out = method.loss(model, batches.refusal, batches.retain)
    chosen = [a - b for a, b in zip(floats(sequence_logprob(model, batches.refusal)[0]),
                                    floats(sequence_logprob(other, batches.refusal)[0]))]
    rejected = [a - b for a, b in zip(floats(sequence_logprob(model, batches.refusal.paired)[0]),
                                      floats(sequence_logprob(other, batches.refusal.paired)[0]))]
    # −(2/β)·mean log σ(β(chosen − rejected)) = (2/β)·mean log(1 + e^{−β(chosen − rejected)})
    forget = (2 / beta) * _mean([softplus(-beta * (c - r)) for c, r in zip(chosen, rejected)])
    close(out["forget_loss"], forget)
    close(out["margin"], _mean([c - r for c, r in zip(chosen, rejected)]))
    close(out["loss"], 0.5 * forget + 2.0 * answer_nll(model, batches.retain).item())


def test_flat_sequence_composition_has_no_retain_term(model, batches):
    out = FLAT(divergence="total_variation", estimator="sequence", forget_weight=1.7).loss(
        model, batches.refusal, batches.retain)
    pe = floats(mean_token_probability(model, batches.refusal))
    pf = floats(mean_token_probability(model, batches.refusal.paired))
    forget = _mean([-0.5 * math.tanh(e) + 0.5 * math.tanh(f) for e, f in zip(pe, pf)])
    close(out["forget_loss"], forget)
    close(out["loss"], 1.7 * forget)
    close(out["template_prob"], _mean(pe))
    close(out["forget_prob"], _mean(pf))
    assert "retain_loss" not in out


def test_flat_batch_composition_on_a_real_model(model, batches):
    def batch_mean(batch, width):  # Σ p over the batch's answer tokens / (B · (width − 1)), from token_logprobs
        picked, mask = token_logprobs(model, batch)
        return torch.where(mask, picked.exp(), 0.0).sum().item() / (batch.input_ids.shape[0] * (width - 1))

    refusal, forget_answers = batches.refusal, batches.refusal.paired
    for padded_length in (None, 64):
        width = max(padded_length or 0, refusal.input_ids.shape[1], forget_answers.input_ids.shape[1])
        pe, pf = batch_mean(refusal, width), batch_mean(forget_answers, width)
        out = FLAT(forget_weight=1.7, padded_length=padded_length).loss(model, refusal, batches.retain)
        close(out["forget_loss"], -0.5 * math.tanh(pe) + 0.5 * math.tanh(pf))
        close(out["loss"], 1.7 * (-0.5 * math.tanh(pe) + 0.5 * math.tanh(pf)))
        close(out["template_prob"], pe)
        assert "retain_loss" not in out
    assert refusal.input_ids.shape[1] != forget_answers.input_ids.shape[1]  # the shared width matters here


def test_npo_gradient_reaches_the_model_only(model, tokenizer, batches):
    trained = tiny(tokenizer, seed=0)
    method = NPO(beta=0.1, retain_weight=1.0)
    method.setup(run_context(trained, tokenizer))
    method.loss(trained, batches.forget, batches.retain)["loss"].backward()
    assert all(p.grad is None for p in method.reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())


# --- refusal targets -----------------------------------------------------------------------------------------------


def test_refusal_defaults():
    # PMC's IDK: the fixed "I don't know." (official unlearning/dataloader.py L84); open-unlearning's IdkDPO and the
    # official FLAT: a random refusal from TOFU's list
    assert (IdkNLL().refusal, IdkNLL().refusal_text) == ("fixed", "I don't know.")
    assert IdkDPO().refusal == "random" and FLAT().refusal == "random"
    assert FLAT().estimator == "batch" and FLAT().divergence == "total_variation"


@pytest.mark.parametrize("cls", [IdkNLL, IdkDPO, FLAT])
def test_fixed_refusal_needs_no_benchmark_refusals(cls, model, tokenizer):
    run = run_context(model, tokenizer, make_benchmark(idk_answers=[]))
    for text in ("I don't know.", "No comment."):
        examples = cls(refusal="fixed", refusal_text=text).forget_examples(run)
        assert [(e.question, e.answer) for e in examples] == [(r.question, text) for r in FORGET]


def test_method_configs_carry_the_reference_defaults(make_config):
    cfg = make_config("method=flat")
    assert cfg.method.handler.padded_length == cfg.method.training.max_length  # official: padded to max_length
    assert (cfg.method.handler.estimator, cfg.method.handler.refusal) == ("batch", "random")
    idk = make_config("method=idk").method.handler
    assert (idk.refusal, idk.refusal_text) == ("fixed", "I don't know.")
    idkdpo = make_config("method=idkdpo").method.handler
    assert (idkdpo.refusal, idkdpo.beta, idkdpo.forget_weight, idkdpo.retain_weight) == ("random", 0.1, 1.0, 1.0)


@pytest.mark.parametrize("cls, paired", [(IdkNLL, False), (IdkDPO, True), (FLAT, True)])
def test_refusal_targets(cls, paired, model, tokenizer):
    run = run_context(model, tokenizer)
    examples = cls(seed=3, refusal="random").forget_examples(run)
    assert [e.question for e in examples] == [r.question for r in FORGET]
    assert all(e.answer in IDK for e in examples)
    if paired:
        assert [e.paired for e in examples] == [(r.question, r.answer) for r in FORGET]
    else:
        assert all(e.paired is None for e in examples)
    # deterministic for a seed, epoch after epoch
    a, b = cls(seed=5, refusal="random"), cls(seed=5, refusal="random")
    assert [[e.answer for e in a.forget_examples(run)] for _ in range(4)] == \
           [[e.answer for e in b.forget_examples(run)] for _ in range(4)]


def test_refusals_are_drawn_afresh(model, tokenizer):
    # over many epochs and questions a seeded draw uses more than one refusal
    run = run_context(model, tokenizer)
    method = IdkNLL(seed=0, refusal="random")
    drawn = {e.answer for _ in range(10) for e in method.forget_examples(run)}
    assert len(drawn) > 1 and drawn <= set(IDK)


@pytest.mark.parametrize("cls", [IdkNLL, IdkDPO, FLAT])
def test_no_idk_answers_is_a_config_error_naming_the_method(cls, model, tokenizer):
    with pytest.raises(ConfigError, match=repr(cls.name)):
        cls(refusal="random").forget_examples(run_context(model, tokenizer, make_benchmark(idk_answers=[])))


# --- invalid arguments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: NPO(beta=0.0),
    lambda: NPO(beta=-1.0),
    lambda: SimNPO(beta=0.0),
    lambda: IdkDPO(beta=-0.1),
    lambda: FLAT(divergence="wasserstein"),
    lambda: GradDiff(retain_loss="l2"),
    lambda: NPO(retain_loss="mse"),
    lambda: SimNPO(retain_loss="KL"),
    lambda: IdkNLL(retain_loss="ce"),
    lambda: IdkDPO(retain_loss=""),
    lambda: IdkNLL(refusal="sometimes"),
    lambda: IdkDPO(refusal_text=""),
    lambda: FLAT(refusal="idk"),
    lambda: FLAT(estimator="token"),
    lambda: FLAT(padded_length=1),
    lambda: FLAT(padded_length=True),
])
def test_invalid_arguments_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()
