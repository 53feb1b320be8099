"""`nsneurons check RUN_DIR`: every store of a run folder whole and readable, and the run complete.

One line per problem: a missing or damaged chunk (with the store's path and the variable), a
scores store with examples still to compute, an output the recipe promises but the folder lacks.
`nsneurons check RECIPE.yaml [--remote]`: the recipe valid (offline), and with --remote the NDIF
preflight (nsneurons.ndif_preflight): model served, server libraries, the dtype the run will use.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np

from .runfolder import RunFolder
from .zarrio import problems


def _stores(folder: Path) -> list[Path]:
    if folder.suffix == ".zarr":
        return [folder]
    # Temporary `.part` / `.old` stores of an interrupted write are not outputs: they end otherwise.
    return sorted(
        p
        for p in folder.rglob("*.zarr")
        if p.is_dir() and not any(q.suffix == ".zarr" for q in p.relative_to(folder).parents if q.name)
    )


def _incomplete(path: Path) -> list[str]:
    import zarr

    try:
        root = zarr.open_group(path, mode="r")
        if "done" not in root.array_keys():
            return []
        done = np.asarray(typing.cast("zarr.Array", root["done"])[:])  # an array, whatever zarr's union type says
    except Exception:  # noqa: BLE001 - already reported by `problems`
        return []
    if done.all():
        return []
    return [f"{path}: incomplete: {int(done.sum())} of {done.size} examples done; rerun the same command to resume"]


def _expected(folder: Path) -> list[Path]:
    """The outputs a finished run of the folder's recipe.yaml has."""
    import yaml

    try:
        recipe = yaml.safe_load(RunFolder(folder).recipe.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    return RunFolder(folder).expected(recipe)


def check_run(folder) -> tuple[list[str], int]:
    """(problems, number of stores checked) of a run folder, or of one store."""
    folder = Path(folder)
    if not folder.exists():
        return [f"{folder}: no such folder"], 0
    found: list[str] = []
    if folder.suffix != ".zarr":
        if not RunFolder(folder).recipe.is_file():
            found.append(f"{RunFolder(folder).recipe}: missing (not a run folder of `nsneurons run`?)")
        found += [
            f"{p}: missing; the run has not finished (rerun the same command to resume)"
            for p in _expected(folder)
            if not p.exists()
        ]
    stores = _stores(folder)
    for store in stores:
        found += problems(store) or _incomplete(store)
    return found, len(stores)


def check_recipe(path, *, remote: bool = False) -> tuple[list[str], list[str]]:
    """(lines describing a valid recipe, problems); a bad recipe raises, naming the key. With remote,
    the NDIF preflight's findings (a refusal raises); a server that could not say is a problem."""
    from .recipe import load_recipe

    recipe = load_recipe(path)
    lines = [f"ok: {path}: a valid {recipe.experiment} recipe for {recipe.model} ({len(recipe.tasks)} task(s))"]
    if remote:
        from .ndif_preflight import preflight_remote

        facts = preflight_remote(
            recipe.model,
            host=recipe.ndif_host,
            revision=recipe.revision,
            trust_remote_code=recipe.trust_remote_code,
            dtype=recipe.dtype,
        )
        lines += [f"NDIF preflight: {line}" for line in facts.summary()]
        if not facts.answered:
            return lines, [f"{facts.host} did not answer GET /status or GET /env: the recipe was not fully checked against it"]
    return lines, []
