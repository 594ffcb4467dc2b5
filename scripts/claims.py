"""Which of the PMC paper's claims the collected sweeps reproduce: a generated claims table (results/claims.md).

    python scripts/claims.py SWEEP_DIR [SWEEP_DIR ...] [--ablation NAME=DIR ...] [--out results/claims.md]

Reads what collect.py reads (each job's results.json, through collect.collect) plus each job's
eval/<model>/<suite>.json and train_log.jsonl, and writes one row per claim of the paper: the rule that decides it
(its thresholds stated in the row), the measured numbers, and a verdict: "holds", "does not hold", or
"not testable: <what is missing>" (missing suites, runs or ablations never raise). Claims:

  C1  PMC reaches high unlearn quality while keeping utility, and no baseline dominates it on the unlearn-quality/
      utility front (Pareto dominance over every setting of every method; the dominating settings are named).
  C2  NPO shifts the log-probabilities of unrelated text downwards, PMC leaves them near zero (analyses suite,
      collateral damage).
  C3  The least-likely multiple-choice attack recovers the true answer after NPO-style methods, not after PMC
      (analyses suite: attack rate vs chance and vs the target).
  C4  Ablations (one row each, from --ablation NAME=DIR): more epochs and more samples raise unlearn quality, a larger
      λ keeps utility, a higher temperature helps until utility falls. Jobs are paired by their configs: two jobs
      are on one line when everything that shapes the unlearned model (model, benchmark, stage 0, generation, the
      method and its training) is equal but the ablated value, whichever sweep they came from; seeds are averaged.
  C5  Dynamics (PMC's train_log.jsonl): the selected answers' ROUGE drops within the first epochs; the retain loss
      recovers from its peak.
  C6  GA-family answers degenerate (empty, repeated, gibberish), PMC's stay fluent (analyses suite: response
      quality), with example answers.

A "setting" is a job's Hydra overrides without the seed (collect.py's grouping), its numbers the mean over seeds.
C2, C3 and C6 compare each method at its setting with the highest unlearn quality (where it has unlearned most).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collect  # noqa: E402
import figures  # noqa: E402
from analyses_report import read_json  # noqa: E402

UQ = collect.COLUMNS[("paper", "unlearn_quality")]
UTILITY = collect.COLUMNS[("paper", "utility")]
FORGET_QUALITY = collect.COLUMNS[("tofu", "forget_quality")]
MODEL_UTILITY = collect.COLUMNS[("tofu", "model_utility")]
REFERENCES = ("target", "retain")
GA_FAMILY = ("ga", "graddiff", "npo", "simnpo")  # the gradient-ascent / NPO-style methods of C3 and C6

# The thresholds of the verdicts (each one is printed in its claim's rule).
UQ_GAP_CLOSED = 0.5  # C1: PMC closes at least this share of the target -> retain unlearn-quality gap ...
UTILITY_KEPT = 0.9  # ... and keeps at least this share of the target's utility
NEAR_ZERO = 0.25  # C2: |PMC's shift| at most this share of |NPO's|
ATTACK_STANDARD_ERRORS = 2.0  # C3: the attack succeeds above chance + 2 binomial standard errors
SELECTED_BY_EPOCH = 3  # C5: the selected answers' ROUGE by the end of this epoch ...
SELECTED_DROP = 0.5  # ... at most this share of its first logged value
RETAIN_GIVEN_BACK = 0.5  # C5: the final epoch's retain loss gives back at least this share of its rise
DEGENERATE = {"empty_rate": 0.25, "distinct_ratio": 0.2, "fluency_nll": 1.0}  # C6: change against the target
ABLATION_MARGIN = 1.0  # C4: points of unlearn quality / utility
EXAMPLES = 2  # C6: example answers per method

ANALYSES_MISSING = "eval/<model>/analyses.json (run with eval=[...,analyses])"


@dataclass(frozen=True)
class Ablation:
    key: str  # the config key the ablation varies
    claim: str
    rule: str
    config: str  # the experiment config that runs it


ABLATIONS = {
    "epochs": Ablation("method.training.epochs", "more unlearning epochs raise unlearn quality",
                       f"on every line, unlearn quality at the most epochs > at the fewest + {ABLATION_MARGIN:g} "
                       "point", "conf/experiment/ablation_epochs.yaml"),
    "samples": Ablation("method.handler.num_samples", "more sampled answers per question (n) raise unlearn quality",
                        f"on every line, unlearn quality at the largest n > at the smallest n + {ABLATION_MARGIN:g} "
                        "point", "conf/experiment/ablation_samples_smollm2.yaml (SmolLM2) or ablation_samples.yaml"),
    "retain_weight": Ablation("method.handler.retain_weight", "a larger retain weight λ keeps utility",
                              f"on every line, utility at the largest λ ≥ utility at the smallest λ − "
                              f"{ABLATION_MARGIN:g} point", "conf/experiment/ablation_retain_weight.yaml"),
    "temperature": Ablation("method.handler.temperature", "a higher sampling temperature T helps until utility falls",
                            f"on every line, unlearn quality at some T above the smallest > at the smallest T + "
                            f"{ABLATION_MARGIN:g} point, and utility at the largest T < the best utility over T − "
                            f"{ABLATION_MARGIN:g} point", "conf/experiment/ablation_temperature.yaml"),
}
# config parts that shape the unlearned model: C4 pairs jobs whose parts are equal but for the ablated key
MODEL_SHAPING = ("model", "benchmark", "stage0", "generation", "method")


@dataclass
class Claim:
    id: str
    statement: str
    rule: str
    verdict: str = ""
    measured: list[str] = field(default_factory=list)
    details: str = ""

    def untestable(self, why: str) -> "Claim":
        self.verdict = f"not testable: {why}"
        return self

    def decide(self, holds: bool) -> "Claim":
        self.verdict = "holds" if holds else "does not hold"
        return self


# --- reading the sweeps ---------------------------------------------------------------------------------------------


def fmt(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_of(values) -> float:
    """Mean of the finite values, NaN when there is none (a suite writes NaN where nothing was left to average)."""
    kept = [v for v in values if finite(v)]
    return sum(kept) / len(kept) if kept else math.nan


def label(method: str, setting: str) -> str:
    """'pmc (learning_rate=3e-05)': the method and its setting's other overrides, by their last key part."""
    extra = []
    for override in ([] if setting == "(defaults)" else setting.split()):
        key, _, value = override.lstrip("+~").partition("=")
        if key not in ("method", "experiment"):
            extra.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return method + (f" ({', '.join(extra)})" if extra else "")


