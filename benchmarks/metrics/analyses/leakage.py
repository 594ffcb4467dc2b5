"""Leakage beyond the greedy answer: under sampling (k answers per question, mean and worst-case ROUGE-L recall)
and under prefilling (the answer started for the model, the continuation decoded greedily); see the package
docstring."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from statistics import mean
from typing import Sequence

import torch

from benchmarks.metrics.common import EvalContext, mean_or_nan
from pmc.core.errors import ConfigError
from pmc.core.generation import generate_answers
from pmc.core.records import QARecord
from pmc.core.rouge import rouge_l_recall


@dataclass
class SamplingSettings:
    k: int = 8  # answers sampled per question
    temperature: float = 1.0
    top_p: float = 0.95

    def __post_init__(self) -> None:
        where = "eval.analyses.sampling"
        if self.k < 1:
            raise ConfigError(f"{where}.k must be a positive integer, got {self.k!r}")
        if not self.temperature > 0:
            raise ConfigError(f"{where}.temperature must be a positive number, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}.top_p must be in (0, 1], got {self.top_p!r}")


@dataclass
class PrefillSettings:
    fixed_prefix: str = "The answer is: "
    answer_fraction: float = 0.25  # share of the true answer's words given as the prefix
    min_prefix_words: int = 1

    def __post_init__(self) -> None:
        where = "eval.analyses.prefill"
        if self.fixed_prefix.strip() == "":
            raise ConfigError(f"{where}.fixed_prefix must be a non-empty string, got {self.fixed_prefix!r}")
        if not 0 < self.answer_fraction < 1:
            raise ConfigError(f"{where}.answer_fraction must be in (0, 1), got {self.answer_fraction!r}")
        if self.min_prefix_words < 1:
            raise ConfigError(f"{where}.min_prefix_words must be a positive integer, got {self.min_prefix_words!r}")


# --- formulas: pure functions of strings ----------------------------------------------------------------------------


def sample_recalls(reference: str, samples: Sequence[str]) -> tuple[list[float], float, float]:
    """ROUGE-L recall of each sample against the reference, their mean and their maximum (the worst case)."""
    recalls = [rouge_l_recall(reference, s) for s in samples]
    return recalls, mean(recalls), max(recalls)


def split_answer(answer: str, fraction: float, min_words: int = 1) -> tuple[str, str] | None:
    """(first n words, the rest) with n = max(min_words, floor(fraction · #words)) ≤ #words − 1, the original
    spacing kept; None when the answer has fewer than two words."""
    words = list(re.finditer(r"\S+", answer))
    if len(words) < 2:
        return None
    n = min(max(min_words, math.floor(fraction * len(words))), len(words) - 1)
    return answer[: words[n - 1].end()], answer[words[n].start():]


# --- one model ---------------------------------------------------------------------------------------------------


class _Prefilled:
    """A stand-in prompt format whose 'questions' are indices into ready-made prompts, so that `generate_answers`
    (left padding, batching, decoding) continues prefilled answers exactly as it answers questions."""

    def __init__(self, prompts: list[list[int]]):
        self.prompts = prompts

    def prompt_ids(self, tokenizer, key: str) -> list[int]:
        return list(self.prompts[int(key)])


def _greedy_continuations(model, ctx: EvalContext, prompts: list[list[int]], max_new_tokens: int,
                          desc: str) -> list[str]:
    if not prompts:
        return []
    answers = generate_answers(model, ctx.tokenizer, _Prefilled(prompts), [str(i) for i in range(len(prompts))],
                               max_new_tokens=max_new_tokens, batch_size=ctx.batch_size, desc=desc)
    return [a[0] for a in answers]


def _prefill_prompt(ctx: EvalContext, question: str, prefix: str) -> list[int]:
    fmt = ctx.prompt_format
    return fmt.prompt_ids(ctx.tokenizer, question) + ctx.tokenizer(fmt.answer_prefix + prefix,
                                                                   add_special_tokens=False)["input_ids"]


def sampling(model, ctx: EvalContext, records: list[QARecord], p: SamplingSettings, seed: int, max_new_tokens: int,
             label: str) -> tuple[dict, list[dict]]:
    """k sampled answers per question, the torch RNG seeded with `seed` (the caller's RNG state restored after)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        samples = generate_answers(model, ctx.tokenizer, ctx.prompt_format, [r.question for r in records],
                                   max_new_tokens=max_new_tokens, batch_size=max(1, ctx.batch_size // p.k),
                                   num_samples=p.k, temperature=float(p.temperature), top_p=float(p.top_p),
                                   desc=f"analyses {label} sampling")
    rows = []
    for r, drawn in zip(records, samples):
        recalls, avg, worst = sample_recalls(r.answer, drawn)
        rows.append({"question": r.question, "answer": r.answer, "samples": drawn, "rouge": recalls,
                     "mean": avg, "max": worst})
    return ({"sampling_rouge_mean": mean(r["mean"] for r in rows),
             "sampling_rouge_max": mean(r["max"] for r in rows)}, rows)


def prefill(model, ctx: EvalContext, records: list[QARecord], f: PrefillSettings, max_new_tokens: int,
            label: str) -> tuple[dict, list[dict], list[dict]]:
    """Greedy continuations of a fixed prefix and of the first words of the true answer, decoded in one call (full
    batches: a decoding pass costs a small model on a GPU about the same for few rows as for many)."""
    fixed = f.fixed_prefix.rstrip()
    splits = [(r, split_answer(r.answer, f.answer_fraction, f.min_prefix_words)) for r in records]
    splits = [(r, parts) for r, parts in splits if parts is not None]
    continuations = _greedy_continuations(
        model, ctx, [_prefill_prompt(ctx, r.question, fixed) for r in records]
        + [_prefill_prompt(ctx, r.question, head) for r, (head, _) in splits],
        max_new_tokens, f"analyses {label} prefill")
    fixed_rows = [{"question": r.question, "prefix": fixed, "reference": r.answer, "continuation": c,
                   "rouge": rouge_l_recall(r.answer, c)} for r, c in zip(records, continuations)]
    answer_rows = [{"question": r.question, "prefix": head, "reference": rest, "continuation": c,
                    "rouge": rouge_l_recall(rest, c)}
                   for (r, (head, rest)), c in zip(splits, continuations[len(records):], strict=True)]
    return ({"prefill_fixed_rouge": mean(r["rouge"] for r in fixed_rows),
             "prefill_answer_rouge": mean_or_nan(r["rouge"] for r in answer_rows)}, fixed_rows, answer_rows)
