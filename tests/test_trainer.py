"""The shared training loop: divergence check, accumulation, schedule, clipping, precision, optimizer, the official
step counts of the experiment configs, and forget/retain pairing."""

from __future__ import annotations

import gc
import math
import weakref
from collections import Counter

import pytest
import torch
from conftest import cuda_graph_inspecting_backend
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pmc.core.errors import ConfigError, TrainingDiverged
from pmc.core.models import build_tiny, train_tokenizer, with_lora, without_lora
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.experiment import run_experiment
from pmc.methods.base import ForgetExample, Method, RunContext, frozen_copy
from pmc.optimisation import (
    LearningRateSchedule,
    TrainingConfig,
    decay_parameter_groups,
    optimizer_steps_per_epoch,
    warmup_steps,
)
from pmc.trainer import LazyMicroBatches, host_values, optimise, unlearn


class Scalar(torch.nn.Module):
    def __init__(self, value: float = 1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(value))


def constant_loss(w: torch.Tensor, c: float) -> torch.Tensor:
    """A loss whose value is c and whose gradient w.r.t. w is c, whatever w is."""
    return c * w - (c * w).detach() + c


# --- divergence --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_loss_raises_training_diverged(bad):
    model = Scalar()
    calls = []

    def compute_loss(_model, c):
        calls.append(c)
        return {"loss": model.w * (bad if c == 2 else c)}

    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 2"):
        optimise(model, TrainingConfig(epochs=3, learning_rate=0.1), lambda e: [1.0, 2.0, 3.0], compute_loss)
    assert calls == [1.0, 2.0]  # stopped at the bad micro-batch


def test_nan_on_first_step_leaves_parameters_untouched():
    model = Scalar(0.5)
    with pytest.raises(TrainingDiverged):
        optimise(model, TrainingConfig(epochs=1, learning_rate=0.1), lambda e: [0],
                 lambda m, _: {"loss": m.w * float("nan")})
    assert model.w.item() == 0.5


# --- accumulation, logging, clipping ---------------------------------------------------------------------------


def test_host_values_copies_the_loss_device_terms_together_and_keeps_the_order():
    w = torch.tensor(2.0, requires_grad=True)
    third = torch.tensor(1 / 3, dtype=torch.float64)  # not rounded to float32 on the way
    terms = {"aux": torch.tensor([0.25]), "loss": w * 3, "count": 7, "third": third}
    values = host_values(terms)
    assert values == {"aux": 0.25, "loss": 6.0, "count": 7.0, "third": 1 / 3}
    assert list(values) == list(terms) and all(type(v) is float for v in values.values())
    assert math.isnan(host_values({"loss": torch.tensor(float("nan"))})["loss"])  # the loop's divergence check reads it


def run_recorded(training: TrainingConfig, coefficients: list[float]):
    """optimise() on a scalar model; returns (step logs, epochs asked for, gradient seen at each optimizer step)."""
    model = Scalar()
    logs, asked, grads = [], [], []

    def pre_step(optimizer, args, kwargs):
        grads.append(model.w.grad.item())

    handle = register_optimizer_step_pre_hook(pre_step)
    try:
        def epoch_batches(epoch):
            asked.append(epoch)
            return list(coefficients)

        optimise(model, training, epoch_batches,
                 lambda m, c: {"loss": constant_loss(m.w, c), "aux": torch.tensor(10 * c)}, logs.append)
    finally:
        handle.remove()
    return logs, asked, grads


def test_gradient_accumulation_step_count_and_logged_means():
    training = TrainingConfig(epochs=2, learning_rate=1.0, gradient_accumulation_steps=2, max_grad_norm=0.0,
                              weight_decay=0.0)
    logs, asked, grads = run_recorded(training, [1.0, 2.0, 3.0, 4.0, 10.0])
    # 5 micro-batches in groups of 2 -> [1, 2], [3, 4], [10]: 3 optimizer steps per epoch
    assert asked == [0, 1]
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in logs] == [1, 1, 1, 2, 2, 2]
    assert [r["loss"] for r in logs] == pytest.approx([1.5, 3.5, 10.0] * 2)  # mean over the group's micro-batches
    assert [r["aux"] for r in logs] == pytest.approx([15.0, 35.0, 100.0] * 2)
    # the accumulated gradient is the sum over the group / accumulation steps, also for the last, short group
    # (HF Trainer and DeepSpeed divide by gradient_accumulation_steps whatever the group's length): 10 / 2
    assert grads == pytest.approx([1.5, 3.5, 5.0] * 2)


def test_gradient_clipping():
    training = TrainingConfig(epochs=1, learning_rate=1.0, gradient_accumulation_steps=2, max_grad_norm=2.0)
    _, _, grads = run_recorded(training, [1.0, 2.0, 3.0, 4.0, 10.0])
    assert grads == pytest.approx([1.5, 2.0, 2.0], rel=1e-5)  # norms 1.5, 3.5, 5 clipped to at most 2


def test_logged_learning_rate_follows_warmup_ratio_and_linear_decay():
    # 3 steps/epoch x 2 epochs = 6 steps; warm-up ceil(0.5 * 6) = 3 steps: s / 3 from 0; then (6 - s) / (6 - 3)
    training = TrainingConfig(epochs=2, learning_rate=1.0, gradient_accumulation_steps=2, warmup_ratio=0.5,
                              schedule="linear")
    logs, _, _ = run_recorded(training, [1.0, 2.0, 3.0, 4.0, 10.0])
    assert [r["lr"] for r in logs] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])


