#!/usr/bin/env bash
# Times `make run` as a new user meets it: a fresh clone of this repository's HEAD in a new virtual environment,
# install included, then a second run (cached stage-0 models). Prints both wall times, each run's stage timings
# (results.json's timings_s) and the printed table. The README's quickstart figures come from this script.
#
#   bash scripts/bench_make_run.sh        # ~4 min on 2 CPU cores; run it on an otherwise idle machine
#
# PMC_CACHE_DIR and thread settings are cleared so the run builds its stage-0 models in the clone, as a new user's would.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d /tmp/bench_make_run.XXXX)
git clone -q "$repo" "$work/main"
python -m venv "$work/venv"
cd "$work/main"
unset PMC_CACHE_DIR OMP_NUM_THREADS MKL_NUM_THREADS

timed_make_run() {  # $1: log file; prints the wall time in seconds
    local start end
    start=$(date +%s.%N)
    make run PYTHON="$work/venv/bin/python" > "$1" 2>&1 || { echo "make run failed, see $1" >&2; exit 1; }
    end=$(date +%s.%N)
    python -c "print(f'{$end - $start:.1f}')"
}

first=$(timed_make_run "$work/make_run_1.log")
second=$(timed_make_run "$work/make_run_2.log")
echo "commit $(git rev-parse --short HEAD), $(nproc) CPU cores, $(python -c 'import platform; print(platform.processor() or platform.machine())')"
echo "fresh-clone make run (install included): $first s"
echo "second make run (stage 0 cached):        $second s"
for results in outputs/quickstart/*/*/results.json; do
    python -c "import json, sys; print(sys.argv[1].split('/', 1)[1], json.load(open(sys.argv[1]))['timings_s'])" "$results"
done
grep -A5 "^model" "$work/make_run_1.log"
echo "logs in $work"
