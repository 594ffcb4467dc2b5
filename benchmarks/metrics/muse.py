"""MUSE's metrics (Shi et al., 2024; muse-bench/muse_bench), `eval=muse`, on a MUSE-style raw-text benchmark.

Every prompt is plain text (pmc.core.prompts.RAW_TEXT), whatever the model's chat or QA format.

  VerbMem   mean ROUGE-L F1 between the greedy continuation of each verbmem_forget prompt (verbmem_max_new_tokens
            = 128 new tokens, MUSE's setting) and the true continuation cut to its first 128 tokens.
  KnowMem   mean ROUGE-L F1 between the greedy answer and the true answer, on knowmem_forget and knowmem_retain.
            The prompt is MUSE's few-shot format (benchmarks.muse.text.knowmem_prompt) with the set's *_icl
            examples (none when the benchmark has no *_icl set); knowmem_max_new_tokens = 32 new tokens, the answer
            cut before the first "\\n\\n", "\\nQuestion" or "Question:" (as muse_bench does).
            Both lengths are MUSE's, not generation.max_new_tokens; for quick runs the settings
            verbmem_max_new_tokens / knowmem_max_new_tokens override them.
  PrivLeak  (AUC_model − AUC_retain) / AUC_retain × 100 with MUSE's forget-vs-holdout AUC of the Min-K% attack
            (K = 0.4): 0 for the reference, ≈ −100 for a model that memorised the forget texts (under-unlearning),
            positive when the forget texts look *less* familiar than unseen ones (over-unlearning).
            AUC_retain comes from the setting privleak_reference:
              retrain    (default) the retain model's own AUC (models["retain"], never trained on the forget
                         texts), computed on the same texts in the same way;
              published  MUSE's published AUC of its retrained Llama-2-7B (muse_bench constants.py AUC_RETRAIN
                         [corpus]["forget_holdout_Min-40%"]: news 0.4772, books 0.5393), which muse_bench's
                         eval.py L78 always uses; for when no retrained model is at hand. Only meaningful for
                         MUSE's own target model on MUSE's texts. The corpus is the setting
                         privleak_corpus (news | books), else the benchmark's (muse_news / muse_books).
            The summary names the source (`privleak_reference`) and the AUC used (`privleak_reference_auc`).

Membership scores, per whole text (tokenised as one sequence, cut to the model's context; every token after the
first scored), all oriented as MUSE orients them, higher = less likely to be training data:
  loss        mean token negative log-likelihood
  zlib        loss / length in bytes of the zlib-compressed UTF-8 text (muse_bench's "PPL/zlib")
  min_k       −(mean of the lowest K% token log-probabilities), K% = int(K · tokens), at least one token
  min_k++     −(mean of the lowest K% of (log p(x_t) − μ_t) / σ_t), μ_t and σ_t the mean and standard
              deviation of log p(·) under the model's own next-token distribution at step t (Zhang et al., 2024)
AUC (MUSE's convention, muse_bench privleak: holdout texts labelled 1, forget texts 0, ranked by −score) is the
Mann–Whitney statistic P(score(forget) > score(holdout)) + ½ P(tie): 0.5 when the attack cannot tell forget from
holdout texts, → 0 when the forget texts are recognised as training data. The usual attack AUC (members =
positive class) is 1 − this. `auc_min_k_retain` (when the benchmark has mia_retain) is the Min-K% statistic with
the retain texts in place of the forget texts: members of every model, so ≈ 0 while a model still knows them.

Settings: MuseSuite's fields (conf/eval/muse.yaml), e.g. `eval.muse.privleak_reference=published`.

ROUGE is rouge-score's ROUGE-L F1 without stemming, as in muse_bench (pmc.core.rouge.rouge_l_f1).
VerbMem and KnowMem are reported in [0, 1] (MUSE's tables show them × 100); PrivLeak in percent.

Examples keep every generated answer with its score and every text's token count and four scores, so each summary
number can be recomputed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from statistics import mean
from typing import Sequence

import torch

from benchmarks.metrics.common import EvalContext, Suite, SuiteResult, to_score
from benchmarks.metrics.scoring import max_length_for, pad_id_of, require_models, score_batches, text_batch
from benchmarks.muse.text import (
    KNOWMEM_FORGET,
    KNOWMEM_FORGET_ICL,
    KNOWMEM_RETAIN,
    KNOWMEM_RETAIN_ICL,
    MIA_FORGET,
    MIA_HOLDOUT,
    MIA_RETAIN,
    REQUIRED_SETS,
    VERBMEM_FORGET,
    knowmem_prompt,
)
from pmc.core.errors import ConfigError
from pmc.core.generation import greedy_answers
from pmc.core.losses import logits_of
from pmc.core.prompts import RAW_TEXT
from pmc.core.records import DataError, QARecord
from pmc.core.rouge import rouge_l_f1

MIN_K = 0.4  # PrivLeak's attack: Min-40%
KNOWMEM_STOPS = ("\n\n", "\nQuestion", "Question:")
MIA_BATCH_SIZE = 8  # texts scored per forward pass at most (the full vocabulary distribution is kept per token)
SIGMA_FLOOR = 1e-8  # Min-K%++: σ_t of a one-hot next-token distribution is 0
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
PRIVLEAK_ATTACK = "min_k"
PRIVLEAK_REFERENCES = ("retrain", "published")
# muse_bench constants.py L62 (news) and L163 (books): AUC_RETRAIN[corpus]["forget_holdout_Min-40%"], the retrained
# model's forget-vs-holdout Min-40% AUC (stored there as 0.47719999999999996 and 0.5392999999999999)
PUBLISHED_RETRAIN_AUC = {"news": 0.4772, "books": 0.5393}
TEXT_PREVIEW = 200  # characters of each scored text kept in the examples


# --- formulas: pure functions of plain numbers ----------------------------------------------------------------------


def cut_knowmem_answer(generated: str) -> str:
    """The answer up to the first stop string (the model going on to ask the next question), stripped."""
    for stop in KNOWMEM_STOPS:
        generated = generated.split(stop)[0]
    return generated.strip()


def loss_score(logprobs: Sequence[float]) -> float:
    """Mean negative log-likelihood of the scored tokens."""
    return -mean(logprobs)


def zlib_score(logprobs: Sequence[float], text: str) -> float:
    """Loss divided by the zlib-compressed length of the text in bytes."""
    return loss_score(logprobs) / len(zlib.compress(text.encode("utf-8")))


def _lowest_mean(values: Sequence[float], k: float) -> float:
    if not values:
        raise ValueError("no token scores")
    count = max(1, int(len(values) * k))
    return mean(sorted(values)[:count])


def min_k_score(logprobs: Sequence[float], k: float = MIN_K) -> float:
    """Min-K%: −(mean of the int(k·n) lowest token log-probabilities), at least one."""
    return -_lowest_mean(logprobs, k)


def min_k_plus_plus_score(logprobs: Sequence[float], mu: Sequence[float], sigma: Sequence[float],
                          k: float = MIN_K) -> float:
    """Min-K%++: −(mean of the int(k·n) lowest standardised log-probabilities (log p − μ) / σ), at least one."""
    z = [(lp - m) / max(s, SIGMA_FLOOR) for lp, m, s in zip(logprobs, mu, sigma, strict=True)]
    return -_lowest_mean(z, k)


def auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """MUSE's forget-vs-holdout AUC: P(score(forget) > score(holdout)) + ½ P(equal), over all pairs."""
    if not forget_scores or not holdout_scores:
        raise ValueError("AUC needs at least one forget and one holdout score")
    wins = sum((f > h) + 0.5 * (f == h) for f in forget_scores for h in holdout_scores)
    return wins / (len(forget_scores) * len(holdout_scores))


