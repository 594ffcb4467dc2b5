"""Settings are checked before anything slow: a wrong key or type fails before the benchmark is read and stage 0 is
trained, naming the key and the expected type; Hydra's own errors (an unknown option, an invalid flag combination)
are one line and exit status 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, SMALL_MODEL
from omegaconf import OmegaConf

import pmc.experiment
import pmc.run
from pmc.core.errors import ConfigError
from pmc.experiment import run_experiment


@pytest.fixture
def nothing_slow(monkeypatch):
    """Fail the test if the run gets as far as reading the benchmark or building stage 0."""
    def too_late(*args, **kwargs):
        raise AssertionError("the config error was found only after the config checks")

    monkeypatch.setattr(pmc.experiment, "load_stage0", too_late)
    monkeypatch.setattr(pmc.experiment, "prompt_format", too_late)


@pytest.mark.parametrize("override, message", [
    # the new-user report: a string where PMC wants an int
    ("method.handler.num_samples=abc", "method.handler.num_samples must be an int, got 'abc'"),
    ("method.handler.temperature=hot", "method.handler.temperature must be a number, got 'hot'"),
    ("method.handler.max_new_tokens=1.5", "method.handler.max_new_tokens must be an int or null, got 1.5"),
    ("method.handler.selection=[argmin]", "method.handler.selection must be a string, got ['argmin']"),
    ("+method.handler.samples=3", "method.handler.samples: not an option of PartialModelCollapse (options: "
                                  "num_samples, temperature, top_p, "),
    ("method.training.epochs=2.5", "method.training.epochs must be an int, got 2.5"),
    ("method.training.learning_rate=fast", "method.training.learning_rate must be a number, got 'fast'"),
    ("~method.training.epochs", "method.training.epochs is required by TrainingConfig: pass "
                                "method.training.epochs=..."),
    ("+method.training.lr=1e-4", "method.training.lr: not an option of TrainingConfig (options: epochs, "
                                 "learning_rate, batch_size, gradient_accumulation_steps, weight_decay, "),
    ("model.finetune.batch_size=big", "model.finetune.batch_size must be an int, got 'big'"),
    ("model.architecture.num_layers=0", "model.architecture.num_layers must be a positive int, got 0"),
    ("model.dtype=float8", "model.dtype must be one of ['bfloat16', 'float16', 'float32'], got 'float8'"),
    ("model.prompt.style=3", "model.prompt.style must be a string, got 3"),
    ("benchmark.num_authors=many", "benchmark.num_authors must be an int, got 'many'"),
    ("seed=one", "seed must be an int, got 'one'"),
    ("generation.max_new_tokens=0", "generation.max_new_tokens must be at least 1, got 0"),
    ("generation.max_length=1", "generation.max_length (prompt + answer tokens) must be at least 2, got 1"),
    ("generation.max_length=long", "generation.max_length must be an int or null, got 'long'"),
    ("save_unlearned=yes", "save_unlearned must be true or false, got 'yes'"),
    ("stage0.side_by_side=maybe", "stage0.side_by_side must be true or false, got 'maybe'"),
    ("deterministic=1", "deterministic must be true or false, got 1"),
    ("eval.paper.retain_samples=many", "eval.paper.retain_samples must be an integer, got 'many'"),
    ("+eval.paper.retain_sample=4", "eval.paper.retain_sample: unknown setting; known: retain_set, retain_samples, "
                                    "retain_seed"),
    ("eval.paper.retain_set=retain90", "eval.paper.retain_set must be one of ['sampled', 'retain_perturbed'], got "
                                       "'retain90'"),
    ("+eval.nope.k=1", "eval.nope: no such metric suite; available: analyses, muse, paper, tofu"),
    ("+eval_settings.analyses.sampling.k=16",
     "eval_settings: replaced by each suite's own settings under eval.<suite> (conf/eval/<suite>.yaml), "
     "e.g. eval.analyses.sampling.k=16"),
    ("device=tpu", "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("method.handler._target_=pmc.nowhere.Method", "method.handler._target_: cannot import 'pmc.nowhere.Method'"),
    # values the constructors reject are found as early, since the method is built before stage 0
    ("method.handler.num_samples=0", "PMC needs num_samples >= 1"),
    ("method.training.schedule=cosine", "training.schedule must be one of ['constant', 'linear'], got 'cosine'"),
    ("model.lora.r=two", "model.lora.r must be an int, got 'two'"),
])
def test_bad_settings_fail_before_stage0(make_config, tmp_path, nothing_slow, override, message):
    with pytest.raises(ConfigError) as e:
        run_experiment(make_config(override), tmp_path)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert e.value.pmc_stage == "config"
    assert not list(tmp_path.iterdir()), "a run that failed its config checks left files behind"


def test_logger_is_checked_and_built_before_stage0(make_config, tmp_path, nothing_slow):
    with pytest.raises(ConfigError, match=r"^logger.tags must be a list of strings or null, got 3$"):
        run_experiment(make_config("logger=wandb", "logger.tags=3"), tmp_path)


def test_a_required_value_names_its_key(make_config, tmp_path, nothing_slow):
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue) as e:
        run_experiment(make_config("method.handler.top_p=???"), tmp_path)
    assert e.value.full_key == "method.handler.top_p"


def test_a_cuda_device_that_is_not_there(make_config, tmp_path, nothing_slow):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=r"^device=cuda, but torch sees no CUDA device here"):
        run_experiment(make_config("device=cuda"), tmp_path)


def test_every_shipped_method_and_experiment_passes_the_checks(make_config):
    """The checks must not reject a config the project ships (they run on every composition of conf/)."""
    from pmc.checks import check_run_config, check_unlearning_config

    methods = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
    experiments = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    for experiment in experiments:
        cfg = make_config(f"experiment={experiment}", "device=cpu", base=[])
        check_run_config(cfg)
        check_unlearning_config(cfg)
    for method in methods:
        check_unlearning_config(make_config(f"method={method}", base=SMALL_MODEL))


@pytest.mark.parametrize("model", sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")))
def test_every_training_speed_setting_is_set_without_a_plus_for_stage_0_and_unlearning(make_config, model):
    """Stage 0's training settings take the same speed settings as unlearning's (conf/shared/training_speed.yaml), so
    `model.finetune.compile=true` works as `method.training.compile=true` does, without Hydra's `+`."""
    from pmc.checks import check_training

    speed = {"compile": True, "compile_mode": "reduce-overhead", "pad_to_multiple_of": 64, "group_by_length": True,
             "fused_optimizer": False, "compile_regional": False}
    parts = ["model.finetune", "method.training"] + (["model.pretrain"] if model == "tiny" else [])
    cfg = make_config(f"model={model}", "device=cpu",
                      *(f"{part}.{name}={str(value).lower()}" for part in parts for name, value in speed.items()),
                      base=[])
    for part in parts:
        section, key = part.split(".")
        training = check_training(OmegaConf.to_container(cfg[section][key], resolve=True), part)
        assert {name: getattr(training, name) for name in speed} == speed, part


