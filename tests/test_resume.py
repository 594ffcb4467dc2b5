"""Resume after preemption: a training loop stopped part-way and rerun from its checkpoints ends exactly where an
uninterrupted one does (weights, per-step logs), for stage-0 fine-tuning and for unlearning, from mid-epoch and
epoch-boundary checkpoints; incomplete or unsafe checkpoints are ignored or refused."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace

import pytest
import torch

from pmc.checkpoint import STATE_FILE, CheckpointConfig, Checkpoints
from pmc.core.errors import CheckpointError, ConfigError
from pmc.core.losses import answer_nll
from pmc.core.models import build_tiny, train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.experiment import resume_train_log, run_experiment
from pmc.methods.base import ForgetExample, Method, RunContext
from pmc.methods.collapse import PartialModelCollapse
from pmc.optimisation import TrainingConfig
from pmc.trainer import finetune, unlearn

RECORDS = [QARecord(f"Question number {i}?", f"Answer number {i}.") for i in range(8)]
RETAIN = [QARecord(f"Retain question {i}?", f"Retain answer {i}.") for i in range(5)]
# 8 records in micro-batches of 2: 4 optimizer steps per epoch (accumulation 1)
TRAINING = TrainingConfig(epochs=3, learning_rate=1e-2, batch_size=2, schedule="linear", warmup_epochs=1)


class Stop(Exception):
    """Stands for the kill: raised from the step log after a given optimizer step."""


def stop_after(step: int, logs: list):
    def log_step(record):
        logs.append(record)
        if record["step"] == step:
            raise Stop

    return log_step


@pytest.fixture(scope="module")
def tokenizer():
    texts = [t for r in RECORDS + RETAIN for t in (r.question, r.answer)]
    return train_tokenizer(texts + ["Question: \nAnswer:", "Drawn 0 1 2 3 4 5 6 7 8 9."], vocab_size=300)


@pytest.fixture(scope="module")
def initial_model(tokenizer):
    return build_tiny(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64, seed=0)


def weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- stage-0 fine-tuning -----------------------------------------------------------------------------------------


def run_finetune(model, tokenizer, checkpoints, log_step, training=TRAINING):
    torch.manual_seed(1)  # what the process would have drawn before: a resumed run restores its own
    finetune(model, tokenizer, PromptFormat(), RECORDS, training, seed=3, log_step=log_step, checkpoints=checkpoints)


@pytest.mark.parametrize("every_steps, stop_at, resumed_from, compile", [
    (3, 7, 6, False),  # mid-epoch: step 6 is the second micro-batch of epoch 2
    (0, 6, 4, False),  # epoch boundaries only: the end of epoch 1
    (3, 7, 6, "eager"),  # compiled decoder layers (traced by dynamo): the checkpoint holds the same weights
])
def test_finetune_resumes_to_the_uninterrupted_weights(tmp_path, tokenizer, initial_model, every_steps, stop_at,
                                                       resumed_from, compile):
    training = replace(TRAINING, compile=compile)
    reference, reference_logs = copy.deepcopy(initial_model), []
    run_finetune(reference, tokenizer, Checkpoints(tmp_path / "a", every_steps), reference_logs.append, training)
    assert [r["step"] for r in reference_logs] == list(range(1, 13))

    checkpoints = Checkpoints(tmp_path / "b", every_steps)
    first_logs = []
    with pytest.raises(Stop):
        run_finetune(copy.deepcopy(initial_model), tokenizer, checkpoints, stop_after(stop_at, first_logs), training)
    assert checkpoints.resume_step() == resumed_from

    resumed, resumed_logs = copy.deepcopy(initial_model), []
    run_finetune(resumed, tokenizer, checkpoints, resumed_logs.append, training)
    assert resumed_logs == reference_logs[resumed_from:]  # loss, lr and step of every step after the checkpoint
    assert_same_weights(weights(resumed), weights(reference))
    assert not torch.equal(weights(resumed)["lm_head.weight"], weights(initial_model)["lm_head.weight"])


def test_no_checkpoint_sooner_than_min_interval_after_the_previous_one(tmp_path, tokenizer, initial_model,
                                                                        monkeypatch):
    """A clock that moves 100 s per optimizer step, a checkpoint due every step but at most one per 250 s: steps 3
    and 6 are written (300 s and 600 s), not 1, 2, 4 (the epoch boundary at 400 s), 5; the run resumes from step 6
    to the uninterrupted weights."""
    clock = {"now": 0.0}
    monkeypatch.setattr("pmc.checkpoint.monotonic", lambda: clock["now"])

    def ticking(log_step):
        def tick(record):
            clock["now"] += 100.0
            log_step(record)
        return tick

    reference = copy.deepcopy(initial_model)
    run_finetune(reference, tokenizer, None, None)
    checkpoints = Checkpoints(tmp_path, every_steps=1, min_interval_s=250)
    written = []
    original_save = Checkpoints.save
    monkeypatch.setattr(Checkpoints, "save", lambda self, accelerator, position, caller:
                        (written.append(position["step"]), original_save(self, accelerator, position, caller)))
    with pytest.raises(Stop):
        run_finetune(copy.deepcopy(initial_model), tokenizer, checkpoints, ticking(stop_after(7, [])))
    assert written == [3, 6]
    assert checkpoints.resume_step() == 6
    resumed = copy.deepcopy(initial_model)
    run_finetune(resumed, tokenizer, checkpoints, ticking(lambda record: None))
    # resumed at 700 s (step 7's tick came before the kill): 9 at 1000 s, the last boundary 12 at 1300 s
    assert written == [3, 6, 9, 12]
    assert_same_weights(weights(resumed), weights(reference))


def test_without_checkpoints_a_rerun_starts_afresh(tmp_path, tokenizer, initial_model):
    """The stop leaves nothing behind without checkpoints: the control that the resume above is what matches."""
    logs = []
    with pytest.raises(Stop):
        run_finetune(copy.deepcopy(initial_model), tokenizer, None, stop_after(7, logs))
    logs2 = []
    run_finetune(copy.deepcopy(initial_model), tokenizer, None, logs2.append)
    assert logs2[0]["step"] == 1


# --- unlearning --------------------------------------------------------------------------------------------------


class Drawing(Method):
    """A method with state that evolves: each epoch it draws new forget answers with the global torch RNG (as PMC's
    sampling does), and again for the rows of each optimizer step at its start (as PMC's sample_every=step), and
    keeps running counts. A resume that redid epoch or step work or lost the RNG would train on others."""

    name = "drawing"

    def __init__(self):
        self.answers: list[str] = []
        self.epoch_starts = self.step_starts = 0

    def setup(self, run):
        self.answers = [r.answer for r in run.benchmark.forget]

    def on_epoch_start(self, run):
        self.epoch_starts += 1
        digits = torch.randint(0, 10, (len(self.answers), 3)).tolist()
        self.answers = [f"Drawn {' '.join(map(str, d))}." for d in digits]

    def on_optimizer_step_start(self, run, examples, indices):
        self.step_starts += 1
        for i, d in zip(indices, torch.randint(0, 10, (len(indices), 2)).tolist()):
            self.answers[i] = f"Step {' '.join(map(str, d))}."

    def forget_examples(self, run):
        return [ForgetExample(r.question, a) for r, a in zip(run.benchmark.forget, self.answers)]

    def forget_batch_examples(self, run, examples, indices):
        return [ForgetExample(examples[i].question, self.answers[i]) for i in indices]

    def loss(self, model, forget, retain):
        terms = {"forget_nll": answer_nll(model, forget), "retain_nll": answer_nll(model, retain)}
        return {"loss": terms["forget_nll"] + terms["retain_nll"], **terms}

    def state_dict(self):
        return {"answers": self.answers, "epoch_starts": self.epoch_starts, "step_starts": self.step_starts}

    def load_state_dict(self, state):
        self.answers, self.epoch_starts = list(state["answers"]), state["epoch_starts"]
        self.step_starts = state["step_starts"]


def run_unlearn(model, tokenizer, checkpoints, log_step) -> Drawing:
    bench = QABenchmark(name="resume", forget=list(RECORDS), retain=list(RETAIN),
                        eval_sets={"forget": list(RECORDS)}, pretrain=[])
    run = RunContext(model, tokenizer, PromptFormat(), bench, max_new_tokens=4, generation_batch_size=4)
    method = Drawing()
    torch.manual_seed(1)
    training = TrainingConfig(epochs=3, learning_rate=1e-2, batch_size=2, gradient_accumulation_steps=2)
    unlearn(method, run, training, seed=5, log_step=log_step, checkpoints=checkpoints)
    return method


def test_unlearning_resumes_mid_epoch_without_redoing_the_epoch_start(tmp_path, tokenizer, initial_model):
    """4 micro-batches of 2 per epoch, 2 per optimizer step: 2 steps an epoch; a checkpoint after every step."""
    reference, reference_logs = copy.deepcopy(initial_model), []
    reference_method = run_unlearn(reference, tokenizer, Checkpoints(tmp_path / "a", 1), reference_logs.append)

    checkpoints = Checkpoints(tmp_path / "b", 1)
    with pytest.raises(Stop):
        run_unlearn(copy.deepcopy(initial_model), tokenizer, checkpoints, stop_after(5, []))
    # the step-4 checkpoint (end of epoch 2) is the newest: the stop came before step 5's was written
    assert checkpoints.resume_step() == 4
    state = json.loads((checkpoints.latest() / STATE_FILE).read_text())
    assert state["position"] == {"epoch": 2, "micro_batch": 0, "step": 4, "first_epoch_micro_batches": 4}

    # and from a mid-epoch one: stopped after step 4, the newest is step 3's (after epoch 2's first step)
    mid = Checkpoints(tmp_path / "c", 1)
    with pytest.raises(Stop):
        run_unlearn(copy.deepcopy(initial_model), tokenizer, mid, stop_after(4, []))
    mid_state = json.loads((mid.latest() / STATE_FILE).read_text())
    assert mid_state["position"]["micro_batch"] == 2 and mid_state["position"]["epoch"] == 1

    for store, resumed_from in ((checkpoints, 4), (mid, 3)):
        resumed, logs = copy.deepcopy(initial_model), []
        method = run_unlearn(resumed, tokenizer, store, logs.append)
        assert logs == reference_logs[resumed_from:]
        assert_same_weights(weights(resumed), weights(reference))
        assert method.answers == reference_method.answers
        assert method.epoch_starts == reference_method.epoch_starts == 3  # no epoch's work done twice
        assert method.step_starts == reference_method.step_starts == 6  # nor a step's, nor one left out


def test_the_end_of_training_is_checkpointed_and_resumed_from_without_training(tmp_path, tokenizer, initial_model):
    """A job stopped while it evaluates resumes at evaluation. On the H100 (2026-11-28) a PMC job cut off while
    scoring had its newest checkpoint 30 steps before the end (no sooner than min_interval_s = 60 s after the
    previous one), so the next call decoded (and compiled) PMC's initial answers again and retrained those steps.
    Now the last epoch's end is checkpointed whatever the interval, and resumed from it nothing is set up or
    trained: the weights are the trained ones."""
    trained, logs = copy.deepcopy(initial_model), []
    checkpoints = Checkpoints(tmp_path, 0, min_interval_s=3600)  # no boundary is due but the last
    run_unlearn(trained, tokenizer, checkpoints, logs.append)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000006"] and len(logs) == 6
    assert checkpoints.finished(3) and not checkpoints.finished(4)

    resumed, resumed_logs = copy.deepcopy(initial_model), []
    method = run_unlearn(resumed, tokenizer, checkpoints, resumed_logs.append)
    assert resumed_logs == []
    assert_same_weights(weights(resumed), weights(trained))
    # neither set up (its answers would be the records') nor given its state back, nor asked for examples
    assert method.answers == [] and method.epoch_starts == method.step_starts == 0


def test_a_run_stopped_while_evaluating_resumes_at_evaluation(make_config, tmp_path, monkeypatch, capsys):
    """The run level: results.json says from which step a run resumed (its timings_s are this process's only),
    PMC's initial answers are not decoded again, and the metrics are the uninterrupted run's."""
    cfg = make_config("method=pmc", "method.training.epochs=2", "checkpoint.keep=true",
                      "checkpoint.min_interval_s=3600", "eval=[paper]")
    first = run_experiment(cfg, tmp_path)
    steps = len((tmp_path / "train_log.jsonl").read_text().splitlines())
    assert first["resumed_from_step"] == 0 and steps > 0

    def decoded_again(*args, **kwargs):
        raise AssertionError("PMC's initial answers decoded again")

    monkeypatch.setattr("pmc.methods.collapse.greedy_answers", decoded_again)
    (tmp_path / "results.json").unlink()  # as a job stopped before writing it
    again = run_experiment(cfg, tmp_path)
    assert again["resumed_from_step"] == steps
    assert again["metrics"] == first["metrics"]
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == steps  # its records kept, none added
    assert "training had finished" in capsys.readouterr().out


def test_a_run_resumed_mid_training_takes_pmcs_initial_answers_from_its_checkpoint(make_config, tmp_path,
                                                                                      monkeypatch):
    """PMC's initial answers are the model's before unlearning: a run resumed part-way reads them from its
    checkpoint (method state) and does not decode them again (on a GPU, with compiled decoding, that took a resumed
    job's whole call on the H100 2026-11-28), and it ends with the uninterrupted run's metrics."""
    cfg = make_config("method=pmc", "method.training.epochs=2", "checkpoint.every_steps=1",
                      "checkpoint.min_interval_s=0", "eval=[paper]")
    for run_dir in ("uninterrupted", "stopped"):
        (tmp_path / run_dir).mkdir()
    uninterrupted = run_experiment(cfg, tmp_path / "uninterrupted")
    # it took them through the eval cache: decoded, or read from this session's cache if an earlier test decoded
    # them (a read can take under the half millisecond that timings_s rounds to 0, so its time says nothing here)
    assert set(uninterrupted["initial_state_cache"]) == {"pmc.initial_answers"}

    trained = []
    forget_loss = PartialModelCollapse.forget_loss

    def stopped_in_the_third_step(self, model, forget):
        if len(trained) == 2:
            raise Stop
        trained.append(len(forget.input_ids))
        return forget_loss(self, model, forget)

    monkeypatch.setattr(PartialModelCollapse, "forget_loss", stopped_in_the_third_step)
    with pytest.raises(Stop):
        run_experiment(cfg, tmp_path / "stopped")
    monkeypatch.setattr(PartialModelCollapse, "forget_loss", forget_loss)

    def decoded_again(*args, **kwargs):
        raise AssertionError("PMC's initial answers decoded again")

    monkeypatch.setattr("pmc.methods.collapse.greedy_answers", decoded_again)
    resumed = run_experiment(cfg, tmp_path / "stopped")
    assert resumed["resumed_from_step"] == 2 and resumed["initial_state_cache"] == {}  # neither decoded nor read
    assert resumed["timings_s"]["unlearn.initial_answers"] == 0 and resumed["timings_s"]["unlearn.sampling"] > 0
    assert resumed["metrics"] == uninterrupted["metrics"]


# --- the checkpoint files ----------------------------------------------------------------------------------------


def test_incomplete_checkpoints_are_ignored_with_a_log_line(tmp_path, caplog, tokenizer, initial_model):
    checkpoints = Checkpoints(tmp_path, 2)
    with pytest.raises(Stop):
        run_finetune(copy.deepcopy(initial_model), tokenizer, checkpoints, stop_after(3, []))
    complete = checkpoints.latest()
    # a kill while writing the next checkpoint: its staging folder, or a folder without trainer_state.json
    (tmp_path / ".step-000000004.tmp-123").mkdir()
    half = tmp_path / "step-000000006"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="pmc"):
        assert checkpoints.latest() == complete
    assert sum("ignoring incomplete checkpoint" in r.message for r in caplog.records) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [complete.name]


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path, tokenizer, initial_model):
    """accelerate reads its torch files with weights_only=True: a checkpoint carrying code is an error, not run."""
    checkpoints = Checkpoints(tmp_path, 2)
    with pytest.raises(Stop):
        run_finetune(copy.deepcopy(initial_model), tokenizer, checkpoints, stop_after(3, []))
    torch.save({"state": {}, "param_groups": [], "payload": Stop()}, checkpoints.latest() / "optimizer.bin")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        run_finetune(copy.deepcopy(initial_model), tokenizer, checkpoints, None)


def test_unreadable_trainer_state_is_a_checkpoint_error(tmp_path, tokenizer, initial_model):
    checkpoints = Checkpoints(tmp_path, 2)
    with pytest.raises(Stop):
        run_finetune(copy.deepcopy(initial_model), tokenizer, checkpoints, stop_after(3, []))
    (checkpoints.latest() / STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=STATE_FILE):
        checkpoints.resume_step()


@pytest.mark.parametrize("values", [{"every_steps": -1}, {"every_steps": 1.5}, {"every_steps": True},
                                    {"keep": "yes"}, {"enabled": 1}, {"min_interval_s": -1},
                                    {"min_interval_s": "5m"}, {"min_interval_s": True}])
def test_bad_checkpoint_config_is_one_config_error(values):
    with pytest.raises(ConfigError, match="checkpoint\\."):
        CheckpointConfig(**values)


def test_resumed_train_log_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    with resume_train_log(path, 3) as log:
        log.write(json.dumps({"step": 4, "loss": 0.0}) + "\n")
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]
    with resume_train_log(path, 0):  # no checkpoint: a fresh log
        pass
    assert path.read_text() == ""


def test_a_killed_stage0_build_resumes_beside_the_cache_entry(tmp_path, tokenizer, initial_model):
    """stage0.cached hands the build a resume directory named after the entry; a rerun resumes the fine-tuning there
    and the entry holds the weights an uninterrupted build gives; the directory goes once the entry is in place."""
    from pmc.core.models import load_checkpoint
    from pmc.stage0 import cached

    def builder(stop_at: int | None):
        def build(resume_dir):
            model = copy.deepcopy(initial_model)
            run_finetune(model, tokenizer, Checkpoints(resume_dir, 3), stop_after(stop_at, []) if stop_at else None)
            return model, tokenizer
        return build

    uninterrupted, _ = cached(tmp_path / "a", "tiny-target-0", builder(None), lambda name: None)
    with pytest.raises(Stop):
        cached(tmp_path / "b", "tiny-target-0", builder(7), lambda name: None)
    assert Checkpoints(tmp_path / "b" / ".tiny-target-0.resume").resume_step() == 6
    resumed, _ = cached(tmp_path / "b", "tiny-target-0", builder(None), lambda name: None)
    assert_same_weights(weights(resumed), weights(uninterrupted))
    assert not (tmp_path / "b" / ".tiny-target-0.resume").exists()
    assert_same_weights(weights(load_checkpoint(tmp_path / "b" / "tiny-target-0")[0]), weights(uninterrupted))


def test_method_states_survive_the_json_round_trip():
    """PMC (unsampled questions score infinity), the refusal RNG of IDK-style methods and ICU's verdicts come back
    equal from trainer_state.json's JSON."""
    import math

    from baselines.icu import ICU
    from baselines.idk import IdkNLL
    from pmc.methods.collapse import PartialModelCollapse
    from pmc.methods.selection import BestSoFarCache

    pmc = PartialModelCollapse(seed=4)
    pmc.initial_answers, pmc.cache = ["a", "b"], BestSoFarCache(2)
    pmc.cache.offer(0, "x", 0.25)
    pmc.rng.random()
    restored = PartialModelCollapse(seed=0)
    restored.cache = BestSoFarCache(2)
    restored.load_state_dict(json.loads(json.dumps(pmc.state_dict())))
    assert restored.initial_answers == ["a", "b"] and restored.cache.answers == ["x", None]
    assert restored.cache.scores[0] == 0.25 and math.isinf(restored.cache.scores[1])
    assert restored.rng.random() == pmc.rng.random()

    idk, other = IdkNLL(refusal="random", seed=1), IdkNLL(refusal="random", seed=2)
    idk.refusal_rng.random()
    other.load_state_dict(json.loads(json.dumps(idk.state_dict())))
    assert other.refusal_rng.random() == idk.refusal_rng.random()

    icu, fresh = ICU.__new__(ICU), ICU.__new__(ICU)
    icu.remaining, icu.stopped, icu.check = [0, 3], True, {"remaining": 2.0}
    fresh.load_state_dict(json.loads(json.dumps(icu.state_dict())))
    assert (fresh.remaining, fresh.stopped, fresh.check) == ([0, 3], True, {"remaining": 2.0})
