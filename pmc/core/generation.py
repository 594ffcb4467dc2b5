"""Batched decoding: greedy answers for evaluation and PMC's reference, sampled answers for PMC's candidates,
beam-search answers and greedy token continuations for ICU's forgetting checks.

Prompts are left-padded so every row's answer starts at the same position; answers are decoded without special
tokens, the prompt format's answer tag is removed (Phi writes "Answer: " itself) and the text stripped, which is
what ROUGE scores.

Speed settings (the run config's `generation:` block): `batch_size` and `scoring_batch_size` (ints, or `auto`: see
`BatchSizes` and `resolve_batch_sizes`),
`cache_implementation` and `compile`, set once per model as transformers' generation defaults
(`configure_generation`), so every decoding call (evaluation, PMC's samples, ICU's checks) uses them; and
`continuous_batching`: greedy answers through transformers' continuous batching (`generate_batch`: a finished row's
place goes to the next question at once, paged KV cache, CUDA graphs on a GPU) instead of fixed batches.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import types
import weakref
from dataclasses import dataclass

import psutil
import torch
import transformers
from tqdm.auto import tqdm
from transformers import CompileConfig, DynamicCache, GenerationMixin, LogitsProcessor, LogitsProcessorList, StaticCache
from transformers.generation.logits_process import TopPLogitsWarper
from transformers.masking_utils import create_masks_for_generate

from pmc.core.batches import eval_mode, longest_first, pad_left
from pmc.core.errors import ConfigError
from pmc.core.models import compile_backend, dimensions_apart
from pmc.core.prompts import PromptFormat
from pmc.core.residency import device_of

# transformers' GenerationConfig default, which the official PMC sampler gets by passing no top_k
# (unlearning/pmc.py L192-202); passed explicitly so it does not depend on the model's generation_config.json.
DEFAULT_TOP_K = 50
# generate's arguments for one argmax token per row, with the sampling settings a model's generation_config.json may
# carry switched off (transformers warns about them, and a processor could read them)
GREEDY = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, "num_return_sequences": 1}


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    fmt: PromptFormat,
    questions: list[str],
    *,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    num_samples: int = 1,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int = DEFAULT_TOP_K,
    num_beams: int = 1,
    top_p_within_top_k: bool = True,
    desc: str | None = None,
) -> list[list[str]]:
    """One list of answers per question: greedy (one answer) when temperature is None, or beam search over num_beams
    beams when num_beams > 1; else num_samples samples drawn with temperature, top-p and top-k (0 = no top-k) from
    the global torch RNG (seeded by the run). With both top-k and top-p, `top_p_within_top_k` draws through
    `SampleWithinTopK` (transformers' sampling distribution, drawn among the top-k candidates without sorting or
    drawing over the whole vocabulary at every step); False: transformers' own warpers and draw (the throughput
    bench's baseline).

    Length: exactly one of max_new_tokens (answer tokens) or max_length (prompt + answer tokens, the official
    `max_length`, unlearning/pmc.py L195 and inference.py L28). max_length counts each row's own prompt; the official
    code counts the left-padded batch width, so there every row of a batch gets max_length minus its longest prompt."""
    sampling = temperature is not None
    if not sampling and num_samples != 1:
        raise ValueError("greedy decoding gives one answer per question; pass a temperature to sample several")
    if sampling and num_beams != 1:
        raise ValueError("beam search is deterministic; pass temperature=None with num_beams > 1")
    if (max_new_tokens is None) == (max_length is None):
        raise ConfigError(f"generation needs exactly one of max_new_tokens, max_length; got {max_new_tokens}, "
                          f"{max_length}")
    answer_tag = getattr(fmt, "answer_tag", "")  # stand-in formats (analyses' prefilled continuations) carry none
    device = device_of(model)  # a model taking turns on the device (pmc.core.residency) comes onto it here
    pad_id = tokenizer.pad_token_id

    def budgets_of(prompts: list[list[int]]) -> list[int]:
        if max_length is None:
            return [max_new_tokens] * len(prompts)
        budgets = [max_length - len(p) for p in prompts]
        if min(budgets) < 1:
            raise ConfigError(f"generation max_length={max_length} leaves no room for an answer after a "
                              f"{max(len(p) for p in prompts)}-token prompt; raise it")
        return budgets

    if not sampling and num_beams == 1 and continuous_batching(model) and questions:
        prompts = [fmt.prompt_ids(tokenizer, q) for q in questions]
        rows = _continuous_greedy(model, tokenizer, prompts, budgets_of(prompts), desc)
        return [[text] for text in _answer_texts(tokenizer, rows, answer_tag)]
    answers: list[list[str]] = []
    starts = range(0, len(questions), batch_size)
    rule, repeats = decoding_rule(temperature, top_k, top_p, num_samples, top_p_within_top_k)
    with eval_mode(model), dimensions_apart():
        for start in tqdm(starts, desc=desc or "generate", leave=False, disable=desc is None):
            prompts = [fmt.prompt_ids(tokenizer, q) for q in questions[start : start + batch_size]]
            budgets = budgets_of(prompts)
            sent = decoding_batch(model, prompts, batch_size)
            input_ids, attention_mask = pad_left(sent, pad_id)
            width = input_ids.shape[1]
            out = decode(model, input_ids.repeat_interleave(repeats, 0).to(device),
                         attention_mask.repeat_interleave(repeats, 0).to(device),
                         [b for b in budgets for _ in range(repeats)],
                         num_beams=num_beams, **rule, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
            # row r is sample r % num_samples of question r // num_samples; each keeps its own budget of tokens (the
            # rows of decoding_batch's copies come last and are left out)
            rows = [row[: budgets[r // num_samples]].tolist()
                    for r, row in enumerate(out[: len(prompts) * num_samples, width:])]
            texts = _answer_texts(tokenizer, rows, answer_tag)
            for i in range(len(prompts)):
                answers.append(texts[i * num_samples : (i + 1) * num_samples])
    return answers


def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, budgets: list[int], **kwargs) -> torch.Tensor:
    """generate's token ids for these left-padded rows (prompt, then answer, then padding after the end of
    sequence), each row decoded for at least its own budget of new tokens (a call decodes up to its largest budget;
    the caller cuts each row to its own); rows after the last budget (decoding_batch's copies of the last prompt)
    take that one. Where the model drops finished rows (`drops_finished_rows`) and each input row gives one output
    row (greedy, or `SampleWithinTopK` with the caller's repeats), through `decode_dropping_finished`; else one
    generate call, with the model's kept static cache where it has one."""
    budgets = budgets + [budgets[-1]] * (input_ids.shape[0] - len(budgets))
    expansion = kwargs.get("num_return_sequences", 1) * kwargs.get("num_beams", 1)
    if expansion == 1 and drops_finished_rows(model):
        return decode_dropping_finished(model, input_ids, attention_mask, budgets, **kwargs)
    rows, length = input_ids.shape[0] * expansion, input_ids.shape[1] + max(budgets)
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kept_static_cache(model, rows, length),
                          max_new_tokens=max(budgets), **kwargs)


def decode_dropping_finished(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, budgets: list[int], *,
                             eos_token_id: int, pad_token_id: int, **kwargs) -> torch.Tensor:
    """`decode` for one output row per input row, with the rows that have finished (an end of sequence, or their
    budget decoded) left out of the batch every DROP_EVERY tokens. generate decodes every row until the call's
    longest answer ends, and a finished row costs a CPU nearly what a live one does: SmolLM2's greedy answers to TOFU,
    fine-tuned, end after ~30 of 64 tokens on average, so a batch of 32 spent about half its rows' compute on
    padding. Here generate decodes DROP_EVERY tokens at a time into a KV cache it is handed, the finished rows are
    taken out of the cache (`batch_select_indices`) and the token ids, and generate goes on from the cache with the
    rest, as it continues any cached prompt (only the last token, whose keys and values are not cached yet, is
    encoded). Each row's tokens are the ones one generate call gives, to float rounding: a row's logits do not depend
    on the other rows, but a narrower batch may be multiplied in another order (tests/test_drop_finished_rows.py
    compares them). Sampling draws its random numbers for fewer rows, so a seed gives other samples than one call.
    On a GPU, where a step of a small model costs the same for few rows as for many, it only adds calls: `auto`
    (configure_generation) drops rows off CUDA only."""
    width, end = input_ids.shape[1], input_ids.shape[1] + max(budgets)
    out = torch.full((input_ids.shape[0], end), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    out[:, :width] = input_ids
    budget = torch.tensor(budgets, device=input_ids.device)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)  # the output rows still decoding
    stops = torch.tensor(eos_token_id, device=input_ids.device).reshape(-1)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    ids, mask, decoded = input_ids, attention_mask, 0
    while True:
        tokens = min(DROP_EVERY, int(budget[rows].max()) - decoded)
        sequences = model.generate(input_ids=ids, attention_mask=mask, **{cache_keyword(model): cache},
                                   max_new_tokens=tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                                   **kwargs)
        new = sequences[:, ids.shape[1]:]
        out[rows, width + decoded : width + decoded + new.shape[1]] = new
        decoded += new.shape[1]
        # generate stops early only when every row has ended
        live = ~torch.isin(new, stops).any(1) & (budget[rows] > decoded) & (new.shape[1] == tokens)
        if not bool(live.any()):
            return out
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], new.shape[1])], 1)
        if not bool(live.all()):
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, sequences, mask = rows[keep], sequences[keep], mask[keep]
        ids = sequences


