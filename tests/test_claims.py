"""scripts/claims.py on hand-built sweep directories: every verdict follows from numbers chosen here by hand.

The fake jobs have what a real job leaves (.hydra/overrides.yaml, results.json, eval/<model>/<suite>.json,
train_log.jsonl) with only the keys the claims read. References: target 30 / 80 and retain 90 / 82 (unlearn quality /
utility), so C1's bars are unlearn quality >= 30 + 0.5 * 60 = 60 and utility >= 0.9 * 80 = 72. The attack has 20
questions with 6 options: chance 1/6, success above 1/6 + 2 * sqrt(1/6 * 5/6 / 20) = 1/3.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR, REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pmc.reporting import claims

sys.path.insert(0, str(REPO / "scripts"))
import claims as claims_cli  # noqa: E402  (the command line; the logic is pmc.reporting.claims)

TARGET = {"paper": (30.0, 80.0), "tofu": (0.01, 0.60)}
RETAIN = {"paper": (90.0, 82.0), "tofu": (1.0, 0.61)}
QUESTIONS = 20
TARGET_QUALITY = (0.0, 0.9, 2.0)  # empty rate, distinct ratio, fluency NLL
FLUENT = (0.05, 0.88, 2.4)


def analyses(name: str, shift: float = 0.0, rate: float = 0.1, quality=FLUENT) -> dict:
    empty, distinct, fluency = quality
    return {"summary": {"collateral_mean_shift_all": shift, "collateral_mean_shift_forget_tokens": 1.5 * shift,
                        "least_likely_attack_rate": rate, "least_likely_chance": 1 / 6, "empty_rate": empty,
                        "distinct_ratio": distinct, "fluency_nll": fluency, "answer_length": 12.0},
            "examples": {"least_likely": [{"options": ["a"] * 6}] * QUESTIONS,
                         "example_answers": [{"question": f"Who wrote book {i}?", "answer": f"Author {i}.",
                                              "greedy": f"{name} says {i}"} for i in range(5)]}}


def pmc_log(selected: list[list[float]], retain: list[list[float]]) -> list[dict]:
    """One row per step: selected[e][s] and retain[e][s] are epoch e+1's values at its step s."""
    rows, step = [], 0
    for epoch, (scores, losses) in enumerate(zip(selected, retain), start=1):
        for score, loss in zip(scores, losses):
            step += 1
            rows.append({"step": step, "epoch": epoch, "lr": 1e-4, "loss": 1.0 + loss, "collapse_loss": 1.0,
                         "retain_loss": loss, "selected_score": score})
    return rows


# selected score 0.6 at the start, 0.2 at the end of epoch 3 (<= 0.5 * 0.6); retain loss per epoch 1.1, 2.1, 1.6,
# 1.3, 1.2: the last (1.2) <= 1.1 + 0.5 * (2.1 - 1.1) = 1.6
COLLAPSING = pmc_log([[0.6, 0.5], [0.4, 0.3], [0.2, 0.2], [0.1, 0.1], [0.05, 0.05]],
                     [[1.0, 1.2], [2.0, 2.2], [1.6, 1.6], [1.3, 1.3], [1.2, 1.2]])
# selected score 0.6 -> 0.5 at the end of epoch 3 (> 0.3); retain loss 1.1 -> peak 2.1 (epochs 2 and 3; the first
# counts) -> 2.0 (> 1.6)
STUCK = pmc_log([[0.6, 0.6], [0.55, 0.55], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],
                [[1.0, 1.2], [2.0, 2.2], [2.1, 2.1], [2.0, 2.0], [2.0, 2.0]])


def config(lr: float, seed: int = 0, **handler) -> dict:
    return {"model": {"name": "smollm2_135m"}, "benchmark": {"forget_split": "forget01", "num_authors": 5},
            "generation": {"max_new_tokens": 64}, "stage0": {"target_path": None},
            "method": {"handler": {"num_samples": 5, "temperature": 1.25, "seed": seed, **handler},
                       "training": {"epochs": 10, "learning_rate": lr, "batch_size": 8}}}


