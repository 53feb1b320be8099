#!/usr/bin/env bash
# Download, here, the wheels that nsneurons needs on the GPU machine beyond what its image holds
# (python3 3.12 with torch 2.11, transformers 5.17, accelerate, xarray, numpy, pandas, pyarrow,
# pytest, ...: /work/.library/device/KINDS.md), into .gpu-wheels/ (ignored by git). The GPU
# machine has no network: `bench/gpu_check.sh` installs these with --no-index --no-deps.
#
# Usage: bash bench/gpu_wheels.sh [DIR]   (default .gpu-wheels; then carry it: carry: [".gpu-wheels"])
#
# The set: the project's runtime dependencies that the image lacks, and theirs, at the versions
# this repository's .venv runs (so the GPU runs the code CI tests), as cp312 manylinux x86_64
# wheels, --no-deps so that pip pulls nothing else in. typing-extensions is carried too: pydantic
# needs a recent one and the image's version is not recorded (a newer one serves torch as well).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST="${1:-.gpu-wheels}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

PINS=(
  nnsight==0.8.1            # traces (nsneurons' core); compiled (cp312 wheel)
  greenlet==3.5.6           # nnsight: runs the trace body in a greenlet; compiled
  pydantic==2.14.4          # nnsight: request schemas, imported with nnsight
  pydantic-core==2.50.5     # pydantic; compiled
  annotated-types==0.8.0    # pydantic
  typing-inspection==0.4.5  # pydantic
  typing-extensions==4.16.0 # pydantic needs >= 4.14
  websocket-client==1.9.2   # nnsight's remote backend (imported by nsneurons.remote)
  zstandard==0.25.0         # nnsight: compresses remote requests; compiled
  zarr==3.1.6               # score stores and results
  donfig==0.8.1.post1       # zarr
  numcodecs==0.16.6         # zarr; compiled
  google-crc32c==1.9.0      # zarr; compiled
  datasets==5.2.0           # task files are read through datasets.load_dataset (even the fixtures)
  dill==0.4.1               # datasets
  multiprocess==0.70.19     # datasets
  gguf==0.19.0              # GGUF model files (a declared dependency; pure Python, small)
)
rm -rf "$DEST"
mkdir -p "$DEST"
# pip matches manylinux_2_N exactly: list the tags these packages publish for CPython 3.12.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DEST" "${PINS[@]}"
count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne "${#PINS[@]}" ]; then
  echo "gpu_wheels: expected ${#PINS[@]} wheels, got $count in $DEST" >&2
  exit 1
fi
ls -l "$DEST"
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "gpu_wheels: $count wheels, $((bytes / 1048576)) MiB ($bytes bytes) in $DEST"
# The working tree and the carried paths travel together, 64 MiB at most.
if [ "$bytes" -gt $((48 * 1048576)) ]; then
  echo "gpu_wheels: over 48 MiB, which leaves too little of the 64 MiB for the working tree" >&2
  exit 1
fi
