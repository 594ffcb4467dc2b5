"""Multi-process runs: the accelerate configs under conf/accelerate, the SLURM environment, and DDP on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
from conftest import REPO

from pmc.core.errors import ConfigError
from pmc.distributed import accelerate_environment, export_launch_environment

ACCELERATE_DIR = REPO / "conf" / "accelerate"


@pytest.fixture
def clean_environment(monkeypatch):
    """The variables these tests export, removed again afterwards (setenv records their absence for undo)."""
    names = ["MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
             "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_DEEPSPEED_ZERO3_INIT",
             "ACCELERATE_USE_FSDP", "CUDA_VISIBLE_DEVICES"]
    names += [f"FSDP_{key.removeprefix('fsdp_').upper()}" for key in
              ("fsdp_version", "fsdp_auto_wrap_policy", "fsdp_reshard_after_forward", "fsdp_state_dict_type",
               "fsdp_offload_params", "fsdp_cpu_ram_efficient_loading", "fsdp_activation_checkpointing")]
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_ddp_needs_only_torch_distributed_variables():
    assert accelerate_environment(ACCELERATE_DIR / "ddp.yaml") == {}


def test_fsdp_config_reaches_accelerates_fsdp_plugin(clean_environment):
    os.environ.update(accelerate_environment(ACCELERATE_DIR / "fsdp.yaml"))
    assert os.environ["ACCELERATE_USE_FSDP"] == "true"
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables, as under `accelerate launch`
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.state_dict_type.name == "FULL_STATE_DICT" and plugin.activation_checkpointing is False


def test_deepspeed_config_reaches_accelerates_deepspeed_plugin(clean_environment):
    clean_environment.chdir(REPO)  # the JSON path is relative to where runs start, as for accelerate launch
    os.environ.update(accelerate_environment(ACCELERATE_DIR / "deepspeed_zero3.yaml"))
    assert os.environ["ACCELERATE_USE_DEEPSPEED"] == "true"
    plugin = DeepSpeedPlugin()  # reads ACCELERATE_DEEPSPEED_CONFIG_FILE
    assert plugin.zero_stage == 3 and plugin.deepspeed_config["zero_allow_untested_optimizer"] is True
    assert plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_bad_accelerate_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        accelerate_environment(tmp_path / "missing.yaml")
    (tmp_path / "tpu.yaml").write_text("distributed_type: XLA\n")
    with pytest.raises(ConfigError, match="distributed_type"):
        accelerate_environment(tmp_path / "tpu.yaml")


def test_a_slurm_task_exports_its_rank(clean_environment):
    """Task 1 of a 2-task submitit SLURM job: the variables torch.distributed and accelerate read."""
    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
                        "SLURM_LOCALID": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
                        "SLURM_JOB_NODELIST": "gpu-node-7"}.items():
        clean_environment.setenv(name, value)
    export_launch_environment(str(ACCELERATE_DIR / "ddp.yaml"))
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    assert os.environ["MASTER_ADDR"] == "gpu-node-7" and "CUDA_VISIBLE_DEVICES" not in os.environ


# Trains a small network in whatever process group torchrun sets up; writes the weights and logged lrs per rank.
TRAIN = textwrap.dedent("""
    import json, os, torch
    from pmc.optimisation import TrainingConfig
    from pmc.trainer import optimise
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    data = [torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    training = TrainingConfig(epochs=3, learning_rate=1e-2, gradient_accumulation_steps=2, warmup_epochs=1,
                              schedule="linear")
    logs, wrappers = [], set()
    def loss(m, x):
        wrappers.add(type(m).__name__)
        return {"loss": m(x).pow(2).mean()}
    optimise(model, training, lambda e: list(data), loss, logs.append)
    rank = int(os.environ.get("RANK", 0))
    with open(os.path.join(os.environ["OUT_DIR"], f"rank{rank}.json"), "w") as out:
        json.dump({"rank": rank, "wrappers": sorted(wrappers), "lrs": [r["lr"] for r in logs],
                   "weights": [x for p in model.parameters() for x in p.detach().flatten().tolist()]}, out)
""")


def trained(out_dir, *command: str) -> list[dict]:
    out_dir.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), OUT_DIR=str(out_dir))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob("rank*.json"))]


@pytest.mark.slow
def test_two_cpu_processes_under_ddp_train_exactly_like_one(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    (single,) = trained(tmp_path / "one", sys.executable, str(script))
    ranks = trained(tmp_path / "two", sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", "29613", str(script))
    assert single["wrappers"] == ["Sequential"]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    for rank in ranks:
        assert rank["wrappers"] == ["DistributedDataParallel"]  # accelerate wrapped the model for gloo DDP
        assert rank["weights"] == single["weights"] and rank["lrs"] == single["lrs"]