def write_job(job, method, overrides, paper, seed=0, cfg=None, tofu=None, suites=None, train_log=None):
    """A job directory; `suites` = {suite: {model: file}} for eval/<model>/<suite>.json."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides + [f"seed={seed}"]))
    metrics = {}
    for model, values in (("unlearned", {"paper": paper, "tofu": tofu}), ("target", TARGET), ("retain", RETAIN)):
        metrics[model] = {"paper": dict(zip(("unlearn_quality", "utility"), values["paper"]))}
        if values["tofu"] is not None:
            metrics[model]["tofu"] = dict(zip(("forget_quality", "model_utility"), values["tofu"]))
    (job / "results.json").write_text(json.dumps({
        "config": cfg or config(3e-5, seed), "seed": seed, "benchmark": "tofu_forget01_authors5", "method": method,
        "metrics": metrics, "stage0": {"checkpoints": {"target": "cache/target", "retain": "cache/retain"}}}))
    for suite, files in (suites or {}).items():
        for model, content in files.items():
            (job / "eval" / model).mkdir(parents=True, exist_ok=True)
            (job / "eval" / model / f"{suite}.json").write_text(json.dumps(content))
    if train_log is not None:
        (job / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in train_log))


# method, learning rate, (unlearn quality, utility), collateral shift, attack rate, response quality
MAIN = [
    ("pmc", 3e-5, (70.0, 79.0), 0.5, 0.5, (0.5, 0.3, 6.0)),  # not the best PMC setting: its numbers must not count
    ("pmc", 1e-4, (80.0, 76.0), -0.1, 0.15, FLUENT),
    ("npo", 3e-5, (50.0, 79.0), 0.3, 0.1, FLUENT),  # not NPO's best setting either
    ("npo", 1e-4, (85.0, 40.0), -0.8, 0.6, (0.0, 0.5, 2.5)),  # repeated words
    ("graddiff", 3e-5, (45.0, 80.0), 0.0, 0.1, FLUENT),
    ("graddiff", 1e-4, (95.0, 10.0), -2.0, 0.5, (0.1, 0.8, 3.5)),  # gibberish
    ("ga", 3e-5, (99.0, 5.0), -3.0, 0.2, (0.6, 0.9, 2.0)),  # empty; the attack fails (0.2 < 1/3)
    ("simnpo", 3e-5, (60.0, 78.0), -0.3, 0.45, (0.05, 0.85, 2.3)),  # fluent; the attack succeeds
    ("idk", 3e-5, (75.0, 70.0), 0.0, 0.1, FLUENT),
]


def main_sweep(root, rows=MAIN, with_analyses=True, with_logs=True, pmc_log_rows=COLLAPSING):
    """Two sweep directories as the mini paper leaves them: the fronts (learning rate varies) and the rest."""
    fronts, single = root / "fronts", root / "single"
    numbers = {fronts: 0, single: 0}
    target = analyses("target", 0.0, 0.05, TARGET_QUALITY)
    for method, lr, paper, shift, rate, quality in rows:
        front = method in ("pmc", "npo", "graddiff")
        sweep = fronts if front else single
        overrides = ([f"experiment=mini_paper_smollm2{'_fronts' if front else ''}", f"method={method}"]
                     + ([f"method.training.learning_rate={lr:g}"] if front else []))
        suites = {"analyses": {"unlearned": analyses(method, shift, rate, quality), "target": target,
                               "retain": analyses("retain", -1.0, 1 / 6, TARGET_QUALITY)}} if with_analyses else {}
        write_job(sweep / str(numbers[sweep]), method, overrides, paper, cfg=config(lr), tofu=(0.5, 0.6),
                  suites=suites, train_log=pmc_log_rows if method == "pmc" and with_logs else None)
        numbers[sweep] += 1
    return [fronts, single]


def verdicts(dirs, ablations=None) -> dict[str, claims.Claim]:
    sweeps = claims.Sweeps(dirs)
    return {c.id: c for c in claims.evaluate(sweeps, ablations or {})}


def test_every_claim_holds_on_the_hand_built_mini_paper(tmp_path):
    found = verdicts(main_sweep(tmp_path))
    for claim_id in ("C1", "C2", "C3", "C5", "C6"):
        assert found[claim_id].verdict == "holds", (claim_id, found[claim_id].measured)
    # C1: both PMC settings meet the bars (>= 60 and >= 72) and no baseline is >= on both with one >
    assert any("pmc (learning_rate=0.0001): 80.00 / 76.00, meets both bars; no baseline dominates it" in m
               for m in found["C1"].measured)
    # C2 and C3 use each method's setting with the highest unlearn quality: NPO -0.8, PMC -0.1 (|-0.1| <= 0.2)
    assert "npo (learning_rate=0.0001): -0.800 nats/token (forget-answer tokens -1.200)" in found["C2"].measured
    assert "near zero: |shift| ≤ 0.200" in found["C2"].measured
    assert "chance 0.167, 20 questions, success above 0.333; target 0.050" in found["C3"].measured
    assert "attack succeeds: 3 of 4 GA-family methods (npo, graddiff, simnpo); PMC: no" in found["C3"].measured
    assert "degenerate: 3 of 4 GA-family methods (npo, graddiff, ga); PMC: no" in found["C6"].measured
    assert any(m.startswith("ga: empty 0.60") and m.endswith("(empty)") for m in found["C6"].measured)
    assert any(m.startswith("npo (learning_rate=0.0001)") and m.endswith("(repeated)") for m in found["C6"].measured)
    assert any(m.startswith("graddiff (learning_rate=0.0001)") and m.endswith("(gibberish)")
               for m in found["C6"].measured)
    # C5 from the hand-written log, for both PMC runs
    assert found["C5"].measured[0].startswith("pmc (learning_rate=3e-05) seed 0: selected 0.600 → 0.200 (epoch 3) → "
                                              "0.050 (epoch 5), drops; retain loss 1.100 → peak 2.100 (epoch 2) → "
                                              "1.200, recovers")
    # ablations not given: not testable, naming the config that would test them
    assert found["C4 samples"].verdict.startswith("not testable: not run (conf/experiment/ablation_samples_smollm2")
    assert found["C4 retain_weight"].verdict == ("not testable: not run (conf/experiment/ablation_smollm2.yaml "
                                                 "(SmolLM2, the ablated key on the command line) or "
                                                 "ablation_retain_weight.yaml; then --ablation retain_weight=DIR)")


def test_a_dominating_baseline_breaks_c1_and_is_named(tmp_path):
    # IdkDPO at 82 / 79 is >= PMC's 70 / 79 (and > in unlearn quality) and >= 80 / 76 on both
    rows = MAIN + [("idkdpo", 3e-5, (82.0, 79.0), 0.0, 0.1, FLUENT)]
    found = verdicts(main_sweep(tmp_path, rows))
    assert found["C1"].verdict == "does not hold"
    assert "pmc (learning_rate=3e-05): 70.00 / 79.00, meets both bars; dominated by idkdpo (82.00 / 79.00)" \
        in found["C1"].measured
    assert "pmc (learning_rate=0.0001): 80.00 / 76.00, meets both bars; dominated by idkdpo (82.00 / 79.00)" \
        in found["C1"].measured
    assert "| idkdpo | 1 | 82.00 | 79.00 |" in found["C1"].details


def test_c1_fails_when_no_pmc_setting_clears_the_bars(tmp_path):
    # undominated, but utility 70 < 72 and unlearn quality 55 < 60
    rows = [("pmc", 1e-4, (55.0, 81.0), 0.0, 0.1, FLUENT), ("pmc", 3e-5, (90.0, 70.0), 0.0, 0.1, FLUENT),
            ("ga", 3e-5, (99.0, 5.0), -3.0, 0.2, FLUENT)]
    found = verdicts(main_sweep(tmp_path, rows))
    assert found["C1"].verdict == "does not hold"
    assert "pmc (learning_rate=3e-05): 90.00 / 70.00, misses a bar; no baseline dominates it" in found["C1"].measured


def replace(rows, method, lr, **changes):
    """MAIN with one row's shift / rate / quality changed."""
    names = ("shift", "rate", "quality")
    out = []
    for row in rows:
        if row[:2] == (method, lr):
            values = dict(zip(names, row[3:]), **changes)
            row = row[:3] + tuple(values[n] for n in names)
        out.append(row)
    return out


def test_c2_fails_when_pmc_shifts_as_much_as_npo(tmp_path):
    found = verdicts(main_sweep(tmp_path, replace(MAIN, "pmc", 1e-4, shift=-0.5)))  # |-0.5| > 0.25 * 0.8
    assert found["C2"].verdict == "does not hold"


def test_c2_fails_when_npo_shifts_upwards(tmp_path):
    found = verdicts(main_sweep(tmp_path, replace(MAIN, "npo", 1e-4, shift=0.4)))
    assert found["C2"].verdict == "does not hold"


