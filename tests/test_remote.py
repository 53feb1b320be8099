"""The library run remotely on a real NDIF server equals the same code run locally.

Against the session's local NDIF server (tests/ndif_server.py: a tiny random LLaMA deployed
from a save_pretrained folder, float32, CPU), the same folder loaded locally is the reference:
- IG of every neuron for every target (`attribute_proxy`), the option probabilities under every
  kind of intervention at the answer position and at every position, and a small recipe's
  outputs (`run_recipe`, backend remote vs local) agree within a relative error of 1e-5
  (max |remote - local| / max |local| per array);
- no API key reaches any file a remote run writes, its printed output or its logs;
- a server that dies mid-run gives retries, then `NsneuronsRemoteError` naming the example;
  the store keeps only whole examples, and a restarted server resumes it to the local numbers.
  This test restarts the shared server (new URL, recorded on the fixture) and runs last here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from ndif_server import _script

pytestmark = pytest.mark.ndif

REPO = Path(__file__).resolve().parent.parent
TOL = 1e-5
TARGETS = ("ace", "qrnca", "tn")


def rel_err(remote, local) -> float:
    remote, local = np.asarray(remote, np.float64), np.asarray(local, np.float64)
    assert remote.shape == local.shape
    scale = np.abs(local).max()
    assert scale > 0, "a reference of zeros compares nothing"
    return float(np.abs(remote - local).max() / scale)


def _recipe_dict(model_path: str, output: Path, **overrides) -> dict:
    data = yaml.safe_load((REPO / "recipes" / "tiny-ci.yaml").read_text())
    data.update(
        model=model_path,
        output=str(output),
        identification_examples=2,
        attribution={"steps": 4},
        selection={"methods": ["neuronllm", "tn", "qrnca", "kn", "act", "random"], "k": 4, "z": 20},
        evaluation={"understood": 2, "not_understood": 2, "candidates": 6, "ratios": [0.0, 0.5, 1.0]},
    )
    data.update(overrides)
    return data


@pytest.fixture(autouse=True)
def _restore_nnsight_config(monkeypatch):
    """Remote recipes set nnsight's process-wide host and key: put them back after each test."""
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", CONFIG.API.HOST)
    monkeypatch.setattr(CONFIG.API, "APIKEY", CONFIG.API.APIKEY)
    monkeypatch.setattr(CONFIG.APP, "REMOTE_LOGGING", False)


@pytest.fixture(scope="module")
def models(ndif_server):
    """(remote, local): the deployed folder as a remote NeuronModel, and the same folder on the CPU."""
    from nsneurons.models import load_model

    remote = load_model(ndif_server.model_path, remote=ndif_server.url)
    local = load_model(ndif_server.model_path, device="cpu")
    assert remote.on_server and not local.on_server
    assert remote.lm.to_model_key() == ndif_server.model_key
    return remote, local


@pytest.fixture(scope="module")
def proxies(ndif_server):
    """(identification proxies of 3 examples, 6 evaluation-candidate examples' proxies) of the sentiment fixture."""
    from nsneurons.recipe import recipe_from_dict
    from nsneurons.splits import task_proxies

    recipe = recipe_from_dict(_recipe_dict(ndif_server.model_path, Path("unused"), identification_examples=3))
    ident, candidates = task_proxies(recipe, recipe.tasks[0])
    return ident, candidates[:18]


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("target", TARGETS)
def test_ig_remote_equals_local(models, proxies, target):
    from nsneurons.attribution import AttributionConfig, attribute_proxy

    remote, local = models
    config = AttributionConfig(target=target, steps=4)
    for proxy in proxies[0][:3]:  # one example's three proxies (distinct correct letters)
        r, l = attribute_proxy(remote, proxy, config), attribute_proxy(local, proxy, config)
        assert r.ig.shape == (remote.n_layers, remote.n_neurons)
        assert rel_err(r.ig, l.ig) <= TOL, (target, proxy.proxy)
        assert rel_err(r.activation, l.activation) <= TOL
        assert rel_err(r.option_prob, l.option_prob) <= TOL
        assert abs(r.target_value - l.target_value) <= TOL * max(abs(l.target_value), 1e-12)
        np.testing.assert_allclose(r.completeness_gap, l.completeness_gap, rtol=0, atol=TOL * np.abs(l.ig).sum(1).max())


