"""The rules of claims C1-C3, C5 and C6 (C4, the ablations: ablations.py): each returns the claim's row with its
measured numbers and verdict, "not testable: <what is missing>" when the sweeps lack what it needs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmarks.metrics import trade_offs
from pmc.reporting.claims.model import (
    ANALYSES_MISSING,
    UQ,
    UTILITY,
    Claim,
    Sweeps,
    analyses_at_best,
    cell,
    finite,
    fmt,
    label,
    summary_mean,
)
from pmc.reporting.claims.thresholds import (
    ATTACK_STANDARD_ERRORS,
    DEGENERATE,
    NEAR_ZERO,
    RETAIN_GIVEN_BACK,
    SELECTED_BY_EPOCH,
    SELECTED_DROP,
    UQ_GAP_CLOSED,
    UTILITY_KEPT,
)
from pmc.reporting.jobs import REFERENCES, read_train_log, suite_file
from pmc.reporting.tables import markdown_table

GA_FAMILY = ("ga", "graddiff", "npo", "simnpo")  # the gradient-ascent / NPO-style methods of C3 and C6
EXAMPLES = 2  # C6: example answers per method


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
    """Every setting with its metrics and the settings that dominate it, on each trade-off pair the suites declare
    (the paper's, TOFU's) that the sweeps have."""
    pairs = [(x.title, y.title) for x, y in trade_offs() if x.title in points and y.title in points]
    digits = {c.title: c.digits for pair in trade_offs() for c in pair}
    columns = [c for pair in pairs for c in pair]
    rows = []
    for index, p in points.iterrows():
        cells = [label(p["method"], p["setting"]), str(int(p["seeds"]))]
        cells += [fmt(p[c], digits[c]) for c in columns]
        for x, y in pairs:
            others = points[points.index != index].dropna(subset=[x, y])
            by = dominated_by(p, others, x, y, values=False) if pd.notna(p[x]) and pd.notna(p[y]) else ["–"]
            cells.append(", ".join(by) or "none")
        rows.append(cells)
    headers = ["setting", "seeds"] + columns + [f"dominated on {x} / {y} by" for x, y in pairs]
    return ("Every unlearned setting (mean over seeds) and the settings of any method that dominate it:\n\n"
            + markdown_table(headers, rows))


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
        log = read_train_log(Path(run["job"]))
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
        lines.append(markdown_table(["model", "greedy answer"],
                                    [[name, cell(rows[i]["generated"]) if i < len(rows) else "–"]
                                     for name, rows in examples.items()]))
    return "Example answers (greedy, first forget questions):\n\n" + "\n".join(lines) if lines else ""
