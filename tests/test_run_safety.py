"""`nsneurons run` never reuses what it should not: a damaged cached task, replaced model weights or
an edited data file at the same path are refused with the difference named; a second simultaneous
run is refused with the holder named, and the first one, killed, resumes."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml
from fixtures_models import save_tiny_llama

from nsneurons import cli
from nsneurons.tasks.loading import DATA_DIR

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "name": "safe",
    "device": "cpu",
    "identification_examples": 2,
    "attribution": {"steps": 1},
    "selection": {"methods": ["neuronllm"], "k": 5, "z": 20},
    "evaluation": {"understood": 2, "not_understood": 2, "candidates": 4, "ratios": [0.5, 1.0]},
}


def _recipe(where: Path, model: Path, data: Path) -> Path:
    path = where / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {**SETTINGS, "model": str(model), "output": str(where / "out"), "tasks": [{"name": "sentiment", "source": str(data)}]}
        )
    )
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run whose model folder and data file are its own (tests copy all three)."""
    where = tmp_path_factory.mktemp("finished")
    model, data = save_tiny_llama(where / "model"), where / "sentiment.jsonl"
    shutil.copy(DATA_DIR / "sentiment.jsonl", data)
    assert cli.main(["run", str(_recipe(where, model, data))]) == 0
    return where


def _copy(finished: Path, where: Path) -> Path:
    """The finished run with its model and data moved elsewhere (same content); the copy's recipe."""
    for name in ("model", "out"):
        shutil.copytree(finished / name, where / name)
    shutil.copy(finished / "sentiment.jsonl", where / "sentiment.jsonl")
    return _recipe(where, where / "model", where / "sentiment.jsonl")


def test_a_damaged_cached_task_is_named_not_reused(finished, tmp_path, capsys):
    recipe = _copy(finished, tmp_path)
    chunk = tmp_path / "out" / "safe" / "tasks" / "sentiment.zarr" / "sweep" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    line = (
        f"{chunk.parents[5]}: variable 'sweep': chunk c/0/0/0/0 is damaged (ValueError: Stored and computed checksum do not match"
    )
    assert cli.main(["run", str(recipe)]) == 3  # bad input: a damaged store
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: damaged store: {line}")
    assert cli.main(["check", str(tmp_path / "out" / "safe")]) == 1
    assert [l[: len(line)] for l in capsys.readouterr().out.splitlines()] == [line]


def test_moved_inputs_are_reused_but_replaced_weights_or_edited_data_are_refused(finished, tmp_path, capsys):
    recipe = _copy(finished, tmp_path)
    assert cli.main(["run", str(recipe)]) == 0  # other paths, same content: nothing recomputed
    assert "task sentiment: results exist with the same settings, skipped" in capsys.readouterr().out
    before = xr.open_zarr(tmp_path / "out" / "safe" / "tasks" / "sentiment.zarr", consolidated=False).load()

    shutil.rmtree(tmp_path / "model")
    save_tiny_llama(tmp_path / "model", seed=1)  # other weights, the same path
    assert cli.main(["run", str(recipe)]) == 3
    out, err = capsys.readouterr()
    assert "stored results were made differently (model_provenance.weights_sha256); recomputing" in out
    assert "weights_sha256: store has '" in err and "(the model's files changed)" in err

    shutil.rmtree(tmp_path / "model")
    shutil.copytree(finished / "model", tmp_path / "model")  # the model back; now the data changes
    rows = (tmp_path / "sentiment.jsonl").read_text().replace('"text": "', '"text": "Honestly, ')  # every question edited
    (tmp_path / "sentiment.jsonl").write_text(rows)
    assert cli.main(["run", str(recipe)]) == 3
    out, err = capsys.readouterr()
    assert "stored results were made differently (tasks.0.source.sha256); recomputing" in out
    assert "prompts_sha256: store has '" in err and "(the prompts changed (data file or template))" in err
    # Nothing was overwritten by the refused runs.
    xr.testing.assert_identical(
        before, xr.open_zarr(tmp_path / "out" / "safe" / "tasks" / "sentiment.zarr", consolidated=False).load()
    )


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_two_runs_at_once_the_second_is_refused_and_the_first_resumes_after_kill_9(finished, tmp_path, capsys):
    recipe = _recipe(tmp_path, finished / "model", finished / "sentiment.jsonl")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NSNEURONS_FAULT_AT": "zarr.written:sentiment-ace.zarr",
        "NSNEURONS_FAULT_ACTION": "stop",
    }
    first = subprocess.Popen(
        [sys.executable, "-m", "nsneurons.cli", "run", str(recipe)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 600
        while _state(first.pid) != "T":  # frozen at the checkpoint, lock held, store half made
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)
        assert cli.main(["run", str(recipe)]) == 4  # runtime: the folder is busy
        err = capsys.readouterr().err
        assert f"is in use by another nsneurons run (pid {first.pid} on host " in err and f": nsneurons run {recipe})" in err
    finally:
        first.kill()
        first.wait()
    assert cli.main(["run", str(recipe)]) == 0  # the dead run's lock taken over, its work resumed
    assert "was left by a run that is gone" in capsys.readouterr().err
    for name in ("results", "neurons", "baseline", "examples"):
        xr.testing.assert_identical(
            xr.open_zarr(finished / "out" / "safe" / f"{name}.zarr", consolidated=False).load(),
            xr.open_zarr(tmp_path / "out" / "safe" / f"{name}.zarr", consolidated=False).load(),
        )
