"""eval_one_model_on_device: the models of an evaluation take turns on the device (pmc/core/residency.py). The
moves are recorded on stand-in models (a CPU has no second device to move to), and a real job is checked for the one
thing a CPU can show: no model computes while another holds the turn, and the scores are those of a job without
turns."""

from __future__ import annotations

import contextlib

import pytest
import torch

from pmc.core import residency
from pmc.core.residency import DeviceTurns, device_of, taking_turns

GPU = torch.device("cuda")


class Recorded(torch.nn.Module):
    """A model whose moves are recorded, not made; its parameter says where it is (meta: on the device)."""

    def __init__(self, moves: list, where: str = "meta"):
        super().__init__()
        self.weight, self.moves = torch.nn.Parameter(torch.zeros(1, device=where)), moves

    def to(self, device):
        self.moves.append((self, str(device)))
        return self


def test_a_model_takes_its_turn_after_the_one_on_the_device_has_left():
    moves, parked = [], []
    a, b = Recorded(moves), Recorded(moves)
    turns = DeviceTurns(GPU, on_park=parked.append)
    turns.take(a)
    turns.take(a)  # already there: nothing moves
    assert moves == [(a, "cuda")] and turns.current is a
    turns.take(b)
    assert moves[1:] == [(a, "cpu"), (b, "cuda")]  # a leaves first: the two are never on the device together
    assert parked == [a] and turns.current is b


def test_taking_turns_parks_all_but_one_and_moves_each_when_it_computes():
    moves, parked = [], []
    host = Recorded(moves, where="cpu")  # e.g. the target, left in host memory after unlearning
    first, second = Recorded(moves), Recorded(moves)  # on the device
    with taking_turns([host, first, second], GPU, enabled=True, on_park=parked.append) as turns:
        assert moves == [(second, "cpu")] and turns.current is first  # the first found on the device stays there
        device_of(first)
        assert moves == [(second, "cpu")]
        device_of(host)
        assert moves[1:] == [(first, "cpu"), (host, "cuda")] and turns.current is host
        assert parked == [second, first]
    moves.clear()
    device_of(first)  # after the block: read only, where the turns left it
    assert moves == []


def test_turns_switched_off_move_nothing():
    moves = []
    models = [Recorded(moves), Recorded(moves)]
    with taking_turns(models, GPU, enabled=False) as turns:
        for model in models:
            device_of(model)
    assert turns is None and moves == []


@pytest.mark.parametrize("restore", [True, False])
def test_offloaded_models_stay_in_host_memory_unless_restored(restore):
    """With eval_one_model_on_device the job's target and retain stay off the device after unlearning: restored,
    three models would be on it at once, the memory the turns save."""
    from pmc.pipeline import offloaded

    moves = []
    target, retain = Recorded(moves), Recorded(moves)
    with offloaded([target, retain], enabled=True, restore=restore):
        pass
    assert moves == [(target, "cpu"), (retain, "cpu"), *([(target, "meta"), (retain, "meta")] if restore else [])]


@pytest.fixture
def turns_watched(monkeypatch):
    """Every forward of a model taking turns is recorded with whether it held the turn then (its model's name)."""
    forwards: list[tuple[str, bool]] = []
    real = residency.taking_turns

    @contextlib.contextmanager
    def watched(models, device, enabled, on_park=None):
        models = list(models)
        with real(models, device, enabled, on_park) as turns:
            names = {id(m): name for name, m in zip(("target", "retain", "scored"), models)}
            hooks = [m.register_forward_pre_hook(
                lambda module, args: forwards.append((names[id(module)], turns.current is module)))
                for m in models] if turns else []
            try:
                yield turns
            finally:
                for hook in hooks:
                    hook.remove()

    monkeypatch.setattr("pmc.pipeline.taking_turns", watched)
    return forwards


@pytest.fixture
def stage0_placed(monkeypatch):
    """Where each job asked for its stage-0 models (prepare_models' `place`: None for the run's device)."""
    import pmc.pipeline

    places = []
    real = pmc.pipeline.prepare_models

    def recorded(*args, place=None, **kwargs):
        places.append(place)
        return real(*args, place=place, **kwargs)

    monkeypatch.setattr(pmc.pipeline, "prepare_models", recorded)
    return places


@pytest.mark.parametrize("evaluate", ["run", "checkpoint"])
def test_every_model_computes_only_in_its_turn_and_scores_the_same(make_config, tmp_path, turns_watched, evaluate,
                                                                   stage0_placed):
    """A job's evaluation with every suite that needs the reference models as models (analyses: the target's
    collateral baseline, the retain's fluency scores), the eval cache off so target and retain are scored too:
    every forward of every model happens while it holds the turn, every score is the job's without turns, and
    results.json says how long the moves took. Taking turns, target and retain wait in host memory from the job's
    start (they are offloaded while the method trains, the default): they are never on the device together."""
    from pmc.experiment import evaluate_checkpoint, run_experiment

    settings = ["eval=[paper,tofu,analyses]", "method.training.epochs=1", "generation.max_new_tokens=16",
                "eval.analyses.max_questions=4", "eval.analyses.sampling.k=2", "eval_cache=false"]
    (tmp_path / "plain").mkdir()
    plain = run_experiment(make_config(*settings, "save_unlearned=true"), tmp_path / "plain")
    (tmp_path / "turns").mkdir()
    if evaluate == "run":
        taking = run_experiment(make_config(*settings, "eval_one_model_on_device=true"), tmp_path / "turns")
        expected = plain["metrics"]
    else:
        taking = evaluate_checkpoint(make_config(*settings, "eval_one_model_on_device=true",
                                                 f"checkpoint={tmp_path / 'plain' / 'unlearned_model'}",
                                                 config_name="evaluate"), tmp_path / "turns")
        expected = {"target": plain["metrics"]["target"], "retain": plain["metrics"]["retain"],
                    "checkpoint": plain["metrics"]["unlearned"]}
    assert {name for name, _ in turns_watched} == {"target", "retain", "scored"}
    assert [name for name, in_turn in turns_watched if not in_turn] == []
    assert taking["metrics"] == expected
    assert taking["timings_s"]["eval.turns"] >= 0 and "eval.turns" not in plain["timings_s"]
    assert stage0_placed == [None, torch.device("cpu")]


def test_stage0_models_stay_on_the_device_while_the_method_trains_beside_them(make_config, tmp_path, stage0_placed):
    """Taking turns in evaluation but with stage0.offload_during_unlearning=false, target and retain are loaded onto
    the device: the user keeps them there while the method trains."""
    from pmc.experiment import run_experiment

    run_experiment(make_config("method.training.epochs=1", "eval_one_model_on_device=true",
                               "stage0.offload_during_unlearning=false"), tmp_path)
    assert stage0_placed == [None]
