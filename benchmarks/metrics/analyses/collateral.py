"""Collateral damage: the per-token log-probability shift log p_model(x_t | x_<t) − log p_target(x_t | x_<t) on text
that has nothing to do with the forget set (see the package docstring for what is reported)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.metrics.common import EvalContext
from benchmarks.metrics.scoring import max_length_for, package_text, read_texts, text_token_logprobs
from pmc.core.errors import ConfigError
from pmc.core.records import DataError, QARecord

SOURCES = ("builtin", "file", "wikitext")
BUILTIN_TEXTS = "generic_sentences.txt"  # ~50 everyday English sentences, nothing about authors, books or awards
QUANTILES = (5, 25, 50, 75, 95)
TEXT_PREVIEW = 200  # characters of each collateral text kept in the examples


@dataclass
class Histogram:
    """Fixed bin edges of the shift histogram, in nats: `bins` equal bins from `low` to `high`."""

    low: float = -5.0
    high: float = 5.0
    bins: int = 40

    def edges(self) -> list[float]:
        return np.linspace(float(self.low), float(self.high), int(self.bins) + 1).tolist()


@dataclass
class CollateralSettings:
    source: str = "builtin"  # builtin | file | wikitext
    path: str | None = None  # source=file: one text per non-empty line
    hub_repo: str = "Salesforce/wikitext"  # source=wikitext
    hub_file: str = "wikitext-2-raw-v1/test-00000-of-00001.parquet"
    min_words: int = 8  # source=wikitext: shorter paragraphs are dropped
    max_texts: int = 200
    max_tokens: int = 128  # per text, at most the model's context
    overlap_ngram: int = 5
    histogram: Histogram = field(default_factory=Histogram)

    def __post_init__(self) -> None:
        where = "eval.analyses.collateral"
        if self.source not in SOURCES:
            raise ConfigError(f"{where}.source must be one of {list(SOURCES)}, got {self.source!r}")
        if self.source == "file" and not isinstance(self.path, str):
            raise ConfigError(f"{where}.path must be a file path when collateral.source=file, got {self.path!r}")
        for key, low in (("max_texts", 1), ("max_tokens", 2), ("overlap_ngram", 1), ("min_words", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{where}.{key} must be an integer >= {low}, got {getattr(self, key)!r}")
        h = self.histogram
        if h.bins < 1:
            raise ConfigError(f"{where}.histogram.bins must be a positive integer, got {h.bins!r}")
        if not h.low < h.high:
            raise ConfigError(f"{where}.histogram must be low < high, got {{'low': {h.low!r}, 'high': {h.high!r}}}")


# --- formulas: pure functions of plain numbers and strings ----------------------------------------------------------


def word_count(text: str) -> int:
    return len(text.split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower())


def forget_ngrams(answers: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """Every word n-gram of the answers; an answer shorter than n words is one (shorter) gram."""
    grams: set[tuple[str, ...]] = set()
    for answer in answers:
        words = _words(answer)
        size = min(n, len(words))
        grams.update(tuple(words[i : i + size]) for i in range(len(words) - size + 1) if size)
    return grams


def overlaps(text: str, grams: set[tuple[str, ...]]) -> bool:
    """Whether the text contains any of the grams as consecutive words."""
    words = _words(text)
    return any(tuple(words[i : i + size]) in grams for size in {len(g) for g in grams}
               for i in range(len(words) - size + 1))


def shift_distribution(shifts: Sequence[float], edges: Sequence[float]) -> dict:
    """Mean, mean |shift|, quantiles and histogram of per-token shifts (NaN statistics when there are none)."""
    values = np.asarray(shifts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(values, bins=edges)
    empty = values.size == 0
    out = {
        "tokens": int(values.size),
        "mean": math.nan if empty else float(values.mean()),
        "mean_abs": math.nan if empty else float(np.abs(values).mean()),
        **{f"q{q:02d}": math.nan if empty else float(np.percentile(values, q)) for q in QUANTILES},
        "bin_edges": edges.tolist(),
        "counts": counts.tolist(),
        "underflow": int((values < edges[0]).sum()),
        "overflow": int((values > edges[-1]).sum()),
    }
    return out


# --- the text ----------------------------------------------------------------------------------------------------


def _fetch_hub(repo: str, filename: str) -> Path:
    """Download one file of a hub dataset (huggingface_hub caches it); any failure is one DataError."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset"))
    except Exception as e:  # offline, not cached, unknown repo or file: all mean the text cannot be had from here
        raise DataError(
            f"analyses.collateral.source=wikitext: {filename} from the hub dataset {repo} could not be fetched "
            f"({type(e).__name__}: {e}); use collateral.source=file with collateral.path=<one text per line> or "
            "collateral.source=builtin"
        ) from None


def _parquet_texts(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading the WikiText parquet file needs pyarrow (pip install pyarrow), or use "
                        "collateral.source=file with the text one paragraph per line") from None
    try:
        table = pq.read_table(path, columns=["text"])
    except Exception as e:
        raise DataError(f"{path}: not a readable parquet file with a 'text' column ({type(e).__name__}: {e})") \
            from None
    return [t for t in table.column("text").to_pylist() if isinstance(t, str)]


def wikitext_paragraphs(lines: Sequence[str], min_words: int) -> list[str]:
    """WikiText lines -> paragraphs: blank lines and headings (" = Title = ") dropped, short ones too."""
    out = []
    for line in lines:
        text = line.strip()
        if text and not text.startswith("=") and word_count(text) >= min_words:
            out.append(text)
    return out


