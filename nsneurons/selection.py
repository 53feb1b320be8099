"""Task-level neuron selection: registered methods that turn scores into a neuron set.

`METHODS` maps a method name to a `Method`; `select(name, ...)` is the one entry point.
`METHODS[name].needs` tells the pipeline what to compute first: a target's example scores
("ace", "tn", "qrnca"; ES of Eq. 4, dims (example, layer, neuron)), "activation" (the store's
activation array), or None (random). Pass them as `select(name, scores={target: es}, ...)`.

Every method reduces to a ranking key per neuron (KN adds a secondary key); picking from those
keys is shared, so ties break the same way everywhere. One total order over all neurons:
  key descending, then secondary key descending, then flat index ascending,
where the flat index is the neuron's position in (layer, neuron) order of the input array.
good = the first K of that order; bad = the last K, read from the end (so among tied bad
neurons the higher flat index comes first). One order makes good and bad disjoint whenever
2K <= n, even when many neurons tie (e.g. at score 0).

Decisions (section 3.4 / 4.3 / 4.4 of the NeuronLLM paper):
- The paper takes exactly the top/bottom K. We keep that even when fewer than K neurons have a
  positive (negative) key, so a good set may be padded with zero-score neurons; the attrs
  `n_positive` / `n_negative` count them so a report can flag it.
- A method that selects good and bad neurons needs 2K distinct neurons (else ValueError).
- z is clamped to n_neurons // 2 so one example's top-z and bottom-z sets never overlap (if they
  did, every neuron of a small model would be "ambiguous" and score 0); attrs keep z and z_used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .vocab import ROLES, MethodName  # noqa: F401  (MethodName re-exported: the type of a METHODS key)

# Table 2: each "enabled" variant (NeuronLLM's good and bad neurons on another target) and its original.
ENABLED_VARIANTS = {"tn_enabled": "tn", "qrnca_enabled": "qrnca"}


@dataclass(frozen=True)
class Grid:
    """The (layer, neuron) coordinates every per-neuron key array is laid out on."""

    layers: np.ndarray
    neurons: np.ndarray

    @property
    def size(self) -> int:
        return len(self.layers) * len(self.neurons)

    @classmethod
    def of(cls, array: xr.DataArray) -> Grid:
        return cls(np.asarray(array["layer"].values), np.asarray(array["neuron"].values))


@dataclass(frozen=True)
class Options:
    z: int = 5000  # per-example good/bad set size of additive reordering
    t: float = 0.2  # KN: keep neurons scoring >= t * the example's max
    seed: int = 0  # random


@dataclass(frozen=True)
class Ranking:
    key: np.ndarray  # (layer, neuron)
    tiebreak: np.ndarray | None = None
    params: Mapping[str, object] = field(default_factory=dict)  # recorded in the set's attrs


@dataclass(frozen=True)
class Method:
    needs: str | None  # target name, "activation", or None
    with_bad: bool
    rank: Callable[[xr.DataArray | None, Grid, Options], Ranking]
    description: str


# ---- scoring -------------------------------------------------------------------------------


def _checked(array: xr.DataArray, dims: tuple[str, ...], what: str) -> xr.DataArray:
    missing = [d for d in dims if d not in array.dims]
    if missing:
        raise ValueError(f"{what} needs dims {dims}, got {array.dims}")
    values = np.asarray(array.values)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} has {int(np.sum(~np.isfinite(values)))} non-finite values")
    return array.transpose(*dims, ...)


def _extreme_mask(values: np.ndarray, z: int, largest: bool) -> np.ndarray:
    """Boolean mask of the z largest (or smallest) entries per row; ties by lower index."""
    order = np.argsort(-values if largest else values, axis=1, kind="stable")[:, :z]
    mask = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def additive_scores(es: xr.DataArray, z: int) -> xr.DataArray:
    """Eq. 5: sum_j ES_j(n) * I[n in G_j or B_j], with ambiguous neurons (in some G_j and some
    B_k) set to 0. G_j / B_j are the top / bottom z neurons of example j (z clamped, see top)."""
    es = _checked(es, ("example", "layer", "neuron"), "example scores")
    grid = Grid.of(es)
    values = np.asarray(es.values, dtype=np.float64).reshape(es.sizes["example"], grid.size)
    z_used = max(0, min(int(z), grid.size // 2))
    good = _extreme_mask(values, z_used, largest=True)
    bad = _extreme_mask(values, z_used, largest=False)
    score = np.where(good | bad, values, 0.0).sum(axis=0)
    score[good.any(axis=0) & bad.any(axis=0)] = 0.0  # ambiguous across examples
    return xr.DataArray(
        score.reshape(len(grid.layers), len(grid.neurons)),
        dims=("layer", "neuron"),
        coords={"layer": grid.layers, "neuron": grid.neurons},
        attrs={"z": int(z), "z_used": z_used},
    )


def _rank_additive(es, grid, opts):
    scores = additive_scores(es, opts.z)
    return Ranking(scores.values, params={"z": int(opts.z), "z_used": scores.attrs["z_used"]})


def kn_counts(es: xr.DataArray, t: float) -> tuple[xr.DataArray, xr.DataArray]:
    """KN's count-based strategy: per example keep neurons scoring >= t * that example's max
    (nothing is kept from an example whose max is <= 0: it has no positive attribution).
    Returns (how many examples keep each neuron, summed score over the examples that keep it)."""
    es = _checked(es, ("example", "layer", "neuron"), "example scores")
    values = np.asarray(es.values, dtype=np.float64)
    example_max = values.max(axis=(1, 2), keepdims=True)
    kept = (values >= t * example_max) & (example_max > 0)
    coords = {"layer": es["layer"].values, "neuron": es["neuron"].values}
    count = xr.DataArray(kept.sum(axis=0).astype(np.float64), dims=("layer", "neuron"), coords=coords)
    kept_sum = xr.DataArray(np.where(kept, values, 0.0).sum(axis=0), dims=("layer", "neuron"), coords=coords)
    return count, kept_sum


def _rank_kn(es, grid, opts):
    count, kept_sum = kn_counts(es, opts.t)
    return Ranking(count.values, kept_sum.values, params={"t": float(opts.t)})


def _rank_activation(activation, grid, opts):
    # Signed mean: "highest activation" over identification examples and proxies.
    activation = _checked(activation, ("layer", "neuron"), "activations")
    other = [d for d in activation.dims if d not in ("layer", "neuron")]
    return Ranking(np.asarray(activation.mean(other).values, dtype=np.float64), params={})


def _rank_random(_source, grid, opts):
    # Uniform keys: the top K of a random permutation (good only, as section 4.1 runs the baselines).
    keys = np.random.default_rng(opts.seed).random(grid.size)
    return Ranking(keys.reshape(len(grid.layers), len(grid.neurons)), params={"seed": int(opts.seed)})


METHODS: dict[str, Method] = {
    "neuronllm": Method("ace", True, _rank_additive, "ACE scores, additive reordering, good and bad"),
    "tn": Method("tn", False, _rank_additive, "TN target, additive reordering, good only"),
    "qrnca": Method("qrnca", False, _rank_additive, "QRNCA target, additive reordering, good only"),
    "tn_enabled": Method("tn", True, _rank_additive, "TN target inside NeuronLLM (good and bad)"),
    "qrnca_enabled": Method("qrnca", True, _rank_additive, "QRNCA target inside NeuronLLM (good and bad)"),
    "kn": Method("qrnca", False, _rank_kn, "QRNCA target, count of examples over t * max, good only"),
    "act": Method("activation", False, _rank_activation, "highest mean activation, good only"),
    "random": Method(None, False, _rank_random, "uniform over all FFN neurons, good only (drawn several times)"),
}


# The baselines of Table 1 (section 4.1): a NeuronLLM row is compared with the best of these.
BASELINE_METHODS = tuple(m for m in METHODS if m != "neuronllm" and m not in ENABLED_VARIANTS)


def method_names() -> tuple[str, ...]:
    """Every registered method, in registry order (the CLI's and the recipe's choices)."""
    return tuple(METHODS)


def method_needs(method: str) -> str | None:
    return _method(method).needs


def ig_targets(methods) -> list[str]:
    """The IG targets a run scores for these methods: every target they need but activations (ACT and RANDOM
    need none), sorted; ace when none is needed. The runner scores these; `nsneurons plan` counts them."""
    needs = {method_needs(m) for m in methods}
    return sorted(t for t in needs if t not in (None, "activation")) or ["ace"]


def _method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown selection method {name!r}; known: {', '.join(sorted(METHODS))}") from None


# ---- neuron set ----------------------------------------------------------------------------


def _order(key: np.ndarray, tiebreak: np.ndarray | None) -> np.ndarray:
    """Flat indices best first: key desc, tiebreak desc, flat index asc (see module doc)."""
    keys = [np.arange(key.size)] + ([-tiebreak.ravel()] if tiebreak is not None else []) + [-key.ravel()]
    return np.lexsort(keys)  # lexsort sorts by the last key first


def _check_k(k: int, n: int, with_bad: bool) -> None:
    if k < 1:
        raise ValueError(f"k={k}: need at least one neuron")
    if k > n:
        raise ValueError(f"k={k} exceeds the {n} FFN neurons available")
    if with_bad and 2 * k > n:
        raise ValueError(f"k={k} good plus k bad neurons need {2 * k} distinct neurons; only {n} exist")


def neuron_set(ranking: Ranking, grid: Grid, k: int, with_bad: bool, method: str, source: str | None) -> xr.Dataset:
    """Top/bottom k of a ranking as the neuron-set Dataset of docs/design.md."""
    key = np.asarray(ranking.key, dtype=np.float64)
    _check_k(k, key.size, with_bad)
    layer = np.full((2, k), -1, dtype=np.int64)
    neuron = np.full((2, k), -1, dtype=np.int64)
    score = np.full((2, k), np.nan)
    order = _order(key, ranking.tiebreak)
    for row, picked in enumerate((order[:k], order[::-1][:k])[: 2 if with_bad else 1]):
        layer[row] = grid.layers[picked // len(grid.neurons)]
        neuron[row] = grid.neurons[picked % len(grid.neurons)]
        score[row] = key.ravel()[picked]
    attrs = {
        "method": method,
        "k": int(k),
        "source": source or "none",
        "n_positive": int(np.sum(key > 0)),
        "n_negative": int(np.sum(key < 0)),
        **dict(ranking.params),
    }
    return xr.Dataset(
        {name: (("role", "rank"), data) for name, data in (("layer", layer), ("neuron", neuron), ("score", score))},
        coords={"role": list(ROLES), "rank": np.arange(k)},
        attrs=attrs,
    )


def additive_reordering(es: xr.DataArray, z: int, k: int, with_bad: bool, method: str = "additive_reordering") -> xr.Dataset:
    """Eq. 5 scores, then good = top k and (if with_bad) bad = bottom k."""
    return neuron_set(_rank_additive(es, Grid.of(es), Options(z=z)), Grid.of(es), k, with_bad, method, None)


def select(
    method: str,
    *,
    k: int,
    scores: Mapping[str, xr.DataArray] | None = None,
    activations: xr.DataArray | None = None,
    n_layers: int | None = None,
    n_neurons: int | None = None,
    z: int = 5000,
    t: float = 0.2,
    seed: int = 0,
) -> xr.Dataset:
    """Run a registered method. `scores` maps target name -> ES (example, layer, neuron); only
    `METHODS[method].needs` must be present. n_layers/n_neurons are needed only by random when
    no array is given (the grid is otherwise read from the arrays)."""
    spec = _method(method)
    scores = dict(scores or {})
    if spec.needs == "activation":
        if activations is None:
            raise ValueError(f"method {method!r} needs activations")
        source = activations
    elif spec.needs is not None:
        if spec.needs not in scores:
            raise ValueError(f"method {method!r} needs example scores of target {spec.needs!r}; got {sorted(scores)}")
        source = scores[spec.needs]
    else:
        source = None
    grid = _grid(source, scores, activations, n_layers, n_neurons)
    ranking = spec.rank(source, grid, Options(z=z, t=t, seed=seed))
    return neuron_set(ranking, grid, k, spec.with_bad, method, spec.needs)


def _grid(source, scores, activations, n_layers, n_neurons) -> Grid:
    if source is not None:
        return Grid.of(source)
    if n_layers is not None and n_neurons is not None:
        return Grid(np.arange(n_layers), np.arange(n_neurons))
    for array in [*scores.values(), activations]:
        if array is not None:
            return Grid.of(array)
    raise ValueError("need n_layers and n_neurons (or any score/activation array) to know the neuron grid")


# ---- helpers for interventions -------------------------------------------------------------


def to_pairs(neuron_set: xr.Dataset, role: str, n: int) -> list[tuple[int, int]]:
    """The first n (layer, neuron) pairs of a role, skipping -1 entries (so maybe fewer than n)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    part = neuron_set.sel(role=role)
    pairs = [(int(l), int(m)) for l, m in zip(part["layer"].values, part["neuron"].values) if l >= 0]
    return pairs[:n]


def good_count(k: int, ratio: float) -> int:
    """round(ratio * k) with halves rounded up: floor(x + 0.5), not Python's banker's round.
    x is first rounded to 9 decimals so 0.35 * 10 (3.4999999999999996 in binary) counts as 3.5."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio={ratio} must be within [0, 1]")
    return int(math.floor(round(ratio * k, 9) + 0.5))


def ratio_split(neuron_set: xr.Dataset, k: int, ratio: float) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Intervention budget k split as good_count(k, ratio) first good + the rest first bad.
    A good-only set (bad entries -1) yields an empty bad list: the caller decides what that means."""
    if k > neuron_set.sizes["rank"]:
        raise ValueError(f"k={k} exceeds the neuron set's K={neuron_set.sizes['rank']}")
    n_good = good_count(k, ratio)
    return to_pairs(neuron_set, "good", n_good), to_pairs(neuron_set, "bad", k - n_good)