def test_one_warmup_epoch_counts_full_accumulation_groups():
    # 5 micro-batches, accumulation 2: 3 steps/epoch, 6 in all; one warm-up epoch = int(5 / 2) = 2 steps (the
    # references: len(data) // effective batch), then (6 - s) / (6 - 2)
    training = TrainingConfig(epochs=2, learning_rate=1.0, gradient_accumulation_steps=2, warmup_epochs=1,
                              schedule="linear")
    logs, _, _ = run_recorded(training, [1.0, 2.0, 3.0, 4.0, 10.0])
    assert [r["lr"] for r in logs] == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])


def test_constant_schedule_without_warmup():
    logs, _, _ = run_recorded(TrainingConfig(epochs=1, learning_rate=0.01), [1.0, 2.0, 3.0])
    assert [r["lr"] for r in logs] == pytest.approx([0.01, 0.01, 0.01])


def test_model_left_in_eval_mode():
    model = Scalar()
    model.train()
    optimise(model, TrainingConfig(epochs=1, learning_rate=0.1), lambda e: [1.0],
             lambda m, c: {"loss": constant_loss(m.w, c)})
    assert not model.training


class RecordedMicroBatches:
    """A sized sequence of micro-batches that notes when each one is built, i.e. indexed (as a method that builds
    micro-batches with the current weights does: `pmc.trainer.LazyMicroBatches`)."""

    def __init__(self, items, events):
        self.items, self.events = items, events

    def __len__(self):
        return len(self.items)

    def __getitem__(self, number):
        self.events.append(f"built {number}")
        return self.items[number]


def test_micro_batches_are_taken_one_at_a_time_between_optimizer_steps():
    model, events = Scalar(), []
    handle = register_optimizer_step_pre_hook(lambda *_: events.append("step"))
    try:
        optimise(model, TrainingConfig(epochs=1, learning_rate=0.1, gradient_accumulation_steps=2),
                 lambda e: RecordedMicroBatches([1.0, 2.0, 3.0, 4.0, 5.0], events),
                 lambda m, c: {"loss": constant_loss(m.w, c)})
    finally:
        handle.remove()
    assert events == ["built 0", "built 1", "step", "built 2", "built 3", "step", "built 4", "step"]


def test_an_empty_epoch_ends_training_and_zero_epochs_build_nothing():
    asked, logs = [], []

    def epoch_batches(epoch):
        asked.append(epoch)
        return [1.0, 2.0] if epoch == 0 else []

    model = Scalar()
    optimise(model, TrainingConfig(epochs=5, learning_rate=0.1), epoch_batches,
             lambda m, c: {"loss": constant_loss(m.w, c)}, logs.append)
    assert asked == [0, 1] and [r["epoch"] for r in logs] == [1, 1]
    optimise(model, TrainingConfig(epochs=0, learning_rate=0.1), epoch_batches, None)
    assert asked == [0, 1]


# --- schedule ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, total, warmup, schedule, expected",
    [
        (0, 10, 2, "linear", 0.0),  # warm-up: step / warmup (HF: the first step has learning rate 0)
        (1, 10, 2, "linear", 0.5),
        (2, 10, 2, "linear", 1.0),  # first step after warm-up: (10 - 2) / (10 - 2)
        (5, 10, 2, "linear", 5 / 8),
        (9, 10, 2, "linear", 1 / 8),  # last step still trains
        (10, 10, 2, "linear", 0.0),
        (0, 10, 0, "linear", 1.0),
        (4, 10, 0, "linear", 0.6),
        (0, 10, 3, "constant", 0.0),
        (2, 10, 3, "constant", 2 / 3),
        (3, 10, 3, "constant", 1.0),
        (9, 10, 3, "constant", 1.0),
    ],
)
def test_learning_rate_schedule_never_resized(step, total, warmup, schedule, expected):
    assert LearningRateSchedule(schedule, warmup, total)(step) == pytest.approx(expected)


# --- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": -1},
        {"batch_size": 0},
        {"gradient_accumulation_steps": 0},
        {"schedule": "cosine"},
        {"learning_rate": -1e-5},
        {"warmup_ratio": -0.1},
        {"warmup_ratio": 1.5},
        {"max_grad_norm": -1.0},
        {"weight_decay": -0.01},
        {"max_length": 0},
        {"warmup_epochs": -1},
        {"warmup_epochs": 1, "warmup_ratio": 0.1},
        {"precision": "bf16"},
        {"precision": "fp16-mixed"},
        {"optimizer": "sgd"},
        {"adam_betas": (0.9,)},
        {"adam_betas": (0.9, 1.0)},
        {"adam_epsilon": 0.0},
        {"compile": "fast"},
        {"compile": "no"},
        {"compile": True, "compile_mode": "fast"},
        {"compile_mode": "reduce-overhead"},  # compiling nothing
        {"compile": "cudagraphs", "compile_mode": "reduce-overhead"},  # an inductor mode for another backend
        {"pad_to_multiple_of": 0},
        {"pad_to_multiple_of": True},
        {"pad_to_multiple_of": 8.0},
    ],
)
def test_training_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        TrainingConfig(**{"epochs": 1, "learning_rate": 1e-5, **kwargs})


