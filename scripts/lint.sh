#!/usr/bin/env bash
# The checks tests/test_lint.py runs, for a quick look while editing; `--fix` formats and applies
# ruff's safe fixes first. Configuration: pyproject.toml ([tool.ruff], [tool.mypy], [tool.pylint]) and .flake8.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
CODE=(nsneurons tests scripts bench)
if [ "${1:-}" = "--fix" ]; then
    "$PY" -m ruff format "${CODE[@]}" && "$PY" -m ruff check --fix "${CODE[@]}"
fi
status=0
"$PY" -m ruff check "${CODE[@]}" || status=1
"$PY" -m ruff format --check "${CODE[@]}" || status=1
"$PY" -m mypy || status=1
"$PY" -m flake8 nsneurons || status=1   # no function over 60 lines
"$PY" -m pylint --score=n nsneurons || status=1  # no module over 350 lines
exit $status
