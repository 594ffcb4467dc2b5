"""Stage 0: the target model (fine-tuned on forget + retain) and the retain reference (retain only).

Both are cached on disk as safetensors under a key that hashes everything that determines them (model config,
prompt format, training records, training settings, seed), so later runs and every job of a sweep reuse them.
A cache entry appears atomically (written to a temporary directory, then renamed) under a file lock: concurrent
jobs build it once, and nobody reads a half-written checkpoint. The OS releases the lock if its holder dies. A job
builds first the entries no other job is building and waits for the others after, so two jobs started together
build target and retain side by side; with `stage0.side_by_side` a job alone does the same with a second process
(`RetainMeanwhile`). Each
entry's manifest (stage0.json, written last) holds every file's size and sha256: an entry that no longer matches it
is rebuilt, never loaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock, Timeout

from pmc.checkpoint import CheckpointConfig, Checkpoints
from pmc.core.errors import ConfigError
from pmc.core.models import build_tiny, load_checkpoint, load_pretrained, save_checkpoint, train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.distributed import world_size
from pmc.optimisation import TrainingConfig
from pmc.results import write_json_atomic
from pmc.trainer import finetune

log = logging.getLogger("pmc")

CACHE_FORMAT = 1  # bump when the way stage-0 models are built changes, so old cache entries are not reused
# what a model in training holds at least, per parameter: fp32 weights, gradients and AdamW's two moments
# (bf16-mixed keeps fp32 master weights); activations come on top
TRAINING_BYTES_PER_PARAMETER = 16


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def records_digest(records: list[QARecord]) -> str:
    return fingerprint([asdict(r) for r in records])


# training options added after stage-0 entries were first cached: left out of the key while at these values (what
# training did before they existed), so adding an option does not make every cached model stale. The fused optimizer
# is on by default and rounds differently, so default runs since it came (2026-11-27) build their models anew.
KEY_NEUTRAL_OPTIONS = {"group_by_length": False, "compile": False, "fused_optimizer": False, "compile_mode": None,
                       "pad_to_multiple_of": None, "joint_forward": False, "compile_regional": True}


def training_key(training: TrainingConfig) -> dict:
    """The training settings a stage-0 cache key hashes."""
    return {name: value for name, value in asdict(training).items()
            if name not in KEY_NEUTRAL_OPTIONS or KEY_NEUTRAL_OPTIONS[name] != value}


@dataclass
class Stage0Models:
    target: object
    retain: object
    tokenizer: object
    checkpoints: dict[str, str]
    built: list[str] = field(default_factory=list)  # which cache entries this run had to build


MANIFEST = "stage0.json"  # written last into an entry: every file's size and sha256


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            sha.update(block)
    return sha.hexdigest()


def file_digests(directory: Path, pattern: str = "*") -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} of every file under `directory` matching `pattern` but the manifest."""
    return {str(path.relative_to(directory)): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(p for p in directory.rglob(pattern) if p.is_file() and p.name != MANIFEST)}


