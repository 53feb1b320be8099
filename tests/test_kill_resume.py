"""CI's small configuration of tests/kill_resume.py: `run` and `score` killed (SIGKILL, Ctrl-C, SIGTERM)
at their store-creation instants and a few more checkpoints, resumed, equal to uninterrupted runs.
`python tests/kill_resume.py` tries every checkpoint (>= 30 per command)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_killed_runs_and_scores_resume_to_identical_outputs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run(
        [sys.executable, str(HERE / "kill_resume.py"), "--small", "--points", "2", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert sum("-> resumed, identical" in line for line in lines) >= 7
    # The store-creation instants are always among the kill points.
    assert any("zarr.begun:sentiment-ace.zarr" in line for line in lines)
    assert any("zarr.written:scores.zarr" in line for line in lines)
