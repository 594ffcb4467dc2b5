"""Decoding speed settings: `generation.batch_size` and `scoring_batch_size` (ints or `auto`),
`cache_implementation` and `compile`. None of them may change what is decoded."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import warnings

import pytest
import torch
from conftest import REPO, cuda_graph_inspecting_backend
from torch._dynamo.utils import counters
from transformers import CompileConfig
from transformers.generation.utils import GenerationMixin

import pmc.core.generation as generation
from pmc.core.errors import ConfigError
from pmc.core.generation import (
    AUTO_MOST_ROWS,
    CPU_MOST_ROWS,
    BatchSizes,
    GenerationSizes,
    auto_batch_sizes,
    cache_keyword,
    check_generation_options,
    configure_generation,
    decoding_row_bytes,
    generate_answers,
    greedy_answers,
    kept_static_cache,
    resolve_batch_sizes,
    scoring_row_bytes,
)
from pmc.core.models import build_tiny, train_tokenizer, with_lora
from pmc.core.prompts import PromptFormat
from pmc.experiment import method_batch_size, run_experiment

TEXTS = ["Question: Who wrote the book?\nAnswer: Jane wrote it.", "the quick brown fox jumps over the lazy dog",
         "Question: Where is the cat?\nAnswer: The cat sat on the mat near the door."] * 4
# prompts of different lengths, so batches are left-padded
QUESTIONS = ["Who wrote the book?", "Where is the quick brown fox going in the lazy world today?", "Who?",
             "Where is the cat?", "What?"]


@pytest.fixture(scope="module")
def tiny():
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                       max_position_embeddings=256, seed=0)
    torch.manual_seed(0)
    with torch.no_grad():  # larger random weights than the initialisation's: the answers vary from token to token
        for weights in model.parameters():
            if weights.dim() > 1:
                weights.normal_(0.0, 0.3)
    return model, tokenizer


def test_a_static_kv_cache_decodes_the_same_answers(tiny):
    model, tokenizer = tiny
    decode = lambda: greedy_answers(model, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=24, batch_size=2)

    def sample():
        torch.manual_seed(0)
        return generate_answers(model, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=12, batch_size=2,
                                num_samples=3, temperature=1.0, top_p=0.9)

    dynamic, sampled = decode(), sample()
    assert len(set(dynamic)) == len(QUESTIONS)  # every row decodes something else
    try:
        configure_generation(model, "static")
        assert model.generation_config.cache_implementation == "static"
        assert decode() == dynamic and sample() == sampled
        configure_generation(model, "static", compile=True)  # compiles only on CUDA (transformers' rule)
        assert decode() == dynamic
    finally:
        configure_generation(model)


def test_a_static_cache_is_kept_from_call_to_call_and_emptied_in_place(tiny, monkeypatch):
    """transformers makes a new static cache in every generate call, whose new addresses a compiled step's CUDA
    graphs are recorded again for. The harness hands generate the model's cache from its previous call, emptied in
    place, when the batch has as many rows (else a new one, kept next): what a batch decodes never depends on the
    batch before it."""
    model, tokenizer = tiny
    caches = []
    generate = GenerationMixin.generate

    def record(self, *args, **kwargs):
        caches.append(kwargs.get(cache_keyword(self)))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", record)
    greedy = lambda: greedy_answers(model, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=24, batch_size=2)  # noqa: E731

    def sample():
        torch.manual_seed(0)
        return generate_answers(model, tokenizer, PromptFormat(), QUESTIONS[:4], max_new_tokens=12, batch_size=2,
                                num_samples=3, temperature=1.0, top_p=0.9)

    expected, sampled = greedy(), sample()  # transformers' dynamic cache
    assert set(caches) == {None}
    try:
        configure_generation(model, "static", max_cache_len=128)
        caches.clear()
        assert greedy() == expected and sample() == sampled  # batches of 2, 2, 1 rows; then 2 x 3 samples twice
        first, second, last, samples, more_samples = caches
        assert first is second and last is not second and samples is more_samples and samples is not last
        keys = first.layers[0].keys
        assert keys.shape[0] == 2 and keys.shape[2] == 128  # rows, then positions: the run's max_cache_len
        assert greedy() == expected  # from a 6-row cache back to 2 rows: a new cache, then kept again
        assert caches[5] is caches[6] and caches[5] is not first
        assert caches[5].layers[0].keys.data_ptr() == caches[6].layers[0].keys.data_ptr()  # emptied in place
        other = copy.deepcopy(model)  # e.g. the unlearned copy of the target: one cache in the process, not one each
        greedy_answers(other, tokenizer, PromptFormat(), QUESTIONS[:2], max_new_tokens=4, batch_size=2)
        assert list(generation._KEPT_CACHES.items()) == [(other, {2: caches[-1]})] and caches[-1] is not caches[6]
    finally:
        configure_generation(model)
    caches.clear()
    assert greedy() == expected and set(caches) == {None}  # off again: transformers' own cache


# 3 batches of 2 rows whose prompts get wider from batch to batch, as PMC's micro-batches or evaluation's splits may
WIDENING = ["Who?", "What?", "Where is the cat?", "Who wrote the book?",
            "Where is the quick brown fox going in the lazy world today?", "Why?"]


def compile_config_on_this_cpu(**settings) -> CompileConfig:
    """transformers' CompileConfig with its opt-in for every device: transformers compiles decoding on CUDA only."""
    config = CompileConfig(**settings)
    config._compile_all_devices = True
    return config


def compiled_decoding_graphs(model, tokenizer, max_cache_len: int | None) -> int:
    """How many graphs torch.compile traces for the decoding step while greedy evaluation decodes batches whose
    prompts have different widths. The compile path runs on this CPU through transformers' opt-in for every device
    and dynamo's eager backend (tracing and guards as on a GPU, no code generation), so it takes seconds."""
    torch._dynamo.reset()
    counters.clear()
    if hasattr(model, "_previous_max_cache_length"):  # transformers' memory of the longest cache so far
        del model._previous_max_cache_length
    # static shapes: transformers' own compile settings, and no shapes marked (compile_dynamic=varying marks them)
    configure_generation(model, "static", compile=True, max_cache_len=max_cache_len, compile_dynamic=None)
    model.generation_config.compile_config = compile_config_on_this_cpu(backend="eager", fullgraph=False)
    greedy_answers(model, tokenizer, PromptFormat(), WIDENING, max_new_tokens=6, batch_size=2)
    return counters["stats"]["unique_graphs"]


def test_decoding_with_the_kept_static_cache_draws_no_transformers_warning(tiny):
    """The kept cache replaces transformers' own for a call, and with it the cache length the run configured:
    transformers warned in every run that `max_cache_len` would be ignored, which read as a misconfiguration."""
    model, tokenizer = tiny
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logging.Logger.warning_once.cache_clear()  # transformers' warnings once per process: earlier tests' are counted
    logger.addHandler(handler)
    try:
        configure_generation(model, "static", max_cache_len=64)
        greedy_answers(model, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=8, batch_size=2)
        assert model.generation_config.max_cache_len == 64  # the run's setting stays for the next cache made
    finally:
        logger.removeHandler(handler)
        configure_generation(model)
    assert warnings == []


class _ModelWithCacheKeyword:
    """A stand-in whose `prepare_inputs_for_generation` names its cache as transformers 5.24 does."""

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None, **kwargs): ...


