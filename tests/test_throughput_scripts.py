"""scripts/bench_throughput.py, bench_pmc_sampling.py and bench_decoding_compile.py on the tiny model, and the GPU
check scripts: shell syntax, and (slow) the dry run of scripts/gpu_check.sh, the same pipeline on this CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import torch
from conftest import REPO, SMALL, TOFU_DIR, load_script
from hydra.utils import instantiate
from torch.autograd import DeviceType

from pmc.core.batches import encode_pairs
from pmc.pipeline import load_stage0, prompt_format


def bench():
    return load_script("bench_throughput")


def test_bench_throughput_takes_options_after_the_overrides(capsys):
    """gpu_check.sh passes its overrides first and GPU_CHECK_BENCH_ARGS after them: on the H100 (2026-11-27) the
    bench refused "--train-batch 32 ... method.training.compile=true" as unrecognized arguments and measured nothing.
    Here the option after an override is read: its own check refuses the value, not the parser the option."""
    with pytest.raises(SystemExit):
        bench().main(["experiment=quickstart", "--steps", "0", "method.training.epochs=1"])
    error = capsys.readouterr().err
    assert "--steps: at least 1 timed training step, got 0" in error and "unrecognized" not in error


def test_bench_throughput_training_only_times_training_alone(stage0_cache, tmp_path, capsys):
    """--training-only: the training rows (the harness's loop, the plain loop, the optimizer step fused and not)
    and nothing that decodes; an option that needs decoding or a job is refused."""
    numbers = bench().main(["--training-only", "--steps", "2", *SMALL, f"cache_dir={stage0_cache}",
                            "method.training.fused_optimizer=false"])
    printed = capsys.readouterr().out
    assert printed.startswith("device: ") and "| optimizer step, unfused " in printed
    assert "the run uses unfused (training.fused_optimizer)" in printed and "decoding" not in printed
    assert set(numbers) == {"device", "device_type", "torch", "dtype", "model", "benchmark", "training"}
    assert numbers["training"]["fused_optimizer"] is False and numbers["training"]["steps_per_s"] > 0
    with pytest.raises(SystemExit):
        bench().main(["--training-only", "--profile", str(tmp_path / "profile"), *SMALL])
    assert "--training-only times training alone" in capsys.readouterr().err


def test_a_bench_cut_off_while_decoding_has_printed_and_written_its_training_rows(stage0_cache, tmp_path, capsys):
    """The GPU check gives the bench what is left of its budget and kills it there: the training rows, measured
    first, are printed and written to --json before any decoding starts."""
    module = bench()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as the time limit's signal would stop it

    module.decoding_throughput = killed
    with pytest.raises(KeyboardInterrupt):
        module.main(["--no-job", "--steps", "2", "--json", str(tmp_path / "bench.json"), *SMALL,
                     f"cache_dir={stage0_cache}"])
    printed = capsys.readouterr().out
    assert printed.startswith("device: ") and "| training, plain loop " in printed and "decoding" not in printed
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["training"]["steps_per_s"] > 0 and "greedy" not in written


def test_bench_throughput_table_from_a_results_file(stage0_cache, make_config, tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"timings_s": {"data": 0.5, "stage0": 12.0, "unlearn": 30.25, "eval": 7.0,
                                                 "unlearn.setup": 3.5, "unlearn.sampling": 11.75,
                                                 "eval.greedy_answers": 4.5, "eval.paper": 2.25},
                                   "stage0": {"built_in_this_run": ["tiny-target-0123", "tiny-retain-4567"]},
                                   "compiled_graphs": 1, "cudagraph_skips": 2, "cudagraph_recordings": 3,
                                   "compile_s": 61.25, "compile_cache_hits": 4, "compile_cache_misses": 1,
                                   "compile_cache_bypasses": 0}))
    numbers = bench().main(["--results", str(results), "--steps", "2", "--questions", "6", "--samples", "3",
                            "--gen-batch", "4", "--compare-warpers", "--compare-dropping", "--score-batches", "1,3",
                            "--json", str(tmp_path / "bench.json"),
                            "--profile", str(tmp_path / "profile"), *SMALL, f"cache_dir={stage0_cache}"])
    printed = capsys.readouterr().out
    assert printed.startswith("device: ") and "torch " in printed and "float32" in printed
    for measure in ("training", "greedy decoding", "PMC sampling"):
        assert f"| {measure} " in printed
    # each decoding row times its warm-up call apart, with what compiling took (nothing: a CPU decodes eagerly)
    for measure in ("greedy", "sampling"):
        warm = numbers[measure]
        assert warm["warmup_seconds"] > 0 and warm["warmup_compile_s"] == warm["compile_s"] == 0
        row = next(line for line in printed.splitlines() if line.startswith(
            "| greedy decoding " if measure == "greedy" else "| PMC sampling "))
        assert f"; warm-up call {warm['warmup_seconds']:.1f} s, compiling 0.0 s in it, 0.0 s in all" in row
    assert numbers["training"]["tokens"] > 0 and numbers["training"]["tokens_per_s"] > 0
    # through the harness's own loop, with the run config's precision: the row says which
    assert numbers["training"]["precision"] == "fp32" and "| batch 2, max_length" not in printed
    assert any(line.startswith("| training ") and ", fp32, 2 steps" in line for line in printed.splitlines())
    plain = numbers["training"]["plain_loop"]  # the same steps without the harness: the row gives the ratio
    assert plain["tokens_per_s"] > 0 and plain["steps_per_s"] == pytest.approx(2 / plain["seconds"])
    # each loop timed twice (harness, plain, plain, harness), its time the mean: the process's drift cancels
    for timed_loop in (numbers["training"], plain):
        assert len(timed_loop["passes_s"]) == 2 and timed_loop["seconds"] == pytest.approx(
            sum(timed_loop["passes_s"]) / 2)
    ratio = numbers["training"]["steps_per_s"] / plain["steps_per_s"]
    assert f"harness / plain: {ratio:.2f}" in printed
    optimizer = numbers["training"]["optimizer_step_s"]  # the optimizer step alone, fused and not, with the ratio
    assert optimizer["fused"] > 0 and f"unfused / fused: {optimizer['unfused'] / optimizer['fused']:.2f}" in printed
    assert "| optimizer step, fused " in printed and "the run uses fused (training.fused_optimizer)" in printed
    assert numbers["greedy"]["answers"] == 6 and numbers["greedy"]["batch_size"] == 4
    assert numbers["sampling"]["answers"] == 6 * 3 and numbers["sampling"]["questions_per_call"] == 4
    # the same sampling calls through transformers' own warpers and draw, and the ratio
    warpers = numbers["sampling_transformers_warpers"]
    assert warpers["answers"] == 6 * 3 and warpers["tokens_per_s"] > 0
    ratio = numbers["sampling"]["tokens_per_s"] / warpers["tokens_per_s"]
    assert f"the draw covering the whole vocabulary; harness / transformers: {ratio:.2f}" in printed
    # the greedy and sampling calls again with finished rows kept (a CPU drops them by default): the same greedy
    # answers, and the ratio
    toggled = numbers["finished_rows_toggled"]
    assert toggled["drop_finished_rows"] is False and toggled["sampling"]["answers"] == 6 * 3
    assert toggled["greedy"]["answers"] == 6 and toggled["greedy"]["tokens"] == numbers["greedy"]["tokens"]
    for name, key in (("greedy decoding", "greedy"), ("PMC sampling", "sampling")):
        ratio = numbers[key]["tokens_per_s"] / toggled[key]["tokens_per_s"]
        assert f"| {name}, finished rows kept " in printed and f"; dropped / kept: {ratio:.2f}" in printed
    # scoring: the 6 pairs' answer log-probabilities at the run's rows per pass (4: --gen-batch, which scoring
    # follows), then at 1 and 3, each row with its ratio; tokens = the pairs' non-padding tokens, the same each time
    cfg = make_config()
    benchmark = instantiate(cfg.benchmark)
    fmt = prompt_format(cfg, benchmark)
    tokenizer = load_stage0(cfg, benchmark, fmt, {}).tokenizer  # from the cache the bench filled
    first = [r for records in benchmark.eval_sets.values() for r in records][:6]
    pair_tokens = sum(encode_pairs(tokenizer, fmt, [(r.question, r.answer)], 512).input_ids.shape[1]
                      for r in first)  # one pair at a time: no padding
    assert [(s["batch_size"], s["answers"], s["tokens"]) for s in numbers["scoring"]] == [
        (4, 6, pair_tokens), (1, 6, pair_tokens), (3, 6, pair_tokens)]
    assert any(line.startswith("| scoring ") and "6 answers' log-probabilities, 4 rows per forward pass" in line
               for line in printed.splitlines())
    for other in numbers["scoring"][1:]:
        ratio = other["tokens_per_s"] / numbers["scoring"][0]["tokens_per_s"]
        assert f"| scoring, {other['batch_size']} rows " in printed and f"/ 4 rows: {ratio:.2f}" in printed
    # one model's evaluation answers (eval=[paper] by default): its 5 splits, then their distinct questions at once
    evaluation = numbers["evaluation_decoding"]
    benchmark = instantiate(make_config().benchmark)
    sets = benchmark.eval_sets
    splits = [[r.question for r in sets["forget"]], [r.question for r in benchmark.retain],
              [r.question for r in sets["world_facts"]], [r.question for r in sets["real_authors"]],
              [r.paraphrased_question for r in sets["forget"]]]
    distinct = {q for split in splits for q in split}
    assert (evaluation["splits"], evaluation["answers"], evaluation["distinct"]) == (
        5, sum(map(len, splits)), len(distinct))
    assert evaluation["split_by_split"]["calls"] == sum(-(-len(split) // 4) for split in splits)
    assert evaluation["planned"]["calls"] == -(-len(distinct) // 4)
    times = evaluation["split_by_split"]["seconds"] / evaluation["planned"]["seconds"]
    assert "| evaluation decoding, planned " in printed and f"split by split / planned: {times:.2f}" in printed
    job_rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in printed.splitlines()
                if line.startswith("| job: ")}
    assert job_rows == {"job: data": "0.5", "job: stage0": "12.0", "job: unlearn": "30.2", "job: eval": "7.0",
                        "job: eval.greedy_answers": "4.5", "job: eval.paper": "2.2",  # parts of eval, not in the total
                        "job: unlearn.setup": "3.5", "job: unlearn.sampling": "11.8",  # and of unlearn
                        "job: total": "49.8", "job: graphs compiled": "1", "job: compiling": "61.2",
                        "job: compile cache hit / missed / bypassed": "4 / 1 / 0", "job: CUDA graphs recorded": "3",
                        "job: CUDA graphs skipped": "2"}
    assert "built: target, retain" in printed
    assert any(line.startswith("| job: unlearn.sampling ") and "part of unlearn: PMC's samples decoded" in line
               for line in printed.splitlines())
    assert json.loads((tmp_path / "bench.json").read_text())["job"]["timings_s"]["eval"] == 7.0
    # --profile: one row per phase, per training step or model forward; on a CPU no device columns
    profile = numbers["profile"]
    assert profile["training"]["units"] == 3 and profile["training"]["wall_ms"] == pytest.approx(
        1000 / numbers["training"]["steps_per_s"])
    assert profile["greedy"]["unit"] == "model forward" and profile["greedy"]["units"] >= 2  # prefill + a step
    assert "device_busy_ms" not in profile["sampling"]
    # eager operators, counted apart: a training step (forward, backward, clipping, optimiser) runs more than a
    # decoding step's forward
    assert profile["training"]["operators"] > profile["greedy"]["operators"] > 0
    greedy_row = next(line for line in printed.splitlines() if line.startswith("| greedy (per model forward, "))
    assert greedy_row.split("|")[3].strip() == f"{profile['greedy']['operators']:.0f}"
    assert "| training (per training step, 3) " in printed and "| greedy (per model forward, " in printed
    assert json.loads((tmp_path / "profile" / "profile.json").read_text()) == profile
    for phase in ("training", "greedy", "sampling"):
        assert "aten::mm" in (tmp_path / "profile" / f"profile_{phase}.txt").read_text()


@pytest.mark.slow  # continuous batching's scheduler costs seconds per call on a CPU
def test_bench_throughput_times_continuous_batching_beside_fixed_batches(stage0_cache, tmp_path, capsys):
    numbers = bench().main(["--no-job", "--steps", "1", "--questions", "6", "--gen-batch", "4",
                            "--continuous-batching", *SMALL, f"cache_dir={stage0_cache}"])
    printed = capsys.readouterr().out
    continuous, fixed = numbers["continuous_batching"], numbers["greedy"]
    assert continuous["answers"] == fixed["answers"] == 6 and continuous["tokens"] == fixed["tokens"]  # same answers
    ratio = continuous["tokens_per_s"] / fixed["tokens_per_s"]
    assert "| greedy decoding, continuous batching " in printed and f"/ fixed batches: {ratio:.2f}" in printed


def test_profile_summary_per_unit_on_a_gpu_from_operator_statistics():
    def event(key, count, device_us, on=DeviceType.CPU):
        return type("Event", (), {"key": key, "count": count, "self_device_time_total": device_us,
                                  "device_type": on, "is_user_annotation": False})()

    # aten::mm's self device time is its kernel's, which has an event of its own: counted once
    events = [event("cudaLaunchKernel", 6, 0), event("aten::mm", 3, 1500.0), event("cudaStreamSynchronize", 2, 0),
              event("aten::embedding", 3, 0), event("sm90_xmma_gemm_f32f32", 3, 1500.0, DeviceType.CUDA)]
    summary = bench().profile_summary(events, 0.010, 3, "model forward", torch.device("cuda"), operators=300.0)
    assert summary == pytest.approx({"unit": "model forward", "units": 3, "wall_ms": 10 / 3, "operators": 300.0,
                                     "device_busy_ms": 0.5, "device_busy_share": 0.15, "kernel_launches": 2.0,
                                     "synchronisations": 2 / 3})
    assert bench().forwards(events) == 3


def test_operator_count_counts_what_runs_a_kernel_and_the_model_forwards():
    count = bench().OperatorCount()
    x, w = torch.ones(2, 4), torch.ones(3, 4)
    with count:
        x.t()  # a view: not counted, and nothing counts while counting is off
        count.counting = True
        y = torch.nn.functional.linear(x, w)  # composite: t (a view) and mm (a kernel)
        y.view(6).reshape(3, 2).unsqueeze(0)  # views and a reshape that is a view
        torch.empty(5)  # an allocation
        (y + 1).sum()  # two kernels
        torch.nn.functional.embedding(torch.tensor([0, 1]), w)  # a model forward starts with its embedding
        count.counting = False
        y * 2
    assert (count.operators, count.forwards) == (4, 1)


def test_bench_throughput_refuses_zero_training_steps(capsys):
    with pytest.raises(SystemExit):
        bench().main(["--steps", "0", "--no-job"])
    assert "--steps: at least 1 timed training step, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench().main(["--warmup-steps", "0", "--no-job"])
    assert "--warmup-steps: at least 1, got 0" in capsys.readouterr().err


def test_bench_throughput_trains_its_warm_up_steps_untimed_before_the_timed_ones(stage0_cache, monkeypatch):
    """--warmup-steps: with compile_mode=reduce-overhead every new micro-batch shape records CUDA graphs, so a
    GPU run gives the warm-up enough steps to meet them all; both loops train warm-up + timed steps."""
    module = bench()
    logged, plain_steps = [], []
    harness_steps = module.harness_steps
    monkeypatch.setattr(module, "harness_steps", lambda model, tokenizer, fmt, chosen, training, log_step, desc:
                        harness_steps(model, tokenizer, fmt, chosen, training,
                                      lambda entry: (logged.append(entry["step"]), log_step(entry)), desc))
    answer_nll = module.answer_nll
    monkeypatch.setattr(module, "answer_nll", lambda model, batch: (plain_steps.append(1), answer_nll(model, batch))[1])
    numbers = module.main(["--training-only", "--steps", "2", "--warmup-steps", "3", *SMALL,
                           f"cache_dir={stage0_cache}"])
    assert logged == [1, 2, 3, 4, 5] * 2 and len(plain_steps) == 5 * 2  # each loop twice
    assert numbers["training"]["steps_per_s"] == pytest.approx(2 / numbers["training"]["seconds"])


def test_bench_pmc_sampling_makes_one_sampling_call_per_optimizer_step_with_step(stage0_cache, capsys):
    """Micro-batches of 1, 2 to an optimizer step: in the first epoch (every question pending) the official schedule
    makes a call per question, sample_every=step one per pair, and both sample every question n = 5 times."""
    rows = load_script("bench_pmc_sampling").main([
        "--epochs", "1", "--modes", "batch,step", "--cache-dir", str(stage0_cache), *SMALL,
        "method.training.batch_size=1", "method.training.gradient_accumulation_steps=2"])
    printed = capsys.readouterr().out
    questions = int(re.search(r"; (\d+) forget questions, 1 epochs, micro-batch 1 x 2 a step;", printed).group(1))
    assert questions >= 3
    assert [(r["mode"], r["calls"], r["sampled"]) for r in rows] == [
        ("batch", questions, 5 * questions), ("step", -(-questions // 2), 5 * questions), ("graddiff", 0, None)]
    # each PMC row's time per epoch against GradDiff's, trained with the same settings in the same run
    step, graddiff = rows[1], rows[2]
    assert printed.startswith("device: ") and "[cpu]; torch " in printed.splitlines()[0]
    assert (f"| step | cpu | {step['epoch_s']:.2f} | {step['epoch_s'] / graddiff['epoch_s']:.2f} "
            f"| {-(-questions // 2)} | {5 * questions} |") in printed
    assert f"| GradDiff, the same training settings | cpu | {graddiff['epoch_s']:.2f} | 1.00 | 0 |" in printed


def test_bench_pmc_sampling_without_its_baseline(stage0_cache, capsys):
    rows = load_script("bench_pmc_sampling").main([
        "--epochs", "1", "--modes", "epoch", "--no-baseline", "--cache-dir", str(stage0_cache), *SMALL])
    assert [r["mode"] for r in rows] == ["epoch"]
    printed = capsys.readouterr().out
    assert f"| epoch | cpu | {rows[0]['epoch_s']:.2f} | - | 1 |" in printed and "GradDiff, the same" not in printed


def test_bench_decoding_compile_compares_the_modes_each_in_its_own_process(stage0_cache, capsys):
    """Each mode compiles in a fresh process (dynamo's eager backend here: tracing only) and reports its graphs:
    null traces the first width static and then the batch symbolic, varying one graph for every width, both with the
    same greedy answers."""
    rows = load_script("bench_decoding_compile").main([
        "--modes", "null,varying", "--questions", "6", "--first-only", f"cache_dir={stage0_cache}", *SMALL,
        "generation.compile=eager", "generation.batch_size=4"])
    assert [(r["mode"], r["compiled_graphs"]) for r in rows] == [("null", 2), ("varying", 1)]
    assert rows[0]["answers"] == rows[1]["answers"] and len(rows[0]["answers"]) == 6
    printed = capsys.readouterr().out
    assert printed.startswith("device: ") and "[cpu]; torch " in printed.splitlines()[0] and "backend eager" in printed
    assert f"| varying | 1 | {rows[1]['compile_s']:.1f} | {rows[1]['seconds']:.1f} | - | - | - | 0 | yes |" in printed


@pytest.mark.slow  # inductor generates C++ code on a CPU: ~1 minute
def test_bench_decoding_compile_second_process_reads_the_code_the_first_generated(stage0_cache, capsys):
    """A sweep's later compiled jobs read inductor's code from the cache the first one filled (compile_cache_dir):
    the second process traces the step again but generates none of its code, so it compiles in a fraction of the
    first's time, and decodes the same answers."""
    [row] = load_script("bench_decoding_compile").main([
        "--modes", "varying", "--questions", "6", f"cache_dir={stage0_cache}", *SMALL, "generation.batch_size=4"])
    second = row["second"]
    assert row["backend"] == "inductor" and row["compile_cache_hits"] == 0 and row["compile_cache_misses"] >= 1
    assert second["compile_cache_hits"] == row["compile_cache_misses"] and second["compile_cache_misses"] == 0
    assert second["compile_s"] < row["compile_s"] / 2
    assert second["answers"] == row["answers"]
    assert (f"| varying | 1 | {row['compile_s']:.1f} | {row['seconds']:.1f} | {second['compile_s']:.1f} | "
            f"{second['seconds']:.1f} | {second['compile_cache_hits']} / 0 | 0 | yes |") in capsys.readouterr().out


def gpu_check_dry_run(out_dir, timeout: int, **settings: str) -> subprocess.CompletedProcess:
    """scripts/gpu_check.sh's dry run (GPU_CHECK_DRY=1) packing into `out_dir`, with `settings` as its environment
    variables; PYTHON is the tests' interpreter (the script's default, the python3 on the PATH, need not be it)."""
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_DRY="1", OUT=str(out_dir), **settings)
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("setting, message", [
    ({"GPU_CHECK_PARALLEL": "two"}, "error: GPU_CHECK_PARALLEL: a positive integer, not 'two'"),
    ({"GPU_CHECK_BENCH": "yes"}, "error: GPU_CHECK_BENCH: 1, 0 or leftover, not 'yes'"),
])
def test_gpu_check_refuses_a_bad_setting_before_doing_anything(tmp_path, setting, message):
    out = gpu_check_dry_run(tmp_path / "out", 60, **setting)
    assert out.returncode == 2
    assert out.stderr.strip() == message
    assert not (tmp_path / "out").exists()  # nothing packed, nothing made


def test_gpu_scripts_parse_and_the_device_folder_is_ignored():
    for script in ("gpu_check.sh", "prepare_device.sh"):
        subprocess.run(["bash", "-n", str(REPO / "scripts" / script)], check=True)
    ignored = subprocess.run(["git", "check-ignore", ".device/tofu/full.json", "gpu_check_out/summary.txt"],
                             cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.split() == [".device/tofu/full.json", "gpu_check_out/summary.txt"]


@pytest.mark.skipif(not (REPO / ".device" / "persist-1" / "payload.parts").is_file(),
                    reason="no .device/ in this checkout: scripts/prepare_device.sh fills it")
def test_every_device_call_that_prepare_device_plans_fits_in_64_mib():
    """A call to the device machine carries the checkout (tracked files and untracked ones git does not ignore) and
    at most 64 MiB in all: prepare_device.sh sizes the payload's parts so that each call (one part; the last one
    with wheels/ and tofu/ too) fits beside the checkout as it is now."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    checkout = sum((REPO / name).lstat().st_size for name in listed if name and os.path.lexists(REPO / name))
    device = REPO / ".device"

    def size(folder):
        return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())

    parts = int((device / "persist-1" / "payload.parts").read_text())
    assert sorted(p.name for p in device.glob("persist-*")) == [f"persist-{k}" for k in range(1, parts + 1)]
    for k in range(1, parts + 1):
        carried = size(device / f"persist-{k}") + (size(device / "wheels") + size(device / "tofu") if k == parts else 0)
        assert checkout + carried <= 64 * 2**20, (
            f"call {k} would carry {(checkout + carried) / 2**20:.1f} MiB (checkout {checkout / 2**20:.1f} MiB): "
            "the checkout grew since .device/ was prepared; run scripts/prepare_device.sh again")


@pytest.mark.slow
@pytest.mark.skipif(not (TOFU_DIR / "forget10.json").is_file(), reason=f"real TOFU data not found at {TOFU_DIR}")
def test_gpu_check_dry_run_packs_three_jobs_and_both_tables(tmp_path):
    runs = tmp_path / "runs-kept-between-calls"
    settings = dict(OMP_NUM_THREADS="1",
                    GPU_CHECK_DEVICE_DIR=str(tmp_path / "no-device-folder"),  # TOFU from ../shared, nothing to install
                    # every job keeps its checkpoints (1.6 GB each for SmolLM2): the archive must leave them out
                    GPU_CHECK_EXTRA="checkpoint.keep=true checkpoint.min_interval_s=0",
                    GPU_CHECK_MORE="ga_lr1e-4=method=ga,method.training.learning_rate=1e-4",
                    GPU_CHECK_PARALLEL="2", GPU_CHECK_RUNS=str(runs))
    out = gpu_check_dry_run(tmp_path, 600, **settings)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = (tmp_path / "summary.txt").read_text()
    for job in ("graddiff", "npo", "pmc", "ga_lr1e-4"):
        assert f"{job}: exit 0" in summary
    # side by side, each job's block stays whole: its exit line is followed by its own timings
    blocks = summary.split("\n[")
    assert all("timings_s" in block.splitlines()[1] for block in blocks if ": exit 0 after" in block)
    assert "'target': {'paper': 'hit', 'tofu': 'hit'}" in summary  # the jobs after the first read stage-0 scores
    assert re.search(r"\| initial state: \{'pmc.initial_answers': '(hit|miss)'\}", summary)  # PMC's job says where
    # eager jobs: nothing compiled
    assert summary.count("| graphs compiled: 0 in 0.0 s | compile cache hit/missed/bypassed: 0/0/0 "
                         "| CUDA graphs recorded: 0 | skipped: 0") == 4
    # GradDiff and NPO started together and built stage 0 between them: one the target, the other the retain model
    built = {job: set(re.findall(r"'tiny-(\w+)-", re.search(rf"\] {job}: exit 0.*\n.*stage 0 built: (.*)",
                                                              summary).group(1))) for job in ("graddiff", "npo")}
    assert built["graddiff"] and built["npo"] and not built["graddiff"] & built["npo"], built
    assert {"target", "retain"} <= built["graddiff"] | built["npo"], built
    assert "| method=ga method.training.learning_rate=1e-4 | ga |" in summary  # the extra job is in the table
    assert "requirements met (pyproject.toml, with the smollm2 extra)" in summary
    assert "\ndevice: " in summary and "| greedy (per model forward, " in summary  # the throughput table and profile
    with tarfile.open(tmp_path / "gpu_check.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"./runs/pmc/results.json", "./runs/npo/eval/unlearned/tofu.json", "./runs/ga_lr1e-4/results.json",
            "./tables/gpu_check.md", "./tables/throughput.json", "./logs/bench.log", "./summary.txt",
            "./tables/profile/profile.json", "./tables/profile/profile_greedy.txt"} <= names
    assert not [name for name in names if "checkpoints" in name]

    # the same command again, as on a machine still warm: the finished jobs are skipped, a new one runs with the
    # whole budget (none kept for the throughput table), and the table comes in the time it leaves, with options
    # and overrides of its own after the check's overrides (docs/gpu.md's second call)
    settings.update(GPU_CHECK_BENCH="leftover", GPU_CHECK_MORE=settings["GPU_CHECK_MORE"] + " idk=method=idk",
                    GPU_CHECK_BENCH_ARGS="--warmup-steps 2 method.training.pad_to_multiple_of=64")
    again = gpu_check_dry_run(tmp_path, 600, **settings)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = (tmp_path / "summary.txt").read_text()
    for job in ("graddiff", "npo", "pmc", "ga_lr1e-4"):
        assert f"{job}: done in an earlier call ({runs / job})" in summary
    limit = int(re.search(r"idk: exit 0 after \d+s \(limit (\d+)s\)", summary).group(1))
    assert limit > 470 - 20 - 120  # the default budget less the archive's 20 s, and more than the table's 120 s kept
    assert "bench_throughput: exit 0" in summary and "\ndevice: " in summary
    assert "padded to multiples of 64" in summary  # the bench's own override was applied
    assert "| method=idk | idk |" in summary and "| method=npo | npo |" in summary  # the table has every job


@pytest.mark.slow
@pytest.mark.skipif(not (TOFU_DIR / "forget10.json").is_file(), reason=f"real TOFU data not found at {TOFU_DIR}")
def test_gpu_check_reports_a_job_cut_by_its_limit_as_timed_out(tmp_path):
    # 2000 epochs cannot finish in what a 66 s budget leaves the first job: timeout's status must reach the summary
    out = gpu_check_dry_run(tmp_path, 300, OMP_NUM_THREADS="1", GPU_CHECK_BENCH="0", GPU_CHECK_BUDGET_S="66",
                            GPU_CHECK_EXTRA="method.training.epochs=2000",
                            GPU_CHECK_DEVICE_DIR=str(tmp_path / "no-device-folder"))
    assert out.returncode == 0, out.stdout + out.stderr
    summary = (tmp_path / "summary.txt").read_text()
    assert re.search(r"graddiff: exit 124 after \d+s \(limit \d+s\), TIMED OUT", summary), summary
    assert "graddiff: exit 0" not in summary


@pytest.mark.skipif(not (TOFU_DIR / "forget10.json").is_file(), reason=f"real TOFU data not found at {TOFU_DIR}")
def test_bench_rouge_times_both_scorers_on_the_same_scores(capsys):
    module = load_script("bench_rouge")
    numbers = module.main(["--data-dir", str(TOFU_DIR), "--passes", "1"])
    printed = capsys.readouterr().out
    assert numbers["pairs"] == 2000 and len(numbers["harness_s"]) == len(numbers["rouge_score_s"]) == 1
    ratio = numbers["rouge_score_s"][0] / numbers["harness_s"][0]
    assert printed.startswith("device: ") and "the same scores: True" in printed
    assert f"rouge-score / harness: {ratio:.2f}" in printed
    module.rouge_l_recall = lambda reference, candidate: 0.0  # a scorer that disagrees stops the bench
    with pytest.raises(SystemExit, match="differs from rouge-score's"):
        module.main(["--data-dir", str(TOFU_DIR), "--passes", "1"])