def test_c3_fails_when_the_attack_recovers_the_answer_after_pmc(tmp_path):
    found = verdicts(main_sweep(tmp_path, replace(MAIN, "pmc", 1e-4, rate=0.5)))  # 0.5 > 1/3 and > 0.05
    assert found["C3"].verdict == "does not hold"
    assert "attack succeeds: 3 of 4 GA-family methods (npo, graddiff, simnpo); PMC: succeeds" in found["C3"].measured


def test_c3_fails_when_the_attack_fails_on_most_of_the_ga_family(tmp_path):
    rows = replace(replace(MAIN, "npo", 1e-4, rate=0.3), "graddiff", 1e-4, rate=0.3)  # 0.3 < 1/3
    found = verdicts(main_sweep(tmp_path, rows))
    assert found["C3"].verdict == "does not hold"
    assert "attack succeeds: 1 of 4 GA-family methods (simnpo); PMC: no" in found["C3"].measured


def test_c6_fails_when_pmc_answers_are_empty(tmp_path):
    found = verdicts(main_sweep(tmp_path, replace(MAIN, "pmc", 1e-4, quality=(0.5, 0.9, 2.0))))
    assert found["C6"].verdict == "does not hold"
    assert "degenerate: 3 of 4 GA-family methods (npo, graddiff, ga); PMC: degenerates" in found["C6"].measured


def test_c6_details_show_two_example_answers_per_model(tmp_path):
    found = verdicts(main_sweep(tmp_path))
    details = found["C6"].details
    assert details.count("**Q") == 2 and "**Q1. Who wrote book 0?** True answer: Author 0." in details
    for row in ("| target | target says 0 |", "| pmc (learning_rate=0.0001) | pmc says 0 |", "| ga | ga says 1 |"):
        assert row in details


def test_c5_fails_when_the_selected_score_stays_high(tmp_path):
    found = verdicts(main_sweep(tmp_path, pmc_log_rows=STUCK))
    assert found["C5"].verdict == "does not hold"
    assert found["C5"].measured[0].endswith("selected 0.600 → 0.500 (epoch 3) → 0.500 (epoch 5), does not drop "
                                            "enough; retain loss 1.100 → peak 2.100 (epoch 2) → 2.000, does not "
                                            "recover")


def test_missing_suites_and_logs_are_not_testable(tmp_path):
    found = verdicts(main_sweep(tmp_path, with_analyses=False, with_logs=False))
    assert found["C1"].verdict == "holds"  # the paper suite is there
    for claim_id in ("C2", "C3", "C6"):
        assert found[claim_id].verdict.startswith("not testable: no eval/unlearned/analyses.json"), claim_id
        assert "run with eval=[...,analyses]" in found[claim_id].verdict
    assert found["C5"].verdict == "not testable: no PMC train log with epoch, selected_score and retain_loss"
    assert "pmc (learning_rate=3e-05) seed 0: no train_log.jsonl" in found["C5"].measured


def test_without_pmc_every_pmc_claim_is_not_testable(tmp_path):
    found = verdicts(main_sweep(tmp_path, [r for r in MAIN if r[0] != "pmc"]))
    assert found["C1"].verdict == "not testable: no PMC run with paper metrics"
    assert found["C2"].verdict == "not testable: no pmc run"
    assert found["C5"].verdict == "not testable: no PMC run"


def ablation_job(job, value_key, value, paper, seed=0, lr=3e-5):
    cfg = config(lr, seed)
    section, key = value_key.split(".")[1:]
    cfg["method"][section][key] = value
    write_job(job, "pmc", ["experiment=ablation", "method=pmc", f"method.{section}.{key}={value}"], paper, seed, cfg)


def test_samples_ablation_pairs_jobs_across_sweeps_by_config(tmp_path):
    dirs = main_sweep(tmp_path / "main")  # PMC n=5 at 3e-5: 70 / 79, at 1e-4: 80 / 76
    ablation = tmp_path / "ablation_samples"
    ablation_job(ablation / "0", "method.handler.num_samples", 1, (40.0, 79.5))  # n=1 at 3e-5
    found = verdicts(dirs, {"samples": [ablation, dirs[0]]})
    assert found["C4 samples"].verdict == "holds"  # 70 > 40 + 1; the 1e-4 job has no n=1 partner: no line
    assert found["C4 samples"].measured == ["num_samples=1: 40.00 / 79.50, num_samples=5: 70.00 / 79.00 (unlearn "
                                            "quality / utility): holds"]

    alone = verdicts(dirs, {"samples": [ablation]})  # n=1 only
    assert alone["C4 samples"].verdict == ("not testable: no two PMC jobs that differ only in "
                                           "method.handler.num_samples")


def test_an_ablation_pairs_with_an_older_job_that_lacks_the_options_added_since(tmp_path):
    # the main sweep is written without group_by_length, compile, fused_optimizer, continuous_batching: older jobs
    dirs = main_sweep(tmp_path / "main")
    newer = tmp_path / "ablation_retain_weight"
    # the last job's stage-0 models trained with the fused optimizer (model.finetune), the older job's did not
    for job, (weight, paper, grouped, fused_stage0) in enumerate([(0.5, (75.0, 70.0), False, False),
                                                                  (3.0, (65.0, 78.5), False, False),
                                                                  (0.5, (90.0, 60.0), True, False),
                                                                  (3.0, (50.0, 40.0), False, True)]):
        cfg = config(3e-5, retain_weight=weight)
        cfg["method"]["training"].update(group_by_length=grouped, compile=False, fused_optimizer=False)
        cfg["model"]["finetune"] = {"epochs": 5, "fused_optimizer": fused_stage0}
        cfg["generation"]["continuous_batching"] = False
        write_job(newer / str(job), "pmc", ["method=pmc", f"method.handler.retain_weight={weight}"], paper, cfg=cfg)
    main_pmc = dirs[0] / "0"  # PMC at 3e-5: 70 / 79, its retain weight set to the default 1.5 here
    older = json.loads((main_pmc / "results.json").read_text())
    older["config"]["method"]["handler"]["retain_weight"] = 1.5
    older["config"]["model"]["finetune"] = {"epochs": 5}
    (main_pmc / "results.json").write_text(json.dumps(older))

    found = verdicts(dirs, {"retain_weight": [newer, dirs[0]]})
    # one line of three λ (the job with group_by_length on and the one on fused stage-0 models are lines of their
    # own, one point each: no line)
    assert found["C4 retain_weight"].measured == ["retain_weight=0.5: 75.00 / 70.00, retain_weight=1.5: 70.00 / "
                                                  "79.00, retain_weight=3.0: 65.00 / 78.50 (unlearn quality / "
                                                  "utility): holds"]
    assert found["C4 retain_weight"].verdict == "holds"  # 78.5 >= 70 - 1