def test_ig_reference_path_and_layer_chunks_remote_equal_local(models, proxies):
    """The per-layer full-prompt path and one layer per pass (several traces in one session)."""
    from nsneurons.attribution import AttributionConfig, attribute_proxy

    remote, local = models
    proxy = proxies[0][0]
    for config in (
        AttributionConfig(target="tn", steps=3, path="full"),
        AttributionConfig(target="ace", steps=3, path="prefix"),
        AttributionConfig(target="ace", steps=3, layers_per_pass=1, quadrature="midpoint"),
    ):
        assert rel_err(attribute_proxy(remote, proxy, config).ig, attribute_proxy(local, proxy, config).ig) <= TOL


def _conditions():
    from nsneurons.intervention import BASELINE, Condition, degrader, enhancer

    good, bad = [(0, 1), (1, 5), (0, 7), (1, 100)], [(1, 2), (0, 3), (0, 64)]
    return [
        BASELINE,
        Condition("silence", silence=tuple(good)),
        Condition("excite", excite=tuple(good)),
        enhancer(good, bad),
        degrader(good, bad),
    ]


@pytest.mark.parametrize("position", ["answer", "all"])
def test_option_probs_under_interventions_remote_equal_local(models, proxies, position):
    from nsneurons.intervention import option_probs

    remote, local = models
    conditions = _conditions()
    cands = proxies[1]
    # All conditions at once (at the answer position: the shared-prefix path), then each alone
    # (the left-padded batch path).
    r = option_probs(remote, cands, conditions, position=position, batch_size=8)
    l = option_probs(local, cands, conditions, position=position, batch_size=8)
    assert r.shape == (5, len(cands), 4)
    assert rel_err(r.values, l.values) <= TOL
    assert not np.allclose(l.sel(condition="none").values, l.sel(condition="degrader").values)  # the switches act
    for condition in conditions:
        r1 = option_probs(remote, cands[:6], [condition], position=position, batch_size=4)
        l1 = option_probs(local, cands[:6], [condition], position=position, batch_size=4)
        assert rel_err(r1.values, l1.values) <= TOL, condition.name


def test_multi_token_options_remote_equal_local(models):
    """Options longer than one token (Eq. 2, words answers): every IG path and the option probabilities."""
    from nsneurons.answers import proxy_option_ids
    from nsneurons.attribution import AttributionConfig, attribute_proxy
    from nsneurons.intervention import option_probs
    from nsneurons.tasks.base import Proxy

    remote, local = models
    prompt = "Question: this movie was good\nOptions:\nA. positive\nB. not sure\nC. not good at\nD. bad film\nAnswer:"
    proxy = Proxy("e1", 0, prompt, ("positive", "not sure", "not good at", "bad film"), 1, "sentiment", answer_format="words")
    assert max(len(o) for o in proxy_option_ids(local.tokenizer, proxy)) > 1
    for path in ("staircase", "prefix", "full"):
        config = AttributionConfig(target="tn", steps=3, path=path, layers_per_pass=1)
        r, l = attribute_proxy(remote, proxy, config), attribute_proxy(local, proxy, config)
        assert rel_err(r.ig, l.ig) <= TOL, path
        assert rel_err(r.option_prob, l.option_prob) <= TOL, path
    r, l = option_probs(remote, [proxy], _conditions()), option_probs(local, [proxy], _conditions())
    assert rel_err(r.values, l.values) <= TOL


def test_generate_remote_equals_local(models, proxies):
    from nsneurons.intervention import Condition, generate

    remote, local = models
    condition = Condition("mixed", silence=((0, 1), (1, 3)), excite=((1, 7),))
    prompt = proxies[0][0].prompt
    assert generate(remote, prompt, condition, max_new_tokens=4) == generate(local, prompt, condition, max_new_tokens=4)


