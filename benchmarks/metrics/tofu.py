"""TOFU's metrics (Maini et al., 2024; locuslab/tofu, as re-implemented by open-unlearning), `eval=tofu`.

Every probability is length-normalised: p(a|q) = exp(mean log-probability of the answer tokens, end-of-sequence
included), scored with the same prompt format and answer-only labels as training (`encode_pairs`).

Per evaluation set (forget, retain, real_authors, world_facts):
  probability  forget/retain: mean p(a|q); real_authors/world_facts: mean p(a|q) / (p(a|q) + Σ p(perturbed|q))
  ROUGE        mean ROUGE-L recall of the greedy answer (ctx.max_new_tokens new tokens) against the answer
  truth ratio  TR = p̄_perturbed / p_paraphrased, p̄ the geometric mean over the perturbed answers; the denominator
               scores the paraphrased answer for forget/retain and the answer itself for real_authors/world_facts
               (TOFU's files have no paraphrase there). Reported as mean(min(TR, 1/TR)) on forget (1 = the model
               cannot tell right from wrong) and mean(max(0, 1 − TR)) elsewhere (1 = it clearly prefers the truth).
Across sets:
  forget quality  p-value of the two-sample Kolmogorov-Smirnov test between the model's raw forget-set truth
                  ratios and the retain model's (the model never trained on the forget set): 1.0 for retain itself.
                  TOFU tests exp(loss_perturbed − loss_paraphrased) = 1/TR; KS is invariant under that monotone
                  map, so the p-value is the same.
  model utility   harmonic mean of the 9 {probability, ROUGE, truth ratio} × {retain, real_authors, world_facts}
                  numbers, 0 as soon as one of them is 0.

Examples keep, per question, every probability and the raw truth ratio, so each summary number can be recomputed.
The suite has no settings (conf/eval/tofu.yaml names the class only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean
from typing import Sequence

from scipy.stats import ks_2samp

from benchmarks.metrics.common import EvalContext, Suite, SuiteResult, to_score
from benchmarks.metrics.scoring import answer_logprobs, require_models
from pmc.core.records import DataError, QARecord
from pmc.core.rouge import rouge_l_recall

SETS = ("forget", "retain", "real_authors", "world_facts")
PARAPHRASED_SETS = ("forget", "retain")  # truth ratio against the paraphrased answer; the others use the answer
UTILITY_SETS = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("prob", "rouge", "truth_ratio")
# the suite's table columns and trade-off pair: TOFU_COLUMNS, TOFU_TRADE_OFF in benchmarks/metrics/columns.py

# --- formulas: pure functions of plain numbers ----------------------------------------------------------------------


def probability(mean_logprob: float) -> float:
    """Length-normalised probability exp(mean token log-probability)."""
    return math.exp(mean_logprob)


def normalised_probability(p_answer: float, p_perturbed: Sequence[float]) -> float:
    """p(a) / (p(a) + Σ p(perturbed)): the answer's share among the true and the wrong answers."""
    return p_answer / (p_answer + sum(p_perturbed))


def geometric_mean(probs: Sequence[float]) -> float:
    """exp(mean(log p)); 0 when any probability is 0."""
    if not probs:
        raise ValueError("geometric mean of no probabilities")
    if min(probs) <= 0.0:
        return 0.0
    return math.exp(mean(math.log(p) for p in probs))


def truth_ratio(p_perturbed: Sequence[float], p_paraphrased: float) -> float:
    """Raw truth ratio p̄_perturbed / p_paraphrased (below 1: the model prefers the true answer)."""
    numerator = geometric_mean(p_perturbed)
    if p_paraphrased <= 0.0:
        return math.inf if numerator > 0.0 else 1.0  # both vanish: no preference either way
    return numerator / p_paraphrased


def forget_truth_ratio_score(truth_ratios: Sequence[float]) -> float:
    """Forget set: mean(min(TR, 1/TR)), 1 when true and wrong answers are equally likely."""
    return mean(min(tr, 1.0 / tr) if 0.0 < tr < math.inf else 0.0 for tr in truth_ratios)


def utility_truth_ratio_score(truth_ratios: Sequence[float]) -> float:
    """Retain and utility sets: mean(max(0, 1 − TR)), 1 when the true answer is infinitely more likely."""
    return mean(max(0.0, 1.0 - tr) for tr in truth_ratios)


