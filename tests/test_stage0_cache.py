"""The stage-0 cache under concurrency: jobs of one sweep asking for the same uncached model train it once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

from conftest import REPO

# A process that builds (or reuses) stage 0 for a tiny config and prints which cache entries it built itself.
BUILD = textwrap.dedent("""
    import json, sys
    from benchmarks.synthetic import make_synthetic_tofu
    from pmc.prompts import PromptFormat
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