def test_the_options_added_since_match_the_stage0_keys_and_the_configs():
    """ADDED_OPTIONS (reporting, which must not import torch) repeats pmc.stage0.KEY_NEUTRAL_OPTIONS for the training
    options: if the two drifted apart, an ablation would pair jobs whose models the stage-0 key tells apart. Every
    added option is a real key of the composed config."""
    from pmc.reporting.claims.ablations import ADDED_OPTIONS
    from pmc.reporting.jobs import nested
    from pmc.stage0 import KEY_NEUTRAL_OPTIONS

    for settings in ("method.training.", "model.finetune.", "model.pretrain."):
        training = {key.removeprefix(settings): value for key, value in ADDED_OPTIONS.items()
                    if key.startswith(settings)}
        assert training.items() <= KEY_NEUTRAL_OPTIONS.items(), settings
        assert training == KEY_NEUTRAL_OPTIONS or settings != "method.training."
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        defaults = OmegaConf.to_container(compose("config"), resolve=True)
    missing = object()
    assert all(nested(defaults, key, missing) is not missing for key in ADDED_OPTIONS), ADDED_OPTIONS


def test_how_stage_0_was_run_does_not_split_an_ablation():
    """stage0.side_by_side says where a job's stage-0 models were built, and generation.compile_dynamic how its
    decoding step was traced, not what they are: jobs that differ in them (and in the ablated key) are one ablation
    line; a job whose stage 0 was fine-tuned otherwise is not."""
    from pmc.reporting.claims.ablations import shaping_identity

    def job(side_by_side: bool, epochs: int, lr: float = 1e-5, compile_dynamic=True) -> dict:
        return {"model": {"name": "tiny", "finetune": {"learning_rate": lr}}, "benchmark": {"name": "tofu"},
                "stage0": {"target_path": None, "retain_path": None, "side_by_side": side_by_side},
                "generation": {"compile_dynamic": compile_dynamic},
                "method": {"name": "pmc", "training": {"epochs": epochs}}}

    key = "method.training.epochs"
    assert shaping_identity(job(True, 5), key) == shaping_identity(job(False, 10), key)
    assert shaping_identity(job(True, 5), key) == shaping_identity(job(True, 10, compile_dynamic="varying"), key)
    assert shaping_identity(job(True, 5), key) != shaping_identity(job(True, 5, lr=2e-5), key)


def test_epochs_ablation_averages_seeds_and_fails_when_quality_does_not_rise(tmp_path):
    ablation = tmp_path / "ablation_epochs"
    ablation_job(ablation / "0", "method.training.epochs", 5, (60.0, 78.0))
    ablation_job(ablation / "1", "method.training.epochs", 10, (59.0, 77.0), seed=0)
    ablation_job(ablation / "2", "method.training.epochs", 10, (60.0, 76.0), seed=1)
    found = verdicts(main_sweep(tmp_path / "main"), {"epochs": [ablation]})
    assert found["C4 epochs"].verdict == "does not hold"  # 59.5 is not > 60 + 1
    assert found["C4 epochs"].measured[0].startswith("epochs=5: 60.00 / 78.00, epochs=10: 59.50 / 76.50")


def test_ablation_rules_by_hand():
    assert claims.ablation_holds("retain_weight", {0.5: (80, 70), 3.0: (60, 69.5)})  # 69.5 >= 70 - 1
    assert not claims.ablation_holds("retain_weight", {0.5: (80, 70), 3.0: (60, 68.0)})
    # T: unlearn quality rises past the smallest T, then utility at the largest T falls below the best
    assert claims.ablation_holds("temperature", {0.7: (50, 80), 1.25: (70, 79), 1.5: (72, 70)})
    assert not claims.ablation_holds("temperature", {0.7: (50, 80), 1.5: (52, 79.5)})  # 79.5 is not < 80 - 1
    assert not claims.ablation_holds("temperature", {0.7: (50, 80), 1.5: (50.5, 60)})  # 50.5 is not > 51


def test_cli_writes_the_table(tmp_path):
    dirs = main_sweep(tmp_path / "main")
    ablation = tmp_path / "ablation_samples"
    ablation_job(ablation / "0", "method.handler.num_samples", 1, (40.0, 79.5))
    (dirs[1] / "99" / ".hydra").mkdir(parents=True)  # a job that died: listed, left out
    (dirs[1] / "99" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    for job, machine in ((dirs[0] / "0", {"processor": "Intel(R) Xeon(R) Processor", "cpu_capability": "AVX512",
                                         "torch_threads": 1, "device": "cpu"}),
                         (dirs[1] / "0", {"processor": "AMD EPYC", "cpu_capability": "AVX2", "torch_threads": 16,
                                         "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"})):
        results = json.loads((job / "results.json").read_text())
        commit = "0c5a53a1f2" + "0" * 30 + ("+modified" if machine["device"] == "cpu" else "")
        (job / "results.json").write_text(json.dumps({**results, "machine": machine, "versions": {
            "torch": "2.13.0+cpu", "pmc-harness-commit": commit}}))
    out = tmp_path / "results" / "claims.md"
    assert claims_cli.main([*map(str, dirs), "--ablation", f"samples={ablation}", "--ablation", f"samples={dirs[0]}",
                        "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# The PMC paper's claims on this harness\n")
    assert "Model `smollm2_135m`, benchmark `tofu_forget01_authors5`; 9 unlearned jobs" in text
    assert f"Failed or missing jobs (no results.json), left out: {dirs[1] / '99'}." in text
    assert "Verdicts: 6 hold, 0 do not hold, 3 not testable." in text
    # nine main jobs and the ablation's one (dirs[0] given twice counts once; the dead job not at all)
    assert ("Jobs ran on: not recorded (jobs from before 2026-11-27): 8 jobs; Intel(R) Xeon(R) Processor (AVX512), "
            "torch 2.13.0+cpu: 1 job; NVIDIA H100 80GB HBM3, torch 2.13.0+cpu: 1 job. Harness commits: not recorded "
            "(jobs from before 2026-11-27): 8 jobs; 0c5a53a1f2+modified: 1 job; 0c5a53a1f2: 1 job.\n") in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if re.match(r"\| C\d", line)}
    assert list(rows) == ["C1", "C2", "C3", "C4 epochs", "C4 samples", "C4 retain_weight", "C4 temperature", "C5",
                          "C6"]
    assert rows["C1"].endswith("| **holds** |") and rows["C4 samples"].endswith("| **holds** |")
    assert rows["C4 epochs"].endswith("| **not testable: not run (conf/experiment/ablation_smollm2.yaml (SmolLM2, "
                                      "the ablated key on the command line) or ablation_epochs.yaml; then "
                                      "--ablation epochs=DIR)** |")
    assert "### C1" in text and "### C6" in text


def test_cli_errors(tmp_path):
    (tmp_path / "empty" / "0" / ".hydra").mkdir(parents=True)
    assert claims_cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "c.md")]) == 1
    assert not (tmp_path / "c.md").exists()
    with pytest.raises(SystemExit) as error:
        claims_cli.main([str(tmp_path / "empty"), "--ablation", f"lambda={tmp_path}"])
    assert error.value.code == 2


