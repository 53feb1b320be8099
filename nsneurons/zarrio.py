"""Every zarr output: written whole or not at all, a checksum on every chunk, read back checked.

- `write_atomically`: a store (or a set of groups) is written to `<name>.part`, then renamed to
  `<name>`; an interrupt at any instant leaves the old store, the new one or none, never half of one.
- `CODECS`: zstd, then a crc32c of the compressed bytes on every chunk, so a flipped byte or a
  truncated chunk fails on read instead of decoding to other numbers.
- `problems`: one line per missing or unreadable chunk (for a scores store, of the examples marked
  done: the others are rewritten on resume); `open_checked` opens a store only when there are none.
- So that a plain `xr.open_zarr(path)` opens every output without a warning: consolidated metadata
  on every write, strings variable-length (fixed-width numpy `<U` has no zarr 3 specification; read
  back they are numpy `StringDType`), and `long_name` / `units` (`LABELS`) so `da.plot()` labels itself.
- Reads accept stores written before the `method` dim was renamed `selector` (renamed on open).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from .faults import checkpoint

# name -> (long_name, units) for the variables and coordinates of the outputs ("1" = a fraction).
LABELS = {
    "ig": ("integrated gradient (Eq. 1)", "target units"),
    "activation": ("MLP activation at the answer position", "activation units"),
    "option_prob": ("probability of the option (softmax over A-D)", "1"),
    "target_value": ("target function F at the answer position", "target units"),
    "completeness_gap": ("sum of a layer's IG minus its ablation effect", "target units"),
    "sweep": ("metric of the intervention at a good:bad ratio", "see the metric coordinate"),
    "ablation": ("metric of the good-only / bad-only intervention", "see the metric coordinate"),
    "sweep_ci": ("directed RAC / RCC with its bootstrap interval", "%"),
    "cell": ("table cell at the chosen ratio", "% (RAC, RCC) or points (acc_change, com_change)"),
    "average": ("table cell averaged over tasks", "% (RAC, RCC) or points (acc_change, com_change)"),
    "group_cell": ("good-only / bad-only / both cell", "% (RAC, RCC) or points (acc_change, com_change)"),
    "chosen_ratio": ("good:bad ratio a cell is reported at", "1"),
    "score": ("ranking score of the selected neuron", "selector's key"),
    "layer": ("layer index", "1"),
    "neuron": ("neuron index within the layer", "1"),
    "ratio": ("good:bad ratio (good neurons = round(ratio * K))", "1"),
    "prob": ("probability of the option (softmax over A-D)", "1"),
    "baseline": ("unmodified model on the evaluation set", "see the metric coordinate"),
    "effect": ("metric of the cross-task intervention", "see the metric coordinate"),
    "count": ("selected neurons in the layer", "neurons"),
    "change": ("task-specific minus original neurons in the layer", "neurons"),
}


def _plain(var: xr.Variable) -> xr.Variable:
    return var.astype(object) if var.dtype.kind in "US" or isinstance(var.dtype, np.dtypes.StringDType) else var


def prepared(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with variable-length strings and `LABELS` attributes (existing attributes win)."""
    ds = ds.copy()
    for name in list(ds.variables):
        var = _plain(ds.variables[name])
        if name in LABELS and var.dtype.kind in "fiub":
            long_name, units = LABELS[name]
            var.attrs = {"long_name": long_name, "units": units, **var.attrs}
        if name in ds.coords:  # through coords, so an index follows and a coordinate stays one
            ds = ds.assign_coords({name: var})
        else:
            ds[name] = var
    return ds


@contextmanager
def _consolidating():
    """zarr says consolidated metadata is not yet in the v3 spec; xarray and zarr-python read it, and
    the per-array metadata is written too, so other readers still open the store."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def write_region(ds: xr.Dataset, path, region: dict) -> None:
    """Write `ds` into `region` of an existing store (every chunk, consolidated metadata kept current)."""
    with _consolidating():
        ds.to_zarr(path, region=region, write_empty_chunks=True)


def _legacy(ds: xr.Dataset) -> xr.Dataset:
    return ds.rename(method="selector") if "method" in ds.dims else ds


def open_store(path, group: str | None = None) -> xr.Dataset:
    """An output store, lazily, new or old (no consolidated metadata, dim `method`); no chunk check."""
    return _legacy(xr.open_zarr(Path(path), group=group, consolidated=False))


class StoreDamagedError(ValueError):
    """A store with a missing or damaged chunk: its numbers cannot be trusted."""


def codecs() -> tuple:
    """Compression then checksum, for every chunk of every array (zarr format 3)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return (ZstdCodec(), Crc32cCodec())


