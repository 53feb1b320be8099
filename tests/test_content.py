"""Provenance by content: file and folder hashes (cached by size and time), hub commits and revisions."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nsneurons import content

ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc"), FIPS 180-2's example
ABCD = "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NSNEURONS_CACHE", str(tmp_path / "cache"))


def test_a_file_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    reads = []
    real = content.sha256_of
    monkeypatch.setattr(content, "sha256_of", lambda p: reads.append(p) or real(p))
    assert content.file_sha256(f) == ABC and content.file_sha256(f) == ABC
    assert len(reads) == 1  # the second answer came from the cache
    f.write_bytes(b"abcd")  # replaced at the same path: another size (and time)
    assert content.file_sha256(f) == ABCD and len(reads) == 2


def test_a_folder_hash_is_its_files_names_and_hashes_wherever_it_lies(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "a.txt").write_bytes(b"abc")
    (model / "sub" / "b.txt").write_bytes(b"abcd")
    (model / ".cache").mkdir()
    (model / ".cache" / "lock").write_bytes(b"ignored")
    expected = hashlib.sha256(f"a.txt\0{ABC}\nsub/b.txt\0{ABCD}\n".encode()).hexdigest()
    assert content.folder_sha256(model) == expected
    shutil.copytree(model, tmp_path / "moved")
    assert content.folder_sha256(tmp_path / "moved") == expected
    (tmp_path / "moved" / "a.txt").write_bytes(b"abd")
    assert content.folder_sha256(tmp_path / "moved") != expected


def test_data_identity_of_local_files_fixtures_and_hub_datasets(tmp_path, monkeypatch):
    f = tmp_path / "rows.jsonl"
    f.write_bytes(b"abc")
    assert content.data_identity(str(f)) == {"sha256": ABC}
    assert content.data_identity(None, fixture=f) == {"sha256": ABC}
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub.HfApi, "dataset_info", lambda self, repo, revision=None, timeout=None: SimpleNamespace(sha="c0ffee")
    )
    assert content.data_identity("owner/data") == {"hub": "owner/data", "revision": "c0ffee"}


def test_a_hub_dataset_revision_offline_comes_from_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    def offline(self, *args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert content.hub_dataset_revision("owner/data") == ""  # nothing known: recorded as unknown
    refs = tmp_path / "datasets--owner--data" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("1234abcd\n")
    assert content.hub_dataset_revision("owner/data") == "1234abcd"


@pytest.mark.slow
def test_a_hub_model_records_the_commit_it_resolved_to(tmp_path):
    """A hub id loaded offline from a hub cache laid out by hand: provenance names its commit."""
    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures_models import save_tiny_llama

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny"
    save_tiny_llama(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "NSNEURONS_CACHE": str(tmp_path / "c"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    code = "from nsneurons.models import load_model; p = load_model('someone/tiny', device='cpu').provenance; print(p['commit'], 'weights_sha256' in p)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.stdout.split() == [commit, "False"], out.stderr[-2000:]
