"""Claim C4: one row per ablation of PMC (epochs, samples, retain weight, temperature), jobs paired by config."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from pmc.reporting.claims.model import UQ, UTILITY, Claim, Sweeps, fmt, mean_of
from pmc.reporting.claims.thresholds import ABLATION_MARGIN
from pmc.reporting.jobs import nested, read_json


@dataclass(frozen=True)
class Ablation:
    """An ablation claim C4 knows: `--ablation NAME=DIR` on the command line names it."""

    key: str  # the config key the ablation varies
    claim: str
    rule: str
    config: str  # the experiment config that runs it


SMOLLM2_ABLATION = "conf/experiment/ablation_smollm2.yaml (SmolLM2, the ablated key on the command line)"
ABLATIONS = {
    "epochs": Ablation("method.training.epochs", "more unlearning epochs raise unlearn quality",
                       f"on every line, unlearn quality at the most epochs > at the fewest + {ABLATION_MARGIN:g} "
                       "point", SMOLLM2_ABLATION + " or ablation_epochs.yaml"),
    "samples": Ablation("method.handler.num_samples", "more sampled answers per question (n) raise unlearn quality",
                        f"on every line, unlearn quality at the largest n > at the smallest n + {ABLATION_MARGIN:g} "
                        "point", "conf/experiment/ablation_samples_smollm2.yaml (SmolLM2) or ablation_samples.yaml"),
    "retain_weight": Ablation("method.handler.retain_weight", "a larger retain weight λ keeps utility",
                              f"on every line, utility at the largest λ ≥ utility at the smallest λ − "
                              f"{ABLATION_MARGIN:g} point", SMOLLM2_ABLATION + " or ablation_retain_weight.yaml"),
    "temperature": Ablation("method.handler.temperature", "a higher sampling temperature T helps until utility falls",
                            f"on every line, unlearn quality at some T above the smallest > at the smallest T + "
                            f"{ABLATION_MARGIN:g} point, and utility at the largest T < the best utility over T − "
                            f"{ABLATION_MARGIN:g} point", SMOLLM2_ABLATION + " or ablation_temperature.yaml"),
}
# config parts that shape the unlearned model: C4 pairs jobs whose parts are equal but for the ablated key
MODEL_SHAPING = ("model", "benchmark", "stage0", "generation", "method")
# options added after jobs were run and committed: an older results.json lacks them, which means these values (the
# stage-0 cache key leaves the training ones out at the same values, pmc.stage0.KEY_NEUTRAL_OPTIONS). The stage-0
# models' fused optimizer is in the model configs since 2026-11-27: a job whose stage 0 trained otherwise pairs
# with none of the jobs whose stage 0 did not. Stage 0's other speed settings are in them since 2026-11-27 too
# (conf/shared/training_speed.yaml)
TRAINING_SPEED = {"group_by_length": False, "compile": False, "compile_mode": None, "pad_to_multiple_of": None,
                  "compile_regional": True}
ADDED_OPTIONS = {**{f"{settings}.{name}": value for settings in ("method.training", "model.finetune", "model.pretrain")
                    for name, value in TRAINING_SPEED.items()},
                 "method.training.fused_optimizer": False, "method.training.joint_forward": False,
                 "generation.continuous_batching": False,
                 "model.finetune.fused_optimizer": False, "model.pretrain.fused_optimizer": False,
                 "stage0.seed": 0}  # since 2026-11-29; before, stage 0 was fine-tuned with `seed`
# where a job's models were made, or how its decoding step was traced (the same answers for every value,
# tests/test_generation_speed.py), not what they are: left out of every identity
NOT_SHAPING = ("stage0.side_by_side", "generation.compile_dynamic")


def shaping_identity(config: dict, key: str) -> str:
    """What shapes the unlearned model, without `key`, the seed, how stage 0 was run (NOT_SHAPING), and the options
    added later while at the value an older job ran with (ADDED_OPTIONS): equal strings, one ablation line."""
    parts = {name: copy.deepcopy(config.get(name)) for name in MODEL_SHAPING}
    dropped = [key, "method.handler.seed", *NOT_SHAPING, *(path for path, value in ADDED_OPTIONS.items()
                                                           if nested(parts, path) == value)]
    for path in dropped:
        *parents, last = path.split(".")
        node = parts
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return json.dumps(parts, sort_keys=True, default=str)


def c4_ablation(name: str, dirs: list[Path]) -> Claim:
    spec = ABLATIONS[name]
    claim = Claim(f"C4 {name}", spec.claim, f"{spec.rule} (PMC jobs; a line = jobs equal but for {spec.key}; "
                                            "means over seeds)")
    if not dirs:
        return claim.untestable(f"not run ({spec.config}; then --ablation {name}=DIR)")
    sweeps = Sweeps(dirs)
    pmc = sweeps.unlearned[sweeps.unlearned["method"] == "pmc"] if not sweeps.unlearned.empty else sweeps.unlearned
    if pmc.empty or UQ not in pmc or UTILITY not in pmc:
        return claim.untestable(f"no PMC job with paper metrics under {', '.join(map(str, dirs))}")
    lines: dict[str, dict] = {}
    for _, job in pmc.iterrows():
        config = (read_json(Path(job["job"]) / "results.json") or {}).get("config") or {}
        value = nested(config, spec.key)
        if value is None:
            continue
        line = lines.setdefault(shaping_identity(config, spec.key), {"label": job["setting"], "values": {}})
        line["values"].setdefault(value, []).append((job[UQ], job[UTILITY]))
    lines = {k: v for k, v in lines.items() if len(v["values"]) > 1}
    if not lines:
        return claim.untestable(f"no two PMC jobs that differ only in {spec.key}")
    verdicts = []
    for line in lines.values():
        points = {v: (mean_of(u for u, _ in runs), mean_of(w for _, w in runs))
                  for v, runs in sorted(line["values"].items())}
        verdicts.append(ablation_holds(name, points))
        claim.measured.append(", ".join(f"{spec.key.rsplit('.', 1)[-1]}={v}: {fmt(u)} / {fmt(w)}"
                                        for v, (u, w) in points.items())
                              + " (unlearn quality / utility): " + ("holds" if verdicts[-1] else "does not hold"))
    return claim.decide(all(verdicts))


def ablation_holds(name: str, points: dict) -> bool:
    """The ablation's rule on one line: value -> (unlearn quality, utility), values in increasing order."""
    values = list(points)
    low, high = points[values[0]], points[values[-1]]
    if name in ("epochs", "samples"):
        return high[0] > low[0] + ABLATION_MARGIN
    if name == "retain_weight":
        return high[1] >= low[1] - ABLATION_MARGIN
    helps = any(points[v][0] > low[0] + ABLATION_MARGIN for v in values[1:])
    falls = high[1] < max(u for _, u in points.values()) - ABLATION_MARGIN
    return helps and falls
