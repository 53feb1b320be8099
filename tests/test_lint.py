"""The linters, formatter and type checker configured in pyproject.toml (and .flake8) pass.

Each runs as its own test so a failure names the tool and prints its findings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ["nsneurons", "tests", "scripts", "bench"]

CHECKS = {
    "ruff-lint": ["ruff", "check", *CODE],
    "ruff-format": ["ruff", "format", "--check", *CODE],
    "mypy": ["mypy"],  # files and settings from [tool.mypy]
    "function-length": ["flake8", "nsneurons"],  # CFQ001: no function over 60 lines (.flake8)
    "module-length": ["pylint", "nsneurons"],  # too-many-lines: no module over 350 lines ([tool.pylint])
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CHECKS))
def test_tool_passes(name):
    done = subprocess.run([sys.executable, "-m", *CHECKS[name]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if "No module named" in done.stderr:
        pytest.fail(f"{CHECKS[name][0]} is not installed: `pip install -e '.[test]'` (scripts/setup.sh does)")
    assert done.returncode == 0, f"{name} found problems:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
