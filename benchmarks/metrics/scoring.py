"""The suites' scoring toolkit: the one token-scoring loop, the reference-model check and the suites' own data files.

Every suite that needs token log-probabilities gets them from `score_batches` (rows batched longest first, so rows of
similar length share a batch and little compute goes to padding; eval mode, no autograd; results in input order):
  answer_logprob_means   mean log-probability of the answer tokens of (question, answer) pairs; the suites ask
                         through `answer_logprobs`, which scores each pair once per model and context (tofu, analyses)
  text_token_logprobs    log p(x_t | x_<t) of every token of whole texts after the first (analyses)
  and, with its own per-batch statistics, MUSE's membership scores (muse.text_token_scores).
ROUGE comes from pmc.core.rouge only.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from benchmarks.metrics.common import EvalContext
from pmc.core.batches import IGNORE_INDEX, Batch, encode_pairs, eval_mode, longest_first, pad_right
from pmc.core.errors import HarnessError
from pmc.core.losses import token_logprobs
from pmc.core.records import load_lines
from pmc.core.residency import device_of

DEFAULT_MAX_LENGTH = 512  # when neither the context nor the model config gives a context size


class MissingReferenceModel(HarnessError):
    """A suite compares with a reference model (retain or target) that was not given."""


def require_models(suite: str, needed: Mapping[str, str], models: Mapping, known: Mapping | None = None,
                   hint: str = "") -> None:
    """Raise MissingReferenceModel unless every role in `needed` (role -> why the suite needs it) is among the models
    or, where `known` is given, has a known result (a suite that only needs a reference's results passes them)."""
    for role, why in needed.items():
        if role not in models and role not in (known or {}):
            raise MissingReferenceModel(f"eval={suite}: {why}, but none was given (models: {sorted(models)}); "
                                        f"pass it as models[{role!r}]{hint}")


def max_length_for(model, ctx: EvalContext) -> int:
    """Token budget of a scored sequence: ctx.max_length, else the model's context size."""
    if ctx.max_length is not None:
        return ctx.max_length
    return getattr(getattr(model, "config", None), "max_position_embeddings", None) or DEFAULT_MAX_LENGTH


@torch.no_grad()
def score_batches(model, lengths: Sequence[int], batch_size: int, batch_of: Callable[[list[int]], Batch],
                  score: Callable[[object, Batch, list[int]], Iterable]) -> list:
    """The one token-scoring loop. Rows (given by their `lengths`) are grouped longest first into batches of at most
    `batch_size`; `batch_of(rows)` builds a batch of those row indices, `score(model, batch, rows)` returns one value
    per row. The model runs in eval mode without autograd (its mode restored after); values come back in row order."""
    out: list = [None] * len(lengths)
    device = device_of(model)  # a model taking turns on the device (pmc.core.residency) comes onto it here
    with eval_mode(model):
        for rows in longest_first(lengths, batch_size):
            for i, value in zip(rows, score(model, batch_of(rows).to(device), rows), strict=True):
                out[i] = value
    return out


def answer_logprob_means(model, tokenizer, fmt, pairs: Sequence[tuple[str, str]], batch_size: int,
                         max_length: int) -> list[float]:
    """Mean log-probability of the answer tokens (end-of-sequence included) given the prompt, one per pair.

    Tokenised with `encode_pairs` (answer-only labels, an answer cut to fit max_length), batched by character length
    of question + answer; batch_size=1 scores one pair at a time.
    """
    pairs = list(pairs)

    def mean_per_row(model, batch: Batch, rows: list[int]) -> list[float]:
        picked, mask = token_logprobs(model, batch)
        return (picked.double().sum(-1) / mask.sum(-1).clamp(min=1)).tolist()

    return score_batches(model, [len(q) + len(a) for q, a in pairs], batch_size,
                         lambda rows: encode_pairs(tokenizer, fmt, [pairs[i] for i in rows], max_length),
                         mean_per_row)


def answer_logprobs(model, ctx: EvalContext, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """{pair: mean answer log-probability} of the (question, answer) pairs under `model` (`answer_logprob_means` with
    the context's tokenizer, prompt format, scoring batch size and max_length_for), each pair scored once per model and
    context: TOFU's truth ratio and the least-likely attack both score the forget questions' paraphrased and
    perturbed answers, ~5 % of a SmolLM2 model's scoring time on a CPU. The pairs asked for later are batched among
    themselves, so a value can differ from scoring them together with other pairs by float rounding (other padding
    widths), as any change of batching does."""
    known = ctx.memo(model, "answer log-probabilities")
    missing = [p for p in dict.fromkeys(pairs) if p not in known]
    if missing:
        known.update(zip(missing, answer_logprob_means(model, ctx.tokenizer, ctx.prompt_format, missing,
                                                       ctx.scoring_batch_size, max_length_for(model, ctx)),
                         strict=True))
    return {p: known[p] for p in pairs}


def pad_id_of(tokenizer) -> int:
    """The id padding whole-text rows (end-of-sequence where the tokenizer has no padding token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def text_batch(rows: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Token rows of whole texts, right-padded, every real token a label (each is scored given the ones before)."""
    input_ids, attention_mask = pad_right(rows, pad_id)
    return Batch(input_ids, attention_mask, torch.where(attention_mask.bool(), input_ids, IGNORE_INDEX))


def text_token_logprobs(model, tokenizer, rows: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Per token row, log p(x_t | x_<t) of every token after the first, as float64 arrays."""

    def per_row(model, batch: Batch, chunk: list[int]) -> list[np.ndarray]:
        picked = token_logprobs(model, batch)[0].double().cpu().numpy()
        return [picked[j, : len(rows[i]) - 1].copy() for j, i in enumerate(chunk)]

    return score_batches(model, [len(row) for row in rows], batch_size,
                         lambda chunk: text_batch([rows[i] for i in chunk], pad_id_of(tokenizer)), per_row)


# --- the suites' data files ------------------------------------------------------------------------------------------


def package_text(name: str) -> list[str]:
    """The non-empty lines of a data file shipped with the suites (benchmarks/metrics/data/<name>)."""
    with resources.as_file(resources.files("benchmarks.metrics") / "data" / name) as path:
        return read_texts(path)


def read_texts(path: str | Path) -> list[str]:
    """One text per non-empty line of a UTF-8 file (whitespace around each stripped); DataError when there is none."""
    return load_lines(path)