def decoding_rule(temperature: float | None, top_k: int, top_p: float | None, num_samples: int,
                  within_top_k: bool) -> tuple[dict, int]:
    """generate's arguments for how each token is chosen, and how many times the caller repeats each prompt row.

    Greedy (temperature None): argmax, no repeats. With top-k and top-p and `within_top_k`: `SampleWithinTopK`
    draws every token and generate, run greedy, takes it; greedy generate refuses num_return_sequences > 1, so the
    caller repeats each row num_samples times, as generate's own expansion does (repeat_interleave: row r is sample
    r % num_samples of prompt r // num_samples). Otherwise transformers' warpers and its draw over the whole
    vocabulary, generate expanding the rows."""
    if temperature is None:
        return dict(GREEDY), 1
    if within_top_k and top_k > 0 and top_p is not None and top_p < 1.0:
        sampler = LogitsProcessorList([SampleWithinTopK(temperature, top_k, top_p)])
        return {**GREEDY, "logits_processor": sampler}, num_samples
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k,
            "num_return_sequences": num_samples}, 1


class SampleWithinTopK(LogitsProcessor):
    """Draws each row's next token from transformers' sampling distribution (temperature, top-k, then top-p, in the
    order generate applies its warpers, `_get_logits_processor`) and returns it as the row's only finite score, so
    that generate, run greedy, takes it; it looks only at the top-k candidates.

    Why: with do_sample, transformers' TopPLogitsWarper sorts the whole vocabulary of every row at every decoding
    step, though after top-k all but k entries are -inf, and torch.multinomial then draws one random number per
    vocabulary entry. For PMC's 40 rows (8 questions x n = 5) over SmolLM2's 49,152 tokens on 2 CPU cores, the three
    warpers took 54 ms of a ~250 ms decoding step (a Xeon; this filter 18 ms: torch.topk's k values come sorted
    already), and the draw 51 ms of a ~350 ms step (an AMD EPYC; over the k candidates 0.1 ms).

    The same distribution: the kept set and the kept scores are transformers' (`filtered` returns what its warpers
    return; ties at the k-th score keep every tied token, as TopKLogitsWarper does; where tied scores lie at the k-th
    score or on both sides of the nucleus's edge, which of them go depends on torch.sort's order, so transformers'
    own top-p warper filters those rows and the draw covers the whole row). Other draws: the random numbers go to
    k candidates instead of the whole vocabulary, so a seed gives other answers than transformers' do_sample. One
    rounding difference: the nucleus's softmax sums k values where transformers sums the whole row with zeros
    between them, so a cumulative probability within float rounding (~1e-7) of 1 - top_p may fall the other way
    (tests/test_sampling_filter.py compares both on many rows)."""

    def __init__(self, temperature: float, top_k: int, top_p: float):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.ties = TopPLogitsWarper(top_p)

    def candidates(self, scores: torch.FloatTensor):
        """(scores after temperature and top-k, whole rows; the k candidates' positions and their scores after top-p,
        ascending, -inf where removed; the rows whose tied scores transformers' own warper must filter)."""
        if self.temperature != 1.0:  # TemperatureLogitsWarper: skipped at 1.0
            scores = scores / self.temperature
        top = torch.topk(scores, min(self.top_k, scores.size(-1)))  # sorted, largest first
        scores = scores.masked_fill(scores < top.values[..., -1:], -float("inf"))  # TopKLogitsWarper's rule
        ascending, positions = top.values.flip(-1), top.indices.flip(-1)  # TopPLogitsWarper sorts ascending
        removed = ascending.softmax(-1).cumsum(-1) <= 1 - self.top_p  # a prefix: the cumulative sum only grows
        removed[..., -1] = False  # min_tokens_to_keep = 1
        # rows where torch.sort's order among tied scores decides what stays: more tokens tied at the k-th score
        # than k, or tied scores on both sides of the nucleus's edge
        first_kept = removed.sum(-1, keepdim=True)
        edge_tied = (first_kept > 0) & (ascending.gather(-1, (first_kept - 1).clamp(min=0))
                                        == ascending.gather(-1, first_kept))
        tied = ((scores > -float("inf")).sum(-1) > ascending.size(-1)) | edge_tied.squeeze(-1)
        return scores, positions, ascending.masked_fill(removed, -float("inf")), tied

    def filtered(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """What transformers' three warpers return for these scores: the distribution `__call__` draws from."""
        scores, positions, kept, tied = self.candidates(scores)
        filtered = scores.scatter(-1, positions, kept)
        if bool(tied.any()):
            filtered[tied] = self.ties(input_ids[tied], scores[tied])
        return filtered

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores, positions, kept, tied = self.candidates(scores)
        drawn = positions.gather(-1, torch.multinomial(kept.softmax(-1), 1))
        if bool(tied.any()):
            drawn[tied] = torch.multinomial(self.ties(input_ids[tied], scores[tied]).softmax(-1), 1)
        return torch.full_like(scores, -float("inf")).scatter_(-1, drawn, 0.0)


def _answer_texts(tokenizer, rows: list[list[int]], answer_tag: str) -> list[str]:
    """Decoded answers. The tag is removed only when present: the official evaluation rule (unlearning/inference.py
    L42-47); the official sampler slices len(tag) characters off unconditionally (unlearning/pmc.py L212-215), which
    would cut real text from a generation without the tag."""
    return [t.removeprefix(answer_tag).strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]


def continuous_batching(model) -> bool:
    """Whether `configure_generation` switched the model's greedy decoding to continuous batching."""
    return bool(getattr(getattr(model, "generation_config", None), CONTINUOUS_BATCHING, False))


def drops_finished_rows(model) -> bool:
    """Whether `configure_generation` asked for finished rows to leave the batch (`decode_dropping_finished`); never
    with a static cache, whose compiled steps and kept caches are made for fixed widths."""
    config = getattr(model, "generation_config", None)
    return bool(getattr(config, DROP_FINISHED_ROWS, False)) and getattr(config, "cache_implementation", None) is None


def _continuous_greedy(model, tokenizer, prompts: list[list[int]], budgets: list[int], desc: str | None):
    """Greedy answer tokens per prompt through transformers' `generate_batch`, each cut to its own budget (the call
    decodes up to the largest, as a fixed batch does). Requests are named req_<i> in input order."""
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=max(budgets), num_beams=1, **GREEDY, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    with eval_mode(model):
        # its warm-up captures CUDA graphs: on another device it would only cost time
        outputs = model.generate_batch(inputs=prompts, generation_config=config, progress_bar=desc is not None,
                                       warmup=next(model.parameters()).device.type == "cuda")
    missing = [i for i in range(len(prompts)) if f"req_{i}" not in outputs]
    if missing:
        raise ConfigError(f"generation.continuous_batching: transformers' generate_batch returned no answer for "
                          f"request req_{missing[0]} ({len(missing)} of {len(prompts)} missing); this transformers "
                          "version names or drops requests differently; set generation.continuous_batching=false")
    return [list(outputs[f"req_{i}"].generated_tokens)[:budget] for i, budget in enumerate(budgets)]


def greedy_answers(model, tokenizer, fmt: PromptFormat, questions: list[str], **kwargs) -> list[str]:
    return [a[0] for a in generate_answers(model, tokenizer, fmt, questions, **kwargs)]


@torch.no_grad()
def greedy_continuations(
    model, prompts: list[list[int]], lengths: list[int], *, pad_id: int, eos_id: int, batch_size: int = 32,
    desc: str | None = None,
) -> list[list[int]]:
    """Per token-id prompt, its greedy continuation of lengths[i] new tokens, cut before the first end-of-sequence.

    Prompts wanting similar numbers of tokens share a batch (longest first), which decodes as many tokens as its
    longest request; a row keeps its first lengths[i], the same tokens greedy decoding of exactly that length gives.
    """
    device = device_of(model)
    continuations: list[list[int]] = [[] for _ in prompts]
    with eval_mode(model), dimensions_apart():
        for batch in tqdm(longest_first(lengths, batch_size), desc=desc or "generate", leave=False,
                          disable=desc is None):
            sent = decoding_batch(model, [prompts[i] for i in batch], batch_size)
            input_ids, attention_mask = pad_left(sent, pad_id)
            out = decode(model, input_ids.to(device), attention_mask.to(device), [lengths[i] for i in batch],
                         num_beams=1, **GREEDY, pad_token_id=pad_id, eos_token_id=eos_id)
            for i, row in zip(batch, out[:, input_ids.shape[1] :].tolist()):  # decoding_batch's copies come last
                row = row[: lengths[i]]
                continuations[i] = row[: row.index(eos_id)] if eos_id in row else row
    return continuations


# --- speed settings: batch size, KV cache, compilation ----------------------------------------------------------------

@dataclass(frozen=True)
class BatchSizes:
    """Rows decoded at once (greedy answers, PMC's samples, ICU's continuations: `generation.batch_size`) and rows
    scored at once (answer log-probabilities, ICU's memorisation accuracy: `generation.scoring_batch_size`).

    Two numbers because the two cost memory differently: a decoding row holds its KV cache and the last position's
    logits, a scoring row the logits of every position (SmolLM2, ~200 tokens: ~120 MB of float32 logits against
    ~9 MB of cache). And on a CPU decoding gains from wide batches where scoring loses: a SmolLM2 decoding step on
    2 cores costs ~70 ms plus ~3 ms per row, so 128 rows decode ~1.4x faster per row than 32 (one model's 337 paper
    questions: 60 s against 86 s, finished rows dropped), while scoring runs faster in small batches, its logits
    passing through the caches (the TOFU suite's scoring of one model: 186 s at 8 rows against 220 s at 32)."""

    decoding: int
    scoring: int


@dataclass(frozen=True)
class GenerationSizes:
    """The rows at once while a method trains (its decoding and scoring: PMC's samples and initial answers, ICU's
    checks) and in evaluation, after training: `auto` sizes the first beside what training holds and the second
    without it (`reserve_bytes`); set as ints, the two are the same."""

    unlearning: BatchSizes
    evaluation: BatchSizes


# `auto` batch sizes at most (BatchSizes: rows decoded, rows scored at once). A GPU: a decoding step of a small model
# costs the same up to ~512 rows on an H200 (docs/gpu.md). A CPU: a decoding step costs ~70 ms plus ~3 ms per row
# (SmolLM2, 2 cores), so decoding gains up to ~128 rows; scoring is fastest at 4-8 rows (256 answers: 32 s at 8,
# 41-51 s at 32, 52 s at 128)
AUTO_MOST_ROWS = BatchSizes(decoding=512, scoring=512)
CPU_MOST_ROWS = BatchSizes(decoding=128, scoring=8)
AUTO_MEMORY_FRACTION = 0.5  # share of the free memory (after the training reserve) a batch may fill
TRAINING_RESERVE_COPIES = 5  # fp32 parameter copies kept free: unlearned copy, reference, gradients, AdamW's 2 moments
CACHE_IMPLEMENTATIONS = (None, "static")
CONTINUOUS_BATCHING = "pmc_continuous_batching"  # the generation-config attribute that switches it on
VARYING_SHAPES = "pmc_varying_shapes"  # the one that marks the compiled step's varying dimensions (compile_dynamic)
DROP_FINISHED_ROWS = "pmc_drop_finished_rows"  # the one that drops finished rows from eager decoding
DROP_EVERY = 4  # new tokens decoded between two looks at which rows have finished (decode_dropping_finished)


def check_generation_options(batch_size, cache_implementation, compile, continuous_batching=False,
                             compile_dynamic="varying", drop_finished_rows="auto", scoring_batch_size="auto") -> None:
    """One ConfigError naming the `generation.*` key, before anything is built."""
    if not (isinstance(drop_finished_rows, bool) or drop_finished_rows == "auto"):
        raise ConfigError(f"generation.drop_finished_rows must be auto (off CUDA only), true or false, got "
                          f"{drop_finished_rows!r}")
    if not (compile_dynamic is True or compile_dynamic is None or compile_dynamic == "varying"):  # 1 == True
        raise ConfigError(f"generation.compile_dynamic must be varying (one trace, the batch width and the KV "
                          f"cache's length symbolic), true (one trace, every dimension symbolic) or null (static "
                          f"shapes first, then the dimensions that change), got {compile_dynamic!r}")
    if not isinstance(continuous_batching, bool):
        raise ConfigError(f"generation.continuous_batching must be true or false, got {continuous_batching!r}")
    if continuous_batching and not hasattr(GenerationMixin, "generate_batch"):
        raise ConfigError("generation.continuous_batching=true needs transformers' generate_batch, which this "
                          f"transformers ({transformers.__version__}) lacks")
    check_rows(batch_size, "generation.batch_size")
    check_rows(scoring_batch_size, "generation.scoring_batch_size")
    if cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise ConfigError(f"generation.cache_implementation must be null or 'static', got {cache_implementation!r}")
    compile_backend(compile, "generation.compile")
    if compile and cache_implementation is None:
        raise ConfigError(f"generation.compile={str(compile).lower()} needs generation.cache_implementation=static: "
                          "transformers compiles decoding only with a static KV cache")


def configure_generation(model, cache_implementation: str | None = None, compile: bool | str = False,
                         max_cache_len: int | None = None, continuous_batching: bool = False,
                         compile_dynamic: bool | str | None = "varying",
                         drop_finished_rows: bool | str = False) -> None:
    """Make these transformers' generation defaults of `model` (copies made later inherit them).

    static: the KV cache is allocated for the whole call, not grown token by token, `max_cache_len` positions long
    (prompt and answer tokens of the longest call expected) so that every call has a cache of the same shape;
    without it transformers sizes each call's cache to the longest call so far, and each growth allocates it again
    (compiled: and captures the step's CUDA graphs again). compile: with a static cache, transformers compiles the
    decoding step on CUDA devices only, true with inductor and CUDA graphs (its default), or with another backend
    of COMPILE_BACKENDS (cudagraphs: CUDA graphs without inductor's code generation, a shorter compile); with a
    static cache and compile=false its automatic compilation is switched off, so the two can be measured apart.
    continuous_batching: greedy decoding goes through `generate_batch` (sampling and beam search keep fixed
    batches). drop_finished_rows: finished rows leave an eager decoding batch (`decode_dropping_finished`); `auto`
    where the model is not on a CUDA device. The defaults (null, false) leave the model's generation config as loaded.

    A run decodes with batches of many widths (evaluation's full and last batches, PMC's questions x n samples) and,
    where PMC's max_length differs from evaluation's, with two cache lengths. Compiled with static shapes, each new
    width or length traced and compiled the step again (three or four graphs in a PMC run; on a GPU each is an
    inductor compile and a CUDA-graph capture), so the step is compiled with dynamic shapes (one graph for every batch
    width and cache length: `compile_dynamic=True`, every dimension symbolic, or "varying", the default, below; CUDA
    graphs are still captured per shape, which is no compile), and its
    attention mask is always a tensor of its own (`fresh_decoding_masks`) and the batch dimension a symbol of its
    own (`dimensions_apart`): one graph per run (tests/test_generation_speed.py; `decoding_batch` sends no batch of a
    single row, which dynamo would compile apart).

    That one graph takes long to compile: with every dimension a symbol, SmolLM2's step compiled in 119 s on 2 CPU
    cores (inductor; 80 s of it tracing, with dynamo's aot_eager backend), against 34 s with static shapes, and on the
    H100 a PMC job's first compiled call took 227 s (2026-11-28). `compile_dynamic=None` is torch's automatic
    dynamic instead: the first width compiles with static shapes, the next one again with only what changed (the
    batch width) symbolic, two graphs in 38 s in all with aot_eager on this CPU (one-off measures, docs/gpu.md §4).
    `compile_dynamic="varying"` compiles one graph in which only what varies between a run's calls is symbolic: the
    batch width and the static cache's length (PMC's calls with their own max_length need longer caches than
    evaluation's), marked on each compiled step's inputs and cache (`varying_shapes_call`); the model's dimensions
    stay static. With inductor on this CPU, SmolLM2's step: one graph in 78 s, against null's two in 89 s
    (one cache length; more graphs with more) and true's one in 121 s, the same answers (`python
    scripts/bench_decoding_compile.py`; marked on generate's inputs only, not on each step's and its cache's, the
    batch dimension was specialised to the first width)."""
    check_generation_options(1, cache_implementation, compile, continuous_batching, compile_dynamic,
                             drop_finished_rows)
    if drop_finished_rows == "auto":
        drop_finished_rows = next(model.parameters()).device.type != "cuda"
    _KEPT_CACHES.pop(model, None)  # caches kept under the previous settings
    config = model.generation_config
    config.cache_implementation = cache_implementation
    backend = compile_backend(compile, "generation.compile")
    # inductor's reduce-overhead mode is transformers' default (its kernels, then CUDA graphs); another backend
    # takes no mode
    config.compile_config = (CompileConfig(dynamic=None if compile_dynamic == "varying" else compile_dynamic,
                                           backend=backend, mode="reduce-overhead" if backend == "inductor" else None)
                             if backend else None)
    if backend:  # a bound method: a deep copy of the model (the unlearned model, PMC's copies) gets its own
        model.get_compiled_call = types.MethodType(own_compiled_call, model)
    elif "get_compiled_call" in vars(model):
        del model.get_compiled_call
    if compile and not hasattr(type(model), "create_masks_for_generate"):  # a model with its own masks keeps them
        model.create_masks_for_generate = fresh_decoding_masks
    elif "create_masks_for_generate" in vars(model):
        del model.create_masks_for_generate
    config.disable_compile = None if cache_implementation is None else not compile
    config.max_cache_len = max_cache_len if cache_implementation == "static" else None
    for attribute, on in ((CONTINUOUS_BATCHING, continuous_batching),
                          (VARYING_SHAPES, bool(backend) and compile_dynamic == "varying"),
                          (DROP_FINISHED_ROWS, drop_finished_rows)):
        if on:
            setattr(config, attribute, True)
        elif hasattr(config, attribute):
            delattr(config, attribute)


def own_compiled_call(model, compile_config):
    """transformers' `get_compiled_call` (which `generate` asks for the compiled decoding step), made for this model:
    transformers keeps the compiled call on the model (`_compiled_call`, compiled from `model.__call__`), and a deep
    copy of a model that has decoded inherited it, so the copy decoded with the original's weights; such a call is
    dropped and compiled again for the copy. Under `compile_dynamic=varying` the call marks the step's varying
    dimensions dynamic first (`varying_shapes_call`)."""
    inherited = getattr(getattr(model, "_compiled_call", None), "_torchdynamo_orig_callable", None)
    if inherited is not None and getattr(inherited, "__self__", model) is not model:
        del model._compiled_call
    compiled = type(model).get_compiled_call(model, compile_config)
    if getattr(model.generation_config, VARYING_SHAPES, False):
        return functools.partial(varying_shapes_call, compiled)
    return compiled


BATCHED_INPUTS = ("input_ids", "inputs_embeds", "position_ids", "token_type_ids")  # and the masks, below


def varying_shapes_call(compiled, *args, **inputs):
    """`compiled(*args, **inputs)` with the dimensions that vary between decoding calls marked dynamic, so that
    dynamo's first trace has them as its only symbols: the batch width (dimension 0 of the token ids, positions and
    masks, a dict of masks or one, and of every layer's keys and values in the static cache) and the cache's length
    (the keys' and values' dimension 2, the masks' last). A tensor's dimension 0 is marked only where it is the
    step's width (`cache_position`, of one position, is not batched); batches are never of 1 row (`decoding_batch`),
    which dynamo would specialise."""
    width = next((inputs[name].shape[0] for name in ("input_ids", "inputs_embeds")
                  if isinstance(inputs.get(name), torch.Tensor)), None)
    if width is None or width < 2:
        return compiled(*args, **inputs)
    masks = inputs.get("attention_mask")
    masks = list(masks.values()) if isinstance(masks, dict) else [masks]
    cache = inputs.get("past_key_values", inputs.get("cache"))
    cached = [tensor for layer in getattr(cache, "layers", ())
              for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None))
              if isinstance(tensor, torch.Tensor) and tensor.dim() == 4]
    for tensor in [inputs.get(name) for name in BATCHED_INPUTS] + masks + cached:
        if isinstance(tensor, torch.Tensor) and tensor.dim() and tensor.shape[0] == width:
            torch._dynamo.mark_dynamic(tensor, 0)
    if cached:  # (batch, heads, length, head size); a mask spans the cache's positions in its last dimension
        for tensor in cached:
            torch._dynamo.mark_dynamic(tensor, 2)
        for mask in masks:
            if isinstance(mask, torch.Tensor) and mask.dim() > 1 and mask.shape[-1] == cached[0].shape[2]:
                torch._dynamo.mark_dynamic(mask, mask.dim() - 1)
    return compiled(*args, **inputs)


