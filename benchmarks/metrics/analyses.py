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
                     builtin   GENERIC_SENTENCES, ~50 everyday English sentences (the default, offline)
                     file      collateral.path, one text per non-empty line
                     wikitext  the WikiText-2 (raw) test split from the hub (collateral.hub_repo / hub_file, a
                               parquet file; needs pyarrow), paragraphs of at least collateral.min_words words,
                               headings dropped
                   Any text sharing a word n-gram (n = collateral.overlap_ngram, lower-cased words; a forget answer
                   shorter than n words counts as one n-gram) with a forget answer or paraphrased answer is
                   dropped, then the first collateral.max_texts texts are kept.
Least-likely       Per question the options are the true answer and its perturbed answers; the attacker picks the
multiple choice    option the model finds least likely (length-normalised answer log-probability, as TOFU scores
                   answers: tofu.answer_logprob_means). The true option is the paraphrased answer where the record
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

Settings: DEFAULTS below, overridden by ctx.settings["analyses"] (a nested dict of the same shape; an unknown key
is a ConfigError), i.e. the run config's eval_settings.analyses, e.g. `+eval_settings.analyses.sampling.k=16`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from pathlib import Path
from statistics import mean
from typing import Sequence

import numpy as np
import torch

from benchmarks.metrics import tofu
from benchmarks.metrics.common import EvalContext, SuiteResult, to_score
from pmc.core.batches import IGNORE_INDEX, Batch, eval_mode, longest_first, pad_right
from pmc.core.errors import ConfigError
from pmc.core.generation import generate_answers
from pmc.core.losses import token_logprobs
from pmc.core.records import DataError, QARecord, load_lines
from pmc.core.rouge import rouge_l_recall

SUITE = "analyses"
DEFAULTS: dict = {
    "max_questions": None,  # forget questions analysed (the first N); null = all
    "max_new_tokens": None,  # sampled and prefilled answers; null = the context's (generation.max_new_tokens)
    "examples": 5,  # example answers kept per model
    "seed": 0,  # torch seed of the sampled answers, the same for every model
    "collateral": {
        "source": "builtin",  # builtin | file | wikitext
        "path": None,  # source=file: one text per non-empty line
        "hub_repo": "Salesforce/wikitext",  # source=wikitext
        "hub_file": "wikitext-2-raw-v1/test-00000-of-00001.parquet",
        "min_words": 8,  # source=wikitext: shorter paragraphs are dropped
        "max_texts": 200,
        "max_tokens": 128,  # per text, at most the model's context
        "overlap_ngram": 5,
        "histogram": {"low": -5.0, "high": 5.0, "bins": 40},  # nats
    },
    "attack": {"true_option": "paraphrased"},  # paraphrased (where the record has one) | answer
    "sampling": {"k": 8, "temperature": 1.0, "top_p": 0.95},
    "prefill": {"fixed_prefix": "The answer is: ", "answer_fraction": 0.25, "min_prefix_words": 1},
    "quality": {"empty_nll": None},  # null: empty answers are left out of the fluency mean
}
SOURCES = ("builtin", "file", "wikitext")
TRUE_OPTIONS = ("paraphrased", "answer")
QUANTILES = (5, 25, 50, 75, 95)
TEXT_PREVIEW = 200  # characters of each collateral text kept in the examples