def _open_all(out: Path) -> dict[str, xr.Dataset]:
    from nsneurons.runfolder import open_outputs

    found = {name: ds.load() for name, ds in open_outputs(out).items()}
    for path in sorted((out / "tasks").glob("*.zarr")) + sorted((out / "scores").glob("*.zarr")):
        found[f"{path.parent.name}/{path.name}"] = xr.open_zarr(path, consolidated=False).load()
    return found


def _assert_same(local: dict[str, xr.Dataset], remote: dict[str, xr.Dataset]) -> None:
    """Floats within TOL (max-norm relative error, NaN where local has NaN); everything else identical."""
    assert set(local) == set(remote)
    for name, l_ds in local.items():
        r_ds = remote[name]
        assert set(r_ds.variables) == set(l_ds.variables), name
        for var in l_ds.variables:
            lv, rv = l_ds[var].values, r_ds[var].values
            if lv.dtype.kind == "f":
                np.testing.assert_array_equal(np.isnan(rv), np.isnan(lv), err_msg=f"{name}:{var}")
                if var in ("completeness_gap", "ig_delta"):
                    # A small difference of F values (cancellation): compared on F's own scale.
                    scale = float(np.abs(l_ds["target_value"].values).max())
                    assert scale > 0 and float(np.abs(rv - lv).max()) <= TOL * scale, f"{name}:{var}"
                elif lv.size and np.nanmax(np.abs(lv), initial=0) > 0:
                    assert rel_err(np.nan_to_num(rv), np.nan_to_num(lv)) <= TOL, f"{name}:{var}"
                else:
                    assert np.nanmax(np.abs(rv), initial=0) == 0, f"{name}:{var}"
            else:  # selected layers and neurons, coordinates, done flags: identical
                np.testing.assert_array_equal(rv, lv, err_msg=f"{name}:{var}")


def test_recipe_remote_equals_local(ndif_server, tmp_path):
    from nsneurons.recipe import recipe_from_dict
    from nsneurons.runners.neuronllm import run_recipe

    local_out = run_recipe(recipe_from_dict(_recipe_dict(ndif_server.model_path, tmp_path / "local")), progress=False)
    remote_out = run_recipe(
        recipe_from_dict(_recipe_dict(ndif_server.model_path, tmp_path / "remote", backend="remote", ndif_host=ndif_server.url)),
        progress=False,
    )
    local, remote = _open_all(local_out), _open_all(remote_out)
    assert {
        "results",
        "neurons",
        "baseline",
        "examples",
        "scores/sentiment-ace.zarr",
        "scores/sentiment-qrnca.zarr",
        "scores/sentiment-tn.zarr",
        "tasks/sentiment.zarr",
    } <= set(local)
    assert remote["scores/sentiment-ace.zarr"].attrs["device"] == "remote"
    _assert_same(local, remote)


def test_naica_recipe_remote_equals_local(ndif_server, tmp_path):
    from nsneurons.recipe import recipe_from_dict
    from nsneurons.runfolder import load_naica as load_datasets
    from nsneurons.runners.naica import run_recipe

    data = yaml.safe_load((REPO / "recipes" / "na-ica.yaml").read_text())
    data.update(
        model=ndif_server.model_path,
        answer_format="letters",  # the tiny tokenizer splits option words alike
        naica={**data["naica"], "max_per_domain": 2, "steps": 4, "v": 5},
    )
    outs = {}
    for name, extra in (("local", {}), ("remote", {"backend": "remote", "ndif_host": ndif_server.url})):
        out = run_recipe(recipe_from_dict({**data, **extra, "output": str(tmp_path / name)}), progress=False)
        outs[name] = load_datasets(out / "naica.zarr")
    assert {"attribution", "key", "common", "regions", "prediction", "editing"} <= set(outs["local"])
    _assert_same(outs["local"], outs["remote"])


