#!/usr/bin/env bash
# Times `make run` as a new user meets it: a fresh clone of this repository's HEAD in a new virtual environment,
# install included, then a second run (cached stage-0 models). Prints both wall times, each run's stage timings
# (results.json's timings_s) and the printed table. The README's quickstart figures come from this script.
#
#   bash scripts/bench_make_run.sh                 # ~4 min on 2 CPU cores; run it on an otherwise idle machine
#   bash scripts/bench_make_run.sh BASELINE_REV    # also a fresh-clone make run of that commit, then the ratio
#
# A machine's speed drifts from hour to hour, so compare against a baseline timed in the same invocation.
# PMC_CACHE_DIR and thread settings are cleared so each run builds its stage-0 models in its clone, as a new user's
# would.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
baseline_rev=${1:-}
work=$(mktemp -d /tmp/bench_make_run.XXXX)
unset PMC_CACHE_DIR OMP_NUM_THREADS MKL_NUM_THREADS

fresh_clone() {  # $1: commit, $2: folder; a clone at that commit with its own virtual environment
    git clone -q "$repo" "$2"
    git -C "$2" checkout -q "$1"
    python -m venv "$2/.venv"
}

timed_make_run() {  # $1: clone, $2: log file; prints the wall time in seconds
    local start end
    start=$(date +%s.%N)
    make --no-print-directory -C "$1" run PYTHON="$1/.venv/bin/python" > "$2" 2>&1 \
        || { echo "make run failed, see $2" >&2; exit 1; }
    end=$(date +%s.%N)
    python -c "print(f'{$end - $start:.1f}')"
}

head_rev=$(git -C "$repo" rev-parse --short HEAD)
fresh_clone "$head_rev" "$work/head"
first=$(timed_make_run "$work/head" "$work/head_1.log")
second=$(timed_make_run "$work/head" "$work/head_2.log")
if [[ -n "$baseline_rev" ]]; then
    fresh_clone "$baseline_rev" "$work/baseline"
    baseline=$(timed_make_run "$work/baseline" "$work/baseline_1.log")
fi

echo "$(nproc) CPU cores, $(uname -m), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "HEAD $head_rev: fresh-clone make run (install included): $first s; second make run (stage 0 cached): $second s"
[[ -z "$baseline_rev" ]] || echo "baseline $baseline_rev: fresh-clone make run: $baseline s; HEAD / baseline = $(
    python -c "print(f'{$first / $baseline:.2f}')")"
for results in "$work"/*/outputs/quickstart/*/*/results.json; do
    python -c "import json, sys; print(sys.argv[2], json.load(open(sys.argv[1]))['timings_s'])" \
        "$results" "${results#"$work"/}"
done
grep -A5 "^model" "$work/head_1.log"
echo "logs in $work"
