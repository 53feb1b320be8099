#!/usr/bin/env bash
# The GPU machine's one call (bench/README.md, "GPU check"):
#   bash bench/gpu_check.sh --out "$OUT"            with carry: [".gpu-wheels"] (made by bench/gpu_wheels.sh)
# Runs bench/gpu_check.py under that machine's python3 (the image's torch, transformers, ...); it
# installs the carried wheels itself (--no-index --no-deps, into a scratch folder) and records
# every stage, going on after a stage that fails. Any gpu_check.py option passes through
# (--shrink, --only STAGES, --budget-s S).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
