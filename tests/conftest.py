"""Shared fixtures: Hydra configs composed from conf/ and shrunk to a size that trains in seconds on a CPU."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pmc.core.models import build_tiny
from pmc.core.records import jsonl_rows, parse_records

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
TOFU_DIR = Path(os.environ.get("TOFU_DATA_DIR") or REPO.parent / "shared" / "data" / "tofu")

# A 2-layer tiny model, trained hard enough to memorise a small benchmark in seconds.
SMALL_MODEL = [
    "model.architecture.vocab_size=512",
    "model.architecture.hidden_size=128",
    "model.architecture.num_layers=2",
    "model.architecture.intermediate_size=512",
    "model.pretrain.epochs=30",
    "model.pretrain.learning_rate=3e-3",
    "model.finetune.epochs=40",
    "model.finetune.learning_rate=3e-3",
    "method.training.learning_rate=5e-4",
    "method.training.epochs=10",
    "device=cpu",
]
# ... on a 6-author synthetic benchmark: stage 0 takes ~10 s, PMC a few seconds.
SMALL = SMALL_MODEL + [
    "benchmark.num_authors=6",
    "benchmark.forget_authors=1",
    "benchmark.num_world_facts=10",
    "benchmark.num_real_authors=10",
    "benchmark.retain_eval_authors=2",
]


@pytest.fixture(scope="session")
def stage0_cache(tmp_path_factory) -> Path:
    """One stage-0 cache for the whole session, so target and retain models are trained once."""
    return tmp_path_factory.mktemp("stage0_cache")


@pytest.fixture
def make_config(stage0_cache):
    """make(*overrides, base=SMALL) -> the run config the CLI would build, with `base` applied first."""

    def make(*overrides: str, base: list[str] = SMALL, config_name: str = "config"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=[*base, f"cache_dir={stage0_cache}", *overrides])

    return make


def load_jsonl(path, required=("question", "answer")):
    """A local JSON-lines file's QA records, read as benchmarks.source reads one (jsonl_rows, then parse_records)."""
    return parse_records(jsonl_rows(path), str(path), required)


def load_script(name: str):
    """scripts/<name>.py as a fresh module (its main() callable in-process; each call a new copy, so a test that
    replaces one of its functions leaves the others' copies alone)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(tokenizer, seed: int):
    """A 1-layer, d=32 Llama in eval mode: enough for losses and gradients checked against hand-computed cases."""
    return build_tiny(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=128, seed=seed).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    """The model a loss is computed on; the test module provides its own `tokenizer` fixture."""
    return tiny(tokenizer, seed=0)


@pytest.fixture(scope="module")
def other(tokenizer):
    """A different model, standing in for a reference that has drifted from the one being trained."""
    return tiny(tokenizer, seed=1)


def cuda_graph_inspecting_backend(graphs: list, **labels):
    """A torch.compile backend that traces as inductor does (AOT autograd, input mutations kept in the graph) and, for
    each forward and backward graph, appends to `graphs` what inductor decides CUDA graphs by, through torch's own
    checks: the inputs it would treat as static (`get_static_input_idxs`; forward graphs), the mutated inputs, the
    first op unsafe for CUDA graphs, the devices; then runs the traced graph (no code generation). inductor makes
    those checks on CUDA only; this shows on a CPU whether a compiled step would run as CUDA graphs there."""
    import torch
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.backends.cudagraphs import find_input_mutations
    from torch._dynamo.backends.debugging import boxed_nop
    from torch._inductor.compile_fx import get_static_input_idxs
    from torch._inductor.utils import get_first_incompatible_cudagraph_node, num_fw_fixed_arguments

    def backend(graph, example_inputs, **_mode):
        def inspect(kind: str):
            def compiler(aot_graph, aot_inputs):
                placeholders = [node.meta["val"] for node in aot_graph.graph.find_nodes(op="placeholder")]
                fixed = num_fw_fixed_arguments(len(example_inputs), len(aot_inputs))
                graphs.append({**labels, "kind": kind, "mutated": find_input_mutations(aot_graph.graph),
                               "unsafe": get_first_incompatible_cudagraph_node(aot_graph),
                               "static": set(get_static_input_idxs(fixed)) if kind == "forward" else None,
                               "devices": {t.device for t in placeholders if isinstance(t, torch.Tensor)}})
                return boxed_nop(aot_graph, aot_inputs)
            return compiler

        return aot_autograd(fw_compiler=inspect("forward"), inference_compiler=inspect("forward"),
                            bw_compiler=inspect("backward"), keep_inference_input_mutations=True)(graph, example_inputs)

    return backend
