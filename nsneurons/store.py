"""The scores store: one xarray Dataset in zarr, written one example at a time, resumable.

Layout (see docs/design.md): `ig` and `activation` over (example, proxy, layer, neuron),
`option_prob` over (example, proxy, option), `target_value` over (example, proxy),
`completeness_gap`, `ig_sum` and `ig_delta` over (example, proxy, layer) (the completeness check:
`completeness_gap` = `ig_sum` - `ig_delta`), `correct_letter` coordinate over (example, proxy),
and `done` over (example,): set only after an example's arrays are written, so an interrupted
write never looks complete. Every per-example array, `done` included, has one chunk per example: a
worker writes only its own examples' chunk files, so several workers (`--shard i/n`) fill one store
at once. Stores made before that have one `done` chunk: they open and resume with one worker. NA-ICA's store has (query, prompt) where NeuronLLM's has (example,
proxy) (`ITEM_DIMS`); everything else is the same. Provenance lives in `attrs`; appending with different provenance is refused.
The store is created whole (under a temporary name, then renamed) and every chunk carries a
checksum (nsneurons.zarrio): a missing or damaged chunk of a done example is an error naming it.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .faults import checkpoint
from .tasks.base import LETTERS, N_PROXIES
from .zarrio import StoreDamagedError, problems, raise_problems, write_atomically, write_region

# Provenance keys that must match to append to an existing store, except these: when it was made,
# by which version, and on which NDIF host (a resumed run may use another server of the same model).
# Nor the IG path: staircase, prefix and full compute the same numbers (tests: within 1e-5), so a
# store begun with one resumes with another (it keeps the first one's name).
# Where the data lies is recorded, not compared: its content is (prompts_sha256).
# Nor how a model was split across devices (device_map): the same numbers, placed otherwise.
_VOLATILE_KEYS = {
    "created",
    "device_map",
    "nsneurons_version",
    "ig_path",
    "data_source",
    "ndif_host",
    "ndif_host_source",
    "ndif_api_key",
    "ndif_api_key_source",
    "ndif_server_versions",  # library versions of an NDIF run (nsneurons.ndif_preflight): a resumed run may see an upgrade
    "ndif_client_versions",
}
# What a differing content hash means, for the refusal message.
_CONTENT_KEYS = {
    "weights_sha256": "the model's files changed",
    "prompts_sha256": "the prompts changed (data file or template)",
    "commit": "the hub model resolved to another commit",
}


# The item dim (one write, one `done` flag each) and its prompts' dim: NeuronLLM's examples and
# proxies, NA-ICA's queries and prompts.
ITEM_DIMS = {"example": "proxy", "query": "prompt"}

# The completeness check's two sides per (example, proxy, layer); stores made before they existed lack
# them (still resumable, without them). name -> (long_name, description).
COMPLETENESS = {
    "ig_sum": ("sum of the layer's IG", "sum over the layer's neurons of their IG (Eq. 1) for the store's target"),
    "ig_delta": (
        "F(x) - F(layer zeroed)",
        "F(x) minus F with every FFN neuron of the layer zeroed at the answer "
        "position (the IG baseline); IG is complete when the layer's IG sums to it",
    ),
}


class StoreError(ValueError):
    pass


class IncompleteStoreError(StoreError):
    pass


class ProvenanceMismatchError(StoreError):
    pass


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _template(
    example_ids: Sequence[str],
    correct_letters: Sequence[Sequence[str]],
    layers: Sequence[int],
    n_neurons: int,
    provenance: dict,
    item: str = "example",
) -> xr.Dataset:
    n_ex, n_l, sub = len(example_ids), len(layers), ITEM_DIMS[item]
    shape4 = (n_ex, N_PROXIES, n_l, n_neurons)
    ds = xr.Dataset(
        {
            "ig": ((item, sub, "layer", "neuron"), np.zeros(shape4, np.float32)),
            "activation": ((item, sub, "layer", "neuron"), np.zeros(shape4, np.float32)),
            "option_prob": ((item, sub, "option"), np.zeros((n_ex, N_PROXIES, 4), np.float32)),
            "target_value": ((item, sub), np.zeros((n_ex, N_PROXIES), np.float32)),
            "completeness_gap": ((item, sub, "layer"), np.zeros((n_ex, N_PROXIES, n_l), np.float32)),
            **{name: ((item, sub, "layer"), np.zeros((n_ex, N_PROXIES, n_l), np.float32)) for name in COMPLETENESS},
            "done": ((item,), np.zeros(n_ex, bool)),
        },
        coords={
            item: np.asarray(list(example_ids), dtype=str),
            sub: np.arange(N_PROXIES),
            "layer": np.asarray(list(layers), dtype=np.int64),
            "neuron": np.arange(n_neurons),
            "option": list(LETTERS),
            "correct_letter": ((item, sub), np.asarray(correct_letters, dtype=str)),
        },
        attrs=_jsonable(provenance),
    )
    ds["ig"].attrs["description"] = "integrated gradient of the neuron (Eq. 1) for the store's target"
    ds["activation"].attrs["description"] = "unscaled activation (input of the MLP down projection) at the answer position"
    ds["option_prob"].attrs["description"] = "softmax over the four answer tokens, unmodified model"
    ds["completeness_gap"].attrs["description"] = "sum of the layer's IG minus (F(x) - F(layer zeroed at the answer position))"
    for name, (long_name, description) in COMPLETENESS.items():
        ds[name].attrs.update(long_name=long_name, units="target units", description=description)
    return ds


def _chunks(ds: xr.Dataset) -> dict:
    # One chunk per example for the big arrays, so each example is written as one region.
    per_example = ("ig", "activation", "option_prob", "target_value", "completeness_gap", *COMPLETENESS)
    enc = {name: {"chunks": (1,) + ds[name].shape[1:]} for name in per_example if name in ds}
    # One flag per chunk too: marking an example done rewrites only its own chunk file (no
    # read-modify-write of the others' flags), so workers on disjoint examples never collide.
    enc["done"] = {"chunks": (1,)}
    return enc


def per_example_done(path) -> bool:
    """Whether the store's `done` flags have one chunk per example (stores made before have one chunk)."""
    import zarr

    flags = zarr.open_group(Path(path), mode="r")["done"]
    return isinstance(flags, zarr.Array) and flags.chunks[0] == 1