# ----------------------------------------------------------------------------- secrets


def _files_under(root: Path):
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def test_no_secret_in_anything_a_remote_run_writes(ndif_server, tmp_path, monkeypatch, capfd, caplog):
    from nsneurons.recipe import recipe_from_dict
    from nsneurons.remote import RemoteConfig
    from nsneurons.runners.neuronllm import run_recipe

    planted = f"nsn-planted-key-{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("NDIF_API_KEY", planted)
    monkeypatch.delenv("NDIF_HOST", raising=False)
    assert RemoteConfig.resolve(ndif_server.url).api_key == planted
    caplog.set_level(logging.DEBUG)
    from nnsight import CONFIG

    CONFIG.APP.REMOTE_LOGGING = True  # the job status lines too (restored by the autouse fixture)
    out = run_recipe(
        recipe_from_dict(
            _recipe_dict(
                ndif_server.model_path,
                tmp_path / "out",
                backend="remote",
                ndif_host=ndif_server.url,
                selection={"methods": ["neuronllm", "qrnca"], "k": 3, "z": 20},
            )
        ),
        progress=True,
    )
    assert CONFIG.API.APIKEY == planted  # the key was used (sent in the request header)...
    needle = planted.encode()
    files = _files_under(out)
    assert len(files) > 20 and (out / "recipe.yaml") in files
    # ... and is in no file the run wrote (raw bytes: metadata, report, figures, array chunks).
    leaked = [str(p) for p in files if needle in p.read_bytes()]
    assert not leaked, leaked
    # Nor in any decoded value: every attribute and every string array of every zarr store
    # (chunks may be compressed, so read them back too).
    for store in sorted({p for p in out.rglob("*.zarr") if p.is_dir()}):
        ds = xr.open_zarr(store, consolidated=False)
        texts = [repr(ds.attrs)] + [repr(ds[v].attrs) for v in ds.variables]
        texts += [" ".join(map(str, ds[v].values.ravel())) for v in ds.variables if ds[v].dtype.kind in "OUS"]
        assert not any(planted in t for t in texts), store
    prov = xr.open_zarr(out / "scores" / "sentiment-ace.zarr", consolidated=False).attrs
    assert prov["device"] == "remote" and planted not in repr(prov)
    assert prov["ndif_host"] == ndif_server.url and prov["ndif_api_key"] == "set"  # where it ran, not the key
    recipe_text = (out / "recipe.yaml").read_text()
    assert ndif_server.url in recipe_text and planted not in recipe_text and "api_key" not in recipe_text.lower()
    # Printed output and log records.
    printed = capfd.readouterr()
    assert "COMPLETED" in printed.out + printed.err  # nnsight's job log was on
    assert planted not in printed.out and planted not in printed.err
    assert not any(planted in r.getMessage() for r in caplog.records)
    # nnsight's config files: the key is set in memory only. (The server's own logs are not
    # checked: NDIF 0.1.2's API logs each request's key, in its api.log.)
    from importlib.resources import files as package_files

    config_files = [
        Path(str(package_files("nnsight") / "config.yaml")),
        Path(os.environ.get("XDG_CONFIG_HOME", "~/.config")).expanduser() / "nnsight" / "config.yaml",
    ]
    for path in config_files:
        if path.is_file():
            assert needle not in path.read_bytes(), path


# ----------------------------------------------------------------------------- server dies mid-run (last: restarts it)


def _proc_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def _kill_api(state_dir: Path) -> None:
    """SIGKILL the API's process group as recorded by scripts/ndif-local (a crash, not a clean stop)."""
    import json

    api = json.loads((state_dir / "state.json").read_text())["services"]["api"]
    assert _proc_start_ticks(api["pid"]) == api["start_ticks"], "the recorded API process is not running"
    os.killpg(api["pgid"], signal.SIGKILL)
    port = api["port"]
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the API still listens on {port}")


