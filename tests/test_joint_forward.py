"""training.joint_forward: a micro-batch's forget and retain rows in one forward pass (pmc.core.losses.one_forward).
Checked against separate forwards on a tiny Llama: the same logits at every real token, the same loss and gradient
to float rounding, one model call where there were two, and whole runs that log the same losses."""

from __future__ import annotations

import json

import pytest
import torch

from baselines.graddiff import GradDiff
from pmc.core import losses
from pmc.core.batches import encode_pairs
from pmc.core.losses import answer_nll, logits_of, one_forward
from pmc.core.models import train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.experiment import run_experiment

FORGET = [("Who wrote the book?", "Jane wrote it."), ("Where?", "In the old house by the sea, long ago.")]
RETAIN = [("What is the cat?", "A cat sat on the mat near the door, then another one came along, and a third.")] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([f"{q} {a}" for q, a in FORGET + RETAIN] + ["Question: \nAnswer:"], vocab_size=200)


def batches(tokenizer):
    """A forget batch of 2 rows and a retain batch of 3 longer rows: different widths, both right-padded."""
    encode = lambda pairs: encode_pairs(tokenizer, PromptFormat(), pairs, max_length=128)  # noqa: E731
    forget, retain = encode(FORGET), encode(RETAIN)
    assert forget.input_ids.shape[1] < retain.input_ids.shape[1]
    return forget, retain


def counting_calls(model) -> list:
    calls = []
    model.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    return calls


def test_each_batch_gets_its_logits_from_one_pass(model, tokenizer):
    forget, retain = batches(tokenizer)
    with torch.no_grad():
        expected = [logits_of(model, b.input_ids, b.attention_mask) for b in (forget, retain)]
    calls = counting_calls(model)
    with one_forward(model, [forget, None, retain]):
        joint = [logits_of(model, b.input_ids, b.attention_mask) for b in (forget, retain, forget)]
    assert calls == [(5, retain.input_ids.shape[1])]  # one call: 2 + 3 rows at the wider batch's width
    for got, want, batch in zip(joint, expected + expected[:1], (forget, retain, forget)):
        assert got.shape == want.shape
        real = batch.attention_mask.bool()  # pad positions of a row are masked keys either way; its real tokens:
        torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)


def test_other_batches_and_forwards_without_gradients_run_on_their_own(model, tokenizer, other):
    """Only the named batches, through the named model, with gradients on are served from the shared pass: a
    reference model's forward or a no-grad forward of the same batch (a frozen comparison) runs as before."""
    forget, retain = batches(tokenizer)
    calls, other_calls = counting_calls(model), counting_calls(other)
    with one_forward(model, [forget, retain]):
        with torch.no_grad():
            logits_of(model, forget.input_ids, forget.attention_mask)
        logits_of(other, forget.input_ids, forget.attention_mask)
        logits_of(model, forget.input_ids.clone(), forget.attention_mask)  # equal, but not the batch named
    assert [shape[0] for shape in calls] == [2, 2] and len(other_calls) == 1
    with one_forward(model, [forget, None]):  # one batch: nothing to join
        logits_of(model, forget.input_ids, forget.attention_mask)
    assert [shape[0] for shape in calls] == [2, 2, 2]


def test_graddiffs_loss_and_gradient_are_those_of_separate_forwards(model, tokenizer):
    """−NLL(forget) + NLL(retain), the retain term on rows wider than the forget rows: the sum and its gradient
    through one pass equal those through two, to float rounding."""
    forget, retain = batches(tokenizer)
    method = GradDiff(retain_weight=1.0)

    def loss_and_gradient(joined: bool):
        model.zero_grad()
        with one_forward(model, [forget, retain] if joined else []):
            terms = method.loss(model, forget, retain)
        terms["loss"].backward()
        return terms, [p.grad.clone() for p in model.parameters()]

    (separate, separate_grads), (joint, joint_grads) = loss_and_gradient(False), loss_and_gradient(True)
    assert separate["forget_nll"].item() == pytest.approx(answer_nll(model, forget).item(), rel=1e-6)
    for name in ("loss", "forget_nll", "retain_loss"):
        assert joint[name].item() == pytest.approx(separate[name].item(), rel=1e-5), name
    for got, want in zip(joint_grads, separate_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["graddiff", "pmc"])
def test_a_run_with_joint_forwards_logs_the_losses_of_separate_ones(make_config, tmp_path, monkeypatch, method):
    """Through the real trainer: each micro-batch is one model call of its forget and retain rows instead of two,
    and the logged losses follow those of a run with separate forwards (float rounding grows over the steps, so the
    first epoch is compared closely)."""
    forward, rows = losses._forward, []
    monkeypatch.setattr(losses, "_forward", lambda model, ids, mask: rows.append(ids.shape[0]) or forward(model, ids,
                                                                                                          mask))
    logs, calls = {}, {}
    for joint in (False, True):
        run_dir = tmp_path / str(joint)
        run_dir.mkdir()
        rows.clear()
        run_experiment(make_config(f"method={method}", "method.training.epochs=2", "eval=[paper]", "eval_cache=false",
                                   f"method.training.joint_forward={str(joint).lower()}"), run_dir)
        logs[joint] = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        calls[joint] = list(rows)
    # the separate run may build stage 0 first (its calls come first); then both runs make only unlearning's calls
    # (the paper suite decodes, it runs no logits_of): a forget and a retain call per micro-batch, or one of both
    n = len(calls[True])
    separate = calls[False][-2 * n:]
    assert n and calls[True] == [f + r for f, r in zip(separate[::2], separate[1::2])], (calls[True], separate)
    first_epoch = [(s, j) for s, j in zip(logs[False], logs[True]) if s["epoch"] == 1]
    assert first_epoch and len(logs[True]) == len(logs[False])
    for separate, joint in first_epoch:
        assert joint["loss"] == pytest.approx(separate["loss"], rel=1e-3, abs=1e-4), separate["step"]
        assert joint["retain_loss"] == pytest.approx(separate["retain_loss"], rel=1e-3, abs=1e-4)
