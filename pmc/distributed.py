"""Multi-GPU runs: which process writes the run directory, and what a SLURM task tells accelerate.

Every process of a multi-GPU run executes the whole run on the same micro-batches, so results and step counts do
not depend on the number of GPUs: what the GPUs share is the model's memory (FSDP or DeepSpeed ZeRO-3 shard the
weights, gradients and optimizer state). Only the main process writes files. Two ways to start such a run:

- `accelerate launch --config_file conf/accelerate/<ddp|fsdp|deepspeed_zero3>.yaml -m pmc.run ...`: accelerate
  starts the processes and sets their environment;
- `hydra/launcher=slurm hydra.launcher.tasks_per_node=<GPUs> accelerate_config=conf/accelerate/<...>.yaml`: submitit
  starts one process per GPU with no launcher around it; `export_launch_environment` gives each one the variables
  torch.distributed and accelerate read.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pmc.core.errors import ConfigError

# accelerate config keys whose environment variable is not simply the key upper-cased
# (accelerate utils/launch.py prepare_multi_gpu_env: FSDP_TRANSFORMER_CLS_TO_WRAP)
FSDP_ENV_NAMES = {"fsdp_transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP"}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def accelerate_environment(config_file: str | Path) -> dict[str, str]:
    """The variables by which `accelerate launch --config_file config_file` selects DeepSpeed or FSDP (accelerate's
    DeepSpeedPlugin and FullyShardedDataParallelPlugin read them); none for DDP, which torch.distributed's own
    variables describe. A relative deepspeed_config_file is relative to the working directory, as for accelerate."""
    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"accelerate_config: {path} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    kind = config.get("distributed_type")
    if kind == "MULTI_GPU":
        return {}
    if kind == "DEEPSPEED":
        deepspeed = config.get("deepspeed_config", {})
        json_file = Path(deepspeed.get("deepspeed_config_file", ""))
        if not json_file.is_file():
            raise ConfigError(f"accelerate_config {path}: deepspeed_config_file {json_file} does not exist")
        return {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(json_file.resolve()),
                "ACCELERATE_DEEPSPEED_ZERO3_INIT": str(deepspeed.get("zero3_init_flag", False)).lower()}
    if kind == "FSDP":
        environment = {"ACCELERATE_USE_FSDP": "true"}
        for key, value in config.get("fsdp_config", {}).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            environment[FSDP_ENV_NAMES.get(key, key.upper())] = text
        return environment
    raise ConfigError(f"accelerate_config {path}: distributed_type must be MULTI_GPU, FSDP or DEEPSPEED, got {kind!r}")


def export_launch_environment(accelerate_config: str | None) -> None:
    """What a launcher would have set: in a submitit job of several tasks (hydra/launcher=slurm with
    tasks_per_node > 1) torch.distributed's MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK; and, when
    accelerate_config names an accelerate config file, its DeepSpeed / FSDP selection."""
    if "SUBMITIT_EXECUTOR" in os.environ and "RANK" not in os.environ:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            # every task keeps seeing all of the node's GPUs: accelerate picks cuda:LOCAL_RANK itself
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if accelerate_config:
        os.environ.update(accelerate_environment(accelerate_config))