# --- the SmolLM2 mini paper's configs and run script -----------------------------------------------------------------

SWEEPS = {"mini_paper_smollm2": ["ga", "simnpo", "idk", "idkdpo", "flat"],
          "mini_paper_smollm2_fronts": ["pmc", "npo", "graddiff"], "mini_paper_smollm2_icu": ["icu"]}


def test_smollm2_mini_paper_gives_every_method_the_same_budget_and_suites():
    budgets = set()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for experiment, methods in SWEEPS.items():
            for method in methods:
                cfg = compose("config", overrides=[f"experiment={experiment}", f"method={method}"],
                              return_hydra_config=True)
                assert cfg.hydra.sweeper.params.method == ",".join(methods)
                assert list(cfg.eval) == ["paper", "tofu", "analyses"]
                assert (cfg.model.name, cfg.benchmark.forget_split, cfg.benchmark.num_authors) == \
                    ("smollm2_135m", "forget01", 5)
                t = cfg.method.training
                budgets.add((t.epochs, t.batch_size, t.gradient_accumulation_steps, t.max_length))
        fronts = compose("config", overrides=["experiment=mini_paper_smollm2_fronts"], return_hydra_config=True)
        assert fronts.hydra.sweeper.params["method.training.learning_rate"] == "3e-5,1e-4"
        ablation = compose("config", overrides=["experiment=ablation_samples_smollm2"], return_hydra_config=True)
        assert dict(ablation.hydra.sweeper.params) == {"method": "pmc", "method.training.learning_rate": "3e-5",
                                                       "method.handler.num_samples": "1,5"}
        assert list(ablation.eval) == ["paper", "analyses"]  # analyses: settings only, not selected
        one_setting = compose("config", overrides=["experiment=ablation_smollm2"], return_hydra_config=True)
        assert dict(one_setting.hydra.sweeper.params) == {"method": "pmc", "method.training.learning_rate": "3e-5"}
        assert one_setting.method.handler.max_length is None
    assert budgets == {(10, 8, 1, 256)}


def test_run_script_parses_and_runs_each_sweep_setting_as_one_unit():
    """The units cover every setting of the mini paper's sweep configs (method x learning rate), and each unit is
    one job: it overrides every axis its experiment sweeps, so a session that ends loses at most one job per worker."""
    script = REPO / "scripts" / "run_mini_paper_smollm2.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    units = re.findall(r"^\s*(\w+)\s+([\w-]+)\s+(experiment=\S+.*)$", script.read_text(), re.MULTILINE)
    covered: dict[str, list] = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for _, unit, overrides in units:
            args = dict(o.split("=", 1) for o in overrides.split())
            swept = compose("config", overrides=[f"experiment={args['experiment']}"],
                            return_hydra_config=True).hydra.sweeper.params
            assert not [axis for axis, values in swept.items() if "," in str(values) and axis not in args], unit
            covered.setdefault(args["experiment"], []).append(
                (args.get("method"), args.get("method.training.learning_rate"), args.get("seed", "0")))
    # every setting at three unlearning seeds
    fronts = [(method, lr, seed) for method in SWEEPS["mini_paper_smollm2_fronts"] for lr in ("3e-5", "1e-4")
              for seed in ("0", "1", "2")]
    assert sorted(covered.pop("mini_paper_smollm2_fronts")) == sorted(fronts)
    assert {e: sorted(settings) for e, settings in covered.items() if e in SWEEPS} == \
        {e: sorted((m, None, seed) for m in methods for seed in ("0", "1", "2"))
         for e, methods in SWEEPS.items() if e != "mini_paper_smollm2_fronts"}
    assert covered["ablation_samples_smollm2"] == [(None, None, "0"), (None, None, "1"), (None, None, "2")]
    ablated = [dict(o.split("=", 1) for o in overrides.split()) for _, _, overrides in units
               if "experiment=ablation_smollm2" in overrides]
    for seed in ("0", "1", "2"):  # each ablated setting at the three seeds
        assert sorted((key, value) for args in ablated if args.get("seed", "0") == seed
                      for key, value in args.items() if key not in ("experiment", "seed")) == \
            [("method.handler.retain_weight", "0.5"), ("method.handler.retain_weight", "3.0"),
             ("method.handler.temperature", "0.9"), ("method.handler.temperature", "2.0"),
             ("method.training.epochs", "5")]


def test_jobs_from_different_targets_are_refused_not_compared_with_the_first(tmp_path):
    """Every claim compares with "the target" (C1's bars, C2's shift, C3's rate, C6's fluency): jobs that unlearned
    different stage-0 models (another stage0.seed) are one clear error, not compared with the first job's target."""
    dirs = main_sweep(tmp_path)
    other = dirs[0] / "0" / "results.json"
    results = json.loads(other.read_text())
    results["stage0"]["checkpoints"] = {"target": "elsewhere/cache/target-seed1", "retain": "cache/retain"}
    other.write_text(json.dumps(results))
    with pytest.raises(SystemExit, match=r"start from different checkpoints .*target-seed1"):
        claims.Sweeps(dirs)
    results["stage0"]["checkpoints"]["target"] = "elsewhere/cache/target"  # another cache directory, the same entry
    other.write_text(json.dumps(results))
    assert verdicts(dirs)["C1"].verdict == "holds"