def _restart(server) -> None:
    """start (which clears what is left of the killed server) + deploy; the fixture now points at the new URL."""
    env = {**os.environ, "NSNEURONS_NDIF_STATE": str(server.state_dir)}
    t = time.time()
    server.url = _script(["start"], env, timeout=600).splitlines()[-1]
    server.timings_s["restart_start"] = round(time.time() - t, 1)
    t = time.time()
    assert _script(["deploy", server.model_path], env, timeout=600).splitlines()[-1] == server.model_key
    server.timings_s["restart_deploy"] = round(time.time() - t, 1)


def test_server_dies_mid_run_then_resumes(ndif_server, models, proxies, tmp_path, monkeypatch):
    import nsneurons.remote as remote_mod
    import nsneurons.scoring as scoring
    from nsneurons.attribution import AttributionConfig
    from nsneurons.models import load_model
    from nsneurons.remote import NsneuronsRemoteError
    from nsneurons.store import IncompleteStoreError, open_scores

    remote, local = models
    ident = proxies[0]  # 3 examples x 3 proxies
    examples = list(dict.fromkeys(p.example_id for p in ident))
    assert len(examples) == 3
    config = AttributionConfig(target="ace", steps=4)
    reference = scoring.score_proxies(local, ident, config, tmp_path / "local.zarr", progress=False).load()

    # Small retry settings: 3 tries, waits of 0.05 s and 0.1 s (recorded).
    waits = []
    real_retries = remote_mod.with_retries
    monkeypatch.setattr(
        remote_mod,
        "with_retries",
        lambda fn, **kw: real_retries(fn, **{**kw, "tries": 3, "backoff": 0.05, "sleep": waits.append}),
    )
    calls, killed = [], []
    real_attribute = scoring.attribute_proxies  # one call (one session) per example

    def attribute(model, proxies, cfg, layers=None):
        calls.append(proxies[0].example_id)
        if proxies[0].example_id == examples[1] and not killed:
            _kill_api(ndif_server.state_dir)  # mid-run: the first example is already written
            killed.append(time.time())
        return real_attribute(model, proxies, cfg, layers)

    monkeypatch.setattr(scoring, "attribute_proxies", attribute)
    path = tmp_path / "remote.zarr"
    t = time.time()
    with pytest.raises(NsneuronsRemoteError) as info:
        scoring.score_proxies(remote, ident, config, path, progress=False)
    fail_s = time.time() - t
    err = info.value
    assert err.transient and err.tries == 3
    assert str(err).startswith(f"example {examples[1]!r} proxies 0, 1, 2: NDIF unreachable or busy after 3 tries")
    assert calls == [examples[0]] + [examples[1]] * 3 and waits == [0.05, 0.1]

    # Only the finished example is in the store.
    with pytest.raises(IncompleteStoreError, match=rf"1 of 3 examples written \(missing: {examples[1]}, {examples[2]}\)"):
        open_scores(path)
    with pytest.warns(UserWarning, match="incomplete"):
        partial = open_scores(path, allow_incomplete=True).load()
    assert partial.done.values.tolist() == [True, False, False]
    assert rel_err(partial.ig.isel(example=0).values, reference.ig.isel(example=0).values) <= TOL
    assert not partial.ig.isel(example=slice(1, None)).values.any()  # nothing of the interrupted example

    # Restart the server (new ports), reload the model against it, resume: only the missing examples run.
    t = time.time()
    _restart(ndif_server)
    restart_s = time.time() - t
    resumed_model = load_model(ndif_server.model_path, remote=ndif_server.url)
    calls.clear()
    t = time.time()
    resumed = scoring.score_proxies(resumed_model, ident, config, path, progress=False).load()
    resume_s = time.time() - t
    assert calls == list(examples[1:])
    assert resumed.done.values.all()
    for var in ("ig", "activation", "option_prob", "target_value"):
        assert rel_err(resumed[var].values, reference[var].values) <= TOL, var
    sys.stderr.write(f"\n[test_remote] failure after retries {fail_s:.1f}s, restart {restart_s:.1f}s, resume {resume_s:.1f}s\n")