def fresh_decoding_masks(*args, **kwargs):
    """transformers' decoding-step attention masks (`create_masks_for_generate`, which `generate` looks up on the
    model first), each as a tensor of its own rather than a view. Depending on a batch's padding transformers returns
    the mask as a view of another tensor or not, and a compiled step guards on that (dynamo traces an input view with
    its base): without this, the first batch of the other kind traced the step a second time."""
    masks = create_masks_for_generate(*args, **kwargs)
    if isinstance(masks, dict):
        return {name: own_tensor(mask) for name, mask in masks.items()}
    return own_tensor(masks)


def own_tensor(mask):
    return mask.clone() if isinstance(mask, torch.Tensor) and mask._base is not None else mask


# transformers compiles the decoding step on these devices only (GenerationMixin._valid_auto_compile_criteria), on
# any other only with CompileConfig's opt-in for every device
COMPILING_DEVICES = ("cuda", "xpu", "neuron", "tpu")


def compiles_decoding(model) -> bool:
    """Whether `generate` runs the model's decoding step compiled: a static cache, generation.compile on, and a
    device transformers compiles on (the rule of its `_valid_auto_compile_criteria`)."""
    config = getattr(model, "generation_config", None)  # stand-in models in tests have none
    compile_config = getattr(config, "compile_config", None)
    if getattr(config, "cache_implementation", None) != "static" or compile_config is None or config.disable_compile:
        return False
    device = next(model.parameters()).device.type
    return device in COMPILING_DEVICES or bool(getattr(compile_config, "_compile_all_devices", False))