def test_jobs_whose_stage0_entries_share_a_name_but_not_weights_are_refused(tmp_path):
    """A cache entry rebuilt on another machine keeps its name: jobs that record their stage-0 weights' sha256 are
    compared by it; jobs run before results.json recorded it are compared by name only."""
    dirs = main_sweep(tmp_path)
    jobs = [dirs[0] / "0", dirs[0] / "1", dirs[1] / "0"]

    def record(job, target_sha):
        results = json.loads((job / "results.json").read_text())
        results["stage0"]["weights_sha256"] = {"target": {"model.safetensors": target_sha},
                                               "retain": {"model.safetensors": "bb"}}
        (job / "results.json").write_text(json.dumps(results))

    record(jobs[0], "aa")
    record(jobs[1], "aa")
    assert verdicts(dirs)["C1"].verdict == "holds"  # the other jobs have no digests: compared by name
    record(jobs[2], "cc")
    with pytest.raises(SystemExit, match=r"different weights .*cc"):
        claims.Sweeps(dirs)


def test_c5_a_retain_loss_that_never_rises_has_nothing_to_recover(tmp_path):
    falling = pmc_log([[0.6, 0.6], [0.3, 0.3], [0.1, 0.1]], [[2.0, 2.0], [1.5, 1.5], [1.0, 1.0]])
    found = verdicts(main_sweep(tmp_path, pmc_log_rows=falling))
    assert found["C5"].verdict == "holds"  # 0.1 <= 0.3; 1.0 <= 2.0 + 0.5 * 0
    assert found["C5"].measured[0].endswith("selected 0.600 → 0.100 (epoch 3) → 0.100 (epoch 3), drops; retain loss "
                                            "2.000 → peak 2.000 (epoch 1) → 1.000, never rose above its first epoch")


def run_script_copy(tmp_path: Path, job: str) -> tuple[Path, dict, Path]:
    """scripts/run_mini_paper_smollm2.sh in a copy of the layout it expects, with a stand-in python: its job
    (`python -m pmc.run ... hydra.sweep.dir=D`) records its pid in the returned file, runs the bash line `job`, then
    leaves one job with a results.json in D; `scripts/archive_runs.py` is the real one; every other command (the
    report's scripts) succeeds at once and is logged, one line of arguments each, to the file $CALLS. Returns the
    script, its environment and the pid file."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "run_mini_paper_smollm2.sh"
    script.write_text((REPO / "scripts" / "run_mini_paper_smollm2.sh").read_text())
    (tmp_path / "tofu").mkdir()
    (tmp_path / "tofu" / "full.json").write_text("{}\n")
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\n'
                    'if [ "$1 $2" = "-m pmc.run" ]; then\n'
                    f'  echo $$ > "$JOB_PID"; {job}\n'
                    '  dir=$(printf "%s\\n" "$@" | sed -n "s/^hydra.sweep.dir=//p")\n'
                    '  mkdir -p "$dir/0" && echo "{}" > "$dir/0/results.json"\n'
                    'elif [ "$1" = scripts/archive_runs.py ]; then\n'
                    f'  shift; exec {sys.executable} {REPO}/scripts/archive_runs.py "$@"\n'
                    'else echo "$@" >> "$CALLS"; fi\n')
    fake.chmod(0o755)
    job_pid = tmp_path / "job.pid"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "TOFU_DATA_DIR": str(tmp_path / "tofu"),
           "JOB_PID": str(job_pid), "CALLS": str(tmp_path / "calls.txt")}
    return script, env, job_pid


def report_calls(tmp_path: Path) -> list[str]:
    """The report's scripts (collect.py, figures.py, ...) the stand-in python of run_script_copy was called with."""
    calls = tmp_path / "calls.txt"
    return [call for call in calls.read_text().splitlines() if call.startswith("scripts/")] if calls.exists() else []


def script_units(text: str) -> list[str]:
    """The run script's units in order, ICU left out (it runs only with --with-icu)."""
    return re.findall(r"^\s*(?!icu)\w+\s+([\w-]+)\s+experiment=", text, re.MULTILINE)


def first_job(runner: subprocess.Popen, job_pid: Path) -> int:
    """The pid of the first job the script started (waits up to 30 s for it)."""
    deadline = time.monotonic() + 30
    while not job_pid.exists() or not job_pid.read_text().strip():
        assert time.monotonic() < deadline and runner.poll() is None, "the script never started its first job"
        time.sleep(0.1)
    return int(job_pid.read_text())


def test_interrupting_the_run_script_stops_the_job_it_runs(tmp_path):
    """TERM to scripts/run_mini_paper_smollm2.sh kills the unit's job too (a session that ends must not leave a job
    running on), logs the unit as interrupted and leaves it unfinished, to rerun next time. The script runs in a
    copy of the layout it expects, with a stand-in python whose job records its pid and sleeps."""
    script, env, job_pid = run_script_copy(tmp_path, job="exec sleep 60")
    runner = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        job = first_job(runner, job_pid)
        runner.terminate()
        assert runner.wait(timeout=30) == 143
        deadline = time.monotonic() + 10
        while Path(f"/proc/{job}").exists() and "zombie" not in Path(f"/proc/{job}/status").read_text().lower():
            assert time.monotonic() < deadline, "the unit's job outlived the script"
            time.sleep(0.1)
    finally:
        runner.kill()
        if job_pid.exists() and job_pid.read_text().strip():
            subprocess.run(["kill", job_pid.read_text().strip()], capture_output=True)
    log = (tmp_path / "results" / "smollm2" / "run.log").read_text()
    assert "interrupted: pmc_lr3e-5" in log
    assert "finished" not in (tmp_path / "results" / "smollm2" / "sweeps.txt").read_text()