def test_shared_defaults_are_not_a_method_option():
    options = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
    assert not [o for o in options if o.startswith("_")], "shared defaults must live outside conf/method/"


# --- the command line: Hydra's errors as one line ----------------------------------------------------------------


def main_in_process(module, monkeypatch, capsys, *argv):
    """(exit status, stderr lines) of `python -m <module> argv...` run in this process (errors before any job)."""
    monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # main() sets it; monkeypatch restores it afterwards
    with pytest.raises(SystemExit) as e:
        module.main()
    return e.value.code, capsys.readouterr().err.strip().splitlines()


OPTIONS = "flat, ga, graddiff, icu, idk, idkdpo, npo, pmc, pmc_llama3b, simnpo"


@pytest.mark.parametrize("argv, line", [
    (["method=doesnotexist"],
     f"error: In 'config': Could not find 'method/doesnotexist'; Available options in 'method': {OPTIONS}"),
    (["method=_unlearning_defaults"],
     f"error: In 'config': Could not find 'method/_unlearning_defaults'; Available options in 'method': {OPTIONS}"),
    (["method.handler.bogus=1"],
     "error: Could not override 'method.handler.bogus'. To append to your config use +method.handler.bogus=1"),
    (["method=pmc,"], None),  # an override that does not parse
    (["eval=[paper,nope]"], "error: In 'config': Could not load 'eval/nope'; Available options in 'eval': analyses, "
                            "muse, paper, tofu"),
    (["eval=nope"], "error: In 'config': Could not find 'eval/nope'; Available options in 'eval': analyses, muse, "
                    "paper, tofu"),
    (["eval.analyses.sampling.k=4"], "error: Could not override 'eval.analyses.sampling.k'. To append to your config "
                                     "use +eval.analyses.sampling.k=4"),  # a setting of a suite not selected
    (["-m", "hydra/launcher=slurm", "method=pmc,npo", "--cfg", "hydra"],
     "error: Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified (to dry-run a "
     "sweep, drop -m and the comma-separated values)"),
])
def test_hydra_errors_are_one_line(monkeypatch, capsys, argv, line):
    status, stderr = main_in_process(pmc.run, monkeypatch, capsys, *argv)
    assert status == 1 and len(stderr) == 1 and stderr[0].startswith("error: ")
    if line is not None:
        assert stderr == [line]


def run_cli(module, *args, env=None):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_bad_type_fails_fast_with_one_line(tmp_path):
    """The new-user report: `PMC_CACHE_DIR=$(mktemp -d) python -m pmc.run method.handler.num_samples=abc` trained
    stage 0 for minutes, then failed without naming the key."""
    import os

    cache = tmp_path / "cache"
    cache.mkdir()
    done = run_cli("pmc.run", "method.handler.num_samples=abc", f"hydra.run.dir={tmp_path / 'run'}",
                   env={**os.environ, "PMC_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: method.handler.num_samples must be an int, got 'abc'"]
    assert not list(cache.iterdir()), "stage 0 was started"
    assert not (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "failure.json").is_file()


def test_cli_unknown_option_of_evaluate_is_one_line():
    done = run_cli("pmc.evaluate", "checkpoint=x", "method=doesnotexist")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: In 'config': Could not find 'method/doesnotexist'; Available options in 'method': {OPTIONS}"]


def test_the_command_lines_import_no_torch_until_hydra_composed_a_job():
    """pmc.run and pmc.evaluate are Hydra apps over pmc.experiment: importing them (what `python -m pmc.run` does
    before Hydra parses the command line) loads neither torch nor transformers, so Hydra's own answers are fast."""
    code = ("import sys, pmc.run, pmc.evaluate; "
            "print(sorted(m for m in ('torch', 'transformers', 'pmc.experiment') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=True)
    assert done.stdout.strip() == "[]"
    config = run_cli("pmc.run", "--cfg", "job", "method=npo")
    assert config.returncode == 0 and "_target_: baselines.npo.NPO" in config.stdout
