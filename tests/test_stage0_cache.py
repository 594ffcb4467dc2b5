"""The stage-0 cache under concurrency (jobs of one sweep asking for the same uncached model train it once) and its
integrity (an entry whose files no longer match their checksums is rebuilt; a failed build leaves nothing)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

from pmc.core.errors import ConfigError
from pmc.stage0 import weights_sha256

# A process that builds (or reuses) stage 0 for a tiny config and prints which cache entries it built itself.
BUILD = textwrap.dedent("""
    import json, sys
    from benchmarks.synthetic import make_synthetic_tofu
    from pmc.core.prompts import PromptFormat
    from pmc.stage0 import prepare_models
    model_cfg = {
        "name": "tiny", "source": "tiny", "dtype": "float32", "replay_pretrain": True,
        "architecture": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": 128},
        "prompt": {}, "pretrain": {"epochs": 2, "learning_rate": 1e-3, "batch_size": 16},
        "finetune": {"epochs": 3, "learning_rate": 1e-3, "batch_size": 16},
    }
    benchmark = make_synthetic_tofu(num_authors=3, forget_authors=1, retain_eval_authors=1,
                                    num_world_facts=5, num_real_authors=5)
    models = prepare_models(model_cfg, benchmark, PromptFormat(), sys.argv[1], seed=0)
    print(json.dumps({"built": models.built, "checkpoints": models.checkpoints}))
""")


def start_builder(cache_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", BUILD, str(cache_dir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_concurrent_jobs_train_stage0_once(tmp_path):
    first, second = start_builder(tmp_path), start_builder(tmp_path)
    a, b = finish(first), finish(second)
    assert a["checkpoints"] == b["checkpoints"]
    built = a["built"] + b["built"]
    assert sorted(built) == sorted(set(built)), "a cache entry was trained twice"
    assert len(built) == 3 and {name.split("-")[1] for name in built} == {"base", "target", "retain"}
    assert not list(tmp_path.glob(".*tmp*")), "a temporary build directory was left behind"


def hold_lock(path):
    """A process holding the file lock at `path` (as a job building that entry would) until a line on its stdin."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from filelock import FileLock
        with FileLock({str(path)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_job_builds_the_entry_no_other_job_is_building_first(tmp_path, built_cache):
    """While another job holds the target's lock, a job builds the retain model instead of waiting, then waits for
    the target: two jobs started together build the two side by side."""
    names = {role: Path(path).name for role, path in built_cache[1].checkpoints.items()}  # the same config's entries
    cache = tmp_path / "second"
    cache.mkdir()
    holder = hold_lock(cache / f"{names['target']}.lock")
    builder = start_builder(cache)
    try:
        for _ in range(600):  # the retain model appears while the target's lock is still held
            if (cache / names["retain"] / "stage0.json").is_file() or builder.poll() is not None:
                break
            time.sleep(0.5)
        assert (cache / names["retain"] / "stage0.json").is_file(), "the retain model was not built meanwhile"
        assert builder.poll() is None, "the job did not wait for the target model held by the other job"
        assert not (cache / names["target"]).exists()
    finally:
        holder.communicate("release\n", timeout=30)
    built = [name.split("-")[1] for name in finish(builder)["built"]]
    assert built == ["base", "retain", "target"]  # the other job stopped without building it: this one did


def test_a_killed_builder_does_not_block_the_cache(tmp_path):
    """A job killed while holding an entry's lock (SIGKILL: no cleanup runs) leaves no stale lock behind."""
    target = finish(start_builder(tmp_path))["checkpoints"]["target"]
    shutil.rmtree(target)  # the target must be built again, under the same lock
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from filelock import FileLock
        FileLock({target!r} + ".lock").acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)

    rebuilt = start_builder(tmp_path)
    result = finish(rebuilt)  # finishes (communicate has a timeout) instead of waiting on the dead holder
    assert [name.split("-")[1] for name in result["built"]] == ["target"]


# --- integrity: a corrupted entry is rebuilt, never loaded; a failed build leaves nothing behind --------------------

MODEL_CFG = {
    "name": "tiny", "source": "tiny", "dtype": "float32", "replay_pretrain": True,
    "architecture": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 128},
    "prompt": {}, "pretrain": {"epochs": 2, "learning_rate": 1e-3, "batch_size": 16},
    "finetune": {"epochs": 3, "learning_rate": 1e-3, "batch_size": 16},
}


def prepare(cache_dir, side_by_side: bool = False):
    from benchmarks.synthetic import make_synthetic_tofu
    from pmc.core.prompts import PromptFormat
    from pmc.stage0 import prepare_models

    benchmark = make_synthetic_tofu(num_authors=3, forget_authors=1, retain_eval_authors=1, num_world_facts=5,
                                    num_real_authors=5)
    return prepare_models(MODEL_CFG, benchmark, PromptFormat(), cache_dir, seed=0, side_by_side=side_by_side)