def test_training_config_accepts_edge_values():
    TrainingConfig(epochs=0, learning_rate=0.0, warmup_ratio=1.0, max_grad_norm=0.0, weight_decay=0.0, max_length=1)
    TrainingConfig(epochs=1, learning_rate=1e-5, compile=True, compile_mode="reduce-overhead", pad_to_multiple_of=1)


# --- compiled training ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compile, backend", [(False, None), (True, "inductor"), ("cudagraphs", "cudagraphs")])
def test_training_compile_names_its_backend(compile, backend):
    assert TrainingConfig(epochs=1, learning_rate=1e-3, compile=compile).compile_backend == backend


def train_with_compile(compile, epochs: int, num_layers: int = 2, num_heads: int = 2, hidden_size: int = 32,
                       records: int = 24, watch_shapes: bool = True, **settings):
    """A tiny model fine-tuned with training.compile=`compile` (and other training `settings`): the model, how many
    graphs torch.compile traced and the micro-batches' shapes (rows, width; with `watch_shapes`, a forward hook that a
    compiled whole model would trace too)."""
    from torch._dynamo.utils import counters

    from pmc.trainer import finetune

    qa = [QARecord(f"Who wrote book {i}?", "Jane wrote it" + " again" * (2 * i)) for i in range(records)]
    tokenizer = train_tokenizer([f"{r.question} {r.answer}" for r in qa] + ["Question: \nAnswer:"], vocab_size=300)
    model = build_tiny(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                       intermediate_size=64, max_position_embeddings=256, seed=0)
    shapes = set()
    if watch_shapes:
        model.register_forward_pre_hook(lambda m, args, kwargs: shapes.add(tuple(kwargs["input_ids"].shape)),
                                        with_kwargs=True)
    torch._dynamo.reset()
    counters.clear()
    finetune(model, tokenizer, PromptFormat(), qa, TrainingConfig(epochs=epochs, learning_rate=1e-3, batch_size=8,
                                                                  compile=compile, **settings), seed=0)
    assert all(type(layer).__name__ == "LlamaDecoderLayer" for layer in model.model.layers)
    return model, counters["stats"]["unique_graphs"], shapes


def test_compiled_decoder_layers_train_to_the_same_weights_and_leave_the_model_eager():
    """training.compile: the prepared model's decoder layers go through torch.compile (the eager backend traces
    them with dynamo and runs the traced graphs, so the arithmetic is the same), with dynamic shapes: micro-batches
    of new widths reuse the graphs, and every decoder layer shares one trace (training forwards build no KV cache,
    on which each layer index traced again until dynamo's recompile limit). The model the caller holds is not
    compiled, before or after, and ends with the same weights as without compiling."""
    eager, untraced, _ = train_with_compile(False, 3)
    compiled, graphs, shapes = train_with_compile("eager", 3)
    _, first_epoch_graphs, first_epoch_shapes = train_with_compile("eager", 1)
    assert untraced == 0 and graphs > 0
    assert len(shapes) > len(first_epoch_shapes) and graphs == first_epoch_graphs  # new widths, no new graphs
    assert train_with_compile("eager", 1, num_layers=6)[1] == first_epoch_graphs  # more layers, no new graphs
    for (name, expected), actual in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.equal(expected, actual), name


def test_the_whole_model_compiles_as_one_graph_and_trains_to_the_same_weights():
    """training.compile_regional=false: accelerate compiles the whole prepared model, one graph for every layer and
    micro-batch width (no graph break, no recompilation; under reduce-overhead one forward and one backward CUDA
    graph per shape instead of one per layer), with the eager run's weights."""
    from torch._dynamo.utils import counters

    eager, _, shapes = train_with_compile(False, 3)
    assert len(shapes) > 1  # micro-batches of several widths
    for num_layers in (6, 2):
        whole, graphs, _ = train_with_compile("eager", 3, num_layers=num_layers, watch_shapes=False,
                                              compile_regional=False)
        assert graphs == 1 and not counters["graph_break"], (num_layers, dict(counters["graph_break"]))
    for (name, expected), actual in zip(eager.named_parameters(), whole.parameters()):
        assert torch.equal(expected, actual), name


def test_compiled_training_is_not_specialised_to_a_batch_as_wide_as_a_model_dimension():
    """Micro-batches of 8 rows with 8 attention heads (Llama-3's 8 key-value heads at the usual batch of 8): dynamo's
    duck sizing gave the rows and the heads one symbol, specialised the compiled layers to 8 rows, and the epoch's
    last micro-batch of 4 rows compiled them again (`dimensions_apart`). As many graphs as with 4 heads."""
    _, clashing, shapes = train_with_compile("eager", 1, num_heads=8, hidden_size=64, records=28)
    _, apart, _ = train_with_compile("eager", 1, num_heads=4, hidden_size=64, records=28)
    assert {rows for rows, _ in shapes} == {8, 4}
    assert clashing == apart


def test_micro_batches_padded_to_a_multiple_come_in_a_few_widths_and_train_as_before():
    """training.pad_to_multiple_of: CUDA graphs (compile_mode=reduce-overhead) are recorded per micro-batch shape, and
    micro-batches padded to their own longest row come in as many widths as there are lengths. Padded to a multiple,
    a few widths, and the same training: padding is masked and unlabelled."""
    plain, _, plain_shapes = train_with_compile(False, 1)
    padded, _, padded_shapes = train_with_compile(False, 1, pad_to_multiple_of=16)
    assert all(width % 16 == 0 for _, width in padded_shapes)
    assert len({width for _, width in padded_shapes}) < len({width for _, width in plain_shapes})
    for (name, expected), actual in zip(plain.named_parameters(), padded.parameters()):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["graddiff", "pmc"])