class ScoreStore:
    """Writer for one scores store. Use `ScoreStore.open_or_create(...)`."""

    def __init__(self, path: Path, example_ids: list[str], item: str = "example", completeness: bool = True, shared: bool = True):
        self.path = Path(path)
        self.example_ids = example_ids
        self.item = item  # "example" or "query" (ITEM_DIMS)
        self.completeness = completeness  # whether the store has the COMPLETENESS variables
        self.shared = shared  # one `done` chunk per example (several workers may write); False: an older store

    @classmethod
    def open_or_create(
        cls,
        path,
        *,
        example_ids: Sequence[str],
        correct_letters: Sequence[Sequence[str]],
        layers: Sequence[int],
        n_neurons: int,
        provenance: dict,
        item: str = "example",
        workers: bool = False,
    ) -> ScoreStore:
        """The store at `path`, made if absent, else checked against this run's settings. workers:
        other workers (shards) may open it at the same time: creation waits for theirs, and an older
        store with one `done` chunk is refused (its flags cannot be shared)."""
        path = Path(path)
        if not workers:
            return cls._open_or_create(path, example_ids, correct_letters, layers, n_neurons, provenance, item)
        from .runlock import output_lock

        # Workers starting together: the first makes the store, the others wait, then open it.
        with output_lock(path.with_name(path.name + ".create.lock"), wait=True):
            store = cls._open_or_create(path, example_ids, correct_letters, layers, n_neurons, provenance, item)
        if not store.shared:
            raise StoreError(
                f"{path} was made by an older nsneurons with one `done` chunk for all {item}s, which several "
                "workers cannot share; finish it with one worker (without --shard), or remove it to start it anew"
            )
        return store

    @classmethod
    def _open_or_create(cls, path: Path, example_ids, correct_letters, layers, n_neurons, provenance, item) -> ScoreStore:
        if item not in ITEM_DIMS:
            raise ValueError(f"item: expected one of {', '.join(ITEM_DIMS)}, got {item!r}")
        provenance = dict(provenance)
        provenance.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        template = _template(example_ids, correct_letters, layers, n_neurons, provenance, item)
        if path.exists():
            try:
                existing = xr.open_zarr(path, consolidated=False)
            except Exception as err:  # noqa: BLE001 - any unreadable store gets the same clear message
                raise StoreError(
                    f"{path} exists but is not a readable scores store ({err}); remove it or choose another output"
                ) from None
            raise_problems(problems(path))  # finished examples are kept: they must be whole
            _check_compatible(path, existing, template)
            return cls(
                path,
                list(example_ids),
                item,
                completeness=all(name in existing for name in COMPLETENESS),
                shared=per_example_done(path),
            )
        # Whole or not at all: an interrupt while the template is written leaves no store here.
        write_atomically(path, template, extra=_chunks(template))
        return cls(path, list(example_ids), item)

    def done(self) -> np.ndarray:
        try:
            return xr.open_zarr(self.path, consolidated=False)["done"].values
        except Exception as err:  # noqa: BLE001 - a checksum or decoding failure of the flags
            raise StoreDamagedError(
                f"damaged store: {self.path}: variable 'done': unreadable ({err}); remove it to recompute it"
            ) from None

    def write_example(
        self, index: int, *, ig, activation, option_prob, target_value, completeness_gap, ig_sum=None, ig_delta=None
    ) -> None:
        """Write one example's arrays (3 proxies), then mark it done (a separate, last write). `ig_sum` and
        `ig_delta` [proxy, layer] are written where given and the store has them."""
        item, sub = self.item, ITEM_DIMS[self.item]
        region = {item: slice(index, index + 1)}
        part = xr.Dataset(
            {
                "ig": ((item, sub, "layer", "neuron"), np.asarray(ig, np.float32)[None]),
                "activation": ((item, sub, "layer", "neuron"), np.asarray(activation, np.float32)[None]),
                "option_prob": ((item, sub, "option"), np.asarray(option_prob, np.float32)[None]),
                "target_value": ((item, sub), np.asarray(target_value, np.float32)[None]),
                "completeness_gap": ((item, sub, "layer"), np.asarray(completeness_gap, np.float32)[None]),
            }
        )
        given = {"ig_sum": ig_sum, "ig_delta": ig_delta}
        for name, values in given.items():
            if values is not None and self.completeness:
                part[name] = ((item, sub, "layer"), np.asarray(values, np.float32)[None])
        # Every chunk written, even all-zero ones: a missing chunk then always means damage.
        write_region(part, self.path, region)
        checkpoint(f"store.example-written:{self.path.name}")
        if self.shared:  # the example's own flag chunk, nothing else
            write_region(xr.Dataset({"done": ((item,), np.ones(1, bool))}), self.path, region)
        else:  # an older store's single flag chunk: read-modify-write (one worker only)
            done = self.done()
            done[index] = True
            write_region(xr.Dataset({"done": ((item,), done)}), self.path, {item: slice(0, len(done))})
        checkpoint(f"store.example-done:{self.path.name}")