def remembered_sha256(path: Path, memo_dir: Path) -> str:
    """A file's sha256, hashed once per (path, size, modification time) and kept in `memo_dir`: a sweep over a
    checkpoint given by path (a published 3B model is ~12 GB, ~10-25 s to hash) hashes it in its first job only. A
    file rewritten in place changes its modification time, so it is hashed again."""
    path = path.resolve()
    stat = path.stat()
    identity = {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    memo = memo_dir / f"{fingerprint(str(path))}.json"
    try:
        kept = json.loads(memo.read_text())
        if {name: kept[name] for name in identity} == identity:
            return kept["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = file_sha256(path)
    try:
        write_json_atomic(memo, {**identity, "sha256": digest})
    except OSError as error:  # the digest is right; only the next job's shortcut is lost, not this job's results
        log.warning("could not keep the sha256 of %s in %s (%s); later jobs hash it again", path, memo_dir, error)
    return digest


def weights_sha256(checkpoint: str | Path, memo_dir: Path | None = None) -> dict[str, str]:
    """{file: sha256} of a checkpoint's weights (its *.safetensors files): from the manifest of a cache entry (hashed
    when it was written, checked when it was loaded), else hashed now, or taken from `memo_dir` when an earlier job
    hashed the same unchanged file (`remembered_sha256`). results.json records it because a cache entry's name does
    not tell its weights apart: an entry rebuilt on another machine keeps its name (the key leaves the machine out)
    and its weights may differ in the last bits, so reports compare this, not the name."""
    directory = Path(checkpoint)
    try:
        files = json.loads((directory / MANIFEST).read_text())["files"]
        return {name: entry["sha256"] for name, entry in files.items() if name.endswith(".safetensors")}
    except (OSError, ValueError, KeyError, TypeError):
        weights = sorted(p for p in directory.rglob("*.safetensors") if p.is_file())
        return {str(path.relative_to(directory)): remembered_sha256(path, memo_dir) if memo_dir else file_sha256(path)
                for path in weights}


def entry_problem(entry: Path) -> str | None:
    """Why a cache entry cannot be trusted (a file missing, truncated or changed since it was written), or None."""
    try:
        files = json.loads((entry / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MANIFEST} with checksums"
    for name, expected in files.items():
        path = entry / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were written"
    actual = file_digests(entry)
    changed = [name for name in files if actual[name]["sha256"] != files[name]["sha256"]]
    return f"{changed[0]} does not match its sha256" if changed else None


def _remove(directory: Path) -> None:
    """Delete a directory so that no reader ever sees it half-deleted: rename it away first."""
    doomed = directory.with_name(f".{directory.name}.removing-{os.getpid()}")
    os.replace(directory, doomed)
    shutil.rmtree(doomed)


def cached(root: Path, name: str, build: Callable[[Path], tuple], on_build: Callable[[str], None],
           wait: bool = True) -> tuple | None:
    """(model, tokenizer) from root/name, building and saving it first if absent or corrupt (once, under a lock).
    wait=False: None at once when another process holds the entry's lock (it is building the entry), so the caller
    can build another entry meanwhile.

    build(resume_dir) may keep training checkpoints in resume_dir (beside the entry, named after it): a build killed
    part-way resumes from there in the next run that needs the entry; it is removed once the entry is in place.

    An entry is written into a staging directory, its manifest last, then renamed into place; one whose files no
    longer match the manifest (a truncated copy, a deleted file, bit rot) is removed and rebuilt, never loaded.
    """
    final = root / name
    root.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(str(final) + ".lock").acquire(blocking=wait)
    except Timeout:
        return None
    with lock:
        for leftover in root.glob(f".{name}.*-*"):  # staging or removal directories of jobs killed under this lock
            shutil.rmtree(leftover, ignore_errors=True)
        problem = entry_problem(final) if final.exists() else None
        if problem:
            log.warning("stage-0 cache entry %s is corrupt (%s); rebuilding it", final, problem)
            _remove(final)
        if not final.exists():
            if world_size() > 1:  # its training would wait for processes that wait for this lock
                raise ConfigError(f"stage-0 model {final} is not cached, and a multi-process run cannot build it: "
                                  "run the same config once in a single process first")
            resume_dir = root / f".{name}.resume"
            model, tokenizer = build(resume_dir)
            staging = root / f".{name}.tmp-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                save_checkpoint(model, tokenizer, staging)
                write_json_atomic(staging / MANIFEST, {"name": name, "created": time.time(),
                                                       "files": file_digests(staging)})
                os.replace(staging, final)
                shutil.rmtree(resume_dir, ignore_errors=True)
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # only left if something above failed
            on_build(name)
    return load_checkpoint(final)


def model_base_key(model_cfg: dict, seed: int, benchmark: QABenchmark) -> str:
    """What every stage-0 key of this model starts from: the model config (LoRA applies to unlearning only, and the
    fine-tuning settings enter each entry's own key) and, for a tiny model, its pre-training: the settings as
    TrainingConfig reads them (its defaults included, so a changed default builds a new base, not a stale one) and
    the records."""
    parts = {k: v for k, v in model_cfg.items() if k not in ("finetune", "lora")}
    if parts.get("pretrain") is not None:
        parts["pretrain"] = training_key(TrainingConfig(**parts["pretrain"]))
    return fingerprint(CACHE_FORMAT, parts, seed, records_digest(benchmark.pretrain))


ROLES = ("target", "retain")


class Stage0Builder:
    """One benchmark's stage-0 models from the cache, each entry built there first (under its lock) if absent: the
    tiny model's pre-trained base, the target (fine-tuned on forget + retain) and the retain reference."""

    def __init__(self, model_cfg: dict, benchmark: QABenchmark, fmt: PromptFormat, cache_dir: str | Path, seed: int,
                 device, checkpoint: CheckpointConfig):
        self.model_cfg, self.benchmark, self.fmt, self.seed = model_cfg, benchmark, fmt, seed
        self.root, self.device, self.checkpoint = Path(cache_dir), device, checkpoint
        self.finetune_cfg = TrainingConfig(**model_cfg["finetune"])
        self.base_key = model_base_key(model_cfg, seed, benchmark)
        self.built: list[str] = []  # the entries this builder had to build
        self._base: tuple | None = None

    def _resumable(self, resume_dir: Path) -> Checkpoints | None:
        if not self.checkpoint.enabled:
            return None
        return Checkpoints(resume_dir, self.checkpoint.every_steps, self.checkpoint.min_interval_s)

    def base(self) -> tuple:
        """The model stage 0 starts from (built and cached once for tiny models); loaded only if needed."""
        if self._base is None:
            cfg = self.model_cfg
            if cfg["source"] == "tiny":
                key = fingerprint(self.base_key, fingerprint(self.benchmark.texts()))
                self._base = cached(self.root, f"{cfg['name']}-base-{key[:16]}", self._build_tiny_base,
                                    self.built.append)
            else:
                self._base = load_pretrained(cfg["source"], cfg.get("name_or_path"), cfg["dtype"],
                                             cfg.get("gguf_package"), cfg.get("gguf_file"))
        return self._base

    def _build_tiny_base(self, resume_dir: Path):
        arch, benchmark = self.model_cfg["architecture"], self.benchmark
        template_text = self.fmt.question_template.format(question="")
        tokenizer = train_tokenizer(benchmark.texts() + [template_text], arch["vocab_size"])
        model = build_tiny(tokenizer, arch["hidden_size"], arch["num_layers"], arch["num_heads"],
                           arch["intermediate_size"], arch["max_position_embeddings"], self.seed).to(self.device)
        if benchmark.pretrain:
            finetune(model, tokenizer, self.fmt, benchmark.pretrain, TrainingConfig(**self.model_cfg["pretrain"]),
                     self.seed, desc="stage0: pretrain tiny on utility sets", checkpoints=self._resumable(resume_dir))
        return model, tokenizer

    def _records(self, role: str) -> list[QARecord]:
        records = self.benchmark.full if role == "target" else self.benchmark.retain
        return records + self.benchmark.pretrain if self.model_cfg.get("replay_pretrain") else records

    def entry(self, role: str) -> Path:
        """Where `role`'s model is cached."""
        key = fingerprint(self.base_key, role, records_digest(self._records(role)), training_key(self.finetune_cfg),
                          asdict(self.fmt))
        return self.root / f"{self.model_cfg['name']}-{role}-{key[:16]}"

    def fine_tuned(self, role: str, wait: bool) -> tuple | None:
        """((model, tokenizer), entry) of `role`; None at once when wait=False and another process is building it."""
        def build(resume_dir: Path):
            model, tokenizer = self.base()
            model = copy.deepcopy(model).to(self.device)
            finetune(model, tokenizer, self.fmt, self._records(role), self.finetune_cfg, self.seed,
                     desc=f"stage0: {role}", checkpoints=self._resumable(resume_dir))
            return model, tokenizer

        entry = self.entry(role)
        found = cached(self.root, entry.name, build, self.built.append, wait)
        return None if found is None else (found, str(entry))


def prepare_models(model_cfg: dict, benchmark: QABenchmark, fmt: PromptFormat, cache_dir: str | Path, seed: int,
                   device: str = "cpu", target_path: str | None = None, retain_path: str | None = None,
                   checkpoint: CheckpointConfig = CheckpointConfig(), side_by_side: bool = False,
                   place: str | torch.device | None = None) -> Stage0Models:
    """Target and retain models for this benchmark, from explicit checkpoints when given, else from the cache; built
    on `device`, returned on `place` (default: `device`; host memory for a job whose models take turns on the device,
    `eval_one_model_on_device`).

    side_by_side: when neither is cached, a second process builds the retain model while this one builds the target
    (`RetainMeanwhile`): a small model leaves a GPU mostly idle, and one job's stage 0 takes one model's time, not
    two. It holds a second copy of the model, its gradients and optimizer state."""
    builder = Stage0Builder(model_cfg, benchmark, fmt, cache_dir, seed, device, checkpoint)
    checkpoints, models = {}, {}
    for role, explicit in zip(ROLES, (target_path, retain_path)):
        if explicit:
            models[role], checkpoints[role] = load_checkpoint(explicit), str(explicit)
    to_build = [role for role in ROLES if role not in models]
    helper = None
    if (side_by_side and len(to_build) == 2 and world_size() == 1  # a multi-process run builds nothing (`cached`)
            and not any(builder.entry(role).exists() for role in to_build)):
        check_room_for_two_builds(builder, device)
        helper = RetainMeanwhile((model_cfg, benchmark, fmt, cache_dir, seed, str(device), checkpoint))
    try:
        # first the entries no other job is building, then wait for the rest: jobs of a sweep started together build
        # target and retain side by side (a small model leaves a GPU mostly idle), not one after the other
        for wait in (False, True):
            for role in to_build:
                if role not in models and (found := builder.fine_tuned(role, wait)) is not None:
                    models[role], checkpoints[role] = found
    except BaseException:
        if helper:  # the job has failed: its helper stops too, rather than hold the device for a model nobody waits for
            helper.stop()
        raise
    built = builder.built + (helper.finish() if helper else [])
    (target, tokenizer), (retain, _) = models["target"], models["retain"]
    place = device if place is None else place
    return Stage0Models(target.to(place), retain.to(place), tokenizer, checkpoints, built)


def check_room_for_two_builds(builder: Stage0Builder, device) -> None:
    """On a GPU, stage0.side_by_side trains two models at once in its memory: refuse it, before either starts, where
    the GPU's free memory cannot hold their weights, gradients and optimizer state (a lower bound: activations come on
    top), rather than let one of the two builds run out of memory part way (Llama-3.2-3B: ~51 GB each)."""
    if torch.device(device).type != "cuda":
        return
    model, _ = builder.base()
    need = 2 * TRAINING_BYTES_PER_PARAMETER * sum(p.numel() for p in model.parameters())
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    if need > free:
        raise ConfigError(f"stage0.side_by_side=true trains target and retain at once: their weights, gradients and "
                          f"AdamW state alone need {need / 2**30:.1f} GiB, and {device} has {free / 2**30:.1f} GiB "
                          f"free; set stage0.side_by_side=false to build them one after the other")


class RetainMeanwhile:
    """A second process that builds the retain model into the cache while this one builds the target
    (`prepare_models(side_by_side=True)`). It takes the retain entry's lock, so this process finds it being built and
    waits for it after the target; if the helper fails (its error is in the log), the lock is free and this process
    builds the entry itself. Spawned, not forked: a CUDA context does not survive a fork."""

    def __init__(self, builder_args: tuple):
        context = multiprocessing.get_context("spawn")
        self._reply = context.SimpleQueue()
        self._process = context.Process(target=_build_retain, args=(self._reply, builder_args), name="stage0-retain",
                                        daemon=True)  # ended with this process, whatever happens to it
        self._process.start()

    def stop(self) -> None:
        """End the helper now (its entry's lock is released; a half-built entry is never read)."""
        self._process.terminate()
        self._process.join()

    def finish(self) -> list[str]:
        """The entries the helper built (once it has ended)."""
        self._process.join()
        if self._process.exitcode != 0:
            log.warning("stage 0: the process building the retain model side by side ended with exit code %s; this "
                        "job built or waited for the model itself", self._process.exitcode)
            return []
        return self._reply.get() if not self._reply.empty() else []


def _build_retain(reply, builder_args: tuple) -> None:
    """RetainMeanwhile's process: the retain entry, unless another process holds its lock (then nothing)."""
    logging.basicConfig(level=logging.INFO)
    builder = Stage0Builder(*builder_args)
    builder.fine_tuned("retain", wait=False)
    reply.put(builder.built)