def suite_file(job: str | Path, model: str, suite: str) -> dict | None:
    return read_json(Path(job) / "eval" / model / f"{suite}.json")


class Sweeps:
    """The jobs of some sweep directories as collect.py reads them, and their suite files."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs
        self.per_job, self.summary, self.failed = collect.collect(dirs)[:3]
        self.unlearned = (self.per_job[self.per_job["model"] == "unlearned"] if not self.per_job.empty
                          else self.per_job)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.unlearned["method"])) if not self.unlearned.empty else []

    def jobs(self, method: str, setting: str) -> list[str]:
        rows = self.unlearned
        return list(rows.loc[(rows["method"] == method) & (rows["setting"] == setting), "job"])

    def best_setting(self, method: str) -> tuple[str, list[str]] | None:
        """(label, jobs) of the method's setting with the highest unlearn quality (mean over seeds); the first
        setting when no job has one. None when the method has no job."""
        rows = self.summary[self.summary["method"] == method]
        if rows.empty:
            return None
        if UQ in rows and rows[UQ].notna().any():
            row = rows.loc[rows[UQ].idxmax()]
        else:
            row = rows.iloc[0]
        return label(method, row["setting"]), self.jobs(method, row["setting"])

    def reference(self, model: str, suite: str) -> dict | None:
        """The target's or retain model's suite file (stage 0 is shared: the first job that has one)."""
        for job in self.unlearned["job"] if not self.unlearned.empty else []:
            found = suite_file(job, model, suite)
            if found is not None:
                return found
        return None


def analyses_at_best(sweeps: Sweeps, method: str) -> tuple[str, list[dict]] | str:
    """(label, the analyses files of the method's best setting), or why there are none."""
    best = sweeps.best_setting(method)
    if best is None:
        return f"no {method} run"
    name, jobs = best
    files = [suite_file(job, "unlearned", "analyses") for job in jobs]
    if any(f is None for f in files):
        return f"no {ANALYSES_MISSING.replace('<model>', 'unlearned')} for {name}"
    return name, files


def summary_mean(files: list[dict], key: str) -> float:
    return mean_of(f["summary"].get(key) for f in files)


# --- the claims ------------------------------------------------------------------------------------------------------


def dominates(a: pd.Series, b: pd.Series, x: str, y: str) -> bool:
    """a is at least as good as b on both metrics (higher is better) and better on one."""
    return a[x] >= b[x] and a[y] >= b[y] and (a[x] > b[x] or a[y] > b[y])


def dominated_by(point: pd.Series, others: pd.DataFrame, x: str, y: str, values: bool = True) -> list[str]:
    """The settings among `others` that dominate `point`, as labels (with their x / y when `values`)."""
    return [label(o["method"], o["setting"]) + (f" ({fmt(o[x])} / {fmt(o[y])})" if values else "")
            for _, o in others.iterrows() if dominates(o, point, x, y)]


def c1_front(sweeps: Sweeps) -> Claim:
    claim = Claim("C1", "PMC reaches high unlearn quality while keeping utility; no baseline dominates it on the "
                        "unlearn-quality/utility front",
                  f"some PMC setting has unlearn quality ≥ target's + {UQ_GAP_CLOSED:.0%} of the target→retain gap "
                  f"and utility ≥ {UTILITY_KEPT:.0%} of the target's, and no baseline setting dominates it (≥ on "
                  "both, > on one; settings are means over seeds)")
    summary = sweeps.summary
    if summary.empty or UQ not in summary or UTILITY not in summary:
        return claim.untestable("no paper-suite metrics (run with eval=[paper,...])")
    refs = {m: summary[summary["method"] == m].dropna(subset=[UQ, UTILITY]) for m in REFERENCES}
    if any(r.empty for r in refs.values()):
        return claim.untestable("no target/retain paper metrics")
    (target_uq, target_u), (retain_uq, _) = ((refs[m].iloc[0][UQ], refs[m].iloc[0][UTILITY]) for m in REFERENCES)
    points = summary[~summary["method"].isin(REFERENCES)].dropna(subset=[UQ, UTILITY])
    pmc, baselines = points[points["method"] == "pmc"], points[points["method"] != "pmc"]
    if pmc.empty:
        return claim.untestable("no PMC run with paper metrics")
    if baselines.empty:
        return claim.untestable("no baseline run with paper metrics")

    uq_bar = target_uq + UQ_GAP_CLOSED * (retain_uq - target_uq)
    utility_bar = UTILITY_KEPT * target_u
    claim.measured.append(f"target {fmt(target_uq)} / {fmt(target_u)}, retain {fmt(retain_uq)} / "
                          f"{fmt(refs['retain'].iloc[0][UTILITY])} (unlearn quality / utility); bars: unlearn "
                          f"quality ≥ {fmt(uq_bar)}, utility ≥ {fmt(utility_bar)}")
    holding = []
    for _, p in pmc.iterrows():
        meets = p[UQ] >= uq_bar and p[UTILITY] >= utility_bar
        by = dominated_by(p, baselines, UQ, UTILITY)
        claim.measured.append(f"{label('pmc', p['setting'])}: {fmt(p[UQ])} / {fmt(p[UTILITY])}, "
                              + ("meets both bars" if meets else "misses a bar") + "; "
                              + (f"dominated by {', '.join(by)}" if by else "no baseline dominates it"))
        if meets and not by:
            holding.append(p)
    claim.details = front_details(points)
    return claim.decide(bool(holding))


def front_details(points: pd.DataFrame) -> str:
    """Every setting with its metrics and the settings that dominate it, on the paper's pair and on TOFU's."""
    pairs = [(x, y) for x, y in ((UQ, UTILITY), (FORGET_QUALITY, MODEL_UTILITY)) if x in points and y in points]
    columns = [c for pair in pairs for c in pair]
    rows = []
    for index, p in points.iterrows():
        cells = [label(p["method"], p["setting"]), str(int(p["seeds"]))]
        cells += [fmt(p[c], 3 if c in (FORGET_QUALITY, MODEL_UTILITY) else 2) for c in columns]
        for x, y in pairs:
            others = points[points.index != index].dropna(subset=[x, y])
            by = dominated_by(p, others, x, y, values=False) if pd.notna(p[x]) and pd.notna(p[y]) else ["–"]
            cells.append(", ".join(by) or "none")
        rows.append(cells)
    headers = ["setting", "seeds"] + columns + [f"dominated on {x} / {y} by" for x, y in pairs]
    return ("Every unlearned setting (mean over seeds) and the settings of any method that dominate it:\n\n"
            + md_table(headers, rows))


def c2_collateral(sweeps: Sweeps) -> Claim:
    claim = Claim("C2", "NPO shifts the log-probabilities of unrelated text downwards; PMC leaves them near zero",
                  f"NPO's mean per-token log-probability shift against the target on unrelated text < 0, and "
                  f"|PMC's| ≤ {NEAR_ZERO:g} × |NPO's| (analyses suite, collateral damage; each method at its "
                  "setting with the highest unlearn quality, mean over seeds)")
    found = {}
    for method in ("npo", "pmc"):
        got = analyses_at_best(sweeps, method)
        if isinstance(got, str):
            return claim.untestable(got)
        found[method] = got
    shift = {m: summary_mean(files, "collateral_mean_shift_all") for m, (_, files) in found.items()}
    on_forget = {m: summary_mean(files, "collateral_mean_shift_forget_tokens") for m, (_, files) in found.items()}
    if not all(finite(v) for v in shift.values()):
        return claim.untestable("no collateral_mean_shift_all in the analyses summaries")
    for method, (name, files) in found.items():
        spread = [f["summary"].get("collateral_mean_shift_all") for f in files]
        claim.measured.append(f"{name}: {fmt(shift[method], 3)} nats/token (forget-answer tokens "
                              f"{fmt(on_forget[method], 3)})" + (f", seeds {', '.join(fmt(v, 3) for v in spread)}"
                                                                 if len(files) > 1 else ""))
    tolerance = NEAR_ZERO * abs(shift["npo"])
    claim.measured.append(f"near zero: |shift| ≤ {fmt(tolerance, 3)}")
    return claim.decide(shift["npo"] < 0 and abs(shift["pmc"]) <= tolerance)


def attack_threshold(files: list[dict]) -> tuple[float, float, int]:
    """(chance, the success threshold chance + k binomial standard errors, questions)."""
    chance = summary_mean(files, "least_likely_chance")
    questions = len(files[0].get("examples", {}).get("least_likely", [])) or 1
    return chance, chance + ATTACK_STANDARD_ERRORS * math.sqrt(chance * (1 - chance) / questions), questions


def family_verdict(claim: Claim, results: dict[str, bool], pmc: bool, missing: list[str],
                   what: str, pmc_what: str) -> Claim:
    """C3, C6: holds when more than half of the GA-family methods with data show `what` and PMC does not."""
    if missing:
        claim.measured.append("left out: " + "; ".join(missing))
    shown = [m for m, hit in results.items() if hit]
    claim.measured.append(f"{what}: {len(shown)} of {len(results)} GA-family methods "
                          f"({', '.join(shown) or 'none'}); PMC: {pmc_what if pmc else 'no'}")
    return claim.decide(len(shown) > len(results) / 2 and not pmc)


def c3_attack(sweeps: Sweeps) -> Claim:
    claim = Claim("C3", "the least-likely multiple-choice attack recovers the true answer after NPO-style methods, "
                        "not after PMC",
                  f"the attack succeeds on a model when its rate (the least likely option is the true answer) > "
                  f"chance + {ATTACK_STANDARD_ERRORS:g} binomial standard errors √(c(1−c)/#questions) and > the "
                  f"target's rate; holds when it succeeds on more than half of the GA-family methods "
                  f"({', '.join(GA_FAMILY)}) and not on PMC (each at its setting with the highest unlearn quality)")
    pmc = analyses_at_best(sweeps, "pmc")
    if isinstance(pmc, str):
        return claim.untestable(pmc)
    target = sweeps.reference("target", "analyses")
    if target is None:
        return claim.untestable(f"no {ANALYSES_MISSING.replace('<model>', 'target')}")
    target_rate = target["summary"]["least_likely_attack_rate"]
    chance, threshold, questions = attack_threshold(pmc[1])
    claim.measured.append(f"chance {fmt(chance, 3)}, {questions} questions, success above {fmt(threshold, 3)}; "
                          f"target {fmt(target_rate, 3)}")
    results, missing = {}, []
    for method in [m for m in sweeps.methods() if m in GA_FAMILY] + ["pmc"]:
        got = analyses_at_best(sweeps, method)
        if isinstance(got, str):
            missing.append(got)
            continue
        name, files = got
        rate = summary_mean(files, "least_likely_attack_rate")
        _, threshold, _ = attack_threshold(files)
        results[method] = rate > threshold and rate > target_rate
        claim.measured.append(f"{name}: {fmt(rate, 3)}" + (" (succeeds)" if results[method] else ""))
    pmc_hit = results.pop("pmc")
    if not results:
        return claim.untestable("no GA-family method (" + ", ".join(GA_FAMILY) + ") with analyses: "
                                + ("; ".join(missing) or "none was run"))
    return family_verdict(claim, results, pmc_hit, missing, "attack succeeds", "succeeds")


def selected_and_retain(log: pd.DataFrame) -> dict | str:
    """C5's numbers from one PMC train log, or why they cannot be read."""
    missing = [c for c in ("epoch", "selected_score", "retain_loss") if c not in log]
    if missing:
        return f"train_log.jsonl has no {', '.join(missing)}"
    log = log.sort_values("step")
    epochs = sorted(log["epoch"].unique())
    if len(epochs) < 2:
        return "train_log.jsonl covers fewer than 2 epochs"
    by_epoch = min(SELECTED_BY_EPOCH, epochs[-1])
    retain = log.groupby("epoch")["retain_loss"].mean()
    return {"start": log["selected_score"].iloc[0],
            "by_epoch": by_epoch,
            "at_epoch": log.loc[log["epoch"] <= by_epoch, "selected_score"].iloc[-1],
            "final": log["selected_score"].iloc[-1],
            "retain_first": retain.iloc[0], "retain_peak": retain.max(),
            "retain_peak_epoch": int(retain.idxmax()),  # the first epoch with the peak mean
            "retain_final": retain.iloc[-1], "epochs": int(epochs[-1])}


def c5_dynamics(sweeps: Sweeps) -> Claim:
    claim = Claim("C5", "during PMC the selected answers' ROUGE drops towards 0 within the first epochs, and the "
                        "retain loss recovers",
                  f"in every PMC run's train_log.jsonl: the selected score (mean cached ROUGE-L recall) at the end "
                  f"of epoch {SELECTED_BY_EPOCH} (or the last, if fewer) ≤ {SELECTED_DROP:g} × its first logged "
                  f"value, and the last epoch's mean retain loss ≤ the first epoch's + {RETAIN_GIVEN_BACK:g} × "
                  "(peak epoch mean − first epoch mean)")
    runs = sweeps.unlearned[sweeps.unlearned["method"] == "pmc"]
    if runs.empty:
        return claim.untestable("no PMC run")
    verdicts = []
    for _, run in runs.iterrows():
        log = figures.read_train_log(Path(run["job"]))
        name = f"{label('pmc', run['setting'])} seed {run['seed']}"
        got = "no train_log.jsonl" if log.empty else selected_and_retain(log)
        if isinstance(got, str):
            claim.measured.append(f"{name}: {got}")
            continue
        dropped = got["at_epoch"] <= SELECTED_DROP * got["start"]
        recovered = got["retain_final"] <= got["retain_first"] + RETAIN_GIVEN_BACK * (
            got["retain_peak"] - got["retain_first"])
        verdicts.append(dropped and recovered)
        claim.measured.append(
            f"{name}: selected {fmt(got['start'], 3)} → {fmt(got['at_epoch'], 3)} (epoch {got['by_epoch']}) → "
            f"{fmt(got['final'], 3)} (epoch {got['epochs']}), {'drops' if dropped else 'does not drop enough'}; "
            f"retain loss {fmt(got['retain_first'], 3)} → peak {fmt(got['retain_peak'], 3)} (epoch "
            f"{got['retain_peak_epoch']}) → {fmt(got['retain_final'], 3)}, "
            + ("never rose above its first epoch" if got["retain_peak"] == got["retain_first"]
               else "recovers" if recovered else "does not recover"))
    if not verdicts:
        return claim.untestable("no PMC train log with epoch, selected_score and retain_loss")
    return claim.decide(all(verdicts))


def degenerate(quality: dict, target: dict) -> list[str]:
    """How a model's response quality departs from the target's: empty, repeated, gibberish (none: fluent)."""
    signs = []
    if finite(quality["empty_rate"]) and quality["empty_rate"] >= target["empty_rate"] + DEGENERATE["empty_rate"]:
        signs.append("empty")
    if finite(quality["distinct_ratio"]) and finite(target["distinct_ratio"]) \
            and quality["distinct_ratio"] <= target["distinct_ratio"] - DEGENERATE["distinct_ratio"]:
        signs.append("repeated")
    if finite(quality["fluency_nll"]) and finite(target["fluency_nll"]) \
            and quality["fluency_nll"] >= target["fluency_nll"] + DEGENERATE["fluency_nll"]:
        signs.append("gibberish")
    return signs


QUALITY_KEYS = ("empty_rate", "distinct_ratio", "fluency_nll", "answer_length")


def example_answers(job: str, model: str, count: int) -> list[dict]:
    """The first `count` forget questions with the model's greedy answer: analyses.json's example answers, else the
    paper suite's forget rows."""
    analyses = suite_file(job, model, "analyses")
    if analyses and analyses.get("examples", {}).get("example_answers"):
        return [{"question": r["question"], "answer": r["answer"], "generated": r["greedy"]}
                for r in analyses["examples"]["example_answers"][:count]]
    paper = suite_file(job, model, "paper")
    if paper and paper.get("examples", {}).get("forget"):
        return [{"question": r["question"], "answer": r["answer"], "generated": r["generated"]}
                for r in paper["examples"]["forget"][:count]]
    return []


def c6_quality(sweeps: Sweeps) -> Claim:
    claim = Claim("C6", "GA-family answers degenerate (empty, repeated, gibberish) while PMC's stay fluent",
                  f"degenerate: against the target, empty-answer rate ≥ +{DEGENERATE['empty_rate']:g}, or "
                  f"distinct-word ratio ≤ −{DEGENERATE['distinct_ratio']:g}, or fluency NLL under the retain model ≥ "
                  f"+{DEGENERATE['fluency_nll']:g} nat/token; holds when more than half of the GA-family methods "
                  f"({', '.join(GA_FAMILY)}) degenerate and PMC does not (analyses suite, response quality; each "
                  "at its setting with the highest unlearn quality)")
    pmc = analyses_at_best(sweeps, "pmc")
    if isinstance(pmc, str):
        return claim.untestable(pmc)
    target_file = sweeps.reference("target", "analyses")
    if target_file is None:
        return claim.untestable(f"no {ANALYSES_MISSING.replace('<model>', 'target')}")
    target = target_file["summary"]
    claim.measured.append("target: " + quality_line(target))
    results, missing, examples = {}, [], {"target": example_answers(sweeps.unlearned["job"].iloc[0], "target",
                                                                    EXAMPLES)}
    for method in [m for m in sweeps.methods() if m in GA_FAMILY] + ["pmc"]:
        got = analyses_at_best(sweeps, method)
        if isinstance(got, str):
            missing.append(got)
            continue
        name, files = got
        quality = {k: summary_mean(files, k) for k in QUALITY_KEYS}
        signs = degenerate(quality, target)
        results[method] = bool(signs)
        claim.measured.append(f"{name}: {quality_line(quality)}" + (f" ({', '.join(signs)})" if signs else ""))
        examples[name] = example_answers(sweeps.best_setting(method)[1][0], "unlearned", EXAMPLES)
    claim.details = examples_details(examples)
    pmc_hit = results.pop("pmc")
    if not results:
        return claim.untestable("no GA-family method (" + ", ".join(GA_FAMILY) + ") with analyses: "
                                + ("; ".join(missing) or "none was run"))
    return family_verdict(claim, results, pmc_hit, missing, "degenerate", "degenerates")


def quality_line(q: dict) -> str:
    return (f"empty {fmt(q['empty_rate'])}, distinct {fmt(q['distinct_ratio'])}, fluency NLL {fmt(q['fluency_nll'])}"
            f", {fmt(q['answer_length'], 1)} words")


def examples_details(examples: dict[str, list[dict]]) -> str:
    """The first forget questions, each with every model's greedy answer."""
    lines = []
    reference = next((rows for rows in examples.values() if rows), [])
    for i, row in enumerate(reference):
        lines.append(f"**Q{i + 1}. {cell(row['question'])}** True answer: {cell(row['answer'])}\n")
        lines.append(md_table(["model", "greedy answer"],
                              [[name, cell(rows[i]["generated"]) if i < len(rows) else "–"]
                               for name, rows in examples.items()]))
    return "Example answers (greedy, first forget questions):\n\n" + "\n".join(lines) if lines else ""


def shaping_identity(config: dict, key: str) -> str:
    """What shapes the unlearned model, without `key` and the seed: equal strings, one ablation line."""
    parts = {name: copy.deepcopy(config.get(name)) for name in MODEL_SHAPING}
    for path in (key, "method.handler.seed"):
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
        value = figures.nested(config, spec.key)
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


def evaluate(sweeps: Sweeps, ablations: dict[str, list[Path]]) -> list[Claim]:
    """Every claim's row; `sweeps` must hold at least one unlearned job."""
    claims = [c1_front(sweeps), c2_collateral(sweeps), c3_attack(sweeps)]
    claims += [c4_ablation(name, ablations.get(name, [])) for name in ABLATIONS]
    claims += [c5_dynamics(sweeps), c6_quality(sweeps)]
    return claims


# --- markdown --------------------------------------------------------------------------------------------------------


def cell(text) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text or "*(empty)*"


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def report(sweeps: Sweeps, claims: list[Claim], command: str, ablations: dict[str, list[Path]]) -> str:
    first = read_json(Path(sweeps.unlearned["job"].iloc[0]) / "results.json") or {}
    model = ((first.get("config") or {}).get("model") or {}).get("name")
    counts = {v: sum(c.verdict.startswith(v) for c in claims) for v in ("holds", "does not hold", "not testable")}
    out = ["# The PMC paper's claims on this harness\n",
           f"Generated by `{command}`; do not edit by hand. Model `{model}`, benchmark `{first.get('benchmark')}`; "
           f"{len(sweeps.unlearned)} unlearned jobs ({', '.join(sweeps.methods())}) from "
           + ", ".join(f"`{d}`" for d in sweeps.dirs)
           + ("; ablations: " + ", ".join(f"{n} from " + ", ".join(f"`{d}`" for d in ds)
                                         for n, ds in ablations.items()) if ablations else "")
           + ". " + (f"Failed or missing jobs (no results.json), left out: {', '.join(sweeps.failed)}. "
                     if sweeps.failed else "")
           + f"Verdicts: {counts['holds']} hold, {counts['does not hold']} do not hold, "
             f"{counts['not testable']} not testable.\n",
           "Each verdict follows from the rule in its row; thresholds are constants at the top of "
           "`scripts/claims.py`. Unlearn quality and utility are the paper's (%, ROUGE-L recall).\n",
           md_table(["claim", "the paper says", "rule", "measured", "verdict"],
                    [[c.id, cell(c.statement), cell(c.rule), "<br>".join(cell(m) for m in c.measured) or "–",
                      f"**{cell(c.verdict)}**"] for c in claims])]
    details = [c for c in claims if c.details]
    if details:
        out.append("## Details\n")
        for c in details:
            out.append(f"### {c.id}\n\n{c.details}")
    return "\n".join(out)


def parse_ablations(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, list[Path]]:
    ablations: dict[str, list[Path]] = {}
    for item in given:
        name, sep, directory = item.partition("=")
        if not sep or name not in ABLATIONS:
            parser.error(f"--ablation {item!r}: expected NAME=DIR with NAME one of {list(ABLATIONS)}")
        if not Path(directory).is_dir():
            parser.error(f"--ablation {item!r}: {directory} is not a directory")
        ablations.setdefault(name, []).append(Path(directory))
    return ablations


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories (the mini paper's sweeps)")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=DIR",
                        help=f"an ablation sweep, NAME one of {', '.join(ABLATIONS)}; repeat a NAME to add "
                             "directories (jobs are paired by config, e.g. the ablation's n=1 with the main "
                             "sweep's n=5)")
    parser.add_argument("--out", type=Path, default=Path("results/claims.md"))
    args = parser.parse_args(argv)
    ablations = parse_ablations(parser, args.ablation)

    sweeps = Sweeps(args.dirs)
    if sweeps.unlearned.empty:
        print(f"error: no results.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    claims = evaluate(sweeps, ablations)
    text = report(sweeps, claims, "python scripts/claims.py " + " ".join(argv), ablations)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    for c in claims:
        print(f"{c.id}: {c.verdict}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