def test_unlearning_through_the_whole_compiled_model_logs_the_eager_losses(make_config, tmp_path, method):
    """A run's unlearning with compile_regional=false (the eager backend: traced, the same arithmetic): the methods'
    losses reach the compiled whole model as they reach the eager one, step for step (PMC samples with the model the
    run holds, never compiled for training)."""
    logs = {}
    for compile in ("false", "eager"):
        run_dir = tmp_path / compile
        run_dir.mkdir()
        run_experiment(make_config(f"method={method}", "method.training.epochs=1", "eval=[paper]",
                                   f"method.training.compile={compile}", "method.training.compile_regional=false"),
                       run_dir)
        logs[compile] = (run_dir / "train_log.jsonl").read_text().splitlines()
    assert logs["eager"] and logs["eager"] == logs["false"]


def test_the_whole_compiled_model_meets_inductors_conditions_for_cuda_graphs(monkeypatch):
    """compile_regional=false under reduce-overhead: one forward and one backward graph for the whole model, which
    inductor could record as CUDA graphs (no mutated input, no unsafe op, one device), the weights static inputs."""
    graphs, settings_seen = [], []
    compile = torch.compile

    def inspected(module, **settings):
        settings_seen.append(settings)
        return compile(module, backend=cuda_graph_inspecting_backend(graphs, owner=type(module).__name__),
                       dynamic=settings["dynamic"])

    monkeypatch.setattr(torch, "compile", inspected)
    model, _, _ = train_with_compile(True, 2, watch_shapes=False, compile_mode="reduce-overhead",
                                     pad_to_multiple_of=16, compile_regional=False)
    torch._dynamo.reset()
    assert [(s["backend"], s["mode"], s["dynamic"]) for s in settings_seen] == [("inductor", "reduce-overhead", True)]
    assert Counter((g["owner"], g["kind"]) for g in graphs) == Counter(
        [("LlamaForCausalLM", "forward"), ("LlamaForCausalLM", "backward")])
    for graph in graphs:
        assert not graph["mutated"] and graph["unsafe"] is None and graph["devices"] == {torch.device("cpu")}, graph
    forward = next(g for g in graphs if g["kind"] == "forward")
    assert len(forward["static"]) >= len(list(model.parameters()))


def test_compiled_training_layers_meet_inductors_conditions_for_cuda_graphs(monkeypatch):
    """training.compile=true with compile_mode=reduce-overhead: inductor runs each compiled decoder layer, forward and
    backward, as a CUDA graph, and quietly without one when the graph mutates an input that is not static, holds an op
    unsafe for CUDA graphs or spans devices. inductor checks that on CUDA only; here the layers accelerate compiles go
    through inductor's AOT settings and torch's own checks (`get_static_input_idxs`, the graphs' mutated inputs,
    `get_first_incompatible_cudagraph_node`), and the mode reaches torch.compile."""
    graphs, settings_seen, backends = [], [], {}

    compile = torch.compile

    def inspected(module, **settings):
        settings_seen.append(settings)
        owner = type(module).__name__  # one backend per module class, as one inductor serves them all
        backend = backends.setdefault(owner, cuda_graph_inspecting_backend(graphs, owner=owner))
        return compile(module, backend=backend, dynamic=settings["dynamic"])

    monkeypatch.setattr(torch, "compile", inspected)
    model, _, shapes = train_with_compile(True, 2, compile_mode="reduce-overhead", pad_to_multiple_of=16)
    torch._dynamo.reset()
    assert settings_seen and all(s["backend"] == "inductor" and s["mode"] == "reduce-overhead" and s["dynamic"]
                                 for s in settings_seen)
    assert len({width for _, width in shapes}) > 1  # micro-batches of several widths, two layers ...
    # ... and one graph, forward and backward, per compiled module class (regional compilation compiles the modules
    # around the layers too; the rotary embedding has no weights, so no backward)
    assert Counter((g["owner"], g["kind"]) for g in graphs) == Counter(
        [(owner, kind) for owner in ("Embedding", "Linear", "LlamaDecoderLayer", "LlamaRMSNorm")
         for kind in ("forward", "backward")] + [("LlamaRotaryEmbedding", "forward")])
    for graph in graphs:
        where = f"{graph['owner']}'s {graph['kind']} graph"
        assert not graph["mutated"], f"{where} mutates an input: inductor would skip CUDA graphs"
        assert graph["unsafe"] is None and graph["devices"] == {torch.device("cpu")}, where
    layer = next(g for g in graphs if g["owner"] == "LlamaDecoderLayer" and g["kind"] == "forward")
    # the layer's weights are static inputs (not copied into CUDA-graph memory at each replay)
    assert len(layer["static"]) >= len(list(model.model.layers[0].parameters()))


# --- precision ---------------------------------------------------------------------------------------------------


def train_linear_upwards(precision: str, model: torch.nn.Module, steps: int = 10) -> torch.nn.Module:
    """`steps` AdamW steps of lr 1e-3 on loss = w · 1 (gradient +1: each step lowers w by ~1e-3), no decay."""
    training = TrainingConfig(epochs=steps, learning_rate=1e-3, weight_decay=0.0, max_grad_norm=0.0,
                              precision=precision)
    optimise(model, training, lambda e: [torch.ones(1, 1)], lambda m, x: {"loss": m(x).float().sum()})
    return model


