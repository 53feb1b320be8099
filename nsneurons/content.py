"""What a model or a dataset *is*, not where it lies: content hashes and hub revisions for provenance.

A local file is identified by its sha256, a folder (a `save_pretrained` model, a dataset folder) by
the sha256 of its files' names and hashes, a hub model by the commit it resolved to and a hub
dataset by its revision. Hashes are cached by (path, size, modification time) in
`<cache>/sha256.json` (cache: $NSNEURONS_CACHE or ~/.cache/nsneurons), so a multi-GB model is read
once, not on every run; replacing a file changes its size or time and so its cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CACHE_FILE = "sha256.json"


def cache_root() -> Path:
    """nsneurons' cache folder: $NSNEURONS_CACHE, else ~/.cache/nsneurons."""
    env = os.environ.get("NSNEURONS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nsneurons"


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: hashes are recomputed


def _write_cache(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True))
        os.replace(tmp, path)  # whole or not at all, even with two runs at once
    except OSError:
        pass  # a read-only home: hashing still works, just uncached


def sha256_of(path) -> str:
    """sha256 of a file's bytes, read in chunks (the one hashing helper; uncached)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path) -> str:
    """sha256 of one file, cached by its resolved path, size and modification time."""
    real = Path(path).resolve()
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = cache_root() / _CACHE_FILE
    cache = _read_cache(cache_file)
    if key not in cache:
        cache = {k: v for k, v in cache.items() if not k.startswith(f"{real}|")}  # an older version of the file
        cache[key] = sha256_of(real)
        _write_cache(cache_file, cache)
    return cache[key]


def folder_sha256(folder) -> str:
    """sha256 over a folder's files (relative names and contents), hidden files and folders left out."""
    folder = Path(folder)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(root) / name
            h.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def local_sha256(path) -> str:
    path = Path(path)
    return folder_sha256(path) if path.is_dir() else file_sha256(path)


def hub_model_commit(repo_id: str, revision: str | None = None) -> str:
    """The hub commit a model loaded by hub id resolved to: the snapshot its config.json was read
    from, in the local hub cache (where from_pretrained has just put it, online or offline); '' if none."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an id the cache cannot parse: nothing to record
        return ""
    found = Path(found) if isinstance(found, str) else None
    return found.parent.name if found is not None and found.parent.parent.name == "snapshots" else ""


def hub_dataset_revision(repo_id: str, revision: str | None = None) -> str:
    """The commit of a hub dataset: asked of the hub, else read from the local hub cache; '' if neither knows."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo_id, revision=revision, timeout=10).sha or ""
    except Exception:  # noqa: BLE001 - offline, no such repo, or no permission: try the cache
        pass
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
        return ref.read_text().strip()
    except OSError:
        return ""


def data_identity(source: str | None, fixture: Path | None = None, revision: str | None = None) -> dict:
    """What a task's rows come from: {"sha256": ...} for a local file or folder (the packaged fixture
    when `source` is None), {"hub": id, "revision": commit} for a hub dataset."""
    if source is None:
        return {"sha256": file_sha256(fixture)} if fixture is not None else {}
    path = Path(source).expanduser()
    if path.exists():
        return {"sha256": local_sha256(path)}
    return {"hub": str(source), "revision": hub_dataset_revision(str(source), revision)}
