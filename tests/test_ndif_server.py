"""Remote (NDIF) execution against a real NDIF server on loopback (scripts/ndif-local).

The `ndif`-marked tests share one server for the session (tests/ndif_server.py): a tiny
random LLaMA deployed in float32 on the CPU. The unmarked tests check nsneurons.remote
without a server.
"""

from __future__ import annotations

import socket

import pytest
import torch

from nsneurons.ndif_preflight import require_served, served_models
from nsneurons.remote import (
    NsneuronsRemoteError,
    RemoteConfig,
    configure_nnsight,
    is_transient,
    register_local_model_path,
    with_retries,
)

LAYER = 1
TARGET = 17
IDS = torch.tensor([[1, 5, 9, 12, 40, 7]])
ALPHAS = torch.linspace(0.1, 1.0, 4)


@pytest.fixture(scope="module")
def remote_lm(ndif_server):
    """The deployed folder as an nnsight model (meta weights here; the server holds the real ones)."""
    from nnsight import CONFIG, LanguageModel
    from transformers import AutoTokenizer

    CONFIG.APP.REMOTE_LOGGING = False
    path = register_local_model_path(ndif_server.model_path)
    lm = LanguageModel(path, tokenizer=AutoTokenizer.from_pretrained(path))
    assert lm.to_model_key() == ndif_server.model_key
    return lm


@pytest.fixture(scope="module")
def local_hf(ndif_server):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(ndif_server.model_path, dtype=torch.float32).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf


def reference_ig_grad(hf, ids, alphas, layer, target):
    """Plain PyTorch: scale the last position's down_proj input by each alpha (one row each),
    gradient of log p(target) at the last position w.r.t. the scaled activation."""
    held = {}

    def pre(module, args):
        x = args[0].clone()
        base = x[:, -1, :].detach().clone()
        scaled = (base * alphas[:, None]).requires_grad_(True)
        held.update(base=base, scaled=scaled)
        x[:, -1, :] = scaled
        return (x,)

    handle = hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(pre)
    try:
        logp = hf(ids.expand(len(alphas), -1)).logits[:, -1].log_softmax(-1)[:, target].sum()
        (grad,) = torch.autograd.grad(logp, held["scaled"])
    finally:
        handle.remove()
    return held["base"], grad


# ----------------------------------------------------------------------------- against the server


@pytest.mark.ndif
def test_remote_logits_match_local(ndif_server, remote_lm, local_hf):
    with remote_lm.trace(IDS, remote=ndif_server.url):
        logits = remote_lm.output.logits.save()
    with torch.no_grad():
        ref = local_hf(IDS).logits
    assert logits.shape == ref.shape
    assert (logits - ref).abs().max().item() <= 1e-5


