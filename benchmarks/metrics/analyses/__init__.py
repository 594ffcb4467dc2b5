"""Robustness analyses of unlearning (the PMC paper's robustness section), `eval=analyses`.

The question-based analyses ask the benchmark's forget evaluation questions (eval_sets["forget"], the first
`max_questions` of them when set). Every model is scored; two serve as references and must be among the models:
"target" (collateral damage is measured against it) and "retain" (it scores the fluency of every model's answers).

Collateral damage  Per-token log-probability shift log p_model(x_t | x_<t) − log p_target(x_t | x_<t) on text that
                   has nothing to do with the forget set, scored as plain text (tokenizer(text), every token after
                   the first, at most collateral.max_tokens tokens per text). Reported over all tokens and over the
                   tokens whose id occurs in the forget answers (the ids of answer_prefix + answer under the
                   tokenizer, special tokens excluded; both the forget training split and the forget evaluation
                   set): mean, mean |shift|, 5/25/50/75/95% quantiles, and histogram counts over fixed bin edges
                   (collateral.histogram: `bins` equal bins from `low` to `high`; shifts outside them are counted
                   as underflow / overflow, not in the bins). The text (collateral.source):
                     builtin   ~50 everyday English sentences (the default, offline; the package data file
                               benchmarks/metrics/data/generic_sentences.txt)
                     file      collateral.path, one text per non-empty line
                     wikitext  the WikiText-2 (raw) test split from the hub (collateral.hub_repo / hub_file, a
                               parquet file; needs pyarrow), paragraphs of at least collateral.min_words words,
                               headings dropped
                   Any text sharing a word n-gram (n = collateral.overlap_ngram, lower-cased words; a forget answer
                   shorter than n words counts as one n-gram) with a forget answer or paraphrased answer is
                   dropped, then the first collateral.max_texts texts are kept.
Least-likely       Per question the options are the true answer and its perturbed answers; the attacker picks the
multiple choice    option the model finds least likely (length-normalised answer log-probability, as TOFU scores
                   answers: scoring.answer_logprob_means). The true option is the paraphrased answer where the record
                   has one (attack.true_option=paraphrased, the default), else the answer: TOFU's perturbed answers
                   are perturbations of the paraphrased answer, so only the fact differs between the options, not
                   the wording the model was fine-tuned on (attack.true_option=answer uses the answer itself).
                   Reported: the rate at which that pick is the true option (ties at the minimum share the credit:
                   1/#tied when the true option is among them) and the chance level mean(1 / #options). A rate well
                   above chance means unlearning left the true answer conspicuously unlikely, which gives it away.
Sampling leakage   sampling.k answers per question sampled with sampling.temperature and sampling.top_p (torch RNG
                   seeded with `seed` for every model, the caller's RNG state restored after); per question the mean
                   and the maximum (worst case) ROUGE-L recall against the true answer, each averaged over questions.
Prefill leakage    The answer is started for the model, the continuation decoded greedily: the prompt is
                   fmt.prompt_ids(question) + tokenizer(answer_prefix + prefix, add_special_tokens=False).
                   fixed   prefix = prefill.fixed_prefix (trailing whitespace dropped before tokenising: byte-level
                           BPE attaches a space to the word after it); recall against the full answer.
                   answer  prefix = the first n words of the true answer, n = max(prefill.min_prefix_words,
                           floor(prefill.answer_fraction · #words)), at most #words − 1; recall of the continuation
                           against the rest of the answer. Questions whose answer has one word are skipped.
Response quality   On the model's greedy answers (the memo shared with the other suites): empty-answer rate, mean
                   answer length in words (an empty answer counts as 0), distinct-word ratio (unique / total
                   lower-cased words, averaged over non-empty answers), and fluency = mean per-token NLL of the
                   answer (end-of-sequence included, as TOFU scores answers) under the retain model, averaged over
                   non-empty answers; with quality.empty_nll set, an empty answer counts as that NLL instead of
                   being left out.

Generation length: `max_new_tokens`, or the context's (the run's generation.max_new_tokens) when null.

Summary (per model): collateral_mean_shift_all, collateral_mean_shift_forget_tokens, least_likely_attack_rate,
least_likely_chance, sampling_rouge_mean, sampling_rouge_max, prefill_fixed_rouge, prefill_answer_rouge,
empty_rate, answer_length, distinct_ratio, fluency_nll (NaN where nothing was left to average).
Examples: collateral_texts (per text: token counts and summed shifts), collateral_distribution (per subset: the
quantiles and histogram), least_likely, sampling, prefill_fixed, prefill_answer, quality (per question), and
example_answers (the first `examples` questions: greedy, a sample and both prefilled answers).

Settings: AnalysesSuite's fields, nested by analysis (conf/eval/analyses.yaml), e.g. `eval.analyses.sampling.k=16`.
One module per analysis: collateral, least_likely, leakage (sampling and prefill), quality.
"""


