"""A real NDIF server on loopback for tests (scripts/ndif-local), serving a tiny random LLaMA.

`local_ndif_server(workdir)` installs (cached), starts, deploys and always stops;
`ndif_server` is the session fixture built on it. Set NSNEURONS_SKIP_NDIF=1 to skip the
tests that use it; otherwise a failure to install, start or deploy is a test error.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "ndif-local"


@dataclass
class NdifServer:
    url: str
    model_path: str  # absolute path of the deployed save_pretrained folder (also its repo id)
    model_key: str
    state_dir: Path
    timings_s: dict = field(default_factory=dict)


def _script(args: list[str], env: dict, timeout: float) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/ndif-local {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout.strip()


def save_tiny_llama(folder: Path, layers: int = 2) -> str:
    """A tiny random LLaMA and its tokenizer, saved with save_pretrained (float32)."""
    from fixtures_models import llama_style_tokenizer, tiny_hf_model

    tok = llama_style_tokenizer()
    model = tiny_hf_model("llama", layers=layers, vocab_size=len(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder.resolve())


@contextlib.contextmanager
def local_ndif_server(workdir: Path):
    """Install (cached), start on free 127.0.0.1 ports, deploy a tiny LLaMA; stop on exit, always."""
    workdir = Path(workdir)
    env = {**os.environ, "NSNEURONS_NDIF_STATE": str(workdir / "state")}
    timings: dict = {}
    t = time.time()
    _script(["install"], env, timeout=1800)
    timings["install"] = round(time.time() - t, 1)
    model_path = save_tiny_llama(workdir / "tiny-llama")
    try:
        t = time.time()
        url = _script(["start"], env, timeout=600).splitlines()[-1]
        timings["start"] = round(time.time() - t, 1)
        t = time.time()
        key = _script(["deploy", model_path], env, timeout=600).splitlines()[-1]
        timings["deploy"] = round(time.time() - t, 1)
        server = NdifServer(url=url, model_path=model_path, model_key=key, state_dir=workdir / "state", timings_s=timings)
        yield server
    finally:
        t = time.time()
        try:
            _script(["stop"], env, timeout=300)
        finally:
            timings["stop"] = round(time.time() - t, 1)
            (workdir / "timings.json").write_text(json.dumps(timings))
            sys.stderr.write(f"\n[ndif-local] timings (s): {timings}\n")


@pytest.fixture(scope="session")
def ndif_server(tmp_path_factory):
    if os.environ.get("NSNEURONS_SKIP_NDIF") == "1":
        pytest.skip("NSNEURONS_SKIP_NDIF=1: the local NDIF server tests are switched off")
    with local_ndif_server(tmp_path_factory.mktemp("ndif")) as server:
        yield server
