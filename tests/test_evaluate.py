"""`python -m pmc.evaluate`: a saved checkpoint scores exactly as the run that saved it scored it."""

from __future__ import annotations

import json

import pytest

from pmc.core.errors import CheckpointError
from pmc.experiment import evaluate_checkpoint, run_experiment


def test_saved_unlearned_model_scores_as_in_its_run(make_config, tmp_path):
    run_dir, eval_dir = tmp_path / "run", tmp_path / "eval"
    run_dir.mkdir()
    eval_dir.mkdir()
    run = run_experiment(make_config("method.training.epochs=3", "save_unlearned=true"), run_dir)
    assert (run_dir / "unlearned_model" / "model.safetensors").is_file()

    cfg = make_config(f"checkpoint={run_dir / 'unlearned_model'}", config_name="evaluate")
    scored = evaluate_checkpoint(cfg, eval_dir)
    assert scored["metrics"]["checkpoint"] == run["metrics"]["unlearned"]
    assert scored["metrics"]["target"] == run["metrics"]["target"]
    assert scored["stage0"]["built_in_this_run"] == []  # the references came from the stage-0 cache
    # ... and their scores from the eval cache: the run scored them with the same settings
    assert scored["eval_cache"] == {"target": {"paper": "hit"}, "retain": {"paper": "hit"},
                                    "checkpoint": {"paper": "scored"}}
    on_disk = json.loads((eval_dir / "results.json").read_text())
    assert on_disk["checkpoint"] == str(run_dir / "unlearned_model")
    assert (eval_dir / "eval" / "checkpoint" / "paper.json").is_file()


def test_missing_checkpoint_is_one_clear_error(make_config, tmp_path):
    cfg = make_config(f"checkpoint={tmp_path / 'nothing'}", config_name="evaluate")
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        evaluate_checkpoint(cfg, tmp_path)
    assert not (tmp_path / "results.json").exists()