def _check_compatible(path: Path, existing: xr.Dataset, template: xr.Dataset) -> None:
    old = {k: v for k, v in existing.attrs.items() if k not in _VOLATILE_KEYS}
    new = {k: v for k, v in template.attrs.items() if k not in _VOLATILE_KEYS}
    if old.get("weights_sha256") and old.get("weights_sha256") == new.get("weights_sha256"):
        old.pop("model", None), new.pop("model", None)  # the same files, moved: content, not the path, counts
    differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differing:
        shown = "; ".join(
            f"{k}: store has {old.get(k)!r}, this run has {new.get(k)!r}"
            + (f" ({_CONTENT_KEYS[k]})" if k in _CONTENT_KEYS else "")
            for k in differing
        )
        raise ProvenanceMismatchError(
            f"{path} was made with different settings, refusing to append ({shown}). Use another output path."
        )
    for coord in (template["done"].dims[0], "layer", "neuron", "correct_letter"):
        if coord not in existing.coords:
            raise ProvenanceMismatchError(
                f"{path}: has no coordinate {coord!r} (another kind of store); refusing to append. Use another output path."
            )
        if not np.array_equal(existing[coord].values, template[coord].values):
            raise ProvenanceMismatchError(
                f"{path}: coordinate {coord!r} differs from this run's; refusing to append. Use another output path."
            )


def open_scores(path, *, allow_incomplete: bool = False) -> xr.Dataset:
    """Open a scores store lazily. Raises IncompleteStoreError if some examples are not written yet."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no scores store at {path}")
    ds = xr.open_zarr(path, consolidated=False)
    # A deleted or damaged chunk would read as NaN or fail deep in zarr: refuse it here, named.
    raise_problems(problems(path))
    done, item = ds["done"].values, ds["done"].dims[0]
    if not done.all():
        message = (
            f"scores store {path} is incomplete: {int(done.sum())} of {done.size} {item}s written "
            f"(missing: {', '.join(ds[item].values[~done][:5])}{'...' if (~done).sum() > 5 else ''}); "
            "rerun the same command to resume"
        )
        if not allow_incomplete:
            raise IncompleteStoreError(message)
        warnings.warn(message, stacklevel=2)
    return ds


def example_scores(ds: xr.Dataset, variable: str = "ig") -> xr.DataArray:
    """ES_e of Eq. 4: the sum of a neuron's IG over the example's three proxies (a NaN stays NaN, never 0)."""
    return ds[variable].sum("proxy", skipna=False)