class _ModelWithPastKeyValues:
    """The same as transformers 5.17 names it (the lent H100's version): its generate refused `cache=`."""

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, past_key_values=None, **kwargs): ...


def test_the_kept_cache_goes_to_generate_under_the_name_this_transformers_takes(tiny):
    """transformers renamed generate's `past_key_values` to `cache`; the lent H100's 5.17 stopped every compiled PMC
    job with "model_kwargs are not used by the model: ['cache']". The name follows the model's signature."""
    assert cache_keyword(_ModelWithCacheKeyword()) == "cache"
    assert cache_keyword(_ModelWithPastKeyValues()) == "past_key_values"
    model, _ = tiny
    try:
        configure_generation(model, "static", max_cache_len=64)
        arguments = kept_static_cache(model, rows=2, length=32)
    finally:
        configure_generation(model)
    assert set(arguments) == {cache_keyword(model), "cache_implementation", "max_cache_len"}


def test_a_lora_model_takes_the_cache_under_its_base_models_name(tiny):
    """peft's generate passes its keywords on to the transformers model, whose signature names the cache; peft's own
    (*args, **kwargs) does not, and read from it every LoRA job (Llama-3.1-8B's, scripts/bench_memory.py) decoded
    with the deprecated `past_key_values` under transformers 5.24, warned once per call."""
    model, tokenizer = tiny
    lora = with_lora(copy.deepcopy(model), {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"})
    assert cache_keyword(lora) == cache_keyword(model)
    try:
        configure_generation(lora, drop_finished_rows=True)  # the CPU's default: generate is handed a cache
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            answers = greedy_answers(lora, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=8, batch_size=2)
    finally:
        configure_generation(lora)
    assert len(answers) == len(QUESTIONS)


def test_a_static_cache_sized_once_compiles_the_decoding_step_once(tiny):
    """With static shapes (this test's compile settings), a cache sized per call grows with the longest prompt seen
    so far and the decoding step is traced again (on a GPU: recompiled and its CUDA graphs recorded again); sized
    for the longest call up front, every call has a cache of the same shape and one graph serves them all, with the
    same answers. The harness compiles with dynamic shapes (next tests), where a new cache length is no new graph
    but still a new cache allocation and CUDA-graph capture."""
    model, tokenizer = tiny
    expected = greedy_answers(model, tokenizer, PromptFormat(), WIDENING, max_new_tokens=6, batch_size=2)
    try:
        assert compiled_decoding_graphs(model, tokenizer, max_cache_len=None) > 1
        assert compiled_decoding_graphs(model, tokenizer, max_cache_len=64) == 1
        assert greedy_answers(model, tokenizer, PromptFormat(), WIDENING, max_new_tokens=6, batch_size=2) == expected
    finally:
        configure_generation(model)
        torch._dynamo.reset()


def cache_symbols_recorder(graphs: list[set[int]]):
    """A dynamo backend that runs each graph eagerly and records, per graph traced, which dimensions of the static
    cache's keys and values it left symbolic: 0 the batch width, 1 the key-value heads, 2 the cache's length, 3 the
    head size."""
    def backend(gm, example_inputs):
        symbolic = set()
        for node in gm.graph.nodes:
            value = node.meta.get("example_value") if node.op == "placeholder" else None
            if isinstance(value, torch.Tensor) and node.name.endswith(("_keys", "_values")):
                symbolic |= {dim for dim, size in enumerate(value.shape) if isinstance(size, torch.SymInt)}
        graphs.append(symbolic)
        return gm.forward
    return backend


@pytest.mark.parametrize("compile_dynamic, symbolic", [(True, [{0, 1, 2, 3}]), (None, [set(), {0}]),
                                                       ("varying", [{0, 2}])])
def test_automatic_dynamic_compiles_the_first_width_static_then_the_batch_dynamic(tiny, compile_dynamic, symbolic):
    """generation.compile_dynamic: true traces one graph with every dimension a symbol, for every width; null (torch's
    automatic dynamic) traces the first width with static shapes and the second with its batch dimension symbolic,
    which then serves every width: two graphs, each much quicker to compile (configure_generation); varying traces
    one graph in which only the batch width and the cache's length are symbolic. The same answers. Batches of 4 and
    2 rows (a third call of 4 again): no further graph."""
    model, tokenizer = tiny
    questions = WIDENING + WIDENING[:4]
    expected = greedy_answers(model, tokenizer, PromptFormat(), questions, max_new_tokens=6, batch_size=4)
    torch._dynamo.reset()
    graphs = []
    try:
        configure_generation(model, "static", compile=True, max_cache_len=64, compile_dynamic=compile_dynamic)
        assert model.generation_config.compile_config.dynamic is (None if compile_dynamic == "varying"
                                                                   else compile_dynamic)
        settings = model.generation_config.compile_config.to_dict()
        model.generation_config.compile_config = compile_config_on_this_cpu(
            **{**settings, "backend": cache_symbols_recorder(graphs), "mode": None})
        assert greedy_answers(model, tokenizer, PromptFormat(), questions, max_new_tokens=6, batch_size=4) == expected
    finally:
        configure_generation(model)
        torch._dynamo.reset()
    assert graphs == symbolic


def test_varying_marks_the_batch_width_and_the_cache_length_only():
    """compile_dynamic=varying marks dimension 0 of the token ids, positions, masks and the static cache's keys and
    values, where it is the step's width, and the cache's length (the keys' and values' dimension 2, the masks' last
    where it spans the cache); cache_position (one position) and other inputs are left alone."""
    rows, length, calls = 4, 16, []
    layer = type("Layer", (), {"keys": torch.zeros(rows, 2, length, 8), "values": torch.zeros(rows, 2, length, 8)})()
    inputs = {"input_ids": torch.zeros(rows, 1, dtype=torch.long), "position_ids": torch.zeros(rows, 1),
              "cache_position": torch.zeros(1), "attention_mask": {"full_attention": torch.zeros(rows, 1, 1, length)},
              "past_key_values": type("Cache", (), {"layers": [layer]})(), "logits_to_keep": torch.zeros(rows + 1)}
    generation.varying_shapes_call(lambda **received: calls.append(received), **inputs)
    assert calls == [inputs]

    def marked(tensor):
        return getattr(tensor, "_dynamo_dynamic_indices", set())

    assert marked(inputs["input_ids"]) == marked(inputs["position_ids"]) == {0}
    assert marked(inputs["attention_mask"]["full_attention"]) == {0, 3}
    assert marked(layer.keys) == marked(layer.values) == {0, 2}
    assert not marked(inputs["cache_position"]) and not marked(inputs["logits_to_keep"])


def test_compiled_decoding_goes_through_the_models_own_call_and_only_varying_marks_shapes(tiny):
    model, _ = tiny
    try:
        configure_generation(model, "static", compile=True, max_cache_len=64, compile_dynamic="varying")
        assert "get_compiled_call" in vars(model) and getattr(model.generation_config, generation.VARYING_SHAPES)
        configure_generation(model, "static", compile=True, max_cache_len=64, compile_dynamic=None)
        assert "get_compiled_call" in vars(model)
        assert not hasattr(model.generation_config, generation.VARYING_SHAPES)
        configure_generation(model, "static", compile=True, max_cache_len=64, compile_dynamic="varying")
    finally:
        configure_generation(model)
    assert "get_compiled_call" not in vars(model) and not hasattr(model.generation_config, generation.VARYING_SHAPES)


@pytest.mark.parametrize("copied", ["before", "after"])
@pytest.mark.parametrize("compile_dynamic", [True, "varying"])
def test_a_copy_of_a_compiled_model_decodes_with_its_own_weights(tiny, compile_dynamic, copied):
    """The unlearned model is a deep copy of the target, made after its generation settings: its compiled decoding
    must run its own weights. transformers keeps the compiled call on the model, and a copy of a model that had
    decoded inherited it (the original's weights in every compiled step); `compile_dynamic=varying` wrapped the call
    in a closure over the original, which a copy inherited even before any decoding. Here the copy's weights are
    drawn again, and its compiled answers must be its eager ones."""
    model, tokenizer = tiny
    model = copy.deepcopy(model)  # the fixture's model keeps no compiled call of this test
    torch._dynamo.reset()
    try:
        configure_generation(model, "static", compile=True, max_cache_len=64, compile_dynamic=compile_dynamic)
        settings = model.generation_config.compile_config.to_dict()
        model.generation_config.compile_config = compile_config_on_this_cpu(**{**settings, "backend": "eager",
                                                                                "mode": None})
        if copied == "after":
            greedy_answers(model, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=6, batch_size=2)
        other = copy.deepcopy(model)
        original = greedy_answers(model, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=6, batch_size=2)
        torch.manual_seed(1)
        with torch.no_grad():
            for weights in other.parameters():
                if weights.dim() > 1:
                    weights.normal_(0.0, 0.3)
        compiled = greedy_answers(other, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=6, batch_size=2)
        configure_generation(other)
        eager = greedy_answers(other, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=6, batch_size=2)
    finally:
        torch._dynamo.reset()
    assert compiled == eager and compiled != original


def test_the_options_as_transformers_reads_them_and_the_defaults_leave_the_config_as_loaded(tiny):
    model, _ = tiny
    loaded = model.generation_config.to_diff_dict()
    configure_generation(model, "static", compile=False)
    assert model.generation_config.disable_compile is True  # no automatic compilation with the static cache
    configure_generation(model, "static", compile=True)
    config = model.generation_config
    assert isinstance(config.compile_config, CompileConfig) and config.disable_compile is False
    # one graph for every batch width and cache length: those dimensions marked on each step (varying), torch's
    # automatic dynamic for anything else
    assert config.compile_config.dynamic is None and getattr(config, generation.VARYING_SHAPES)
    assert model.create_masks_for_generate is generation.fresh_decoding_masks  # where generate looks first
    assert (config.compile_config.backend, config.compile_config.mode) == ("inductor", "reduce-overhead")
    configure_generation(model, "static", compile="cudagraphs")  # CUDA graphs without inductor's code generation
    config = model.generation_config
    assert (config.compile_config.backend, config.compile_config.mode) == ("cudagraphs", None)
    assert config.compile_config.dynamic is None and config.disable_compile is False
    configure_generation(model, "static", compile=True, compile_dynamic=True)
    assert model.generation_config.compile_config.dynamic is True
    assert not hasattr(model.generation_config, generation.VARYING_SHAPES)
    configure_generation(model)
    assert model.generation_config.to_diff_dict() == loaded
    assert "create_masks_for_generate" not in vars(model)


def test_decoding_masks_are_never_views(tiny):
    """transformers gives a decoding step's mask as a view of another tensor for some batches and not for others; a
    compiled step guards on that, so the harness's masks are tensors of their own, with the same values."""
    model, _ = tiny
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    # config, inputs_embeds, attention_mask, cache (past_key_values before transformers renamed it), by position
    arguments = (model.config, torch.empty(2, 3, 0), mask, None)
    position_ids = torch.tensor([[0, 0, 1], [0, 1, 2]])
    own = generation.fresh_decoding_masks(*arguments, position_ids=position_ids)
    assert own._base is None
    assert torch.equal(own, generation.create_masks_for_generate(*arguments, position_ids=position_ids))
    base = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    assert generation.own_tensor(base[:, :, -1:]) is not base and generation.own_tensor(base[:, :, -1:])._base is None
    assert generation.own_tensor(base) is base  # not a view: passed on as it is


def test_beam_search_reorders_the_kept_static_cache_in_place(tiny, monkeypatch):
    """Beam search (ICU's forgetting checks) reorders the cache's rows after every step; transformers does it with
    new tensors, whose new addresses a compiled step records its CUDA graphs again for, every step. The kept cache
    reorders into its own tensors, and beam search answers as with transformers' dynamic cache."""
    model, tokenizer = tiny
    beams = lambda: generate_answers(model, tokenizer, PromptFormat(), QUESTIONS[:4], max_new_tokens=10,  # noqa: E731
                                     batch_size=2, num_beams=3)
    expected = beams()
    addresses = []
    reorder = generation.KeptStaticCache.reorder_cache

    def recording(self, beam_idx):
        reorder(self, beam_idx)
        addresses.append([(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in self.layers])

    monkeypatch.setattr(generation.KeptStaticCache, "reorder_cache", recording)
    try:
        configure_generation(model, "static", max_cache_len=128)
        assert beams() == expected
        (cache,) = generation._KEPT_CACHES[model].values()  # 2 questions x 3 beams
    finally:
        configure_generation(model)
    assert len(addresses) > 2  # a reordering per decoding step of both calls
    assert all(step == addresses[0] for step in addresses)
    assert addresses[-1] == [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers]


def test_compiled_decoding_sends_a_few_widths_and_keeps_a_cache_for_each(tiny, monkeypatch):
    """PMC's micro-batches sample for 8, 7, ..., 1 questions as questions reach a score of 0, and evaluation's last
    batch is narrower than the others. A compiled step's CUDA graphs are recorded per width and cache, and with one
    cache kept, a width that came back was recorded again. Compiled, a call is sent as a power of two of at least 2
    rows (copies of its last prompt, their answers left out) and each width keeps its cache: a few recordings per
    run, one graph (no 1-row batch), the same answers. Compiled here through transformers' opt-in for every device
    and dynamo's eager backend."""
    model, tokenizer = tiny
    sent = []  # per generate call: rows decoded, cache, its keys' address
    generate = GenerationMixin.generate

    def record(self, *args, **kwargs):
        out = generate(self, *args, **kwargs)
        cache = kwargs[cache_keyword(self)]
        keys = cache.layers[0].keys
        sent.append((keys.shape[0], cache, keys.data_ptr()))  # rows decoded: questions sent x samples
        return out

    counts = (4, 3, 1, 4, 2, 3)  # questions per call, as PMC's micro-batches of 4 ask once some reach a score of 0
    greedy = lambda count: greedy_answers(model, tokenizer, PromptFormat(), QUESTIONS[:count],  # noqa: E731
                                          max_new_tokens=6, batch_size=4)
    expected = [greedy(count) for count in counts]
    monkeypatch.setattr(GenerationMixin, "generate", record)
    monkeypatch.setattr(generation, "CompileConfig", compile_config_on_this_cpu)
    torch._dynamo.reset()
    counters.clear()
    try:
        configure_generation(model, "static", compile="eager", max_cache_len=64)
        assert [greedy(count) for count in counts] == expected
        torch.manual_seed(0)
        samples = [generate_answers(model, tokenizer, PromptFormat(), QUESTIONS[:count], max_new_tokens=6,
                                    batch_size=4, num_samples=2, temperature=1.0) for count in (3, 1)]
        assert counters["stats"]["unique_graphs"] == 1  # no batch of one row
        kept = dict(generation._KEPT_CACHES[model])
    finally:
        configure_generation(model)
        torch._dynamo.reset()
    assert [rows for rows, _cache, _address in sent] == [4, 4, 2, 4, 2, 4, 8, 4]  # 3 questions -> 4, 1 -> 2; x 2
    assert [len(s) for s in samples] == [3, 1] and all(len(answers) == 2 for s in samples for answers in s)
    assert sorted(kept) == [2, 4, 8]
    for rows, cache, address in sent:  # every call of a width decoded in that width's one cache, in place
        assert cache is kept[rows] and address == kept[rows].layers[0].keys.data_ptr()


@pytest.mark.parametrize("count, batch_size, width", [(1, 8, 2), (2, 8, 2), (3, 8, 4), (5, 8, 8), (8, 8, 8),
                                                      (5, 6, 6), (3, 3, 3), (1, 1, 1)])
def test_a_compiled_call_is_sent_as_a_power_of_two_of_at_least_two_rows(monkeypatch, count, batch_size, width):
    monkeypatch.setattr(generation, "compiles_decoding", lambda model: True)
    prompts = [[7, i] for i in range(count)]
    assert generation.decoding_batch(None, prompts, batch_size) == prompts + [[7, count - 1]] * (width - count)


def test_decoding_counts_as_compiled_where_transformers_compiles_it(tiny, monkeypatch):
    model, _tokenizer = tiny
    try:
        configure_generation(model, "static", compile=True)
        assert not generation.compiles_decoding(model)  # transformers compiles on CUDA only: sent as it is
        monkeypatch.setattr(generation, "CompileConfig", compile_config_on_this_cpu)
        configure_generation(model, "static", compile=True)
        assert generation.compiles_decoding(model)
        configure_generation(model, "static")
        assert not generation.compiles_decoding(model)
    finally:
        configure_generation(model)
    assert not generation.compiles_decoding(model)


@pytest.mark.parametrize("compile_dynamic", [True, "varying"])
def test_the_compiled_decoding_step_meets_inductors_conditions_for_cuda_graphs(tiny, monkeypatch, compile_dynamic):
    """generation.compile=true is for CUDA graphs (inductor's reduce-overhead mode), and inductor quietly runs a step
    without them when its graph mutates an input that is not static, holds an op unsafe for CUDA graphs, or spans
    devices. inductor checks that on CUDA only; here the harness's decoding step (its masks, its kept static cache,
    greedy and sampled calls of several widths) goes through inductor's AOT settings (input mutations kept in the
    graph) and torch's own checks: the static inputs inductor would take (`get_static_input_idxs`), the graph's
    mutated inputs, `get_first_incompatible_cudagraph_node`."""
    model, tokenizer = tiny
    steps = []
    inspecting_backend = cuda_graph_inspecting_backend(steps)

    def inspected_on_this_cpu(**settings):
        assert settings["backend"] == "inductor" and settings["mode"] == "reduce-overhead"
        return compile_config_on_this_cpu(**{**settings, "backend": inspecting_backend})

    monkeypatch.setattr(generation, "CompileConfig", inspected_on_this_cpu)
    torch._dynamo.reset()
    try:
        configure_generation(model, "static", compile=True, max_cache_len=128, compile_dynamic=compile_dynamic)
        # batches of 2, 2 and 2 rows (the kept cache; the last of one question and a copy: `decoding_batch`), then 6
        # samples. A first batch as wide as the fixture's 2 key-value heads: with dynamo's duck sizing the step was
        # specialised to 2 rows (`dimensions_apart`)
        greedy_answers(model, tokenizer, PromptFormat(), QUESTIONS, max_new_tokens=6, batch_size=2)
        torch.manual_seed(0)
        generate_answers(model, tokenizer, PromptFormat(), QUESTIONS[:2], max_new_tokens=6, batch_size=2,
                         num_samples=3, temperature=1.0, top_p=0.9)
        cache = generation._KEPT_CACHES[model][2]
    finally:
        configure_generation(model)
        torch._dynamo.reset()
    assert len(steps) == 1  # one graph for every width
    step = steps[0]
    assert step["mutated"], "the step writes its new keys and values into the static cache"
    assert step["mutated"] <= step["static"], "a mutated input that is not static: inductor would skip CUDA graphs"
    assert step["unsafe"] is None and step["devices"] == {torch.device("cpu")}
    # the weights are static too (not copied into CUDA-graph memory at each replay), and so are the cache's keys
    # and values: at least one static input per weight and two per layer
    assert len(step["static"]) >= len(list(model.parameters())) + 2 * len(cache.layers)


def test_a_pmc_run_with_compiled_decoding_traces_the_decoding_step_once(make_config, tmp_path, monkeypatch):
    """A PMC run decodes batches of many widths (its questions x n samples, evaluation's full and last batches), with
    a longer static cache for PMC's samples (their max_length, 200) than for evaluation, and masks that transformers
    gives as views or not by the batch's padding. Compiled with static shapes the step was traced three times, on a GPU
    each an inductor compile and a CUDA-graph capture; the harness's settings trace it once, send every call in a
    power-of-two width (`decoding_batch`), and the run scores as without compilation. Compiled here through
    transformers' opt-in for every device and dynamo's eager backend (`generation.compile=eager`: tracing and guards
    as on a GPU, no code generation)."""
    overrides = ("method.training.epochs=1", "generation.cache_implementation=static", "eval_cache=false")
    (tmp_path / "plain").mkdir(), (tmp_path / "compiled").mkdir()
    plain = run_experiment(make_config(*overrides), tmp_path / "plain")
    monkeypatch.setattr(generation, "CompileConfig", compile_config_on_this_cpu)
    widths, decoding_batch = [], generation.decoding_batch
    monkeypatch.setattr(generation, "decoding_batch", lambda model, prompts, batch_size: (
        widths.append((len(prompts), len(sent := decoding_batch(model, prompts, batch_size)))) or sent))
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = run_experiment(make_config(*overrides, "generation.compile=eager"), tmp_path / "compiled")
        assert counters["stats"]["calls_captured"] > 0  # the decoding step did go through the compiler
        assert counters["stats"]["unique_graphs"] == 1
    finally:
        torch._dynamo.reset()
    # some calls were sent wider (PMC's 10 initial answers as 16 rows, evaluation's last 26 questions as 32), and the
    # run scores as without compilation
    assert any(sent > asked for asked, sent in widths) and all(sent in (2, 4, 8, 16, 32, 64) for _, sent in widths)
    assert compiled["metrics"] == plain["metrics"]
    assert (compiled["compiled_graphs"], plain["compiled_graphs"]) == (1, 0)  # results.json says how many
    assert compiled["compile_s"] > 0 and plain["compile_s"] == 0  # and how long compiling took
    assert (compiled["cudagraph_skips"], plain["cudagraph_skips"]) == (0, 0)
    assert (compiled["cudagraph_recordings"], plain["cudagraph_recordings"]) == (0, 0)  # a CPU records none


def test_a_run_records_its_cuda_graph_recordings_and_warns_when_inductor_runs_without_them(
        make_config, tmp_path, monkeypatch, caplog):
    """inductor runs a compiled function without its CUDA graphs (a graph it cannot record, a function past torch's
    re-record limit) and says so only under TORCH_LOGS=cudagraphs: a step at eager speed that nothing reports. And it
    records a function's graphs again when a static input's address changes, each recording a few replays' time:
    one per step is as slow, and as quiet. CUDA graphs exist on a GPU only, so here torch's own reports are made
    while the run scores its models (a skip through `log_cudagraph_skip_and_bump_counter`, two recordings through
    torch.compile's callbacks, as cudagraph trees announce them), and once before the run, which is not the run's."""
    from torch._dynamo.callback import CallbackTrigger, callback_handler
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    import pmc.experiment as experiment
    from pmc.pipeline import compile_counts, compile_counts_since

    evaluate_models = experiment.evaluate_models

    def record():
        with callback_handler.install_callbacks(CallbackTrigger.CUDAGRAPH_RECORDING, "0/0"):
            pass

    def evaluate_recording_and_skipping(*args, **kwargs):
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to a test")
        record(), record()
        with callback_handler.install_callbacks(CallbackTrigger.DYNAMO, "0/0"):  # a compile is no recording
            pass
        return evaluate_models(*args, **kwargs)

    compile_counts()  # the count is running from here on (in a run it starts with the run)
    log_cudagraph_skip_and_bump_counter("skipping cudagraphs before the run")
    record()
    monkeypatch.setattr(experiment, "evaluate_models", evaluate_recording_and_skipping)
    with caplog.at_level("INFO", logger="pmc"):
        results = run_experiment(make_config("method.training.epochs=1", "eval_cache=false"), tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert results["cudagraph_skips"] == written["cudagraph_skips"] == 1
    assert results["cudagraph_recordings"] == written["cudagraph_recordings"] == 2
    # a CPU has no CUDA graphs to record: said, not warned
    assert "ran 1 compiled function(s) without CUDA graphs, as a cpu device has none" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "CUDA graphs" in r.getMessage()]
    # on a CUDA device a skip is a warning that says how to find out why
    before = compile_counts()
    log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to a test")
    caplog.clear()
    with caplog.at_level("WARNING", logger="pmc"):
        assert compile_counts_since(before, torch.device("cuda"))["cudagraph_skips"] == 1
    assert "without CUDA graphs in this run; rerun with TORCH_LOGS=cudagraphs" in caplog.text


class StopBeforeData(Exception):
    pass


@pytest.mark.parametrize("job", ["run", "evaluate"])
def test_every_job_keeps_compiled_code_in_its_compile_cache_dir(make_config, stage0_cache, tmp_path, monkeypatch,
                                                                 caplog, job):
    """torch reads where to keep inductor's code from TORCHINDUCTOR_CACHE_DIR whenever it compiles: a job sets it from
    `compile_cache_dir` (by default beside the stage-0 cache, which a sweep's jobs share) before anything compiles, says
    so when that replaces the variable's own folder, and leaves the variable alone for null."""
    import pmc.experiment as experiment

    seen = []

    def stop(*args, **kwargs):
        seen.append(os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        raise StopBeforeData

    def start(*overrides):
        extra = (f"checkpoint={tmp_path}",) if job == "evaluate" else ()
        cfg = make_config(*overrides, *extra, config_name="config" if job == "run" else "evaluate")
        with pytest.raises(StopBeforeData):
            (run_experiment if job == "run" else experiment.evaluate_checkpoint)(cfg, tmp_path)

    monkeypatch.setattr(experiment, "load_benchmark", stop)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    start()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "own"))
    with caplog.at_level("INFO", logger="pmc"):
        start(f"compile_cache_dir={tmp_path / 'compiled'}")
    start("compile_cache_dir=null")
    assert seen == [str(stage0_cache / "compile"), str(tmp_path / "compiled"), str(tmp_path / "compiled")]
    assert (f"compiled code is kept in {tmp_path / 'compiled'} (compile_cache_dir), not in "
            f"$TORCHINDUCTOR_CACHE_DIR={tmp_path / 'own'}") in caplog.text


@pytest.mark.slow  # inductor generates and compiles C++ code here: ~15 s
def test_a_run_counts_the_graphs_inductor_read_from_its_cache(tmp_path, monkeypatch):
    """compile_counts' compile_cache_hits / _misses: a graph compiled for the first time is generated and stored (a
    miss), the same graph compiled again in a fresh dynamo (as in a sweep's next job) is read from the folder (a hit);
    a job whose graphs an earlier job compiled should show hits only."""
    from pmc.pipeline import compile_counts, configure_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before"))
    configure_compile_cache(str(tmp_path / "compiled"))

    def compile_once() -> dict:
        torch._dynamo.reset()
        before = compile_counts()
        step = torch.compile(lambda x: torch.nn.functional.silu(x) * 2 + 1, backend="inductor")
        torch.testing.assert_close(step(torch.arange(6.0)), torch.nn.functional.silu(torch.arange(6.0)) * 2 + 1)
        return {key: compile_counts()[key] - before[key] for key in ("compile_cache_hits", "compile_cache_misses")}

    try:
        assert compile_once() == {"compile_cache_hits": 0, "compile_cache_misses": 1}
        assert compile_once() == {"compile_cache_hits": 1, "compile_cache_misses": 0}
    finally:
        torch._dynamo.reset()
    assert any((tmp_path / "compiled" / "fxgraph").iterdir()) and not (tmp_path / "before").exists()


@pytest.mark.parametrize("batch_size, cache_implementation, compile, message", [
    (0, None, False, "generation.batch_size must be a positive integer or 'auto', got 0"),
    ("big", None, False, "generation.batch_size must be a positive integer or 'auto', got 'big'"),
    (True, None, False, "generation.batch_size must be a positive integer or 'auto', got True"),
    (8, "dynamic", False, "generation.cache_implementation must be null or 'static', got 'dynamic'"),
    (8, None, "yes", "generation.compile must be true, false or one of ['inductor', 'cudagraphs', 'aot_eager', "
                     "'eager'], got 'yes'"),
    (8, None, "cudagraphs", "generation.compile=cudagraphs needs generation.cache_implementation=static"),
    (8, None, True, "generation.compile=true needs generation.cache_implementation=static"),
])
def test_bad_generation_settings_are_one_config_error(batch_size, cache_implementation, compile, message):
    with pytest.raises(ConfigError) as error:
        check_generation_options(batch_size, cache_implementation, compile)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("compile_dynamic", [False, "Varying", "batch", 1, "true"])
def test_compile_dynamic_is_varying_true_or_null(compile_dynamic):
    with pytest.raises(ConfigError, match=r"^generation.compile_dynamic must be varying \(one trace, the batch width "
                                          r"and the KV cache's length symbolic\), true \(one trace, every "
                                          r"dimension symbolic\) or null"):
        check_generation_options(8, "static", True, compile_dynamic=compile_dynamic)
    for valid in (True, None, "varying"):
        check_generation_options(8, "static", True, compile_dynamic=valid)


TINY_KV_CACHE = 2 * 2 * 2 * 32 * 4  # per position: keys and values x layers x heads x head size x bytes
MOST = BatchSizes(decoding=4096, scoring=4096)  # no cap in the way of the arithmetic


def tiny_row_bytes(model, sequence):
    """By hand, for the tiny model (2 layers, 2 heads of 32, no grouped KV, hidden 64, MLP 128, float32): a decoded
    row's and a scored row's bytes."""
    vocabulary = len(model.get_output_embeddings().weight)
    kv_cache = TINY_KV_CACHE * sequence
    activations = (sequence * (4 * 64 + 3 * 128) + 2 * sequence**2) * 4
    last_logits = 3 * 4 * vocabulary  # float32 logits, probabilities, top-p's sorted copy: last position only
    all_logits = 3 * 4 * vocabulary * sequence  # logits, log-softmax, a copy: every position
    return kv_cache + activations + last_logits, kv_cache + activations + all_logits


def test_auto_batch_sizes_from_free_memory(tiny):
    model, _ = tiny
    sequence = 10
    decoding, scoring = tiny_row_bytes(model, sequence)
    assert decoding_row_bytes(model.config, sequence, 4) == decoding
    assert scoring_row_bytes(model.config, sequence, 4) == scoring
    assert scoring > decoding  # every position's logits against the last one's
    reserve = 5 * 4 * sum(p.numel() for p in model.parameters())  # unlearned copy, reference, grads, AdamW moments
    # half of what is left after the reserve fits 37 scored rows: the power of two below is 32
    free = reserve + 2 * 37 * scoring
    sizes = auto_batch_sizes(model, sequence, free, MOST)
    assert sizes.scoring == 32
    assert sizes.decoding == 2 ** int(math.log2(37 * scoring // decoding))
    assert auto_batch_sizes(model, sequence, reserve + 2 * 64 * scoring, MOST).scoring == 64
    assert auto_batch_sizes(model, sequence, reserve + 2 * 10**6 * scoring) == AUTO_MOST_ROWS  # the caps
    assert auto_batch_sizes(model, sequence, reserve + 2 * 10**6 * scoring, CPU_MOST_ROWS) == BatchSizes(128, 8)
    assert auto_batch_sizes(model, sequence, reserve // 2, MOST) == BatchSizes(1, 1)  # nothing left: one at a time


def released_model_on_meta(architecture: str):
    """A released model's architecture (scripts/architectures/), bf16, its parameters on the meta device (no
    memory): what `auto` reads of a model, its parameter count and config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = json.loads((REPO / "scripts" / "architectures" / architecture).read_text())
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(values.pop("model_type"), **values),
                                                dtype=torch.bfloat16)


def test_auto_keeps_room_for_what_comes_next_not_always_for_full_fine_tuning():
    """Llama-3.1-8B-Instruct (bf16, 8.03B parameters) unlearned with LoRA on an 80 GB GPU, ~52.3 GB free beside target
    and retain, rows of 200 positions. Full fine-tuning's reserve (5 fp32 copies, 160.6 GB) leaves nothing: 1 row at a
    time, what `auto` gave LoRA jobs. LoRA's is the one bf16 copy unlearned (16.06 GB): half of the 36.24 GB left is
    18.12 GB, and by hand a scored row holds 360,345,600 bytes (the KV cache 2 x 32 layers x 8 heads x 128 x 200 x 2
    = 26,214,400; one layer's activations (200 x (4 x 4096 + 3 x 14336) + 32 x 200^2) x 2 = 26,316,800; float32
    logits 3 x 4 x 128,256 x 200 = 307,814,400), so 50 fit: 32; a decoded row the last position's logits instead
    (1,539,072): 54,070,272 bytes, 335 fit: 256."""
    model = released_model_on_meta("llama3_1_8b_instruct.json")
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248
    assert scoring_row_bytes(model.config, 200, 2) == 360_345_600
    assert decoding_row_bytes(model.config, 200, 2) == 54_070_272
    free = 52_300_000_000
    assert auto_batch_sizes(model, 200, free, AUTO_MOST_ROWS) == BatchSizes(1, 1)
    assert auto_batch_sizes(model, 200, free, AUTO_MOST_ROWS, full_fine_tuning=False) == BatchSizes(256, 32)


def test_auto_sizes_evaluation_without_the_room_training_held():
    """Llama-3.2-3B-Instruct (bf16, 3,212,749,824 parameters) fully fine-tuned on an 80 GB GPU, 71.4 GB free beside
    target and retain, rows of 200 positions. While the method trains, 5 fp32 copies are kept (64,254,996,480 bytes):
    half of the 7.15 GB left holds 10 scored rows of 347,417,600 bytes (by hand: the KV cache 2 x 28 x 8 x 128 x 200
    x 2 = 22,937,600; one layer's activations (200 x (4 x 3072 + 3 x 8192) + 24 x 200^2) x 2 = 16,665,600; the
    logits 307,814,400): 8; and 86 decoded rows of 41,142,272 (the last position's logits, 1,539,072, in place of
    every position's): 64. Evaluation comes after training, with only the unlearned model's bf16 copy more on the
    device (6,425,499,648 bytes): half of the 64.97 GB left holds 93 scored rows, 64, and 789 decoded, the cap 512.
    Before 2026-11-29 evaluation got training's 64 and 8."""
    model = released_model_on_meta("llama3_2_3b_instruct.json")
    assert sum(p.numel() for p in model.parameters()) == 3_212_749_824
    assert scoring_row_bytes(model.config, 200, 2) == 347_417_600
    assert decoding_row_bytes(model.config, 200, 2) == 41_142_272
    free = 71_400_000_000
    assert auto_batch_sizes(model, 200, free, AUTO_MOST_ROWS, full_fine_tuning=True) == BatchSizes(64, 8)
    assert auto_batch_sizes(model, 200, free, AUTO_MOST_ROWS, full_fine_tuning=False) == BatchSizes(512, 64)


def test_auto_batch_sizes_count_the_caches_kept_for_each_width_where_decoding_is_compiled(tiny, monkeypatch):
    """Compiled, a cache is kept per width decoded (2, 4, ..., the batch size): under twice the batch's rows of
    cache, so `auto` budgets each decoded row's cache twice (a scored row keeps none)."""
    model, _ = tiny
    sequence = 10
    decoding, _ = tiny_row_bytes(model, sequence)
    assert decoding_row_bytes(model.config, sequence, 4, kept_caches=2) == decoding + TINY_KV_CACHE * sequence
    reserve = 5 * 4 * sum(p.numel() for p in model.parameters())
    free = reserve + 2 * 64 * decoding  # 64 rows with one cache each: fewer than 64 when each row's cache counts twice
    try:
        configure_generation(model, "static", compile=True)
        assert auto_batch_sizes(model, sequence, free, MOST).decoding == 64  # a CPU: transformers does not compile
        scoring = auto_batch_sizes(model, sequence, free, MOST).scoring
        monkeypatch.setattr(generation, "CompileConfig", compile_config_on_this_cpu)
        configure_generation(model, "static", compile=True)
        assert auto_batch_sizes(model, sequence, free, MOST) == BatchSizes(32, scoring)
    finally:
        configure_generation(model)


def test_resolve_batch_sizes(tiny, monkeypatch):
    model, _ = tiny
    assert resolve_batch_sizes(12, 5, model, 100) == BatchSizes(12, 5)
    # the model is on the CPU: the CPU caps with ample memory, the host's available memory where it is short
    assert resolve_batch_sizes("auto", "auto", model, 100) == CPU_MOST_ROWS
    assert resolve_batch_sizes("auto", 5, model, 100) == BatchSizes(CPU_MOST_ROWS.decoding, 5)
    assert resolve_batch_sizes(12, "auto", model, 100) == BatchSizes(12, CPU_MOST_ROWS.scoring)
    decoding, scoring = tiny_row_bytes(model, 100)
    reserve = 5 * 4 * sum(p.numel() for p in model.parameters())
    available = reserve + 2 * 5 * scoring  # 5 scored rows fit: 4; decoded rows many more
    monkeypatch.setattr(generation.psutil, "virtual_memory", lambda: type("Memory", (), {"available": available}))
    assert resolve_batch_sizes("auto", "auto", model, 100) == BatchSizes(
        min(128, 2 ** int(math.log2(5 * scoring // decoding))), 4)
    with pytest.raises(ConfigError, match="generation.batch_size"):
        resolve_batch_sizes(-1, 4, model, 100)
    with pytest.raises(ConfigError, match=r"generation.scoring_batch_size must be a positive integer or 'auto', "
                                          r"got True"):
        resolve_batch_sizes(4, True, model, 100)


def test_smollm2_on_a_cpu_decodes_128_rows_and_scores_8_at_once_where_memory_allows():
    """The figures the README and BatchSizes quote, from SmolLM2-135M's config (no weights needed): 30 layers,
    3 KV heads of 64, vocabulary 49,152, float32; a mini-paper decoding of ~130 positions."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152)
    model = torch.nn.Module()
    model.config, model.weights = config, torch.nn.Parameter(torch.zeros(134_515_008 // 64, 64))  # 135M fp32
    assert auto_batch_sizes(model, 130, 20 * 2**30, CPU_MOST_ROWS) == BatchSizes(128, 8)  # a 24 GB machine
    assert auto_batch_sizes(model, 130, 6 * 2**30, CPU_MOST_ROWS) == BatchSizes(128, 8)
    assert auto_batch_sizes(model, 130, 4 * 2**30, CPU_MOST_ROWS) == BatchSizes(64, 8)  # 4 GB available
    assert auto_batch_sizes(model, 130, 3 * 2**30, CPU_MOST_ROWS) == BatchSizes(16, 2)


def test_auto_counts_decoded_rows_and_pmc_decodes_n_per_question(make_config):
    pmc_like = type("Sampler", (), {"num_samples": 5})()
    auto, fixed = make_config("generation.batch_size=auto"), make_config("generation.batch_size=16")
    assert method_batch_size(auto, 32, pmc_like) == 6 and method_batch_size(auto, 32, object()) == 32
    assert method_batch_size(fixed, 16, pmc_like) == 16  # an int is questions per call, as before


def test_a_bad_setting_fails_before_anything_is_built(make_config, tmp_path):
    with pytest.raises(ConfigError, match="generation.batch_size"):
        run_experiment(make_config("generation.batch_size=0"), tmp_path)
    with pytest.raises(ConfigError, match=r"^generation.scoring_batch_size must be a positive integer or 'auto', "
                                          r"got 'many'"):
        run_experiment(make_config("generation.scoring_batch_size=many"), tmp_path)
    with pytest.raises(ConfigError, match="eval_cache must be true or false"):
        run_experiment(make_config("eval_cache=sometimes"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_run_with_auto_batches_and_a_static_cache_scores_as_before(make_config, tmp_path, monkeypatch):
    caches = []
    generate = GenerationMixin.generate

    def record(model, *args, **kwargs):
        caches.append(model.generation_config.cache_implementation)
        return generate(model, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", record)
    (tmp_path / "plain").mkdir(), (tmp_path / "fast").mkdir()
    plain = run_experiment(make_config("method.training.epochs=1"), tmp_path / "plain")
    caches.clear()
    fast = run_experiment(make_config("method.training.epochs=1", "generation.batch_size=auto",
                                      "generation.cache_implementation=static"), tmp_path / "fast")
    assert caches and set(caches) == {"static"}  # PMC's decoding and every model's evaluation
    assert fast["eval_cache"]["target"]["paper"] == "miss"  # other generation settings: scored, not read
    assert fast["batch_sizes"] == {"decoding": 128, "scoring": 8}  # auto on a CPU with memory to spare
    assert fast["unlearning_batch_sizes"] == {"decoding": 128, "scoring": 8}
    assert plain["batch_sizes"] == {"decoding": 64, "scoring": 64}  # the test config's int, which scoring follows
    assert plain["unlearning_batch_sizes"] == plain["batch_sizes"]
    for model in ("target", "retain"):
        assert fast["metrics"][model] == plain["metrics"][model]


@pytest.mark.parametrize("generation, expected", [
    ({"cache_implementation": "static", "max_new_tokens": 10, "max_length": None}, "longest prompt + 10"),
    ({"cache_implementation": "static", "max_new_tokens": None, "max_length": 90}, 90),
    ({"cache_implementation": None, "max_new_tokens": 10, "max_length": None}, None),
])
def test_the_run_sizes_the_static_cache_for_its_longest_evaluation_call(tiny, generation, expected):
    from omegaconf import OmegaConf

    from pmc.core.records import QABenchmark, QARecord
    from pmc.pipeline import prepare_generation

    model, tokenizer = tiny
    records = [QARecord(q, "An answer.") for q in QUESTIONS]
    benchmark = QABenchmark(name="widths", forget=records[:1], retain=records[1:], eval_sets={"retain": records[1:]})
    cfg = OmegaConf.create({"model": {"lora": None}, "device": "cpu",
                            "generation": {"batch_size": 4, "scoring_batch_size": 2, "compile": False,
                                           "continuous_batching": False,
                                           "compile_dynamic": True, "drop_finished_rows": False, **generation}})
    try:
        assert prepare_generation(cfg, [model], tokenizer, PromptFormat(), benchmark) == GenerationSizes(
            BatchSizes(4, 2), BatchSizes(4, 2))  # ints: the same while training and in evaluation
        if expected == "longest prompt + 10":
            expected = max(len(PromptFormat().prompt_ids(tokenizer, q)) for q in QUESTIONS) + 10
        assert model.generation_config.max_cache_len == expected
    finally:
        configure_generation(model)


@pytest.mark.parametrize("lora_r", [0, 8])
def test_a_lora_run_sizes_auto_batches_for_what_lora_trains(tiny, monkeypatch, lora_r):
    """`auto` on a host whose available memory is full fine-tuning's reserve exactly (5 fp32 copies of the
    parameters): nothing left while the method trains, 1 row at a time; with model.lora.r > 0, and in evaluation
    either way, the reserve is the one fp32 copy unlearned, and half of the 4 copies' bytes left (8 bytes a
    parameter) holds rows of the sizes `tiny_row_bytes` gives by hand."""
    from omegaconf import OmegaConf

    from pmc.core.records import QABenchmark, QARecord
    from pmc.pipeline import prepare_generation

    model, tokenizer = tiny
    records = [QARecord(q, "An answer.") for q in QUESTIONS]
    benchmark = QABenchmark(name="widths", forget=records[:1], retain=records[1:], eval_sets={"retain": records[1:]})
    cfg = OmegaConf.create({"model": {"lora": {"r": lora_r}}, "device": "cpu",
                            "generation": {"batch_size": "auto", "scoring_batch_size": "auto", "compile": False,
                                           "continuous_batching": False, "compile_dynamic": True,
                                           "drop_finished_rows": False, "cache_implementation": None,
                                           "max_new_tokens": 10, "max_length": None}})
    available = 5 * 4 * sum(p.numel() for p in model.parameters())
    monkeypatch.setattr(generation.psutil, "virtual_memory", lambda: type("Memory", (), {"available": available}))
    sizes = prepare_generation(cfg, [model], tokenizer, PromptFormat(), benchmark)
    sequence = max(len(PromptFormat().prompt_ids(tokenizer, q)) for q in QUESTIONS) + 10
    budget = 8 * sum(p.numel() for p in model.parameters())
    one_copy_kept = BatchSizes(*(2 ** int(math.log2(budget // row)) for row in tiny_row_bytes(model, sequence)))
    assert one_copy_kept.decoding > 1
    assert sizes.evaluation == one_copy_kept
    assert sizes.unlearning == (one_copy_kept if lora_r else BatchSizes(1, 1))


# --- evaluation decodes every suite's greedy questions of a model together --------------------------------------------


def rows_per_generate_call(monkeypatch) -> list[list[int]]:
    """Per model.generate call from now on, each row's prompt length (its unpadded tokens)."""
    calls: list[list[int]] = []
    generate = GenerationMixin.generate

    def record(model, *args, **kwargs):
        calls.append(kwargs["attention_mask"].sum(-1).tolist())
        return generate(model, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", record)
    return calls


def test_planned_questions_are_decoded_together_longest_first_each_once(tiny, monkeypatch):
    """The suites' question lists (overlapping, one with a repeat) cost full batches of distinct questions in one
    call at the first request, longest prompt first; every list still gets the answers of decoding each of its
    questions alone."""
    from benchmarks.metrics.common import EvalContext

    model, tokenizer = tiny
    fmt = PromptFormat()
    splits = [QUESTIONS[:2], WIDENING, QUESTIONS[1:] + QUESTIONS[1:3]]
    distinct = list(dict.fromkeys(q for split in splits for q in split))
    assert len(distinct) == 6
    alone = {q: greedy_answers(model, tokenizer, fmt, [q], max_new_tokens=12, batch_size=1)[0] for q in distinct}
    calls = rows_per_generate_call(monkeypatch)
    ctx = EvalContext(tokenizer, fmt, benchmark=None, max_new_tokens=12, batch_size=4)
    ctx.plan_greedy_answers(q for split in splits for q in split)
    for split in splits:
        assert ctx.greedy_answers(model, split) == [alone[q] for q in split]
    prompt_lengths = sorted((len(fmt.prompt_ids(tokenizer, q)) for q in distinct), reverse=True)
    assert calls == [prompt_lengths[:4], prompt_lengths[4:]]  # 6 distinct questions, 4 rows a call (not 5 calls)

    unplanned = greedy_answers(model, tokenizer, fmt, ["Why not?"], max_new_tokens=12, batch_size=1)[0]
    calls.clear()  # a question nobody planned: decoded alone, at its request; the planned ones are not decoded again
    assert ctx.greedy_answers(model, ["Why not?", "Who?"]) == [unplanned, alone["Who?"]]
    assert calls == [[len(fmt.prompt_ids(tokenizer, "Why not?"))]]


def test_the_context_counts_the_seconds_spent_decoding_greedy_answers(monkeypatch):
    """results.json's timings_s "eval.greedy_answers": the time of the decoding calls, none for answers known."""
    import time

    import benchmarks.metrics.common as common

    def slow_answers(model, tokenizer, fmt, questions, **kwargs):
        time.sleep(0.2)
        return [f"answer to {q}" for q in questions]

    monkeypatch.setattr(common, "greedy_answers", slow_answers)
    ctx = common.EvalContext(tokenizer=None, prompt_format=type("Format", (), {"prompt_ids": lambda self, t, q: q})(),
                             benchmark=None, max_new_tokens=4, batch_size=4)
    model = object()
    assert ctx.decoding_s == 0.0
    ctx.greedy_answers(model, ["a", "b"])
    assert 0.2 <= ctx.decoding_s < 0.4
    ctx.greedy_answers(model, ["b", "a"])  # known: no decoding
    assert ctx.decoding_s < 0.4
    ctx.greedy_answers(object(), ["a"])  # another model decodes
    assert 0.4 <= ctx.decoding_s < 0.6


def test_a_run_decodes_each_models_distinct_questions_in_full_batches(make_config, tmp_path, monkeypatch):
    """In a run with the paper and TOFU suites, each model's greedy answers cost ceil(distinct / batch_size)
    decoding calls over the questions of both suites, not one call or more per split."""
    from hydra.utils import instantiate

    cfg = make_config("method=graddiff", "method.training.epochs=1", "eval=[paper,tofu]",
                      "generation.batch_size=16", "eval_cache=false",
                      "generation.drop_finished_rows=false")  # one generate call per batch, not one per 4 tokens
    calls = rows_per_generate_call(monkeypatch)
    run_experiment(cfg, tmp_path)
    benchmark = instantiate(cfg.benchmark)
    sets = benchmark.eval_sets  # the paper's retain term: the whole retain split (fewer than 400 records)
    distinct = {r.question for split in ("forget", "retain", "world_facts", "real_authors") for r in sets[split]}
    distinct |= {r.paraphrased_question for r in sets["forget"]} | {r.question for r in benchmark.retain}
    full, rest = divmod(len(distinct), 16)
    assert full >= 2
    assert [len(rows) for rows in calls] == ([16] * full + [rest] * (rest > 0)) * 3  # target, retain, unlearned


# --- continuous batching ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # each call costs seconds of continuous batching's scheduling on a CPU
@pytest.mark.parametrize("length", [{"max_new_tokens": 24}, {"max_length": 64}])
def test_continuous_batching_decodes_the_same_greedy_answers(tiny, monkeypatch, length):
    """generation.continuous_batching: greedy answers through transformers' generate_batch, each row held to its own
    budget (max_length counts its own prompt), equal to the fixed batches' answers; sampling keeps fixed batches."""
    model, tokenizer = tiny
    fixed = greedy_answers(model, tokenizer, PromptFormat(), WIDENING, batch_size=2, **length)
    calls = {"generate": 0, "generate_batch": 0}
    for name in calls:
        original = getattr(GenerationMixin, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(GenerationMixin, name, counted)
    loaded = model.generation_config.to_diff_dict()
    try:
        configure_generation(model, continuous_batching=True)
        assert greedy_answers(model, tokenizer, PromptFormat(), WIDENING, batch_size=2, **length) == fixed
        assert calls == {"generate": 0, "generate_batch": 1}  # one call for all questions, whatever batch_size
        torch.manual_seed(0)
        generate_answers(model, tokenizer, PromptFormat(), WIDENING[:2], max_new_tokens=4, batch_size=2,
                         num_samples=2, temperature=1.0, top_p=0.9)
        assert calls == {"generate": 1, "generate_batch": 1}
    finally:
        configure_generation(model)
    assert model.generation_config.to_diff_dict() == loaded


def test_continuous_batching_must_be_true_or_false():
    with pytest.raises(ConfigError, match="generation.continuous_batching must be true or false, got 'yes'"):
        check_generation_options(8, None, False, "yes")


@pytest.mark.slow  # ~60 s: continuous batching's scheduler costs seconds per call on a CPU
def test_a_run_with_continuous_batching_scores_as_before(make_config, tmp_path):
    (tmp_path / "fixed").mkdir(), (tmp_path / "continuous").mkdir()
    fixed = run_experiment(make_config("method=graddiff", "method.training.epochs=1"), tmp_path / "fixed")
    continuous = run_experiment(make_config("method=graddiff", "method.training.epochs=1",
                                            "generation.continuous_batching=true"), tmp_path / "continuous")
    assert continuous["eval_cache"]["target"]["paper"] == "miss"  # other generation settings: scored, not read
    assert continuous["metrics"] == fixed["metrics"]