def test_side_by_side_a_second_process_builds_the_retain_model_this_job_would_have_built(tmp_path, monkeypatch):
    """stage0.side_by_side: a second (spawned) process builds the retain model while this one builds the target, so a
    lone job's stage 0 takes one model's time on a GPU. The job reports every entry built for it, and its models are
    those of a job that built them one after the other. Here this process starts on the target only once the helper
    holds the retain entry's lock (a tiny model trains faster than a process starts)."""
    from filelock import FileLock, Timeout

    import pmc.stage0 as stage0

    fine_tuned, finish, helper_built = stage0.Stage0Builder.fine_tuned, stage0.RetainMeanwhile.finish, []

    def target_once_the_helper_builds_retain(self, role, wait):
        entry, deadline = self.entry("retain"), time.monotonic() + 120
        while role == "target" and not entry.exists():
            lock = FileLock(str(entry) + ".lock")
            try:
                lock.acquire(blocking=False)
            except Timeout:  # held: the helper is building it
                break
            lock.release()
            assert time.monotonic() < deadline, "no second process took the retain entry"
            time.sleep(0.1)
        return fine_tuned(self, role, wait)

    monkeypatch.setattr(stage0.Stage0Builder, "fine_tuned", target_once_the_helper_builds_retain)
    monkeypatch.setattr(stage0.RetainMeanwhile, "finish",
                        lambda self: helper_built.extend(finish(self)) or helper_built)
    side = prepare(tmp_path / "side", side_by_side=True)
    monkeypatch.undo()
    alone = prepare(tmp_path / "alone")
    assert sorted(name.split("-")[1] for name in helper_built) == ["base", "retain"]  # the helper needed the base
    assert sorted(side.built) == sorted(alone.built) and len(side.built) == 3
    for role in ("target", "retain"):
        for (name, expected), actual in zip(getattr(alone, role).named_parameters(), getattr(side, role).parameters()):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=f"{role} {name}")


def test_side_by_side_a_job_that_fails_stops_its_second_process(tmp_path, monkeypatch):
    import pmc.stage0 as stage0

    helpers = []
    start = stage0.RetainMeanwhile.__init__
    monkeypatch.setattr(stage0.RetainMeanwhile, "__init__",
                        lambda self, args: (helpers.append(self), start(self, args))[1])

    def failing(self, role, wait):
        raise RuntimeError("CUDA out of memory")  # as a target build may end

    monkeypatch.setattr(stage0.Stage0Builder, "fine_tuned", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        prepare(tmp_path, side_by_side=True)
    (helper,) = helpers
    assert not helper._process.is_alive() and helper._process.exitcode != 0  # stopped, not left building


def test_side_by_side_starts_no_second_process_when_a_model_is_cached(built_cache, monkeypatch):
    import pmc.stage0 as stage0

    monkeypatch.setattr(stage0, "RetainMeanwhile", lambda *args: pytest.fail("a helper for a cached model"))
    cache, _ = built_cache
    assert prepare(cache, side_by_side=True).built == []


def test_side_by_side_on_a_gpu_without_room_for_two_models_in_training_is_one_config_error(built_cache, monkeypatch):
    """Two models in training hold at least 16 bytes per parameter each (fp32 weights, gradients, AdamW's two
    moments): with less free GPU memory than that, side_by_side fails before either build starts."""
    import pmc.stage0 as stage0

    _, models = built_cache
    parameters = sum(p.numel() for p in models.target.parameters())
    builder = type("Builder", (), {"base": lambda self: (models.target, models.tokenizer)})()
    free = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free[0], 80 * 2**30))
    free.append(2 * 16 * parameters)
    stage0.check_room_for_two_builds(builder, "cuda:0")  # just enough
    free[0] -= 1
    with pytest.raises(ConfigError, match=r"side_by_side=true .* need 0\.\d GiB, and cuda:0 has 0\.\d GiB free; set "
                                          r"stage0\.side_by_side=false"):
        stage0.check_room_for_two_builds(builder, "cuda:0")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: pytest.fail("asked a CPU for GPU memory"))
    stage0.check_room_for_two_builds(builder, "cpu")