def forget_quality(model_truth_ratios: Sequence[float], retain_truth_ratios: Sequence[float]) -> float:
    """Two-sided two-sample KS test p-value between the two models' raw forget-set truth ratios."""
    return float(ks_2samp(list(model_truth_ratios), list(retain_truth_ratios)).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean, 0 when any value is 0 (scipy.stats.hmean divides by zero there)."""
    if not values:
        raise ValueError("model utility of no values")
    if min(values) <= 0.0:
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


# --- model scoring ------------------------------------------------------------------------------------------------


def eval_sets(ctx: EvalContext) -> dict[str, list[QARecord]]:
    """The four sets, checked for what the metrics need (paraphrased answers, perturbed answers)."""
    sets, name = ctx.benchmark.eval_sets, ctx.benchmark.name
    missing = [s for s in SETS if not sets.get(s)]
    if missing:
        raise DataError(f"benchmark {name!r} has no evaluation records for {missing}")
    for s in SETS:
        if any(not r.perturbed_answer for r in sets[s]):
            raise DataError(f"benchmark {name!r}: every {s} record needs perturbed answers for the TOFU truth ratio")
        if s in PARAPHRASED_SETS and any(r.paraphrased_answer is None for r in sets[s]):
            raise DataError(f"benchmark {name!r}: every {s} record needs a paraphrased_answer for the TOFU truth "
                            "ratio")
    return {s: sets[s] for s in SETS}


def _base_answer(record: QARecord, set_name: str) -> str:
    """The truth-ratio denominator's answer: paraphrased on author sets, the answer itself on utility sets."""
    return record.paraphrased_answer if set_name in PARAPHRASED_SETS else record.answer


def scored_pairs(sets: dict[str, list[QARecord]]) -> list[tuple[str, str]]:
    """Every (question, answer) the suite scores per model (answer, paraphrased answer, perturbed answers), each
    once, flattened across sets so that log-prob batches are full."""
    return list(dict.fromkeys((r.question, answer) for set_name, records in sets.items() for r in records
                              for answer in (r.answer, _base_answer(r, set_name), *r.perturbed_answer)))


def score_model(model, ctx: EvalContext, label: str = "") -> dict[str, list[dict]]:
    """Per set, one dict per question with every number the summary is built from (no cross-model metrics)."""
    sets = eval_sets(ctx)
    pairs = scored_pairs(sets)
    logprob = answer_logprobs(model, ctx, pairs)

    examples: dict[str, list[dict]] = {}
    for set_name, records in sets.items():
        generated = ctx.greedy_answers(model, [r.question for r in records], desc=f"eval {label} {set_name}")
        rows = []
        for r, answer in zip(records, generated):
            base = _base_answer(r, set_name)
            p = probability(logprob[(r.question, r.answer)])
            p_paraphrased = probability(logprob[(r.question, base)])
            p_perturbed = [probability(logprob[(r.question, w)]) for w in r.perturbed_answer]
            row = {
                "question": r.question,
                "answer": r.answer,
                "generated": answer,
                "rouge": rouge_l_recall(r.answer, answer),
                "prob": p,
                "paraphrased_answer": base,
                "paraphrased_prob": p_paraphrased,
                "perturbed_probs": p_perturbed,
                "truth_ratio": truth_ratio(p_perturbed, p_paraphrased),
            }
            if set_name not in PARAPHRASED_SETS:
                row["normalised_prob"] = normalised_probability(p, p_perturbed)
            rows.append(row)
        examples[set_name] = rows
    return examples


def summarise(examples: dict[str, list[dict]], retain_forget_truth_ratios: Sequence[float]) -> dict[str, float]:
    """The suite's summary from one model's examples and the retain model's raw forget-set truth ratios."""
    per_set: dict[str, float] = {}
    for set_name in SETS:
        rows = examples[set_name]
        prob_key = "prob" if set_name in PARAPHRASED_SETS else "normalised_prob"
        ratios = [r["truth_ratio"] for r in rows]
        per_set[f"{set_name}_prob"] = mean(r[prob_key] for r in rows)
        per_set[f"{set_name}_rouge"] = mean(r["rouge"] for r in rows)
        per_set[f"{set_name}_truth_ratio"] = (forget_truth_ratio_score(ratios) if set_name == "forget"
                                              else utility_truth_ratio_score(ratios))
    return {
        "forget_quality": forget_quality([r["truth_ratio"] for r in examples["forget"]], retain_forget_truth_ratios),
        "model_utility": model_utility([per_set[f"{s}_{m}"] for s in UTILITY_SETS for m in UTILITY_METRICS]),
        **per_set,
    }


@dataclass
class TofuSuite(Suite):
    """`eval=[tofu]`: TOFU's metrics; forget quality compares every model with the retain model."""

    name = "tofu"

    def greedy_questions(self, ctx: EvalContext) -> dict[str, list[str]]:
        return {set_name: [r.question for r in records] for set_name, records in eval_sets(ctx).items()}

    def evaluate(self, models: dict, ctx: EvalContext,
                 known: dict[str, SuiteResult] | None = None) -> dict[str, SuiteResult]:
        """Scores the models without a result in `known`; the retain model's forget-set truth ratios come from its
        known result when there is one, else from scoring it here."""
        known = known or {}
        require_models(self.name, {"retain": "forget quality compares each model with the retain model"}, models,
                       known)
        examples = {name: score_model(model, ctx, name) for name, model in to_score(models, known).items()}
        retain = known["retain"].examples if "retain" in known else examples["retain"]
        reference = [r["truth_ratio"] for r in retain["forget"]]
        return {name: SuiteResult(summarise(rows, reference), rows) for name, rows in examples.items()}