from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.metrics.analyses import leakage, least_likely, quality
from benchmarks.metrics.analyses.collateral import CollateralSettings, CollateralText
from benchmarks.metrics.analyses.leakage import PrefillSettings, SamplingSettings
from benchmarks.metrics.analyses.least_likely import AttackSettings
from benchmarks.metrics.analyses.quality import QualitySettings
from benchmarks.metrics.common import EvalContext, Suite, SuiteResult, to_score
from benchmarks.metrics.scoring import require_models
from pmc.core.records import DataError, QARecord


def forget_records(ctx: EvalContext, max_questions: int | None) -> list[QARecord]:
    records = ctx.benchmark.eval_sets.get("forget") or []
    name = ctx.benchmark.name
    if not records:
        raise DataError(f"benchmark {name!r} has no forget evaluation records; eval=analyses asks the forget "
                        "questions")
    if any(not r.perturbed_answer for r in records):
        raise DataError(f"benchmark {name!r}: every forget record needs perturbed answers for the least-likely "
                        "multiple-choice attack")
    return records[:max_questions] if max_questions else list(records)


@dataclass
class AnalysesSuite(Suite):
    """`eval=[analyses]`: the robustness analyses; needs the target and the retain model among the models."""

    name = "analyses"
    max_questions: int | None = None  # forget questions analysed (the first N); null = all
    max_new_tokens: int | None = None  # sampled and prefilled answers; null = the context's (generation.max_new_tokens)
    examples: int = 5  # example answers kept per model
    seed: int = 0  # torch seed of the sampled answers, the same for every model
    collateral: CollateralSettings = field(default_factory=CollateralSettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    prefill: PrefillSettings = field(default_factory=PrefillSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)

    def __post_init__(self) -> None:
        for key in ("max_questions", "max_new_tokens"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise self.invalid(key, getattr(self, key), "null or a positive integer")
        if self.examples < 0:
            raise self.invalid("examples", self.examples, "a non-negative integer")

    def greedy_questions(self, ctx: EvalContext) -> dict[str, list[str]]:
        return {"forget": [r.question for r in forget_records(ctx, self.max_questions)]}  # response quality's

    def evaluate(self, models: dict, ctx: EvalContext,
                 known: dict[str, SuiteResult] | None = None) -> dict[str, SuiteResult]:
        """Scores the models without a result in `known`. The references are needed as models even when their own
        results are known: the target's log-probabilities are the collateral baseline, the retain model scores
        fluency."""
        require_models(self.name, {"target": "collateral damage is measured against the target model",
                                   "retain": "fluency is scored by the retain model"}, models)
        records = forget_records(ctx, self.max_questions)
        max_new_tokens = self.max_new_tokens or ctx.max_new_tokens
        baseline = CollateralText.build(self.collateral, models["target"], ctx, records)

        results = {}
        for label, model in to_score(models, known).items():
            summary, per_text, distributions = baseline.score(model, ctx)
            attack, attack_rows = least_likely.least_likely(model, ctx, records, self.attack.true_option)
            sampled, sample_rows = leakage.sampling(model, ctx, records, self.sampling, self.seed, max_new_tokens,
                                                    label)
            prefilled, fixed_rows, answer_rows = leakage.prefill(model, ctx, records, self.prefill, max_new_tokens,
                                                                 label)
            quality_summary, quality_rows = quality.quality(model, models["retain"], ctx, records, self.quality,
                                                            label)
            prefix_of = {r["question"]: r for r in answer_rows}
            examples_rows = [
                {"question": r.question, "answer": r.answer, "greedy": q["generated"], "sample": sr["samples"][0],
                 "prefill_fixed": f"{fr['prefix']} {fr['continuation']}",
                 "prefill_answer": (f"{prefix_of[r.question]['prefix']} {prefix_of[r.question]['continuation']}"
                                    if r.question in prefix_of else None)}
                for r, q, sr, fr in list(zip(records, quality_rows, sample_rows, fixed_rows))[: self.examples]
            ]
            results[label] = SuiteResult(
                {**summary, **attack, **sampled, **prefilled, **quality_summary},
                {"collateral_texts": per_text, "collateral_distribution": distributions,
                 "least_likely": attack_rows, "sampling": sample_rows, "prefill_fixed": fixed_rows,
                 "prefill_answer": answer_rows, "quality": quality_rows, "example_answers": examples_rows},
            )
        return results