def test_side_by_side_checks_the_room_before_its_second_process_starts(tmp_path, monkeypatch):
    import pmc.stage0 as stage0

    def no_room(builder, device):
        raise ConfigError("no room")

    monkeypatch.setattr(stage0, "check_room_for_two_builds", no_room)
    monkeypatch.setattr(stage0, "RetainMeanwhile", lambda *args: pytest.fail("a helper started without room"))
    with pytest.raises(ConfigError, match="no room"):
        prepare(tmp_path, side_by_side=True)
    assert not list(tmp_path.glob("tiny-*-*/"))  # no model was built


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("built_cache")
    return cache, prepare(cache)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path):  # same size, different content: only the checksum can tell
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("file, corrupt", [
    ("model.safetensors", truncate),
    ("model.safetensors", flip_a_byte),
    ("tokenizer.json", lambda path: path.unlink()),
    ("stage0.json", lambda path: path.unlink()),  # an entry without its manifest (e.g. a copy that stopped short)
    ("stage0.json", lambda path: path.write_text("{")),
])
def test_a_corrupted_entry_is_rebuilt_not_loaded(built_cache, tmp_path, file, corrupt):
    cache, original = built_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    target = copy / Path(original.checkpoints["target"]).name
    weights = sha256(target / "model.safetensors")
    corrupt(target / file)

    rebuilt = prepare(copy)
    assert rebuilt.built == [target.name], "the corrupted entry (and only it) must be rebuilt"
    assert sha256(target / "model.safetensors") == weights  # the same model again (CPU training is deterministic)
    manifest = json.loads((target / "stage0.json").read_text())
    assert manifest["files"]["model.safetensors"]["sha256"] == weights
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")], "staging or removal directories left"


def test_an_intact_entry_is_loaded_as_it_is(built_cache, tmp_path):
    cache, original = built_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    assert prepare(copy).built == []