def load_texts(c: CollateralSettings) -> list[str]:
    """The unrelated text of collateral.source, before the overlap filter."""
    if c.source == "builtin":
        return package_text(BUILTIN_TEXTS)
    if c.source == "file":
        return read_texts(c.path)
    texts = wikitext_paragraphs(_parquet_texts(_fetch_hub(c.hub_repo, c.hub_file)), c.min_words)
    if not texts:
        raise DataError(f"{c.hub_repo}/{c.hub_file}: no paragraph of at least {c.min_words} words")
    return texts


def collateral_texts(c: CollateralSettings, forget: Sequence[QARecord]) -> tuple[list[str], int]:
    """The texts scored (overlapping ones dropped, then the first max_texts) and how many were dropped."""
    answers = [a for r in forget for a in (r.answer, r.paraphrased_answer) if a]
    grams = forget_ngrams(answers, c.overlap_ngram)
    texts = load_texts(c)
    kept = [t for t in texts if not overlaps(t, grams)]
    if not kept:
        raise DataError(f"analyses.collateral: every one of the {len(texts)} texts of source={c.source} "
                        f"overlaps the forget answers (word {c.overlap_ngram}-grams)")
    return kept[: c.max_texts], len(texts) - len(kept)


def forget_token_ids(tokenizer, fmt, forget: Sequence[QARecord]) -> set[int]:
    """Token ids of the forget answers as the model sees them (answer_prefix + answer), special tokens excluded."""
    ids: set[int] = set()
    for r in forget:
        ids.update(tokenizer(fmt.answer_prefix + r.answer, add_special_tokens=False)["input_ids"])
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    special |= {t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None}
    return ids - special


# --- one model's shifts ------------------------------------------------------------------------------------------


def collateral(shifts: list[np.ndarray], ids: list[np.ndarray], forget_ids: set[int], texts: list[str],
               edges: list[float], own_logprobs: list[np.ndarray]) -> tuple[dict, list[dict], list[dict]]:
    """Summary, per-text rows and per-subset distributions of one model's shifts against the target."""
    masks = [np.isin(t, list(forget_ids)) for t in ids]
    every = np.concatenate(shifts) if shifts else np.zeros(0)
    on_forget = np.concatenate([s[m] for s, m in zip(shifts, masks)]) if shifts else np.zeros(0)
    own = np.concatenate(own_logprobs) if own_logprobs else np.zeros(0)
    per_text = [{"text": t[:TEXT_PREVIEW], "tokens": int(s.size), "forget_tokens": int(m.sum()),
                 "sum_shift": float(s.sum()), "sum_shift_forget_tokens": float(s[m].sum()),
                 "mean_logprob": float(o.mean()) if o.size else math.nan}
                for t, s, m, o in zip(texts, shifts, masks, own_logprobs)]
    distributions = [{"subset": "all", **shift_distribution(every, edges),
                      "mean_logprob": float(own.mean()) if own.size else math.nan},
                     {"subset": "forget_tokens", **shift_distribution(on_forget, edges)}]
    summary = {"collateral_mean_shift_all": distributions[0]["mean"],
               "collateral_mean_shift_forget_tokens": distributions[1]["mean"]}
    return summary, per_text, distributions


@dataclass
class CollateralText:
    """The texts collateral damage is measured on, tokenised, with the target model's log-probabilities on them (the
    baseline every model's shift is taken against)."""

    settings: CollateralSettings
    texts: list[str]
    rows: list[list[int]]  # token ids per text, at most max_tokens (and the target's context)
    dropped: int  # texts left out because they overlap the forget answers
    forget_ids: set[int]
    target: object
    reference: list[np.ndarray]  # the target's log p of every token after the first

    @classmethod
    def build(cls, c: CollateralSettings, target, ctx: EvalContext, questions: Sequence[QARecord]) -> CollateralText:
        """`questions`: the forget evaluation records the analyses ask (their answers' tokens count as forget
        tokens, with the forget training split's)."""
        benchmark, tokenizer = ctx.benchmark, ctx.tokenizer
        texts, dropped = collateral_texts(c, list(benchmark.forget) + list(benchmark.eval_sets["forget"]))
        limit = min(c.max_tokens, max_length_for(target, ctx))
        rows = [tokenizer(t)["input_ids"][:limit] for t in texts]
        keep = [i for i, r in enumerate(rows) if len(r) >= 2]  # one token has nothing to predict
        texts, rows = [texts[i] for i in keep], [rows[i] for i in keep]
        forget_ids = forget_token_ids(tokenizer, ctx.prompt_format, list(benchmark.forget) + list(questions))
        return cls(c, texts, rows, dropped, forget_ids, target,
                   text_token_logprobs(target, tokenizer, rows, ctx.scoring_batch_size))

    def score(self, model, ctx: EvalContext) -> tuple[dict, list[dict], list[dict]]:
        """Summary, per-text rows and per-subset distributions of the model's shifts against the target."""
        own = (self.reference if model is self.target
               else text_token_logprobs(model, ctx.tokenizer, self.rows, ctx.scoring_batch_size))
        summary, per_text, distributions = collateral(
            [o - t for o, t in zip(own, self.reference)], [np.asarray(r[1:]) for r in self.rows], self.forget_ids,
            self.texts, self.settings.histogram.edges(), own)
        for row in distributions:
            row["texts"], row["texts_dropped_for_overlap"], row["source"] = (len(self.texts), self.dropped,
                                                                              self.settings.source)
        return summary, per_text, distributions