def privleak(auc_model: float, auc_retain: float) -> float:
    """(AUC_model − AUC_retain) / AUC_retain × 100; NaN when the retain model's AUC is 0 (no reference scale)."""
    if auc_retain == 0.0:
        return math.nan
    return (auc_model - auc_retain) / auc_retain * 100.0


# --- model scoring ------------------------------------------------------------------------------------------------


@dataclass
class TokenScores:
    """Per scored token (every token after the first): log p(x_t), and μ_t, σ_t of log p under the model."""

    logprobs: list[float]
    mu: list[float]
    sigma: list[float]


def token_statistics(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From next-token logits [T, V] and the tokens that followed [T]: log p(target), μ = Σ p log p and
    σ = sqrt(Σ p (log p − μ)²) per step, in float32 (σ computed in two passes, so it never goes negative)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mu = (p * logp).sum(-1)
    sigma = (p * (logp - mu.unsqueeze(-1)).square()).sum(-1).sqrt()
    return picked, mu, sigma


def text_token_scores(model, tokenizer, texts: Sequence[str], batch_size: int, max_length: int) -> list[TokenScores]:
    """Token-level scores of whole texts, `batch_size` texts per forward pass (scoring.score_batches: right-padded,
    longest first); returned in the order of `texts`. A text is tokenised as one sequence (with the tokenizer's
    special tokens, as muse_bench does) and cut to max_length tokens."""
    encoded = [tokenizer(text)["input_ids"][:max_length] for text in texts]
    for text, ids in zip(texts, encoded):
        if len(ids) < 2:
            raise DataError(f"membership-attack text {text[:60]!r} has fewer than two tokens; nothing to score")

    def per_row(model, batch, rows: list[int]) -> list[TokenScores]:
        logits = logits_of(model, batch.input_ids, batch.attention_mask)
        out = []
        for j, i in enumerate(rows):
            n = len(encoded[i])
            picked, mu, sigma = token_statistics(logits[j, : n - 1], batch.input_ids[j, 1:n])
            out.append(TokenScores(picked.tolist(), mu.tolist(), sigma.tolist()))
        return out

    return score_batches(model, [len(ids) for ids in encoded], batch_size,
                         lambda rows: text_batch([encoded[i] for i in rows], pad_id_of(tokenizer)), per_row)


def attack_scores(text: str, scores: TokenScores, k: float = MIN_K) -> dict[str, float]:
    return {
        "loss": loss_score(scores.logprobs),
        "zlib": zlib_score(scores.logprobs, text),
        "min_k": min_k_score(scores.logprobs, k),
        "min_k_plus_plus": min_k_plus_plus_score(scores.logprobs, scores.mu, scores.sigma, k),
    }


def muse_sets(ctx: EvalContext) -> dict[str, list[QARecord]]:
    sets, name = ctx.benchmark.eval_sets, ctx.benchmark.name
    missing = [s for s in REQUIRED_SETS if not sets.get(s)]
    if missing:
        raise DataError(f"benchmark {name!r} has no evaluation records for {missing}; eval=muse needs a MUSE-style "
                        "benchmark (benchmark=muse or benchmark=muse_synthetic)")
    return sets


def _truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """The text cut to its first max_tokens tokens (muse_bench compares the continuation with the truth cut so)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def verbmem(model, ctx: EvalContext, records: list[QARecord], max_new_tokens: int, label: str = "") -> list[dict]:
    generated = greedy_answers(model, ctx.tokenizer, RAW_TEXT, [r.question for r in records],
                               max_new_tokens=max_new_tokens, batch_size=ctx.batch_size,
                               desc=f"eval {label} verbmem")
    rows = []
    for r, g in zip(records, generated):
        truth = _truncate_tokens(ctx.tokenizer, r.answer, max_new_tokens)
        rows.append({"prompt": r.question, "answer": truth, "generated": g, "rouge_l_f1": rouge_l_f1(truth, g)})
    return rows


def knowmem(model, ctx: EvalContext, records: list[QARecord], shots: list[QARecord], max_new_tokens: int,
            label: str = "") -> list[dict]:
    prompts = [knowmem_prompt(r.question, [(s.question, s.answer) for s in shots]) for r in records]
    generated = greedy_answers(model, ctx.tokenizer, RAW_TEXT, prompts, max_new_tokens=max_new_tokens,
                               batch_size=ctx.batch_size, desc=f"eval {label} knowmem")
    rows = []
    for r, g in zip(records, generated):
        answer = cut_knowmem_answer(g)
        rows.append({"question": r.question, "answer": r.answer, "generated": answer,
                     "rouge_l_f1": rouge_l_f1(r.answer, answer)})
    return rows


def membership(model, ctx: EvalContext, sets: dict[str, list[QARecord]]) -> dict[str, list[dict]]:
    """Per MIA set, one row per text: its token count and the four attack scores."""
    names = [s for s in (MIA_FORGET, MIA_HOLDOUT, MIA_RETAIN) if sets.get(s)]
    texts = [r.answer for s in names for r in sets[s]]
    scored = text_token_scores(model, ctx.tokenizer, texts, min(ctx.scoring_batch_size, MIA_BATCH_SIZE),
                               max_length_for(model, ctx))
    rows, position = {}, 0
    for s in names:
        rows[s] = []
        for index, r in enumerate(sets[s]):
            scores = scored[position]
            position += 1
            rows[s].append({"index": index, "text": r.answer[:TEXT_PREVIEW], "tokens": len(scores.logprobs) + 1,
                            **attack_scores(r.answer, scores)})
    return rows


def attack_aucs(examples: dict[str, list[dict]]) -> dict[str, float]:
    """auc_<attack> (forget vs holdout) for every attack, and auc_min_k_retain (retain vs holdout, Min-K%) where
    retain texts were scored."""
    holdout = examples[MIA_HOLDOUT]
    out = {f"auc_{attack}": auc([r[attack] for r in examples[MIA_FORGET]], [r[attack] for r in holdout])
           for attack in ATTACKS}
    if MIA_RETAIN in examples:
        out[f"auc_{PRIVLEAK_ATTACK}_retain"] = auc([r[PRIVLEAK_ATTACK] for r in examples[MIA_RETAIN]],
                                                   [r[PRIVLEAK_ATTACK] for r in holdout])
    return out


def summarise(examples: dict[str, list[dict]], retain_auc: float, reference: str = "retrain") -> dict:
    """The suite's summary from one model's examples and the reference Min-K% forget-vs-holdout AUC (`reference`
    names where it came from: "retrain" or "published")."""
    aucs = attack_aucs(examples)
    return {
        "verbmem_forget": mean(r["rouge_l_f1"] for r in examples[VERBMEM_FORGET]),
        "knowmem_forget": mean(r["rouge_l_f1"] for r in examples[KNOWMEM_FORGET]),
        "knowmem_retain": mean(r["rouge_l_f1"] for r in examples[KNOWMEM_RETAIN]),
        "privleak": privleak(aucs[f"auc_{PRIVLEAK_ATTACK}"], retain_auc),
        "privleak_reference": reference,
        "privleak_reference_auc": retain_auc,
        **aucs,
    }


@dataclass
class MuseSuite(Suite):
    """`eval=[muse]`: MUSE's VerbMem, KnowMem and PrivLeak on a MUSE-style text benchmark."""

    name = "muse"
    verbmem_max_new_tokens: int = 128  # muse_bench's verbmem setting
    knowmem_max_new_tokens: int = 32  # muse_bench's knowmem setting
    privleak_reference: str = "retrain"  # retrain | published
    privleak_corpus: str | None = None  # news | books | null (the benchmark's)

    def __post_init__(self) -> None:
        for key in ("verbmem_max_new_tokens", "knowmem_max_new_tokens"):
            if getattr(self, key) < 1:
                raise self.invalid(key, getattr(self, key), "a positive integer")
        if self.privleak_reference not in PRIVLEAK_REFERENCES:
            raise self.invalid("privleak_reference", self.privleak_reference, f"one of {list(PRIVLEAK_REFERENCES)}")
        if self.privleak_corpus is not None and self.privleak_corpus not in PUBLISHED_RETRAIN_AUC:
            raise self.invalid("privleak_corpus", self.privleak_corpus,
                               f"one of {sorted(PUBLISHED_RETRAIN_AUC)} or null")

    def published_corpus(self, ctx: EvalContext) -> str | None:
        """The corpus whose published reference AUC PrivLeak uses, or None with privleak_reference=retrain."""
        if self.privleak_reference == "retrain":
            return None
        corpus = self.privleak_corpus or ctx.benchmark.name.removeprefix("muse_")
        if corpus not in PUBLISHED_RETRAIN_AUC:
            raise ConfigError(f"eval.muse.privleak_reference=published: MUSE publishes reference AUCs for "
                              f"{sorted(PUBLISHED_RETRAIN_AUC)} only, and benchmark {ctx.benchmark.name!r} is "
                              "neither; set eval.muse.privleak_corpus to choose one")
        return corpus

    def score_model(self, model, ctx: EvalContext, label: str = "") -> dict[str, list[dict]]:
        """Every per-example number of one model (no cross-model metric)."""
        sets = muse_sets(ctx)
        knowmem_tokens = self.knowmem_max_new_tokens
        examples = {
            VERBMEM_FORGET: verbmem(model, ctx, sets[VERBMEM_FORGET], self.verbmem_max_new_tokens, label),
            KNOWMEM_FORGET: knowmem(model, ctx, sets[KNOWMEM_FORGET], sets.get(KNOWMEM_FORGET_ICL, []),
                                    knowmem_tokens, label),
            KNOWMEM_RETAIN: knowmem(model, ctx, sets[KNOWMEM_RETAIN], sets.get(KNOWMEM_RETAIN_ICL, []),
                                    knowmem_tokens, label),
        }
        examples.update(membership(model, ctx, sets))
        return examples

    def evaluate(self, models: dict, ctx: EvalContext,
                 known: dict[str, SuiteResult] | None = None) -> dict[str, SuiteResult]:
        """Scores the models without a result in `known`; the retain model's AUC comes from its known result when
        there is one, else from scoring it here (or MUSE's published one, privleak_reference=published)."""
        known = known or {}
        corpus = self.published_corpus(ctx)
        if corpus is None:
            require_models(self.name, {"retain": "PrivLeak compares each model's membership-attack AUC with the "
                                                 "retain model's"}, models, known,
                           hint=", or use MUSE's published reference with eval.muse.privleak_reference=published")
        muse_sets(ctx)
        examples = {name: self.score_model(model, ctx, name) for name, model in to_score(models, known).items()}
        if corpus is None:
            retain = known["retain"].examples if "retain" in known else examples["retain"]
            reference = attack_aucs(retain)[f"auc_{PRIVLEAK_ATTACK}"]
        else:
            reference = PUBLISHED_RETRAIN_AUC[corpus]
        source = self.privleak_reference
        return {name: SuiteResult(summarise(rows, reference, source), rows) for name, rows in examples.items()}