def test_the_weights_digest_comes_from_an_entrys_manifest_and_is_hashed_for_any_other_checkpoint(built_cache,
                                                                                                  tmp_path):
    """results.json's stage0.weights_sha256: a cache entry's from its manifest; a checkpoint given by path (no
    manifest, sharded or not) hashed when the run records it."""
    cache, original = built_cache
    entry = Path(original.checkpoints["target"])
    assert weights_sha256(entry) == {"model.safetensors": sha256(entry / "model.safetensors")}
    given = tmp_path / "given"
    given.mkdir()
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (given / shard).write_bytes(shard.encode())
    (given / "config.json").write_text("{}")
    assert weights_sha256(given) == {shard: hashlib.sha256(shard.encode()).hexdigest() for shard in
                                     ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")}


def test_a_given_checkpoints_digest_is_kept_while_the_file_is_unchanged(tmp_path):
    """A sweep over a checkpoint given by path hashes each weight file in its first job only: the digest is kept by
    path, size and modification time, so a file rewritten (a new mtime) is hashed again."""
    given, memo = tmp_path / "given", tmp_path / "cache" / "digests"
    given.mkdir()
    weights = given / "model.safetensors"
    weights.write_bytes(b"first weights")
    first = {"model.safetensors": hashlib.sha256(b"first weights").hexdigest()}
    assert weights_sha256(given, memo) == first
    assert len(list(memo.glob("*.json"))) == 1
    stamp = weights.stat().st_mtime_ns
    weights.write_bytes(b"other weights")  # the same size, the old modification time: read from the memo
    os.utime(weights, ns=(stamp, stamp))
    assert weights_sha256(given, memo) == first
    os.utime(weights, ns=(stamp + 10**9, stamp + 10**9))
    assert weights_sha256(given, memo) == {"model.safetensors": hashlib.sha256(b"other weights").hexdigest()}
    assert weights_sha256(given) == weights_sha256(given, memo)  # without a memo: hashed each time
    blocked = tmp_path / "read-only"
    blocked.write_text("a file where the memo folder would go")
    assert weights_sha256(given, blocked / "digests") == weights_sha256(given)  # no memo kept, the digest still right


def test_a_failed_build_leaves_nothing_half_written(tmp_path, monkeypatch):
    import pmc.stage0
    from pmc.core.models import build_tiny, train_tokenizer

    def save_then_fail(model, tokenizer, path):
        Path(path).mkdir(parents=True)
        (Path(path) / "model.safetensors").write_bytes(b"partial")
        raise OSError("No space left on device")

    def build(resume_dir):
        tokenizer = train_tokenizer(["a few words to learn"], 300)
        return build_tiny(tokenizer, 32, 1, 2, 64, 64, seed=0), tokenizer

    monkeypatch.setattr(pmc.stage0, "save_checkpoint", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        pmc.stage0.cached(tmp_path, "tiny-target-0123", build, lambda name: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-target-0123.lock"]


def test_leftovers_of_a_killed_build_are_cleared(built_cache, tmp_path):
    cache, original = built_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    name = Path(original.checkpoints["retain"]).name
    stale = copy / f".{name}.tmp-999999"  # a builder killed mid-save (SIGKILL: no cleanup ran)
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    prepare(copy)
    assert not stale.exists()


@pytest.mark.parametrize("options", [{"group_by_length": True}, {"compile": "inductor"}, {"fused_optimizer": True},
                                     {"compile": "inductor", "compile_mode": "reduce-overhead"},
                                     {"pad_to_multiple_of": 64}, {"joint_forward": True}, {"compile_regional": False}])
def test_a_training_option_added_later_keeps_existing_cache_keys_at_its_old_behaviour(options):
    """A stage-0 key hashes the training settings; options added since (group_by_length, compile, fused_optimizer,
    compile_mode, pad_to_multiple_of, joint_forward, compile_regional) are left out while they do what training did
    before they existed, so entries cached then (hours of GPU time for Phi or Llama) are still found; set otherwise
    (the fused optimizer is now the default: it rounds differently), the option is part of the key and the model is
    built anew."""
    from dataclasses import asdict

    from pmc.optimisation import TrainingConfig
    from pmc.stage0 import training_key

    old_behaviour = {"group_by_length": False, "compile": False, "fused_optimizer": False, "compile_mode": None,
                     "pad_to_multiple_of": None, "joint_forward": False, "compile_regional": True}
    before = {k: v for k, v in asdict(TrainingConfig(epochs=5, learning_rate=2e-5)).items() if k not in old_behaviour}
    assert training_key(TrainingConfig(epochs=5, learning_rate=2e-5, **old_behaviour)) == before
    switched = training_key(TrainingConfig(epochs=5, learning_rate=2e-5, **{**old_behaviour, **options}))
    assert switched == {**before, **options}  # switched on, it is part of the key
    assert training_key(TrainingConfig(epochs=5, learning_rate=2e-5)) == {**before, "fused_optimizer": True}


def test_the_tiny_models_base_key_reads_the_pretraining_settings_as_training_does():
    """The tiny model's pre-trained base was keyed by its pretraining settings as the YAML writes them, so a changed
    TrainingConfig default reused a base built the old way (2026-11-27: a quickstart fine-tuned with the fused
    optimizer on a base pre-trained with the per-tensor loop, other numbers than a clean build). The key now reads
    the settings as training does: stating a default changes nothing, another value is another base."""
    from benchmarks.synthetic import make_synthetic_tofu
    from pmc.stage0 import CACHE_FORMAT, fingerprint, model_base_key, records_digest

    benchmark = make_synthetic_tofu(num_authors=4, forget_authors=1, retain_eval_authors=1)
    tiny = {"name": "tiny", "source": "tiny", "architecture": {"hidden_size": 16},
            "pretrain": {"epochs": 2, "learning_rate": 1e-3}, "finetune": {"epochs": 3, "learning_rate": 1e-3}}
    key = model_base_key(tiny, 0, benchmark)
    assert model_base_key({**tiny, "pretrain": {**tiny["pretrain"], "fused_optimizer": True}}, 0, benchmark) == key
    assert model_base_key({**tiny, "pretrain": {**tiny["pretrain"], "fused_optimizer": False}}, 0, benchmark) != key
    assert model_base_key({**tiny, "pretrain": {**tiny["pretrain"], "epochs": 3}}, 0, benchmark) != key
    # fine-tuning settings and LoRA enter each entry's own key, not the base's
    assert model_base_key({**tiny, "finetune": {"epochs": 9, "learning_rate": 1.0}, "lora": {"r": 8}}, 0,
                          benchmark) == key
    # a pretrained model has no pretraining settings: its key is the one it always had (cached hub models stay found)
    hub = {"name": "smollm2_135m", "source": "gguf", "dtype": "float32", "finetune": {"epochs": 5}}
    assert model_base_key(hub, 0, benchmark) == fingerprint(
        CACHE_FORMAT, {"name": "smollm2_135m", "source": "gguf", "dtype": "float32"}, 0,
        records_digest(benchmark.pretrain))


class MovesRecorded(torch.nn.Module):
    """A model on the meta device (a CPU test has no GPU) that notes the devices it is asked to move to."""

    def __init__(self, moves: list):
        super().__init__()
        self.weight, self.moves = torch.nn.Parameter(torch.zeros(1, device="meta")), moves

    def to(self, device):
        self.moves.append((self, str(device)))
        return self


@pytest.mark.parametrize("fails", [False, True])
def test_offloaded_models_wait_in_host_memory_and_come_back(fails):
    """stage0.offload_during_unlearning: the target and retain go to the host before unlearning and back to their
    device after it, also when unlearning fails (a job stopped there still evaluates nothing with models left behind);
    switched off, nothing moves."""
    from pmc.pipeline import offloaded

    moves = []
    target, retain = MovesRecorded(moves), MovesRecorded(moves)
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with offloaded([target, retain], enabled=True):
            assert moves == [(target, "cpu"), (retain, "cpu")]
            if fails:
                raise RuntimeError("unlearning failed")
    assert moves[2:] == [(target, "meta"), (retain, "meta")]
    moves.clear()
    with offloaded([target, retain], enabled=False):
        pass
    assert moves == []
