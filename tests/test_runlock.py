"""One run per output at a time: the second is refused with the holder named; a dead holder's lock is taken over."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nsneurons import cli
from nsneurons.runlock import OutputLockedError, output_lock

ROOT = Path(__file__).resolve().parent.parent
HOLD = "import sys; from nsneurons.runlock import output_lock\nwith output_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()"


def _holder(lock):
    """A process (no torch: it starts at once) holding `lock` until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _release(proc):
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_a_second_holder_is_refused_with_the_first_named_then_admitted(tmp_path):
    lock = tmp_path / "out" / ".nsneurons.lock"
    proc = _holder(lock)
    try:
        with pytest.raises(
            OutputLockedError,
            match=f"{tmp_path / 'out'} is in use by another nsneurons run "
            rf"\(pid {proc.pid} on host {socket.gethostname()}, started ",
        ):
            with output_lock(lock):
                pass
    finally:
        _release(proc)
    assert not lock.exists()  # the holder removed it on its way out
    with output_lock(lock):
        assert f'"pid": {os.getpid()}' in lock.read_text()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    lock = tmp_path / ".nsneurons.lock"
    lock.write_text(f'{{"pid": {dead}, "host": "{socket.gethostname()}", "started": "earlier", "command": "nsneurons run x"}}')
    with output_lock(lock):
        assert f'"pid": {os.getpid()}' in lock.read_text()
    assert f"was left by a run that is gone (pid {dead} on host {socket.gethostname()}" in capsys.readouterr().err


def test_run_and_score_refuse_a_held_output_before_loading_anything(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: busy\nmodel: /nowhere\ntasks: [sentiment]\noutput: {tmp_path}\n")
    proc = _holder(tmp_path / "busy" / ".nsneurons.lock")
    try:
        assert cli.main(["run", str(recipe)]) == 4  # runtime: the folder is busy
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / 'busy'} is in use by another nsneurons run (pid {proc.pid} on host ")
        assert len(err.strip().splitlines()) == 1
    finally:
        _release(proc)
    proc = _holder(tmp_path / "s.zarr.lock")
    try:
        assert cli.main(["score", "--model", "/nowhere", "--task", "sentiment", "--out", str(tmp_path / "s.zarr")]) == 4
        assert f"in use by another nsneurons run (pid {proc.pid} on host " in capsys.readouterr().err
    finally:
        _release(proc)
