#!/usr/bin/env bash
# Idempotent set-up: .venv, CPU torch from the local file, the package with test extras, the demo model.
# Re-running is cheap: pip skips what is installed; the demo model is cached
# ($NSNEURONS_CACHE or ~/.cache/nsneurons) and verified by a marker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${PIP[@]}" install --upgrade pip
# torch first and pinned: 2.13.0 is the CPU build on disk; a looser requirement pulls a multi-GB CUDA build.
"${PIP[@]}" install torch==2.13.0
"${PIP[@]}" install -e ".[test]"
echo "setup: fetching the demo model (SmolLM2-135M-Instruct)" >&2
log="$(mktemp)"
if ! .venv/bin/python -c "from nsneurons.demo_model import ensure_demo_model_dir; print(ensure_demo_model_dir())" >"$log" 2>&1; then
    echo "setup: fetching the demo model failed:" >&2
    grep -v -e 'Converting and de-quantizing' -e 'Loading weights' -e 'Writing model shards' "$log" | tail -n 40 >&2
    rm -f "$log"
    exit 1
fi
echo "setup: demo model at $(tail -n 1 "$log")" >&2
rm -f "$log"
echo "setup: done" >&2