def test_editing_the_run_script_while_it_runs_does_not_change_the_run(tmp_path):
    """bash reads a script as it goes: an edit saved in place during an hours-long run used to be read from the
    middle of a line and broke the run's report step. The script is read whole before it starts: here it is
    overwritten with other commands while its first job runs, and the run still finishes every unit and its report."""
    script, env, job_pid = run_script_copy(tmp_path, job='while [ ! -e "$RELEASE" ]; do sleep 0.1; done')
    release, edited = tmp_path / "release", tmp_path / "edited"
    env.update(RELEASE=str(release), EDITED=str(edited))
    original = script.read_text()
    runner = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        first_job(runner, job_pid)
        with script.open("r+") as source:  # in place, as an editor saves: same file, new text
            source.write('touch "$EDITED"; exit 9\n' * (len(original) // 20))
        release.touch()
        _, stderr = runner.communicate(timeout=120)
    finally:
        runner.kill()
    assert runner.returncode == 0, stderr.decode()
    assert not edited.exists()
    units = script_units(original)
    finished = re.findall(r"^([\w-]+) finished ", (tmp_path / "results" / "smollm2" / "sweeps.txt").read_text(),
                          re.MULTILINE)
    assert finished == units and len(units) > 10
    assert "wrote results/claims.md" in (tmp_path / "results" / "smollm2" / "run.log").read_text()


def test_units_finished_on_another_machine_are_kept_and_reported_from_their_archives(tmp_path):
    """A unit's archive (results/smollm2/runs/<unit>) is its record, so a mini paper spread over sessions on
    different machines makes one report: a committed archive is skipped although its sweep directory is gone, a
    "finished" line without an archive (a run from before archives, or on a lost machine) runs again, a half-written
    archive is never counted, and the report's scripts read the archives, not the sweep directories."""
    script, env, _ = run_script_copy(tmp_path, job="true")
    units = script_units(script.read_text())
    runs = tmp_path / "results" / "smollm2" / "runs"
    (runs / "pmc_lr3e-5" / "0").mkdir(parents=True)  # finished elsewhere: its sweep directory is not here
    (runs / "pmc_lr3e-5" / "0" / "results.json").write_text('{"from": "another machine"}')
    (runs / ".ga.partial" / "0").mkdir(parents=True)  # an archive a killed run left half-written
    (tmp_path / "results" / "smollm2" / "sweeps.txt").write_text(
        "".join(f"{unit} finished multirun/gone/{unit} 0 2026-11-26T10:00:00Z\n" for unit in units))
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    log = (tmp_path / "results" / "smollm2" / "run.log").read_text()
    assert "start pmc_lr3e-5:" not in log
    assert re.findall(r" start ([\w-]+):", log) == units[1:]  # every other unit ran again, in order
    assert sorted(p.name for p in runs.iterdir()) == sorted(units)  # no .partial left
    assert json.loads((runs / "pmc_lr3e-5" / "0" / "results.json").read_text()) == {"from": "another machine"}
    assert all((runs / unit / "0" / "results.json").read_text() == "{}\n" for unit in units[1:])
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    collect = next(call.split() for call in calls if call.startswith("scripts/collect.py") and "ablation" not in call)
    main_units = re.findall(r"^\s*main\s+([\w-]+)\s", script.read_text(), re.MULTILINE)
    assert collect[1:1 + len(main_units)] == [f"results/smollm2/runs/{unit}" for unit in main_units]
    claims_call = next(call for call in calls if call.startswith("scripts/claims.py"))
    assert "--ablation samples=results/smollm2/runs/samples_n1" in claims_call
    assert "--ablation samples=results/smollm2/runs/pmc_lr3e-5" in claims_call
    assert "multirun" not in " ".join(calls)


def test_an_ablations_partner_comes_at_the_seeds_its_units_ran(tmp_path):
    """An ablation's settings are means over seeds: its partner (PMC at 3e-5) comes at the seeds its units ran,
    so a report from a partial set (--report-only) never compares a two-seed partner with one-seed settings."""
    script, env, _ = run_script_copy(tmp_path, job="true")
    runs = tmp_path / "results" / "smollm2" / "runs"
    for unit in ("pmc_lr3e-5", "pmc_lr3e-5_seed1", "pmc_lr3e-5_seed2", "temperature_0_9", "temperature_0_9_seed1",
                 "temperature_2_seed2", "temperature_0_9_seed2", "epochs_5_seed1", "samples_n1"):
        (runs / unit / "0").mkdir(parents=True)
    run = subprocess.run(["bash", str(script), "--report-only"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    claims_call = next(call for call in report_calls(tmp_path) if call.startswith("scripts/claims.py"))
    ablations = sorted(re.findall(r"--ablation (\S+)", claims_call))
    assert ablations == sorted(f"{name}=results/smollm2/runs/{unit}" for name, unit in [
        ("temperature", "temperature_0_9"), ("temperature", "temperature_0_9_seed1"),
        ("temperature", "temperature_0_9_seed2"), ("temperature", "temperature_2_seed2"),
        ("temperature", "pmc_lr3e-5"), ("temperature", "pmc_lr3e-5_seed1"), ("temperature", "pmc_lr3e-5_seed2"),
        ("epochs", "epochs_5_seed1"), ("epochs", "pmc_lr3e-5"), ("epochs", "pmc_lr3e-5_seed1"),
        ("samples", "samples_n1"), ("samples", "pmc_lr3e-5")])
    table = next(call for call in report_calls(tmp_path) if "ablation_samples" in call)
    assert "pmc_lr3e-5_seed" not in table and "runs/pmc_lr3e-5 " in table


def test_a_stop_file_ends_the_run_after_the_unit_under_way_and_without_a_report(tmp_path):
    """`touch multirun/smollm2_mini_paper/STOP` near a session's end: the unit under way finishes and is archived,
    no other starts, and no report replaces the committed tables with a partial set; the file is then removed."""
    script, env, job_pid = run_script_copy(tmp_path, job='while [ ! -e "$RELEASE" ]; do sleep 0.1; done')
    env["RELEASE"] = str(tmp_path / "release")
    runner = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        first_job(runner, job_pid)
        (tmp_path / "multirun" / "smollm2_mini_paper" / "STOP").touch()
        (tmp_path / "release").touch()
        _, stderr = runner.communicate(timeout=120)
    finally:
        runner.kill()
    assert runner.returncode == 0, stderr.decode()
    units = script_units(script.read_text())
    log = (tmp_path / "results" / "smollm2" / "run.log").read_text()
    assert re.findall(r" start ([\w-]+):", log) == units[:1]
    assert [p.name for p in (tmp_path / "results" / "smollm2" / "runs").iterdir()] == units[:1]
    assert f"not finished: {' '.join(units[1:])} (the report waits for them)" in log
    assert not report_calls(tmp_path)  # no table, figure or claims script ran
    assert not (tmp_path / "multirun" / "smollm2_mini_paper" / "STOP").exists()


def test_a_unit_that_could_not_be_archived_reruns_and_holds_the_report_back(tmp_path):
    """Archiving is the last step of a unit: when it fails (here a half-written archive the job left in the way) the
    unit is not finished, the others go on, and the call ends with status 1 and no report."""
    script, env, _ = run_script_copy(
        tmp_path, job=r'case "$*" in *method=ga\ *) mkdir -p results/smollm2/runs/.ga.partial/blocker ;; esac')
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    units = script_units(script.read_text())
    log = (tmp_path / "results" / "smollm2" / "run.log").read_text()
    assert "FAILED: archiving ga" in log
    assert "not finished: ga; no report until they are" in log
    runs = tmp_path / "results" / "smollm2" / "runs"
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == sorted(set(units) - {"ga"})
    assert not report_calls(tmp_path)
    assert "ga finished" not in (tmp_path / "results" / "smollm2" / "sweeps.txt").read_text()


def test_an_archive_of_the_sweeps_regenerates_the_same_claims_without_the_heavy_files(tmp_path):
    """scripts/archive_runs.py copies the files the reports read, and nothing else (checkpoints, saved models,
    logs): the claims computed from the archive are those of the sweeps, so they regenerate from a clone."""
    from pmc.reporting.archive import archive_jobs
    from pmc.reporting.jobs import suite_file

    dirs = main_sweep(tmp_path / "runs")
    job = dirs[0] / "0"
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config(3e-5)))
    (job / "unlearned_model").mkdir()
    (job / "unlearned_model" / "model.safetensors").write_bytes(b"\0" * 1000)
    (job / "checkpoints" / "step-3").mkdir(parents=True)
    (job / "run.log").write_text("log\n")
    sys.path.insert(0, str(REPO / "scripts"))
    import archive_runs

    assert archive_runs.main([*map(str, dirs), "--out", str(tmp_path / "archive")]) == 0
    kept = {p.relative_to(tmp_path / "archive" / "fronts" / "0").as_posix()
            for p in (tmp_path / "archive" / "fronts" / "0").rglob("*") if p.is_file()}
    assert kept == {"results.json", "train_log.jsonl", ".hydra/overrides.yaml", ".hydra/config.yaml",
                    "eval/unlearned/analyses.json.gz", "eval/target/analyses.json.gz", "eval/retain/analyses.json.gz"}
    # the eval files go in gzipped, read back as the job's own; the same file in two jobs is the same bytes (no
    # name or time in the gzip header), so git stores it once
    for model in ("unlearned", "target"):
        packed = tmp_path / "archive" / "fronts" / "0" / "eval" / model / "analyses.json.gz"
        assert json.loads(gzip.decompress(packed.read_bytes())) == json.loads(
            (job / "eval" / model / "analyses.json").read_text())
        assert suite_file(packed.parents[2], model, "analyses") == suite_file(job, model, "analyses")
    assert (tmp_path / "archive" / "fronts" / "0" / "eval" / "target" / "analyses.json.gz").read_bytes() == \
        (tmp_path / "archive" / "fronts" / "1" / "eval" / "target" / "analyses.json.gz").read_bytes()
    assert archive_jobs([tmp_path / "archive" / "fronts"], tmp_path / "again") and \
        sorted(p.name for p in (tmp_path / "again" / "0" / "eval" / "target").iterdir()) == ["analyses.json.gz"]
    archived = verdicts([tmp_path / "archive" / "fronts", tmp_path / "archive" / "single"])
    original = verdicts(dirs)
    assert {c: (v.verdict, v.measured) for c, v in archived.items()} == \
        {c: (v.verdict, v.measured) for c, v in original.items()}
    with pytest.raises(SystemExit, match="not an empty directory"):  # an archive never mixes two runs' jobs
        archive_jobs(dirs, tmp_path / "archive")


def test_an_archive_keeps_whichever_of_a_jobs_results_and_failure_counts(tmp_path):
    """A job directory that holds both a results.json and a failure.json (a rerun in place) counts by the newer
    file; a copy or a git checkout loses that order, so the archive keeps only the file that counts."""
    import os

    from pmc.reporting.archive import archive_jobs
    from pmc.reporting.jobs import job_problem

    sweep = tmp_path / "sweep"
    for job, newer in (("rerun_ok", "results.json"), ("rerun_failed", "failure.json")):
        (sweep / job).mkdir(parents=True)
        (sweep / job / "results.json").write_text("{}")
        (sweep / job / "failure.json").write_text('{"stage": "unlearning", "error": "boom"}')
        older = "failure.json" if newer == "results.json" else "results.json"
        os.utime(sweep / job / older, (1_000_000, 1_000_000))
    archive_jobs([sweep], tmp_path / "archive")
    assert sorted(p.name for p in (tmp_path / "archive" / "rerun_ok").iterdir()) == ["results.json"]
    assert sorted(p.name for p in (tmp_path / "archive" / "rerun_failed").iterdir()) == ["failure.json"]
    assert job_problem(tmp_path / "archive" / "rerun_ok") is None
    assert job_problem(tmp_path / "archive" / "rerun_failed") == ("failed", "in unlearning: boom")


def test_the_provenance_groups_commits_by_the_code_a_run_executes(tmp_path, monkeypatch):
    """Commits that differ only in results/ or docs ran the same code: the claims table says how many versions of
    the code its jobs ran, with each version's commits and jobs. Where a commit is not known here (another
    checkout, "+modified"), it lists the commits alone."""
    commits = {"aaaaaaa001": "tree 1", "aaaaaaa002": "tree 1", "bbbbbbb003": "tree 2"}
    jobs = []
    for i, commit in enumerate(["aaaaaaa001", "aaaaaaa001", "aaaaaaa002", "bbbbbbb003"]):
        jobs.append(tmp_path / str(i))
        jobs[-1].mkdir()
        (jobs[-1] / "results.json").write_text(json.dumps({"versions": {"pmc-harness-commit": commit}}))
    claims_report = sys.modules["pmc.reporting.claims.report"]  # the package's `report` names its function
    monkeypatch.setattr(claims_report, "run_sources_tree", commits.get)
    text = claims_report.provenance(jobs)
    assert "Harness commits: aaaaaaa001: 2 jobs; aaaaaaa002: 1 job; bbbbbbb003: 1 job." in text
    assert text.endswith("these commits hold 2 versions: aaaaaaa001, aaaaaaa002: 3 jobs; bbbbbbb003: 1 job.\n")
    commits.pop("bbbbbbb003")
    assert claims_report.provenance(jobs).endswith("bbbbbbb003: 1 job.\n")  # the commits alone
    assert "versions" not in claims_report.provenance(jobs)
    assert "versions" not in claims_report.provenance(jobs[:2])  # one commit: nothing to group
