"""Resumable training: a run directory keeps a checkpoint of everything the rest of the run depends on.

A checkpoint is written at every epoch boundary and, with `every_steps` > 0, after every `every_steps` optimizer
steps, but no sooner than `min_interval_s` seconds after the previous one (or the start of training; 0: at every
boundary): SmolLM2-135M with its AdamW state is 1.6 GB, longer to write than an epoch of a small job on a GPU, and a
preempted job needs only a recent checkpoint. The end of training is checkpointed whatever the interval, so a job
stopped while it evaluates resumes at evaluation, not steps before the end (`Checkpoints.finished`). It holds what
accelerate's `save_state` saves (model weights as safetensors, optimizer, scheduler, the RNG states of python,
numpy, torch and CUDA) and `trainer_state.json`: the loop position and the caller's own state (its RNG, the method's
state, the current epoch's micro-batch plan). `load_state` reads accelerate's torch files with `weights_only=True`
(accelerate.utils.load), so nothing is unpickled as code.

A checkpoint is written into a hidden staging directory and renamed into place only once complete
(`trainer_state.json` last), so a kill while checkpointing leaves the previous checkpoint usable; leftovers of such
a kill are ignored with a log line and removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import monotonic

import torch
from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME
from accelerate.utils.other import load as accelerate_load

from pmc.core.errors import CheckpointError, ConfigError

log = logging.getLogger("pmc")

STATE_FILE = "trainer_state.json"  # written last: a checkpoint directory without it is incomplete
PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointConfig:
    """`checkpoint:` in conf/config.yaml."""

    enabled: bool = True
    every_steps: int = 0  # 0 = at epoch boundaries only
    keep: bool = False  # keep the checkpoints after the run has written results.json
    min_interval_s: float = 300.0  # no checkpoint sooner than this after the previous one (0: at every boundary)

    def __post_init__(self):
        for key in ("enabled", "keep"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"checkpoint.{key} must be true or false, got {getattr(self, key)!r}")
        if isinstance(self.every_steps, bool) or not isinstance(self.every_steps, int) or self.every_steps < 0:
            raise ConfigError(
                f"checkpoint.every_steps must be an integer >= 0 (0 = epoch boundaries only), got {self.every_steps!r}"
            )
        if isinstance(self.min_interval_s, bool) or not isinstance(self.min_interval_s, int | float) \
                or not self.min_interval_s >= 0:
            raise ConfigError(
                f"checkpoint.min_interval_s must be a number of seconds >= 0, got {self.min_interval_s!r}"
            )


class Checkpoints:
    """The checkpoints of one training loop, in `directory` (one `step-<n>` folder each; only the newest is kept)."""

    def __init__(self, directory: str | Path, every_steps: int = 0, min_interval_s: float = 0.0):
        self.directory, self.every_steps, self.min_interval_s = Path(directory), every_steps, min_interval_s
        self.last_saved = monotonic()  # the start of training counts as a save: nothing to lose before it

    def due(self) -> bool:
        """Whether a checkpoint boundary reached now should be written (min_interval_s since the previous one)."""
        return monotonic() - self.last_saved >= self.min_interval_s

    def latest(self) -> Path | None:
        """The newest complete checkpoint; incomplete ones (a kill while writing) are logged and removed."""
        if not self.directory.is_dir():
            return None
        complete = []
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith(PREFIX) and (path / STATE_FILE).is_file():
                complete.append(path)
            else:
                log.warning("ignoring incomplete checkpoint %s (a run was stopped while writing it)", path)
                shutil.rmtree(path, ignore_errors=True)
        return max(complete, key=lambda p: int(p.name[len(PREFIX):]), default=None)

    def resume_step(self) -> int:
        """The optimizer step the newest checkpoint was taken after (0: none, the run starts afresh)."""
        latest = self.latest()
        return read_state(latest)["position"]["step"] if latest else 0

    def finished(self, epochs: int) -> bool:
        """Whether the newest checkpoint was taken after the last of `epochs` epochs: training is over, and a run
        resumed from it only evaluates (the end of training is always checkpointed, `pmc.trainer.optimise`)."""
        latest = self.latest()
        return latest is not None and read_state(latest)["position"]["epoch"] >= epochs

    def save(self, accelerator: Accelerator, position: dict, caller_state: dict) -> None:
        """Write a checkpoint after optimizer step position["step"], then drop the older ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{PREFIX}{position['step']:09d}"
        staging = self.directory / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        with quiet_accelerate():
            accelerator.save_state(str(staging), safe_serialization=True)
        with (staging / STATE_FILE).open("w", encoding="utf-8") as f:
            json.dump({"position": position, "caller": caller_state}, f)
            f.flush()
            os.fsync(f.fileno())
        final = self.directory / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for older in self.directory.glob(f"{PREFIX}*"):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
        self.last_saved = monotonic()

    def load(self, accelerator: Accelerator, path: Path) -> dict:
        """Restore model, optimizer, scheduler and RNG states from `path`; returns its trainer_state.json."""
        state = read_state(path)
        try:
            with quiet_accelerate():
                accelerator.load_state(str(path))
        except Exception as e:  # a file missing or unreadable in a checkpoint that was complete when written
            raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {e}); delete it to "
                                  "start the run afresh") from None
        # accelerate only logs when the RNG file cannot be read; a resumed run must not silently draw other numbers
        saved = accelerate_load(path / f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl")
        if not torch.equal(saved["torch_manual_seed"], torch.get_rng_state()):
            raise CheckpointError(f"checkpoint {path}: its RNG states could not be restored")
        self.last_saved = monotonic()  # what came before is in this checkpoint
        return state

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def quiet_accelerate():
    """accelerate logs five INFO lines per save and load, and warns on every save of a model with tied input/output
    embeddings that it stores them once (load_state ties them again; the resume tests compare every weight): a run
    checkpointing every epoch would bury its own log under them. Errors still show."""
    loggers = [logging.getLogger(name) for name in ("accelerate.accelerator", "accelerate.checkpointing",
                                                    "accelerate.utils.other")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def read_state(path: Path) -> dict:
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        state["position"]["step"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} is unreadable ({e}); delete the checkpoint to "
                              "start the run afresh") from None
    return state