@pytest.mark.ndif
def test_remote_gradient_through_down_proj_input(ndif_server, remote_lm, local_hf):
    m = len(ALPHAS)
    with remote_lm.trace(IDS.expand(m, -1), remote=ndif_server.url):
        x = remote_lm.model.layers[LAYER].mlp.down_proj.input
        base = x[:, -1, :].detach().clone()
        scaled = (base * ALPHAS[:, None]).requires_grad_(True)
        x[:, -1, :] = scaled
        logp = remote_lm.output.logits[:, -1].log_softmax(-1)[:, TARGET].sum()
        grad = torch.autograd.grad(logp, scaled)[0].save()
        base = base.save()
    ref_base, ref_grad = reference_ig_grad(local_hf, IDS, ALPHAS, LAYER, TARGET)
    torch.testing.assert_close(base, ref_base, rtol=1e-5, atol=1e-5)
    assert ref_grad.abs().max() > 1e-3  # a gradient worth comparing
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.ndif
def test_session_keeps_prefix_cache_on_server(ndif_server, remote_lm, local_hf):
    """Trace 1 builds the prefix KV cache; plain Python on the server expands it to the alpha
    batch; trace 2 runs only the last token against it and takes the IG gradient. The cache is
    never saved, so it never leaves the server."""
    m, last = len(ALPHAS), IDS.shape[1] - 1
    with remote_lm.session(remote=ndif_server.url):
        with remote_lm.trace(IDS[:, :-1], use_cache=True):
            cache = remote_lm.output.past_key_values
        cache.batch_repeat_interleave(m)
        with remote_lm.trace(IDS[:, -1:].expand(m, 1), past_key_values=cache, position_ids=torch.full((m, 1), last)):
            x = remote_lm.model.layers[LAYER].mlp.down_proj.input
            base = x[:, -1, :].detach().clone()
            scaled = (base * ALPHAS[:, None]).requires_grad_(True)
            x[:, -1, :] = scaled
            logp = remote_lm.output.logits[:, -1].log_softmax(-1)[:, TARGET].sum()
            grad = torch.autograd.grad(logp, scaled)[0].save()
            base = base.save()
    with pytest.raises(NameError):
        cache  # noqa: B018  (not saved: it stayed on the server)
    ref_base, ref_grad = reference_ig_grad(local_hf, IDS, ALPHAS, LAYER, TARGET)
    torch.testing.assert_close(base, ref_base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.ndif
def test_session_saved_cache_comes_back(ndif_server, remote_lm, local_hf):
    """Saving past_key_values inside the session also works (the cache is then sent back)."""
    last = IDS.shape[1] - 1
    with remote_lm.session(remote=ndif_server.url):
        with remote_lm.trace(IDS[:, :-1], use_cache=True):
            cache = remote_lm.output.past_key_values.save()
        with remote_lm.trace(IDS[:, -1:], past_key_values=cache, position_ids=torch.tensor([[last]])):
            logits = remote_lm.output.logits[:, -1].save()
    assert type(cache).__name__ == "DynamicCache"
    with torch.no_grad():
        ref = local_hf(IDS).logits[:, -1]
    assert (logits - ref).abs().max().item() <= 1e-5


@pytest.mark.ndif
def test_server_error_becomes_nsneurons_error(ndif_server, remote_lm):
    def bad_trace():
        with remote_lm.trace(IDS, remote=ndif_server.url):
            x = remote_lm.model.layers[0].mlp.down_proj.input
            (x @ torch.ones(3, 3)).save()

    calls = []

    def counted():
        calls.append(1)
        return bad_trace()

    with pytest.raises(NsneuronsRemoteError) as info:
        with_retries(counted, tries=3, backoff=0, describe="example q1, proxy 0")
    err = info.value
    assert len(calls) == 1 and not err.transient  # a bug in the block is not retried
    assert str(err).startswith("example q1, proxy 0: NDIF error: RuntimeError")
    assert "mat1 and mat2 shapes cannot be multiplied" in err.summary


@pytest.mark.ndif
def test_connection_refused_is_retried_then_reported(remote_lm):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens here once closed
    calls, waits = [], []

    def trace():
        calls.append(1)
        with remote_lm.trace(IDS, remote=dead):
            remote_lm.output.logits.save()

    with pytest.raises(NsneuronsRemoteError) as info:
        with_retries(trace, tries=3, backoff=0.5, describe="example q2", sleep=waits.append)
    assert len(calls) == 3 and waits == [0.5, 1.0]
    assert info.value.transient and info.value.tries == 3
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


@pytest.mark.ndif
def test_served_models_lists_the_deployment(ndif_server):
    config = RemoteConfig(ndif_server.url)
    served = served_models(config)
    assert served is not None and served.get(ndif_server.model_key) == "RUNNING"
    require_served(config, ndif_server.model_key)
    missing = ndif_server.model_key.replace(ndif_server.model_path, "/no/such/model")
    with pytest.raises(NsneuronsRemoteError, match=r"model /no/such/model is not served .*; served: .*tiny-llama"):
        require_served(config, missing)


# ----------------------------------------------------------------------------- no server needed


def test_remote_config_never_shows_the_key(monkeypatch):
    import pickle

    monkeypatch.setenv("NDIF_API_KEY", "secret-key-123")
    monkeypatch.setenv("NDIF_HOST", "127.0.0.1:5000")
    cfg = RemoteConfig.resolve()
    assert cfg.host == "http://127.0.0.1:5000" and cfg.host_source == "NDIF_HOST"
    assert cfg.api_key == "secret-key-123" and cfg.key_source == "NDIF_API_KEY"
    for text in (repr(cfg), str(cfg), str(cfg.provenance()), f"{cfg}"):
        assert "secret-key-123" not in text
    assert cfg.provenance()["ndif_api_key"] == "set"
    with pytest.raises(TypeError):
        pickle.dumps(cfg)
    assert RemoteConfig.resolve("https://ndif.example/").host == "https://ndif.example"
    assert RemoteConfig.resolve("ndif.example").host == "https://ndif.example"


def test_configure_nnsight_sets_host_and_key(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", CONFIG.API.HOST)
    monkeypatch.setattr(CONFIG.API, "APIKEY", CONFIG.API.APIKEY)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    configure_nnsight(RemoteConfig("http://127.0.0.1:1234", api_key="k", key_source="test"))
    assert CONFIG.API.HOST == "http://127.0.0.1:1234" and CONFIG.API.APIKEY == "k"


def test_transient_classification():
    import httpx
    from nnsight.intervention.backends.remote import RemoteError

    def wrapped(cause):
        try:
            raise RemoteError(f"Failed to send request: {cause}") from cause
        except RemoteError as err:
            return err

    req = httpx.Request("POST", "http://127.0.0.1:1/request")
    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(wrapped(httpx.ConnectError("refused", request=req)))
    assert is_transient(wrapped(httpx.ReadTimeout("slow", request=req)))
    busy = httpx.HTTPStatusError("503", request=req, response=httpx.Response(503, request=req))
    denied = httpx.HTTPStatusError("401", request=req, response=httpx.Response(401, request=req))
    assert is_transient(wrapped(busy)) and not is_transient(wrapped(denied))
    assert is_transient(RemoteError("Replica was evicted ... Please try again later."))
    assert not is_transient(RemoteError("Could not deploy this model. Please try again later."))
    assert not is_transient(RemoteError("Traceback ...\nRuntimeError: shapes"))
    assert not is_transient(ValueError("local bug"))


def test_with_retries_backoff_and_local_errors():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert with_retries(flaky, tries=5, backoff=2, sleep=waits.append) == "ok"
    assert waits == [2, 4]
    with pytest.raises(ValueError):  # a local bug propagates unchanged, untried again
        with_retries(lambda: (_ for _ in ()).throw(ValueError("bug")), tries=3, sleep=waits.append)
    assert waits == [2, 4]