def decoding_batch(model, prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """The prompts one decoding call sends: `prompts` themselves, or where the step is compiled (`compiles_decoding`),
    followed by copies of the last one up to a power of two of at least 2 rows and at most `batch_size` (the call's
    full width). The caller leaves the copies' answers out; a row's greedy answer does not depend on the others.

    A compiled step's CUDA graphs are recorded for each batch width and static cache (`kept_static_cache`), and the
    widths a run decodes vary from call to call: PMC's questions still worth sampling in each micro-batch (official
    schedule: 8, 7, ..., 1 questions x n samples, changing as questions reach a score of 0), evaluation's last batch of
    each model, ICU's forgetting checks. Rounded up to a power of two, a run decodes in a few widths (2, 4 and 8
    questions in PMC's micro-batches of 8), each recorded once and replayed after; a copy decodes at no cost on a GPU
    that a small model leaves waiting for the host (a model large enough to keep the GPU busy pays up to one more
    batch's decoding for a model's last batch). No width is 1: dynamo compiles a 1-row batch apart (it specialises
    sizes 0 and 1). Without compilation the batch is sent as it is: padding would only cost, and what is decoded (and
    the random numbers sampling draws) stays as before."""
    if not compiles_decoding(model) or batch_size < 2:
        return prompts
    width = min(batch_size, max(2, 2 ** math.ceil(math.log2(len(prompts)))))
    return prompts + [prompts[-1]] * (width - len(prompts))


# the static KV caches of the last model that decoded (model -> {rows: StaticCache}): kept across calls
_KEPT_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def kept_static_cache(model, rows: int, length: int) -> dict:
    """generate's keyword arguments that hand it the model's static KV cache of `rows` rows from an earlier call,
    emptied (`reset`, in place), when it has room for `length` positions; else a new one of at least the run's
    `max_cache_len` positions, kept for the next call of that width. Empty (transformers' own cache) without a static
    cache.

    transformers makes a new static cache in every `generate` call, and its tensors are marked as static
    addresses, so a compiled decoding step re-recorded its CUDA graphs in every call: once per PMC step (official
    schedule) and per evaluation batch (neither torch 2.13 nor the GPU machines' 2.11 stops recording them: 2.13
    leaves them out of its limit of 128 re-recordings, 2.11 has no limit while dynamo inlines modules, docs/gpu.md
    §4; each recording costs a few replays' time). Where the step is compiled, one
    cache is kept per batch width, so that a width that comes back (PMC's micro-batches alternate between a few,
    `decoding_batch`) replays the graphs recorded with its cache; otherwise the last cache only. Only the last model's
    caches are kept (target, retain and unlearned model each keeping theirs would triple the memory)."""
    config = getattr(model, "generation_config", None)  # stand-in models in tests have none
    if getattr(config, "cache_implementation", None) != "static":
        return {}
    for other in [m for m in _KEPT_CACHES.keys() if m is not model]:
        del _KEPT_CACHES[other]  # freed before this model's caches are filled
    caches = _KEPT_CACHES.setdefault(model, {})
    cache = caches.get(rows)
    if cache is not None and cache.layers[0].is_initialized and cache.layers[0].max_cache_len >= length:
        cache.reset()
    else:  # the cache it replaces is freed first: of this width, or every other one where the step is not compiled
        if compiles_decoding(model):
            caches.pop(rows, None)
        else:
            caches.clear()
        cache = caches[rows] = KeptStaticCache(config=model.config.get_text_config(decoder=True),
                                               max_cache_len=max(length, config.max_cache_len or 0))
    # a cache passed in replaces transformers' own: its cache_implementation (and the length transformers would size
    # its own by, which it warns about without a static cache_implementation) must be unset for this call
    return {cache_keyword(model): cache, "cache_implementation": None, "max_cache_len": None}


def release_kept_caches(model) -> None:
    """Free the static KV caches `kept_static_cache` keeps for `model` (a model leaving the device: its caches would
    stay there)."""
    _KEPT_CACHES.pop(model, None)


def cache_keyword(model) -> str:
    """The name under which this transformers' `generate` takes a cache: `cache` since it was renamed (5.24 here),
    `past_key_values` before (5.17 on the lent H100, which refused `cache` as a keyword no model uses). The new name
    shows in the signature of the model's `prepare_inputs_for_generation`, where generate checks its keywords; the
    old name still works after the rename, but warns that it is deprecated. A LoRA model (peft) passes generate's
    keywords on to the transformers model it wraps, whose signature is the one that counts."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(model.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in parameters else "past_key_values"


class KeptStaticCache(StaticCache):
    """A static KV cache whose beam-search reordering writes into its own tensors. transformers' reordering gives
    every layer new tensors (`index_select`), new addresses for which a compiled step records its CUDA graphs again:
    at every decoding step of a beam search (ICU's forgetting checks), and the kept cache would carry the unmarked
    tensors into later calls."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for layer in self.layers:
            if layer.is_initialized:
                index = beam_idx.to(layer.keys.device)
                layer.keys.copy_(layer.keys.index_select(0, index))
                layer.values.copy_(layer.values.index_select(0, index))


def decoding_row_bytes(config, sequence_length: int, dtype_bytes: int, kept_caches: int = 1) -> int:
    """Memory one decoded row needs at most: its KV cache (keys and values of every layer for every position),
    `kept_caches` times where caches of several widths are kept (`auto_batch_sizes`), one layer's prefill
    activations, and the last position's float32 logits three times over (logits, probabilities, top-p's sorted
    copy)."""
    return (kv_cache_bytes(config, sequence_length, dtype_bytes) * kept_caches
            + activation_bytes(config, sequence_length, dtype_bytes) + 3 * 4 * config.vocab_size)


def scoring_row_bytes(config, sequence_length: int, dtype_bytes: int) -> int:
    """Memory one scored row needs at most: float32 logits over the vocabulary at every position, three times over
    (logits, cross-entropy's log-softmax, a contiguous copy), and one layer's activations; plus a KV cache's worth as
    a margin (scoring forwards build none, `pmc.core.losses.logits_of`; ~7 % of a SmolLM2 row, counted since
    decoding and scoring shared one row size)."""
    return (kv_cache_bytes(config, sequence_length, dtype_bytes)
            + activation_bytes(config, sequence_length, dtype_bytes) + 3 * 4 * config.vocab_size * sequence_length)


def kv_cache_bytes(config, sequence_length: int, dtype_bytes: int) -> int:
    """Keys and values of every layer for every position of one row."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * sequence_length * dtype_bytes


def activation_bytes(config, sequence_length: int, dtype_bytes: int) -> int:
    """One layer's activations for one row: attention projections, MLP and the attention score matrix."""
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    return (sequence_length * (4 * config.hidden_size + 3 * intermediate)
            + config.num_attention_heads * sequence_length**2) * dtype_bytes


def reserve_bytes(model, full_fine_tuning: bool = True) -> int:
    """Memory `auto` keeps free beside the models on the device for what comes onto it later. While a method fully
    fine-tunes the model: TRAINING_RESERVE_COPIES fp32 copies of the parameters (the copy unlearned, a reference,
    gradients, AdamW's two moments). Otherwise one copy of the weights as stored: while a method trains LoRA
    adapters (model.lora.r > 0), the model unlearned (a reference shares its frozen weights,
    `pmc.methods.base.frozen_copy`; the adapters with their gradients and moments are a fraction of a percent of it,
    r = 8 at 8B: 21M parameters, within the half of the rest that batches leave); in evaluation, after training, the
    unlearned model beside the others. The full reserve at 8B is 150 GiB, more than a GPU holds, so `auto` gave a
    LoRA job 1 row at a time; at 3B (64 GB) it gave evaluation 8 scored rows on an 80 GB GPU, where 64 fit."""
    parameters = sum(p.numel() for p in model.parameters())
    if full_fine_tuning:
        return TRAINING_RESERVE_COPIES * 4 * parameters
    return parameters * next(model.parameters()).element_size()


def rows_that_fit(free_bytes: int, kept_bytes: int, row: int, most: int) -> int:
    """Rows of `row` bytes that fit in AUTO_MEMORY_FRACTION of the memory left after keeping `kept_bytes` free for
    what comes onto the device later (`reserve_bytes`), rounded down to a power of two (stable across jobs whose free
    memory differs a little), between 1 and `most`."""
    rows = int(AUTO_MEMORY_FRACTION * (free_bytes - kept_bytes) // row)
    return 1 if rows < 1 else min(most, 2 ** int(math.log2(rows)))


def auto_batch_sizes(model, sequence_length: int, free_bytes: int, most: BatchSizes = AUTO_MOST_ROWS,
                     full_fine_tuning: bool = True) -> BatchSizes:
    """Rows to decode and rows to score at once with `free_bytes` free (`rows_that_fit`), at most `most`;
    `full_fine_tuning`: sized for while a method trains every weight (`reserve_bytes`).
    Where the decoding step is compiled, a static cache is kept for each width decoded (2, 4, ... up to the batch
    size: `decoding_batch`, `kept_static_cache`), under twice the batch's rows in all, so a row's cache counts twice."""
    config, dtype_bytes = model.config, next(model.parameters()).element_size()
    kept_caches = 2 if compiles_decoding(model) else 1
    reserve = reserve_bytes(model, full_fine_tuning)
    return BatchSizes(
        rows_that_fit(free_bytes, reserve, decoding_row_bytes(config, sequence_length, dtype_bytes, kept_caches),
                      most.decoding),
        rows_that_fit(free_bytes, reserve, scoring_row_bytes(config, sequence_length, dtype_bytes), most.scoring))


def free_memory(device: torch.device) -> int:
    """Bytes free where the model lives: the CUDA device's free memory, else the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def most_rows(device: torch.device) -> BatchSizes:
    """The most rows `auto` gives on `device`: AUTO_MOST_ROWS on a CUDA device, CPU_MOST_ROWS elsewhere."""
    return AUTO_MOST_ROWS if device.type == "cuda" else CPU_MOST_ROWS


def resolve_batch_sizes(batch_size, scoring_batch_size, model, sequence_length: int | None,
                        full_fine_tuning: bool = True, device: torch.device | None = None) -> BatchSizes:
    """generation.batch_size and generation.scoring_batch_size as numbers: an int as given; `auto` from the free
    memory of `device` (default: where the model lives; `auto_batch_sizes`; `full_fine_tuning`: for while a method
    trains every weight), at most AUTO_MOST_ROWS on a CUDA device and CPU_MOST_ROWS elsewhere (a CPU run's sizes
    change only where memory is short: with 4 GB available SmolLM2 decodes 64 rows at ~130 positions, with 6 GB or
    more 128)."""
    check_generation_options(batch_size, None, False, scoring_batch_size=scoring_batch_size)
    if "auto" not in (batch_size, scoring_batch_size):
        return BatchSizes(batch_size, scoring_batch_size)
    device = next(model.parameters()).device if device is None else torch.device(device)
    auto = auto_batch_sizes(model, sequence_length, free_memory(device), most_rows(device), full_fine_tuning)
    return BatchSizes(auto.decoding if batch_size == "auto" else batch_size,
                      auto.scoring if scoring_batch_size == "auto" else scoring_batch_size)


def check_rows(rows, key: str) -> None:
    """A ConfigError naming `key` unless `rows` (a batch size) is a positive int or `auto`."""
    if rows != "auto" and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise ConfigError(f"{key} must be a positive integer or 'auto', got {rows!r}")