def encoding(ds: xr.Dataset, extra: Mapping[str, dict] | None = None) -> dict:
    """The checksummed encoding of every variable and coordinate of `ds`, with `extra` per variable (e.g. chunks)."""
    enc = {str(name): {"compressors": codecs()} for name in ds.variables}
    for name, settings in (extra or {}).items():
        enc[name] = {**enc[name], **settings}
    return enc


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def write_atomically(path, data: xr.Dataset | Mapping[str, xr.Dataset], *, extra: Mapping[str, dict] | None = None) -> Path:
    """Write one Dataset (or one group per Dataset) at `path`, replacing what was there, whole or not at all.

    Every chunk is written, even one equal to the fill value, so a missing chunk always means damage.
    `extra`: encoding settings per variable (e.g. chunks) on top of the checksummed codecs.
    """
    path = Path(path)
    tmp, old = _beside(path, ".part"), _beside(path, ".old")
    shutil.rmtree(tmp, ignore_errors=True)  # a part store of an interrupted write
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = {None: data} if isinstance(data, xr.Dataset) else dict(data)
    tmp.mkdir()
    checkpoint(f"zarr.begun:{path.name}")
    for group, ds in groups.items():
        ds = prepared(ds)
        ds.attrs = json.loads(json.dumps(ds.attrs, default=str))
        with _consolidating():
            ds.to_zarr(tmp, group=group, mode="w", encoding=encoding(ds, extra), write_empty_chunks=True)
    checkpoint(f"zarr.written:{path.name}")
    if path.exists():
        # Renames cannot replace a folder: the old one steps aside first. An interrupt between the
        # two renames leaves no store at `path` (recomputed on resume), never a mixed one.
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        checkpoint(f"zarr.set-aside:{path.name}")
        tmp.rename(path)
    else:
        tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)  # also one left by an interrupt between the renames
    checkpoint(f"zarr.renamed:{path.name}")
    return path


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def _done_mask(root, path: Path, found: list[str]) -> np.ndarray | None:
    """A scores store's `done` flags (None for other stores); a damaged flag array counts every example as done."""
    if "done" not in root.array_keys():
        return None
    arr = root["done"]
    try:
        return np.asarray(arr[...], bool)
    except Exception as err:  # noqa: BLE001 - any decoding failure is damage
        found.append(f"{path}: variable 'done': unreadable ({_short(err)})")
        return np.ones(arr.shape, bool)


def _array_problems(path: Path, arr, done: np.ndarray | None) -> list[str]:
    found = []
    dims = getattr(arr.metadata, "dimension_names", None) or ()
    # Per-example (NA-ICA: per-query) chunks not yet done are rewritten on resume: only done ones must be whole.
    per_example = done is not None and arr.path != "done" and dims[:1] in (("example",), ("query",)) and arr.chunks[0] == 1
    # One flag per chunk: a missing flag reads as False (zarr's fill value; writers that skip empty
    # chunks even delete it), i.e. "not done", and that example is rewritten on resume: no damage.
    own_flags = done is not None and arr.path == "done" and arr.chunks[0] == 1
    for coords in np.ndindex(*arr.cdata_shape):
        if per_example and done is not None and not done[coords[0]]:  # (per_example implies done)
            continue
        key = arr.metadata.encode_chunk_key(coords)
        if own_flags and not (path / arr.path / key).is_file():
            continue
        if not (path / arr.path / key).is_file():
            found.append(f"{path}: variable {arr.path!r}: chunk {key} is missing")
            continue
        try:
            arr.get_block_selection(coords)
        except Exception as err:  # noqa: BLE001 - checksum, decompression or size errors alike
            found.append(f"{path}: variable {arr.path!r}: chunk {key} is damaged ({_short(err)})")
    return found


def problems(path) -> list[str]:
    """One line per problem of the zarr store at `path`: unreadable metadata, missing or damaged chunks."""
    import zarr

    path = Path(path)
    if not path.is_dir():
        return [f"{path}: missing"]
    try:
        root = zarr.open_group(path, mode="r")
        members = root.members(max_depth=None)
    except Exception as err:  # noqa: BLE001
        return [f"{path}: not a readable zarr store ({_short(err)})"]
    found: list[str] = []
    done = _done_mask(root, path, found)
    for _, node in members:
        if isinstance(node, zarr.Array):
            found += _array_problems(path, node, done)
    return found


def raise_problems(found: list[str]) -> None:
    if found:
        more = f" (and {len(found) - 1} more; `nsneurons check` lists them all)" if len(found) > 1 else ""
        raise StoreDamagedError(f"damaged store: {found[0]}{more}; remove it to recompute it")


def open_checked(path, group: str | None = None) -> xr.Dataset:
    """`xr.open_zarr` of a store whose every chunk is present and passes its checksum, else StoreDamagedError."""
    raise_problems(problems(path))
    return _legacy(xr.open_zarr(path, group=group, consolidated=False))
