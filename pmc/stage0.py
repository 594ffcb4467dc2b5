"""Stage 0: the target model (fine-tuned on forget + retain) and the retain reference (retain only).

Both are cached on disk as safetensors under a key that hashes everything that determines them (model config,
prompt format, training records, training settings, seed), so later runs and every job of a sweep reuse them.
A cache entry appears atomically (written to a temporary directory, then renamed) under a file lock: concurrent
jobs build it once, and nobody reads a half-written checkpoint. The OS releases the lock if its holder dies. A job
builds first the entries no other job is building and waits for the others after, so two jobs started together
build target and retain side by side. Each
entry's manifest (stage0.json, written last) holds every file's size and sha256: an entry that no longer matches it
is rebuilt, never loaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

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


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def records_digest(records: list[QARecord]) -> str:
    return fingerprint([asdict(r) for r in records])


# training options added after stage-0 entries were first cached: left out of the key while at these values (what
# training did before they existed), so adding an option does not make every cached model stale. The fused optimizer
# is on by default and rounds differently, so default runs since it came (2026-11-27) build their models anew.
KEY_NEUTRAL_OPTIONS = {"group_by_length": False, "compile": False, "fused_optimizer": False, "compile_mode": None,
                       "pad_to_multiple_of": None}


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


def file_digests(directory: Path) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} of every file under `directory` but the manifest."""
    digests = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        sha = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                sha.update(block)
        digests[str(path.relative_to(directory))] = {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}
    return digests


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


def prepare_models(model_cfg: dict, benchmark: QABenchmark, fmt: PromptFormat, cache_dir: str | Path, seed: int,
                   device: str = "cpu", target_path: str | None = None, retain_path: str | None = None,
                   checkpoint: CheckpointConfig = CheckpointConfig()) -> Stage0Models:
    """Target and retain models for this benchmark, from explicit checkpoints when given, else from the cache."""
    root = Path(cache_dir)

    def resumable(resume_dir: Path) -> Checkpoints | None:
        if not checkpoint.enabled:
            return None
        return Checkpoints(resume_dir, checkpoint.every_steps, checkpoint.min_interval_s)

    built: list[str] = []
    finetune_cfg = TrainingConfig(**model_cfg["finetune"])
    base_key = model_base_key(model_cfg, seed, benchmark)
    base_memo: list = []

    def base():
        """The model stage 0 starts from (built and cached once for tiny models); loaded only if needed."""
        if not base_memo:
            if model_cfg["source"] == "tiny":
                key = fingerprint(base_key, fingerprint(benchmark.texts()))
                base_memo.append(cached(root, f"{model_cfg['name']}-base-{key[:16]}", _build_tiny_base, built.append))
            else:
                base_memo.append(load_pretrained(model_cfg["source"], model_cfg.get("name_or_path"), model_cfg["dtype"],
                                                 model_cfg.get("gguf_package"), model_cfg.get("gguf_file")))
        return base_memo[0]

    def _build_tiny_base(resume_dir: Path):
        arch = model_cfg["architecture"]
        template_text = fmt.question_template.format(question="")
        tokenizer = train_tokenizer(benchmark.texts() + [template_text], arch["vocab_size"])
        model = build_tiny(tokenizer, arch["hidden_size"], arch["num_layers"], arch["num_heads"],
                           arch["intermediate_size"], arch["max_position_embeddings"], seed).to(device)
        if benchmark.pretrain:
            finetune(model, tokenizer, fmt, benchmark.pretrain, TrainingConfig(**model_cfg["pretrain"]), seed,
                     desc="stage0: pretrain tiny on utility sets", checkpoints=resumable(resume_dir))
        return model, tokenizer

    def fine_tuned(role: str, records: list[QARecord], wait: bool):
        if model_cfg.get("replay_pretrain"):
            records = records + benchmark.pretrain
        key = fingerprint(base_key, role, records_digest(records), training_key(finetune_cfg), asdict(fmt))

        def build(resume_dir: Path):
            model, tokenizer = base()
            model = copy.deepcopy(model).to(device)
            finetune(model, tokenizer, fmt, records, finetune_cfg, seed, desc=f"stage0: {role}",
                     checkpoints=resumable(resume_dir))
            return model, tokenizer

        name = f"{model_cfg['name']}-{role}-{key[:16]}"
        model = cached(root, name, build, built.append, wait)
        return None if model is None else (model, str(root / name))

    checkpoints = {}
    models = {}
    to_build = []
    for role, records, explicit in (("target", benchmark.full, target_path), ("retain", benchmark.retain, retain_path)):
        if explicit:
            models[role], checkpoints[role] = load_checkpoint(explicit), str(explicit)
        else:
            to_build.append((role, records))
    # first the entries no other job is building, then wait for the rest: jobs of a sweep started together build
    # target and retain side by side (a small model leaves a GPU mostly idle), not one after the other
    for wait in (False, True):
        for role, records in to_build:
            if role not in models and (found := fine_tuned(role, records, wait)) is not None:
                models[role], checkpoints[role] = found
    (target, tokenizer), (retain, _) = models["target"], models["retain"]
    return Stage0Models(target.to(device), retain.to(device), tokenizer, checkpoints, built)