# Everyday English with nothing about authors, books or awards: the offline collateral-damage corpus.
GENERIC_SENTENCES = (
    "The kettle clicked off and the kitchen filled with the smell of fresh coffee.",
    "Rain is expected in the afternoon, so take an umbrella if you are going out.",
    "She watered the tomato plants before the sun got too hot.",
    "The bus was late again, and the people at the stop began to complain.",
    "A good night's sleep makes it much easier to concentrate at work.",
    "He cut the bread into thick slices and spread butter on each one.",
    "The children built a sandcastle and watched the waves wash it away.",
    "Our neighbours painted their fence a bright shade of green last weekend.",
    "Water boils at a lower temperature high up in the mountains.",
    "The supermarket on the corner closes at nine on Sundays.",
    "Please remember to turn off the lights when you leave the room.",
    "The cat curled up on the warm windowsill and fell asleep.",
    "Most plants need sunlight, water and air to grow well.",
    "They walked along the river until the path turned into a muddy track.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "My phone battery runs out quickly when the screen is very bright.",
    "The football match was cancelled because the pitch was flooded.",
    "A bicycle is a cheap and healthy way to get around the city.",
    "The dentist said I should floss every evening before bed.",
    "Leaves turn yellow and red in autumn before they fall from the trees.",
    "We packed sandwiches, apples and a flask of tea for the picnic.",
    "The train to the coast leaves from platform four every hour.",
    "Snow covered the car overnight, so he had to scrape the windscreen.",
    "The old bridge was closed for repairs for most of the summer.",
    "Fresh vegetables from the market taste better than frozen ones.",
    "The dog barked at the postman every single morning.",
    "It is a good idea to back up your files before installing an update.",
    "The moon looked huge and orange as it rose above the hills.",
    "A spoonful of honey in warm water can soothe a sore throat.",
    "The meeting was moved to Thursday because half the team was away.",
    "He forgot his keys and had to wait outside until his sister came home.",
    "The shop sells hammers, nails, paint and everything else for small repairs.",
    "Bees carry pollen from flower to flower as they collect nectar.",
    "The swimming pool is quiet early in the morning before the crowds arrive.",
    "Please write your name clearly at the top of the form.",
    "The soup needs another ten minutes on a low heat.",
    "Clouds gathered over the bay and the wind began to pick up.",
    "Tickets for the concert sold out within an hour.",
    "A map and a compass are useful when hiking in unfamiliar hills.",
    "The printer ran out of paper halfway through the report.",
    "Stretching after exercise can help prevent stiff muscles.",
    "The farmer checked the fences before letting the sheep into the field.",
    "We painted the spare room white to make it feel larger.",
    "The traffic lights at the crossroads were broken all morning.",
    "Frogs lay their eggs in ponds and shallow streams in early spring.",
    "She found an old photograph tucked inside a drawer in the attic.",
    "The bakery opens at six, and the first loaves are gone by seven.",
    "Drinking enough water is important on long, hot days.",
    "The lift was out of order, so everyone took the stairs.",
    "At low tide you can walk across the sand to the little island.",
)


class MissingReferenceModel(tofu.MissingReferenceModel):
    """The analyses compare with the target model and score fluency with the retain model; one is missing."""


# --- settings -----------------------------------------------------------------------------------------------------


def _merge(base: dict, overrides: Mapping, where: str) -> None:
    for key, value in overrides.items():
        if key not in base:
            raise ConfigError(f"{where}.{key}: unknown setting; known: {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping of settings, got {value!r}")
            _merge(base[key], value, f"{where}.{key}")
        else:
            base[key] = value