def bf16_linear() -> torch.nn.Module:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    return model.to(torch.bfloat16)


def test_bf16_mixed_keeps_fp32_master_weights_where_pure_bf16_updates_round_away():
    # bf16 has 8 significant bits: just below 1 its spacing is 2^-8 ≈ 0.0039, so 1 - 0.001 rounds back to 1.
    pure = bf16_linear()
    optimizer = torch.optim.AdamW(pure.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(10):  # what the loop did before: AdamW stepping the bf16 weights themselves
        pure(torch.ones(1, 1, dtype=torch.bfloat16)).float().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert pure.weight.item() == 1.0  # every update rounded away

    for precision in ("bf16-mixed", "fp32"):
        trained = train_linear_upwards(precision, bf16_linear())
        # fp32 master weight: 1 - 10 · 0.001 = 0.99 (Adam's first steps on a constant gradient move by lr), stored
        # back as bf16: the nearest bf16 value is 253/256 = 0.98828125 (254/256 = 0.9921875 is farther)
        assert trained.weight.dtype == torch.bfloat16, precision
        assert trained.weight.item() == 253 / 256, precision


def test_precision_decides_autocast_and_master_weights_are_fp32():
    seen = []
    model = torch.nn.Linear(4, 4).to(torch.bfloat16)
    model.register_forward_hook(lambda module, args, output: seen.append((module.weight.dtype, output.dtype)))
    for precision in ("fp32", "bf16-mixed"):
        optimise(model, TrainingConfig(epochs=1, learning_rate=1e-3, precision=precision),
                 lambda e: [torch.ones(2, 4)], lambda m, x: {"loss": m(x).float().sum()})
    # fp32: fp32 weights, fp32 activations; bf16-mixed: fp32 weights under bf16 autocast
    assert seen == [(torch.float32, torch.float32), (torch.float32, torch.bfloat16)]
    assert model.weight.dtype == torch.bfloat16 and model.bias.dtype == torch.bfloat16  # stored as loaded


def test_micro_batches_are_built_at_the_training_precision():
    """A method may decode while a micro-batch is built (PMC's samples) or an epoch starts (PMC's sample_every=epoch,
    ICU's checks): under bf16-mixed that runs in bf16 as the loss's forward does (the official DeepSpeed runs decode
    with their bf16 weights), not at the fp32 master weights' precision. Epoch 0's own work comes before the master
    weights exist: with the weights as stored (here bf16)."""
    model = torch.nn.Linear(4, 4).to(torch.bfloat16)
    run_model = lambda: model(torch.ones(2, 4, dtype=model.weight.dtype)).dtype

    class RunWhenBuilt:  # one micro-batch, which runs the model when it is built
        def __len__(self):
            return 1

        def __getitem__(self, k):
            built.append(run_model())
            return torch.ones(2, 4)

        def __iter__(self):
            return (self[k] for k in range(len(self)))

    def epoch_batches(epoch):
        started.append(run_model())
        return RunWhenBuilt()

    seen = {}
    for precision in ("fp32", "bf16-mixed"):
        built, started = [], []
        optimise(model, TrainingConfig(epochs=2, learning_rate=1e-3, precision=precision), epoch_batches,
                 lambda m, x: {"loss": m(x).float().sum()})
        seen[precision] = (started, built)
    assert seen["fp32"] == ([torch.bfloat16, torch.float32], [torch.float32, torch.float32])
    assert seen["bf16-mixed"] == ([torch.bfloat16, torch.bfloat16], [torch.bfloat16, torch.bfloat16])


# --- optimizer ---------------------------------------------------------------------------------------------------


def optimizer_seen(training: TrainingConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    seen = []
    handle = register_optimizer_step_pre_hook(lambda optimizer, *_: seen.append(optimizer))
    try:
        optimise(model, training, lambda e: [1.0], lambda m, c: {"loss": sum(p.sum() for p in m.parameters())})
    finally:
        handle.remove()
    return seen[0]


def test_adam_and_adamw_with_their_betas_and_epsilon():
    adam = optimizer_seen(TrainingConfig(epochs=1, learning_rate=1e-3, optimizer="adam", adam_betas=[0.9, 0.98],
                                         adam_epsilon=1e-6), torch.nn.Linear(2, 2))
    assert type(adam) is torch.optim.Adam
    assert adam.param_groups[0]["betas"] == (0.9, 0.98) and adam.param_groups[0]["eps"] == 1e-6
    adamw = optimizer_seen(TrainingConfig(epochs=1, learning_rate=1e-3), torch.nn.Linear(2, 2))
    assert type(adamw) is torch.optim.AdamW
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999) and adamw.param_groups[0]["eps"] == 1e-8


@pytest.mark.parametrize("fused", [True, False])
def test_one_adamw_step_is_the_hand_computed_update_fused_or_not(fused):
    """AdamW's first step: the bias-corrected moments are g and g², so every weight moves by lr·g/(|g| + eps), plus
    the decoupled decay lr·wd·w on weights (not biases). Here g = 1 everywhere (the loss is the parameters' sum), lr
    0.1, wd 0.2: w 0.5 → 0.5·0.98 − 0.1 = 0.39, w −2 → −2.06, bias 1 → 0.9. torch's fused kernel (the default) and
    its per-tensor loop (`fused_optimizer=false`) both take exactly this step."""
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -2.0]]))
        layer.bias.fill_(1.0)
    training = TrainingConfig(epochs=1, learning_rate=0.1, weight_decay=0.2, max_grad_norm=0.0, fused_optimizer=fused)
    optimizer = optimizer_seen(training, layer)
    assert optimizer.defaults["fused"] is fused
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[0.39, -2.06]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.bias.detach(), torch.tensor([0.9]), rtol=0, atol=1e-6)


