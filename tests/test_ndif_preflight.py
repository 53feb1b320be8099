"""The remote preflight (nsneurons.ndif_preflight) against the real NDIF server on loopback.

The server (tests/ndif_server.py, shared by the session) serves one tiny random LLaMA, deployed
from a folder in float32. Its reported library versions are changed through the server's own
test hook (`scripts/ndif-local report-versions`: the controller's GET /env), not a mock client.
The unmarked tests need no server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nsneurons.ndif_preflight import (
    TESTED_VERSIONS,
    PreflightSettings,
    RemotePreflightError,
    outside_tested,
    preflight_remote,
)

REPO = Path(__file__).resolve().parent.parent
UNSERVED = "meta-llama/Llama-3.1-8B"  # a hub id: building it would need the Hub, which this machine cannot reach


# ----------------------------------------------------------------------------- no server needed


def test_tested_range_is_pyprojects_pins():
    import tomllib

    from packaging.requirements import Requirement

    pins = {}
    for line in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        if req.name in TESTED_VERSIONS:
            specs = {s.operator: s.version for s in req.specifier}
            pins[req.name] = (specs[">="], specs["<"])
    assert pins == TESTED_VERSIONS


def test_outside_tested_by_hand():
    assert outside_tested({"transformers": "5.24.0", "torch": "2.13.0+cpu", "nnsight": "0.8.1", "python": "3.11.2"}) == []
    assert outside_tested({"transformers": "5.40.0", "torch": "2.5.1", "nnsight": "0.8.0"}) == [
        "torch 2.5.1 (tested: >=2.6,<2.15)",
        "transformers 5.40.0 (tested: >=5.0,<5.40)",
        "nnsight 0.8.0 (tested: >=0.8.1,<0.9)",
    ]
    assert outside_tested({"transformers": "not-a-version"}) == ["transformers not-a-version (tested: >=5.0,<5.40)"]
    assert outside_tested({}) == []  # absent libraries are not judged


def test_allow_untested_from_env(monkeypatch):
    monkeypatch.setenv("NSNEURONS_NDIF_ALLOW_UNTESTED", "1")
    assert PreflightSettings.from_env().allow_untested
    monkeypatch.setenv("NSNEURONS_NDIF_ALLOW_UNTESTED", "0")
    assert not PreflightSettings.from_env().allow_untested


@pytest.mark.slow  # ~8 s on 2 busy cores: two remote model skeletons built
def test_trust_remote_code_reaches_the_remote_model(tmp_path):
    """nnsight puts it in the model key (a deployment is reached only with the same value); no server needed to build it."""
    from fixtures_models import save_tiny_llama

    from nsneurons.models import load_model

    save_tiny_llama(tmp_path / "m")
    keys = [
        json.loads(
            load_model(str(tmp_path / "m"), remote="http://127.0.0.1:9", trust_remote_code=t).lm.to_model_key().split(":", 1)[1]
        )
        for t in (True, False)
    ]
    assert keys[0].get("trust_remote_code") is True and "trust_remote_code" not in keys[1]


@pytest.mark.parametrize(
    ("model", "layers", "neurons", "hidden", "params"),
    [  # the parameter counts Meta publishes for these checkpoints, reproduced from the config's sizes
        ("meta-llama/Llama-3.1-8B", 32, 14336, 4096, 8_030_261_248),
        ("meta-llama/Llama-3.1-70B", 80, 28672, 8192, 70_553_706_496),
    ],
)
def test_ndif_recipes_and_their_plan_shape_offline(monkeypatch, model, layers, neurons, hidden, params):
    from transformers import AutoConfig

    from nsneurons.plan_inputs import read_model_shape
    from nsneurons.recipe import load_recipe

    size = model.split("-")[-1].lower()
    recipe = load_recipe(REPO / "recipes" / f"table1-llama3.1-{size}-ndif.yaml")
    assert recipe.model == model and recipe.backend == "remote" and recipe.selection.k == 100
    assert f"plan for recipe 'table1-llama3.1-{size}-ndif': {model} (built-in config" in recipe_text(size)

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(AutoConfig, "from_pretrained", offline)
    shape = read_model_shape(model)
    assert (shape.n_layers, shape.n_neurons, shape.hidden, shape.vocab, shape.n_params) == (
        layers,
        neurons,
        hidden,
        128256,
        params,
    )
    with pytest.raises(OSError):
        read_model_shape("meta-llama/Llama-2-7b-hf")  # no built-in config: the hub's error stands


def recipe_text(size: str) -> str:
    return (REPO / "recipes" / f"table1-llama3.1-{size}-ndif.yaml").read_text()


# ----------------------------------------------------------------------------- against the server


@pytest.fixture(autouse=True)
def _restore_nnsight_config(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", CONFIG.API.HOST)
    monkeypatch.setattr(CONFIG.API, "APIKEY", CONFIG.API.APIKEY)
    monkeypatch.setattr(CONFIG.APP, "REMOTE_LOGGING", False)
    monkeypatch.delenv("NSNEURONS_NDIF_ALLOW_UNTESTED", raising=False)


def _recipe(tmp_path: Path, model: str, url: str, **overrides) -> Path:
    data = yaml.safe_load((REPO / "recipes" / "tiny-ci.yaml").read_text())
    data.update(model=model, output=str(tmp_path / "out"), backend="remote", ndif_host=url, **overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nsneurons.cli", *args], capture_output=True, text=True, timeout=600, cwd=REPO, check=False
    )


@pytest.mark.ndif
@pytest.mark.slow
def test_unserved_model_refused_before_any_trace(ndif_server, tmp_path):
    with pytest.raises(RemotePreflightError) as info:
        preflight_remote(UNSERVED, host=ndif_server.url)
    assert str(info.value).startswith(f"NDIF error: model {UNSERVED} is not served by {ndif_server.url}; served: ")
    assert f"served: {ndif_server.model_path} (RUNNING, float32)" in str(info.value)
    # `nsneurons run`: refused after the data is read, before the model is built or any trace: no store.
    recipe = _recipe(tmp_path, UNSERVED, ndif_server.url)
    run = _cli("run", str(recipe))
    assert run.returncode == 4, run.stderr
    assert (
        f"error: NDIF error: model {UNSERVED} is not served by {ndif_server.url}; served: {ndif_server.model_path}" in run.stderr
    )
    assert not list((tmp_path / "out").rglob("*.zarr"))
    check = _cli("check", str(recipe), "--remote")
    assert check.returncode == 4 and f"served: {ndif_server.model_path} (RUNNING, float32)" in check.stderr


def _report_versions(server, *args: str, want: str | None) -> None:
    """The server's test hook, then wait (bounded) until GET /env says so (it caches for 2 s)."""
    from ndif_server import _script

    from nsneurons.remote import RemoteConfig, remote_env

    _script(["report-versions", *args], {**os.environ, "NSNEURONS_NDIF_STATE": str(server.state_dir)}, timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline:
        env = remote_env(RemoteConfig(server.url))
        if env and (
            env["packages"]["transformers"] == want if want else env["packages"]["transformers"] == version("transformers")
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"GET /env did not report transformers {want}")


@pytest.mark.ndif
@pytest.mark.slow
def test_server_transformers_outside_range_refused_unless_allowed(ndif_server, tmp_path, caplog):
    _report_versions(ndif_server, "transformers=5.45.0", want="5.45.0")
    try:
        with pytest.raises(RemotePreflightError, match=r"runs transformers 5\.45\.0 \(tested: >=5\.0,<5\.40\)"):
            preflight_remote(ndif_server.model_path, host=ndif_server.url)
        check = _cli("check", str(_recipe(tmp_path, ndif_server.model_path, ndif_server.url)), "--remote")
        assert check.returncode == 4 and "NSNEURONS_NDIF_ALLOW_UNTESTED=1 runs anyway" in check.stderr
        with caplog.at_level(logging.WARNING, logger="nsneurons"):
            facts = preflight_remote(
                ndif_server.model_path, host=ndif_server.url, settings=PreflightSettings(allow_untested=True)
            )
        assert facts.server_versions["transformers"] == "5.45.0"
        assert f"transformers differs: {version('transformers')} here, 5.45.0 on the server" in facts.warnings
        assert "runs untested transformers 5.45.0" in caplog.text
    finally:
        _report_versions(ndif_server, "--clear", want=None)
    facts = preflight_remote(ndif_server.model_path, host=ndif_server.url)
    assert facts.server_versions["transformers"] == version("transformers") and facts.warnings == ()
    check = _cli("check", str(_recipe(tmp_path, ndif_server.model_path, ndif_server.url, dtype="float32")), "--remote")
    assert check.returncode == 0, check.stderr
    assert f"NDIF preflight: served: {ndif_server.model_path} (RUNNING, float32) on {ndif_server.url}" in check.stdout
    assert f"NDIF preflight: server: nnsight {_server_version('nnsight')}, python " in check.stdout


@pytest.mark.ndif
@pytest.mark.slow
def test_deployment_dtype_used_and_versions_in_provenance(ndif_server, tmp_path, caplog):
    """Recipe bfloat16, deployment float32: the run computes in float32 (IG equals the local float32
    run), says so, and the scores store records both sides' library versions."""
    from nsneurons.attribution import AttributionConfig, attribute_proxy
    from nsneurons.recipe import recipe_from_dict
    from nsneurons.runfolder import load_run_model
    from nsneurons.scoring import score_proxies
    from nsneurons.splits import task_proxies

    with caplog.at_level(logging.WARNING, logger="nsneurons"):
        remote = load_run_model(ndif_server.model_path, remote=True, host=ndif_server.url, dtype="bfloat16")
    assert "dtype 'bfloat16' of the recipe overridden by the deployment's 'float32'" in caplog.text
    assert remote.provenance["dtype"] == "float32" and remote.compute_dtype == torch.float32
    local = load_run_model(ndif_server.model_path, device="cpu", dtype="float32")
    recipe = recipe_from_dict(yaml.safe_load(_recipe(tmp_path, ndif_server.model_path, ndif_server.url).read_text()))
    proxies = task_proxies(recipe, recipe.tasks[0])[0][:3]  # one example's three proxies
    config = AttributionConfig(target="ace", steps=4)
    r, l = attribute_proxy(remote, proxies[0], config), attribute_proxy(local, proxies[0], config)
    assert np.abs(r.ig - l.ig).max() <= 1e-5 * np.abs(l.ig).max()
    store = score_proxies(remote, proxies, config, tmp_path / "s.zarr", progress=False)
    assert store.attrs["dtype"] == "float32"
    server, client = store.attrs["ndif_server_versions"], store.attrs["ndif_client_versions"]
    assert client == {name: version(name) for name in TESTED_VERSIONS} | {"python": client["python"]}
    assert server["transformers"] == _server_version("transformers") and server["nnsight"] == _server_version("nnsight")


def _server_version(name: str) -> str:
    """What scripts/ndif-local's virtualenv has installed, read from its dist-info folder."""
    venv = Path(os.environ.get("NSNEURONS_NDIF_VENV") or REPO / ".cache" / "ndif-venv")
    (found,) = venv.glob(f"lib/python3*/site-packages/{name}-*.dist-info")
    return found.name.removeprefix(f"{name}-").removesuffix(".dist-info")