def _check(condition: bool, key: str, value, what: str) -> None:
    if not condition:
        raise ConfigError(f"{SUITE}.{key} must be {what}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve_settings(overrides: Mapping | None = None) -> dict:
    """DEFAULTS with `overrides` (the run config's `analyses:` block) merged in and checked."""
    s = copy.deepcopy(DEFAULTS)
    _merge(s, overrides or {}, SUITE)
    for key in ("max_questions", "max_new_tokens"):
        _check(s[key] is None or (_is_int(s[key]) and s[key] >= 1), key, s[key], "null or a positive integer")
    _check(_is_int(s["examples"]) and s["examples"] >= 0, "examples", s["examples"], "a non-negative integer")
    _check(_is_int(s["seed"]), "seed", s["seed"], "an integer")
    c = s["collateral"]
    _check(c["source"] in SOURCES, "collateral.source", c["source"], f"one of {list(SOURCES)}")
    _check(c["source"] != "file" or isinstance(c["path"], str), "collateral.path", c["path"],
           "a file path when collateral.source=file")
    for key, low in (("max_texts", 1), ("max_tokens", 2), ("overlap_ngram", 1), ("min_words", 1)):
        _check(_is_int(c[key]) and c[key] >= low, f"collateral.{key}", c[key], f"an integer >= {low}")
    h = c["histogram"]
    _check(_is_int(h["bins"]) and h["bins"] >= 1, "collateral.histogram.bins", h["bins"], "a positive integer")
    _check(_is_number(h["low"]) and _is_number(h["high"]) and h["low"] < h["high"], "collateral.histogram",
           dict(h), "low < high")
    _check(s["attack"]["true_option"] in TRUE_OPTIONS, "attack.true_option", s["attack"]["true_option"],
           f"one of {list(TRUE_OPTIONS)}")
    p = s["sampling"]
    _check(_is_int(p["k"]) and p["k"] >= 1, "sampling.k", p["k"], "a positive integer")
    _check(_is_number(p["temperature"]) and p["temperature"] > 0, "sampling.temperature", p["temperature"],
           "a positive number")
    _check(_is_number(p["top_p"]) and 0 < p["top_p"] <= 1, "sampling.top_p", p["top_p"], "in (0, 1]")
    f = s["prefill"]
    _check(isinstance(f["fixed_prefix"], str) and f["fixed_prefix"].strip() != "", "prefill.fixed_prefix",
           f["fixed_prefix"], "a non-empty string")
    _check(_is_number(f["answer_fraction"]) and 0 < f["answer_fraction"] < 1, "prefill.answer_fraction",
           f["answer_fraction"], "in (0, 1)")
    _check(_is_int(f["min_prefix_words"]) and f["min_prefix_words"] >= 1, "prefill.min_prefix_words",
           f["min_prefix_words"], "a positive integer")
    e = s["quality"]["empty_nll"]
    _check(e is None or (_is_number(e) and e >= 0), "quality.empty_nll", e, "null or a non-negative number")
    return s


# --- formulas: pure functions of plain numbers and strings ----------------------------------------------------------


def least_likely_credit(logprobs: Sequence[float], true_index: int = 0) -> float:
    """1 when the option with the lowest score is the true one, 1/#tied when it ties with others at the minimum."""
    low = min(logprobs)
    tied = [i for i, v in enumerate(logprobs) if v == low]
    return 1.0 / len(tied) if true_index in tied else 0.0


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


def word_count(text: str) -> int:
    return len(text.split())


def distinct_ratio(text: str) -> float | None:
    """Unique / total lower-cased words; None for an empty answer."""
    words = text.lower().split()
    return len(set(words)) / len(words) if words else None


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


def bin_edges(histogram: Mapping) -> list[float]:
    return np.linspace(float(histogram["low"]), float(histogram["high"]), int(histogram["bins"]) + 1).tolist()


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


def _mean_or_nan(values: Sequence[float]) -> float:
    values = list(values)
    return mean(values) if values else math.nan


# --- collateral-damage text ----------------------------------------------------------------------------------------


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


def load_texts(c: Mapping) -> list[str]:
    """The unrelated text of collateral.source, before the overlap filter."""
    if c["source"] == "builtin":
        return list(GENERIC_SENTENCES)
    if c["source"] == "file":
        return load_lines(c["path"])
    texts = wikitext_paragraphs(_parquet_texts(_fetch_hub(c["hub_repo"], c["hub_file"])), c["min_words"])
    if not texts:
        raise DataError(f"{c['hub_repo']}/{c['hub_file']}: no paragraph of at least {c['min_words']} words")
    return texts


def collateral_texts(c: Mapping, forget: Sequence[QARecord]) -> tuple[list[str], int]:
    """The texts scored (overlapping ones dropped, then the first max_texts) and how many were dropped."""
    answers = [a for r in forget for a in (r.answer, r.paraphrased_answer) if a]
    grams = forget_ngrams(answers, c["overlap_ngram"])
    texts = load_texts(c)
    kept = [t for t in texts if not overlaps(t, grams)]
    if not kept:
        raise DataError(f"analyses.collateral: every one of the {len(texts)} texts of source={c['source']} "
                        f"overlaps the forget answers (word {c['overlap_ngram']}-grams)")
    return kept[: c["max_texts"]], len(texts) - len(kept)


def forget_token_ids(tokenizer, fmt, forget: Sequence[QARecord]) -> set[int]:
    """Token ids of the forget answers as the model sees them (answer_prefix + answer), special tokens excluded."""
    ids: set[int] = set()
    for r in forget:
        ids.update(tokenizer(fmt.answer_prefix + r.answer, add_special_tokens=False)["input_ids"])
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    special |= {t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None}
    return ids - special


@torch.no_grad()
def text_token_logprobs(model, tokenizer, rows: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Per token row, log p(x_t | x_<t) of every token after the first (right-padded batches, longest first,
    eval mode; the caller's mode restored)."""
    out: list[np.ndarray] = [np.zeros(0)] * len(rows)
    device = next(model.parameters()).device
    with eval_mode(model):
        for chunk in longest_first([len(row) for row in rows], batch_size):
            input_ids, attention_mask = pad_right([rows[i] for i in chunk], tokenizer.pad_token_id)
            labels = torch.where(attention_mask.bool(), input_ids, IGNORE_INDEX)
            picked, _ = token_logprobs(model, Batch(input_ids, attention_mask, labels).to(device))
            picked = picked.double().cpu().numpy()
            for j, i in enumerate(chunk):
                out[i] = picked[j, : len(rows[i]) - 1].copy()
    return out


# --- the analyses, one model at a time ------------------------------------------------------------------------------


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


def true_option(record: QARecord, which: str = "paraphrased") -> str:
    """The correct option of the multiple choice: the paraphrased answer when asked for and present."""
    return record.paraphrased_answer if which == "paraphrased" and record.paraphrased_answer else record.answer


def least_likely(model, ctx: EvalContext, records: list[QARecord],
                 which: str = "paraphrased") -> tuple[dict, list[dict]]:
    options = [(r.question, [true_option(r, which), *r.perturbed_answer]) for r in records]
    pairs = list(dict.fromkeys((q, a) for q, answers in options for a in answers))
    logprob = dict(zip(pairs, tofu.answer_logprob_means(model, ctx.tokenizer, ctx.prompt_format, pairs,
                                                        ctx.batch_size, tofu.max_length_for(model, ctx))))
    rows = []
    for q, answers in options:
        scores = [logprob[(q, a)] for a in answers]
        rows.append({"question": q, "options": answers, "logprobs": scores,
                     "pick": int(np.argmin(scores)), "credit": least_likely_credit(scores),
                     "chance": 1.0 / len(answers)})
    return ({"least_likely_attack_rate": mean(r["credit"] for r in rows),
             "least_likely_chance": mean(r["chance"] for r in rows)}, rows)


def sampling(model, ctx: EvalContext, records: list[QARecord], s: dict, max_new_tokens: int,
             label: str) -> tuple[dict, list[dict]]:
    p = s["sampling"]
    with torch.random.fork_rng():
        torch.manual_seed(s["seed"])
        samples = generate_answers(model, ctx.tokenizer, ctx.prompt_format, [r.question for r in records],
                                   max_new_tokens=max_new_tokens, batch_size=max(1, ctx.batch_size // p["k"]),
                                   num_samples=p["k"], temperature=float(p["temperature"]), top_p=float(p["top_p"]),
                                   desc=f"analyses {label} sampling")
    rows = []
    for r, drawn in zip(records, samples):
        recalls, avg, worst = sample_recalls(r.answer, drawn)
        rows.append({"question": r.question, "answer": r.answer, "samples": drawn, "rouge": recalls,
                     "mean": avg, "max": worst})
    return ({"sampling_rouge_mean": mean(r["mean"] for r in rows),
             "sampling_rouge_max": mean(r["max"] for r in rows)}, rows)


def prefill(model, ctx: EvalContext, records: list[QARecord], s: dict, max_new_tokens: int,
            label: str) -> tuple[dict, list[dict], list[dict]]:
    f = s["prefill"]
    fixed = f["fixed_prefix"].rstrip()
    continuations = _greedy_continuations(model, ctx, [_prefill_prompt(ctx, r.question, fixed) for r in records],
                                          max_new_tokens, f"analyses {label} prefill fixed")
    fixed_rows = [{"question": r.question, "prefix": fixed, "reference": r.answer, "continuation": c,
                   "rouge": rouge_l_recall(r.answer, c)} for r, c in zip(records, continuations)]

    splits = [(r, split_answer(r.answer, f["answer_fraction"], f["min_prefix_words"])) for r in records]
    splits = [(r, parts) for r, parts in splits if parts is not None]
    continuations = _greedy_continuations(model, ctx, [_prefill_prompt(ctx, r.question, head)
                                                       for r, (head, _) in splits],
                                          max_new_tokens, f"analyses {label} prefill answer")
    answer_rows = [{"question": r.question, "prefix": head, "reference": rest, "continuation": c,
                    "rouge": rouge_l_recall(rest, c)} for (r, (head, rest)), c in zip(splits, continuations)]
    return ({"prefill_fixed_rouge": mean(r["rouge"] for r in fixed_rows),
             "prefill_answer_rouge": _mean_or_nan(r["rouge"] for r in answer_rows)}, fixed_rows, answer_rows)


def quality(model, retain, ctx: EvalContext, records: list[QARecord], s: dict,
            label: str) -> tuple[dict, list[dict]]:
    questions = [r.question for r in records]
    answers = ctx.greedy_answers(model, questions, desc=f"eval {label} forget")
    scored = [(q, a) for q, a in zip(questions, answers) if a.strip()]
    nll = dict(zip(scored, (-v for v in tofu.answer_logprob_means(
        retain, ctx.tokenizer, ctx.prompt_format, scored, ctx.batch_size, tofu.max_length_for(retain, ctx)))))
    rows = []
    for r, a in zip(records, answers):
        empty = not a.strip()
        rows.append({"question": r.question, "answer": r.answer, "generated": a, "empty": empty,
                     "words": word_count(a), "distinct_ratio": distinct_ratio(a),
                     "retain_nll": None if empty else nll[(r.question, a)]})
    empty_nll = s["quality"]["empty_nll"]
    fluency = [r["retain_nll"] if not r["empty"] else empty_nll for r in rows]
    return ({"empty_rate": mean(float(r["empty"]) for r in rows),
             "answer_length": mean(r["words"] for r in rows),
             "distinct_ratio": _mean_or_nan(r["distinct_ratio"] for r in rows if not r["empty"]),
             "fluency_nll": _mean_or_nan(float(v) for v in fluency if v is not None)}, rows)


def forget_records(ctx: EvalContext, s: dict) -> list[QARecord]:
    records = ctx.benchmark.eval_sets.get("forget") or []
    name = ctx.benchmark.name
    if not records:
        raise DataError(f"benchmark {name!r} has no forget evaluation records; eval=analyses asks the forget "
                        "questions")
    if any(not r.perturbed_answer for r in records):
        raise DataError(f"benchmark {name!r}: every forget record needs perturbed answers for the least-likely "
                        "multiple-choice attack")
    return records[: s["max_questions"]] if s["max_questions"] else list(records)


def evaluate(models: dict, ctx: EvalContext, known: dict[str, SuiteResult] | None = None) -> dict[str, SuiteResult]:
    """Scores the models without a result in `known`. The references are needed as models even when their own
    results are known: the target's log-probabilities are the collateral baseline, the retain model scores fluency."""
    for needed, why in (("target", "collateral damage is measured against the target model"),
                        ("retain", "fluency is scored by the retain model")):
        if needed not in models:
            raise MissingReferenceModel(f"eval=analyses: {why}, but none was given (models: {sorted(models)}); "
                                        f"pass it as models[{needed!r}]")
    s = resolve_settings(ctx.settings.get(SUITE))
    records = forget_records(ctx, s)
    max_new_tokens = s["max_new_tokens"] or ctx.max_new_tokens
    tokenizer, target = ctx.tokenizer, models["target"]

    c = s["collateral"]
    texts, dropped = collateral_texts(c, list(ctx.benchmark.forget) + list(ctx.benchmark.eval_sets["forget"]))
    limit = min(c["max_tokens"], tofu.max_length_for(target, ctx))
    rows = [tokenizer(t)["input_ids"][:limit] for t in texts]
    keep = [i for i, r in enumerate(rows) if len(r) >= 2]  # one token has nothing to predict
    texts, rows = [texts[i] for i in keep], [rows[i] for i in keep]
    predicted = [np.asarray(r[1:]) for r in rows]
    forget_ids = forget_token_ids(tokenizer, ctx.prompt_format, list(ctx.benchmark.forget) + records)
    edges = bin_edges(c["histogram"])
    reference = text_token_logprobs(target, tokenizer, rows, ctx.batch_size)

    results = {}
    for label, model in to_score(models, known).items():
        own = reference if model is target else text_token_logprobs(model, tokenizer, rows, ctx.batch_size)
        summary, per_text, distributions = collateral([o - t for o, t in zip(own, reference)], predicted,
                                                      forget_ids, texts, edges, own)
        for row in distributions:
            row["texts"], row["texts_dropped_for_overlap"], row["source"] = len(texts), dropped, c["source"]
        attack, attack_rows = least_likely(model, ctx, records, s["attack"]["true_option"])
        sampled, sample_rows = sampling(model, ctx, records, s, max_new_tokens, label)
        prefilled, fixed_rows, answer_rows = prefill(model, ctx, records, s, max_new_tokens, label)
        quality_summary, quality_rows = quality(model, models["retain"], ctx, records, s, label)
        prefix_of = {r["question"]: r for r in answer_rows}
        examples_rows = [
            {"question": r.question, "answer": r.answer, "greedy": q["generated"], "sample": sr["samples"][0],
             "prefill_fixed": f"{fr['prefix']} {fr['continuation']}",
             "prefill_answer": (f"{prefix_of[r.question]['prefix']} {prefix_of[r.question]['continuation']}"
                                if r.question in prefix_of else None)}
            for r, q, sr, fr in list(zip(records, quality_rows, sample_rows, fixed_rows))[: s["examples"]]
        ]
        results[label] = SuiteResult(
            {**summary, **attack, **sampled, **prefilled, **quality_summary},
            {"collateral_texts": per_text, "collateral_distribution": distributions, "least_likely": attack_rows,
             "sampling": sample_rows, "prefill_fixed": fixed_rows, "prefill_answer": answer_rows,
             "quality": quality_rows, "example_answers": examples_rows},
        )
    return results