def test_the_fused_optimizer_trains_to_the_weights_of_the_per_tensor_loop(pairing_tokenizer):
    """Fused or not is the same AdamW rounded differently: ten steps of a tiny Llama end within float32 rounding."""
    def tiny():
        return build_tiny(pairing_tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                          max_position_embeddings=64, seed=0)

    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    trained = {}
    for fused in (True, False):
        model = tiny()
        optimise(model, TrainingConfig(epochs=10, learning_rate=1e-2, fused_optimizer=fused), lambda e: [1.0],
                 lambda m, c: {"loss": sum((p ** 2).sum() for p in m.parameters())})
        trained[fused] = flat(model)
    assert (trained[True] - flat(tiny())).abs().max() > 0.05  # ten steps of lr 1e-2 moved the weights
    torch.testing.assert_close(trained[True], trained[False], rtol=1e-5, atol=1e-6)


def test_weight_decay_on_weights_only(pairing_tokenizer):
    model = build_tiny(pairing_tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       max_position_embeddings=64, seed=0)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, exempt = decay_parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    # HF Trainer's get_decay_parameter_names for a Llama: no decay on the RMSNorm weights
    assert {names[id(p)] for p in exempt["params"]} == {
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight"}
    assert {names[id(p)] for p in decay["params"]} == set(names.values()) - {names[id(p)] for p in exempt["params"]}
    block = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    decay, exempt = decay_parameter_groups(block, 0.1)
    assert [p is block[0].weight for p in decay["params"]] == [True]
    assert len(exempt["params"]) == 3  # linear bias, layer-norm weight and bias
    # and the optimizer gets these groups
    optimizer = optimizer_seen(TrainingConfig(epochs=1, learning_rate=1e-3, weight_decay=0.1), block)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_a_trained_model_keeps_its_classs_forward_and_is_freed_when_dropped(pairing_tokenizer, precision):
    """accelerate's unwrapping after mixed-precision training left model.forward as transformers' undecorated forward
    (return_dict=False raised AttributeError: 'tuple' object has no attribute 'last_hidden_state') bound in the
    model's own __dict__, a reference cycle: a finished stage-0 model stayed on the GPU beside the next model's
    training until Python's cyclic collector ran. Both are checked with that collector off."""
    model = build_tiny(pairing_tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       max_position_embeddings=64, seed=0)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    optimise(model, TrainingConfig(epochs=1, learning_rate=1e-2, precision=precision), lambda e: [ids, ids],
             lambda m, x: {"loss": m(input_ids=x, labels=x).loss})
    assert "forward" not in vars(model)
    assert isinstance(model(input_ids=ids, return_dict=False), tuple)
    gc.disable()
    try:
        dropped = weakref.ref(model)
        del model
        assert dropped() is None
    finally:
        gc.enable()


# --- LoRA ----------------------------------------------------------------------------------------------------------


def test_lora_trains_only_the_adapters_and_the_reference_stays_the_model_before(pairing_tokenizer):
    base = build_tiny(pairing_tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=64, seed=0)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    before = base(input_ids=ids).logits.detach()
    model = with_lora(base, {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": "all-linear"})
    reference = frozen_copy(model)
    with_grad = []
    handle = register_optimizer_step_pre_hook(
        lambda *_: with_grad.append({n for n, p in model.named_parameters() if p.grad is not None}))
    try:
        optimise(model, TrainingConfig(epochs=3, learning_rate=1e-2), lambda e: [ids],
                 lambda m, x: {"loss": m(input_ids=x, labels=x).loss})
    finally:
        handle.remove()
    adapters = {n for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    assert with_grad == [adapters] * 3  # every adapter weight, and nothing else, has a gradient at every step
    after = model(input_ids=ids).logits.detach()
    assert not torch.allclose(after, before, atol=1e-4)
    # NPO / DPO / KL references: the base model without adapters, as it was before unlearning
    assert not any("lora" in n for n, _ in reference.named_parameters())
    assert torch.equal(reference(input_ids=ids).logits, before)
    merged = without_lora(model)
    assert type(merged) is type(reference) and not any("lora" in n for n in merged.state_dict())
    assert torch.allclose(merged(input_ids=ids).logits, after, atol=1e-5)


@pytest.mark.parametrize("launcher_variable", [None, "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_lora_models_reference_shares_its_frozen_base_weights_unless_they_are_sharded(pairing_tokenizer, monkeypatch,
                                                                                         launcher_variable):
    """The reference of a LoRA model holds the very tensors of the model's frozen base (no second copy of a 7-8B
    model), in modules of its own (eval mode while the model trains); under FSDP or DeepSpeed, which swap the trained
    model's parameters for shards when it is prepared, a copy of its own."""
    model = with_lora(build_tiny(pairing_tokenizer, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                                 max_position_embeddings=64, seed=0),
                      {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": "all-linear"})
    if launcher_variable:
        monkeypatch.setenv(launcher_variable, "true")
    reference = frozen_copy(model.train())
    base = {p.data_ptr() for p in model.parameters() if not p.requires_grad}
    held = {p.data_ptr() for p in reference.parameters()}
    assert len(held) == len(base) > 0
    assert held == base if launcher_variable is None else held.isdisjoint(base)
    assert model.training and not any(m.training for m in reference.modules())
    assert not any(p.requires_grad for p in reference.parameters())
    assert any(p.requires_grad for p in model.parameters())  # the adapters still train


@pytest.mark.parametrize("lora", [{"r": -1}, {"r": 4, "rank": 8}, {"r": 4, "target_modules": ["no_such_layer"]}])
def test_bad_lora_settings_are_config_errors(pairing_tokenizer, lora):
    model = build_tiny(pairing_tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       max_position_embeddings=64, seed=0)
    with pytest.raises(ConfigError, match="model.lora"):
        with_lora(model, lora)


# --- the official step counts --------------------------------------------------------------------------------------


def hf_trainer_steps_per_epoch(examples: int, batch_size: int, accumulation: int) -> int:
    """Optimizer steps HF Trainer takes per epoch in transformers 4.51.3 (the official PMC pin): its DataLoader keeps
    the last, short batch, and _inner_training_loop steps when (step + 1) % accumulation == 0 or at the epoch's last
    micro-batch (trainer.py L2517, do_sync_step)."""
    steps_in_epoch = math.ceil(examples / batch_size)
    return sum((step + 1) % accumulation == 0 or step + 1 == steps_in_epoch for step in range(steps_in_epoch))


@pytest.mark.parametrize(
    "experiment, unlearning_steps, finetune_steps",
    [
        # Phi-1.5: forget10, 16 x 4: 25 micro-batches -> 6 full groups and a short one; TOFU full (4000), 16 x 2
        ("tofu_phi", 7, 125),
        # Llama-3.2-3B: forget10, 8 x 2: 50 micro-batches -> 25 groups; TOFU full, 8 x 2
        ("tofu_llama3b", 25, 250),
    ],
)
def test_experiment_configs_take_the_official_optimizer_steps(make_config, experiment, unlearning_steps,
                                                               finetune_steps):
    cfg = make_config(f"experiment={experiment}", base=[])
    for training, examples, steps in ((TrainingConfig(**cfg.method.training), 400, unlearning_steps),
                                      (TrainingConfig(**cfg.model.finetune), 4000, finetune_steps)):
        batch, accumulation = training.batch_size, training.gradient_accumulation_steps
        micro_batches = math.ceil(examples / batch)
        per_epoch = optimizer_steps_per_epoch(micro_batches, accumulation)
        assert per_epoch == hf_trainer_steps_per_epoch(examples, batch, accumulation) == steps
        # one warm-up epoch: official unlearning.py L24/L34 and finetuning/training.py L23: examples // effective batch
        assert warmup_steps(training, micro_batches, per_epoch * training.epochs) == examples // (batch * accumulation)
        assert training.schedule == "linear" and training.weight_decay == 0.01 and training.precision == "bf16-mixed"
    finetune = TrainingConfig(**cfg.model.finetune)
    # stage 0: official max_steps = epochs · 4000 // effective batch (finetuning/training.py L14-15): the saved
    # checkpoints are checkpoint-625 (Phi) and checkpoint-1250 (Llama)
    assert finetune_steps * finetune.epochs == {"tofu_phi": 625, "tofu_llama3b": 1250}[experiment]
    # finetuning/configs/phi.yaml gradient_checkpointing: False, llama3.yaml: True (on one 80 GB H100)
    assert finetune.gradient_checkpointing == (experiment == "tofu_llama3b")
    if experiment == "tofu_llama3b":  # official max_steps = 30 · 400 // 16 = 750 (unlearning.py L27-28)
        assert unlearning_steps * cfg.method.training.epochs == 750


# --- unlearn: forget/retain pairing ------------------------------------------------------------------------------

FORGET = [QARecord(f"Forget question {i}?", f"Forget answer {i}.") for i in range(5)]
RETAIN = [QARecord(f"Retain question {i}?", f"Retain answer {i}.") for i in range(4)]
EVAL_ONLY = [QARecord(f"Eval question {i}?", f"Eval answer {i}.") for i in range(3)]
PRETRAIN = [QARecord(f"World fact {i}?", f"Fact {i}.") for i in range(3)]


class Recording(Method):
    """Records, per epoch, the decoded (question, answer) pairs of every forget and retain batch."""

    name = "recording"

    def __init__(self, tokenizer, relabel: bool):
        self.tokenizer, self.relabel = tokenizer, relabel
        self.events: list = []
        self.param: torch.nn.Parameter | None = None

    def setup(self, run):
        self.events.append(("setup",))

    def on_epoch_start(self, run):
        self.events.append(("epoch", run.epoch))

    def forget_examples(self, run):
        if not self.relabel:
            return super().forget_examples(run)
        return [ForgetExample(r.question, f"Made up {run.epoch}.") for r in run.benchmark.forget]

    def _decode(self, batch) -> list[tuple[str, str]]:
        pairs = []
        for ids, mask in zip(batch.input_ids, batch.attention_mask):
            text = self.tokenizer.decode(ids[mask == 1].tolist(), skip_special_tokens=True)
            question, answer = text.removeprefix("Question: ").split("\nAnswer: ")
            pairs.append((question, answer))
        return pairs

    def loss(self, model, forget, retain):
        self.events.append(("batch", self._decode(forget), self._decode(retain)))
        return {"loss": model.weight.sum() * 0.0 + 1.0}


@pytest.fixture(scope="module")
def pairing_tokenizer():
    texts = [t for r in FORGET + RETAIN + EVAL_ONLY + PRETRAIN for t in (r.question, r.answer)]
    return train_tokenizer(texts + ["Question: \nAnswer:", "Made up 0."], vocab_size=300)


def run_unlearn(tokenizer, relabel: bool, epochs: int = 3):
    bench = QABenchmark(
        name="pairing", forget=list(FORGET), retain=list(RETAIN),
        eval_sets={"forget": list(FORGET), "retain": list(EVAL_ONLY), "world_facts": list(PRETRAIN)},
        pretrain=list(PRETRAIN),
    )
    run = RunContext(torch.nn.Linear(1, 1), tokenizer, PromptFormat(), bench, max_new_tokens=8,
                     generation_batch_size=2)
    method = Recording(tokenizer, relabel)
    logs = []
    training = TrainingConfig(epochs=epochs, learning_rate=1e-3, batch_size=2, gradient_accumulation_steps=2)
    unlearn(method, run, training, seed=0, log_step=logs.append)
    return method.events, logs


def by_epoch(events):
    assert events[0] == ("setup",) and events.count(("setup",)) == 1
    epochs: list[list] = []
    for event in events[1:]:
        if event[0] == "epoch":
            assert event[1] == len(epochs)
            epochs.append([])
        else:
            epochs[-1].append(event[1:])
    return epochs


def test_every_forget_example_once_per_epoch_with_equal_size_retain_batches(pairing_tokenizer):
    events, logs = run_unlearn(pairing_tokenizer, relabel=False)
    epochs = by_epoch(events)
    assert len(epochs) == 3
    forget_pairs = [(r.question, r.answer) for r in FORGET]
    retain_pairs = {(r.question, r.answer) for r in RETAIN}
    seen_retain = set()
    orders = []
    for batches in epochs:
        assert [len(f) for f, _ in batches] == [2, 2, 1]  # 5 examples, batch_size 2
        seen = [pair for f, _ in batches for pair in f]
        assert Counter(seen) == Counter(forget_pairs)  # each exactly once
        orders.append(seen)
        for forget, retain in batches:
            assert len(retain) == len(forget)
            assert all(pair in retain_pairs for pair in retain)  # retain split only: never eval or pretrain records
            seen_retain.update(retain)
    assert len(seen_retain) > 1  # partners are drawn, not fixed
    assert len({tuple(o) for o in orders}) > 1  # forget order is reshuffled between epochs
    # 3 micro-batches with accumulation 2 -> 2 optimizer steps per epoch
    assert [r["epoch"] for r in logs] == [1, 1, 2, 2, 3, 3]


def test_forget_batches_come_from_the_methods_examples_of_that_epoch(pairing_tokenizer):
    events, _ = run_unlearn(pairing_tokenizer, relabel=True, epochs=2)
    for number, batches in enumerate(by_epoch(events)):
        questions = [q for f, _ in batches for q, _ in f]
        answers = {a for f, _ in batches for _, a in f}
        assert sorted(questions) == sorted(r.question for r in FORGET)
        assert answers == {f"Made up {number}."}


def test_unlearn_is_reproducible_for_a_seed(pairing_tokenizer):
    assert run_unlearn(pairing_tokenizer, relabel=False, epochs=2)[0] == run_unlearn(
        pairing_tokenizer, relabel=False, epochs=2
    )[0]


# --- unlearn: each micro-batch built when the loop reaches it ---------------------------------------------------


def test_lazy_micro_batches_know_their_length_and_build_each_item_when_asked():
    built = []
    lazy = LazyMicroBatches(3, lambda k: built.append(k) or f"batch {k}")
    assert len(lazy) == 3 and built == []  # the length costs nothing
    assert lazy[0] == "batch 0" and built == [0]
    assert lazy[2] == "batch 2" and built == [0, 2]  # a resumed epoch: none built before its micro-batch


class ChoosingRows(Recording):
    """Also records when the trainer asks for a micro-batch's forget rows."""

    def forget_batch_examples(self, run, examples, indices):
        self.events.append(("rows", [examples[i].question for i in indices]))
        return super().forget_batch_examples(run, examples, indices)


def test_each_micro_batchs_forget_rows_are_chosen_right_before_its_step(pairing_tokenizer):
    bench = QABenchmark(name="pairing", forget=list(FORGET), retain=list(RETAIN), eval_sets={})
    run = RunContext(torch.nn.Linear(1, 1), pairing_tokenizer, PromptFormat(), bench, max_new_tokens=8,
                     generation_batch_size=2)
    method = ChoosingRows(pairing_tokenizer, relabel=False)
    unlearn(method, run, TrainingConfig(epochs=2, learning_rate=1e-3, batch_size=2), seed=0)
    kinds = [event[0] for event in method.events]
    assert kinds == ["setup"] + (["epoch"] + ["rows", "batch"] * 3) * 2  # 5 examples, batch_size 2, 2 epochs
    steps = [event for event in method.events if event[0] in ("rows", "batch")]
    for (_, asked), (_, forget, _) in zip(steps[0::2], steps[1::2]):
        assert asked == [q for q, _ in forget]
