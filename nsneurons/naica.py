"""NA-ICA / QRNCA key neurons (seed 002, "Analyzing Key Neurons in Large Language Models").

Input: IG of every neuron for every prompt of every query, a DataArray (query, prompt, layer,
neuron); the scores store's (example, proxy, layer, neuron) is accepted and renamed. Each query
has 3 prompts (different instruction templates, shuffled options).

1. Per prompt, keep neurons with IG > t x the prompt's maximum (t = 0.2), and IG > 0.
2. Per query q: S(n, q) = sum of n's kept IG over q's prompts; count(n, q) = prompts keeping n.
   q's cluster = the neurons kept by at least one of q's prompts.
   With `clusters` (query -> domain), a cluster is a domain: S sums over the domain's queries and
   the cluster is the union of their clusters.
3. NA(n, c) = S(n, c) / sum of S over c's cluster;  ICA(n) = log(N / (occ(n) + 1)), N clusters,
   occ(n) = number of clusters containing n;  score = NA x ICA.
4. Key neurons of c: the top v (20) neurons with a positive score.
5. Common neurons: occ(n) > floor(N x u) (u = 0.3), reported separately; with
   `remove_common=True` they are removed from the candidates before the top v are taken.

Decisions (where the paper / the peer code `keyneuron` leave a choice or are wrong):
- A prompt whose maximum IG is <= 0 (or all NaN) keeps nothing: "> t x max" with a negative max
  would keep negative neurons. NaN never passes the threshold.
- floor(N x u) is computed as floor(N x u + 1e-9), so 0.3 x 10 and 0.29 x 100 land on 3 and 29
  rather than on float noise.
- Common-neuron removal really removes them (the peer code compares strings with lists and never
  removes anything), and it happens before truncation to v, so each cluster still gets up to v
  key neurons (the peer code truncates first, which can only leave fewer).
- Ties: one total order for every ranking here: score descending, then layer ascending, then
  neuron ascending (i.e. flat (layer, neuron) index ascending, in the input's coordinate order).
- Output with fewer than v key neurons is padded with layer = neuron = -1 and score = NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import xarray as xr

T_DEFAULT, V_DEFAULT, U_DEFAULT = 0.2, 20, 0.3
_STORE_DIMS = {"example": "query", "proxy": "prompt"}
NEURON_DIMS = ("query", "prompt", "layer", "neuron")


class KeyNeurons(NamedTuple):
    key: xr.Dataset  # (cluster, rank): layer, neuron, score, na, ica
    common: xr.Dataset  # (common,): layer, neuron, occ
    scores: xr.Dataset  # (cluster, layer, neuron): S, count, in_cluster, na, score; (layer, neuron): occ, ica


def as_query_array(array: xr.DataArray) -> xr.DataArray:
    """The IG (or activation) array as (query, prompt, layer, neuron); store names are renamed."""
    renamed = array.rename({k: v for k, v in _STORE_DIMS.items() if k in array.dims})
    if set(renamed.dims) != set(NEURON_DIMS):
        raise ValueError(f"expected dims {NEURON_DIMS} (or the store's example, proxy, layer, neuron), got {array.dims}")
    renamed = renamed.transpose(*NEURON_DIMS)
    for dim in ("layer", "neuron"):
        if dim not in renamed.coords:
            renamed = renamed.assign_coords({dim: np.arange(renamed.sizes[dim])})
    return renamed


def kept_mask(ig: xr.DataArray, t: float = T_DEFAULT) -> xr.DataArray:
    """Per prompt: IG > t x the prompt's maximum over all (layer, neuron), and IG > 0."""
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t must be in [0, 1), got {t}")
    ig = as_query_array(ig)
    values = ig.values.astype(np.float64)
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    with np.errstate(invalid="ignore"):
        finite = np.where(np.isnan(flat), -np.inf, flat)
        peak = finite.max(axis=-1, keepdims=True)
        keep = (flat > t * peak) & (flat > 0) & (peak > 0)
    return ig.copy(data=keep.reshape(values.shape))


def query_clusters(ig: xr.DataArray, t: float = T_DEFAULT) -> xr.Dataset:
    """S (summed kept IG) and count (prompts keeping the neuron) per (query, layer, neuron)."""
    ig = as_query_array(ig)
    keep = kept_mask(ig, t)
    kept_scores = xr.where(keep, ig.astype(np.float64), 0.0)
    ds = xr.Dataset({"S": kept_scores.sum("prompt"), "count": keep.sum("prompt").astype(np.int64)})
    ds["in_cluster"] = ds["count"] > 0
    ds.attrs.update(t=float(t))
    return ds


def _cluster_labels(queries: Sequence[str], clusters) -> np.ndarray:
    if isinstance(clusters, xr.DataArray):
        clusters = dict(zip(clusters["query"].values.tolist(), clusters.values.tolist()))
    if isinstance(clusters, Mapping):
        missing = [q for q in queries if q not in clusters]
        if missing:
            raise ValueError(f"no cluster given for queries {missing[:5]}")
        return np.asarray([str(clusters[q]) for q in queries])
    labels = np.asarray([str(c) for c in clusters])
    if len(labels) != len(queries):
        raise ValueError(f"{len(labels)} cluster labels for {len(queries)} queries")
    return labels


def naica_scores(ig: xr.DataArray, *, t: float = T_DEFAULT, clusters=None, cluster_dim: str = "domain") -> xr.Dataset:
    """NA, ICA and NA x ICA for every (cluster, layer, neuron).

    clusters: None (each query is a cluster; dim "query"), or query -> label as a mapping, a
    sequence aligned with the queries, or a DataArray over "query" (dim `cluster_dim`).
    """
    per_query = query_clusters(ig, t)
    if clusters is None:
        dim = "query"
        grouped = per_query
    else:
        dim = cluster_dim
        labels = _cluster_labels(per_query["query"].values.tolist(), clusters)
        order = list(dict.fromkeys(labels.tolist()))  # first-appearance order of the labels
        label_da = xr.DataArray(labels, dims="query")
        pieces = [per_query.isel(query=np.flatnonzero(labels == c)).sum("query") for c in order]
        grouped = xr.concat(pieces, dim=dim).assign_coords({dim: order})
        grouped["in_cluster"] = grouped["count"] > 0
        grouped = grouped.assign_coords(n_queries=(dim, [int((label_da == c).sum()) for c in order]))
    S = grouped["S"]
    total = S.sum(("layer", "neuron"))
    na = xr.where(total > 0, S / total.where(total > 0, 1.0), 0.0)
    n_clusters = grouped.sizes[dim]
    occ = grouped["in_cluster"].sum(dim).astype(np.int64)
    ica = np.log(n_clusters / (occ + 1.0))
    ds = xr.Dataset(
        {
            "S": S,
            "count": grouped["count"],
            "in_cluster": grouped["in_cluster"],
            "na": na,
            "occ": occ,
            "ica": ica,
            "score": na * ica,
        }
    )
    ds.attrs.update(t=float(t), n_clusters=int(n_clusters), cluster_dim=dim)
    return ds


def common_threshold(n_clusters: int, u: float) -> int:
    """floor(N x u), robust to float noise; a neuron is common when occ > this."""
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"u must be in [0, 1], got {u}")
    return int(math.floor(n_clusters * u + 1e-9))


def common_neurons(scores: xr.Dataset, u: float = U_DEFAULT) -> xr.Dataset:
    """Neurons in more than floor(N x u) clusters, ordered by occ descending, then (layer, neuron)."""
    occ = scores["occ"]
    threshold = common_threshold(scores.attrs["n_clusters"], u)
    flat = occ.values.reshape(-1)
    layers, neurons = np.meshgrid(occ["layer"].values, occ["neuron"].values, indexing="ij")
    picked = np.flatnonzero(flat > threshold)
    picked = picked[np.lexsort((picked, -flat[picked]))]
    ds = xr.Dataset(
        {
            "layer": ("common", layers.reshape(-1)[picked].astype(np.int64)),
            "neuron": ("common", neurons.reshape(-1)[picked].astype(np.int64)),
            "occ": ("common", flat[picked].astype(np.int64)),
        },
        coords={"common": np.arange(len(picked))},
    )
    ds.attrs.update(u=float(u), threshold=threshold, n_clusters=int(scores.attrs["n_clusters"]))
    return ds


def rank_order(values: np.ndarray) -> np.ndarray:
    """Flat indices sorted by value descending, then flat index ascending (the documented tie-break)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    index = np.arange(flat.size)
    return np.lexsort((index, -flat))


def top_neurons(
    score: xr.DataArray, v: int, *, exclude: np.ndarray | None = None, extra: Mapping[str, xr.DataArray] | None = None
) -> xr.Dataset:
    """Top v positive-score neurons per cluster: Dataset (cluster, rank) of layer, neuron, score (+ extra).

    exclude: bool (layer, neuron) mask of neurons never picked (e.g. common neurons).
    """
    if v < 1:
        raise ValueError(f"v must be >= 1, got {v}")
    extra = dict(extra or {})
    dim = score.dims[0]
    score = score.transpose(dim, "layer", "neuron")
    layers, neurons = score["layer"].values, score["neuron"].values
    n_neurons = len(neurons)
    n = score.sizes[dim]
    out_layer = np.full((n, v), -1, np.int64)
    out_neuron = np.full((n, v), -1, np.int64)
    out_score = np.full((n, v), np.nan)
    out_extra = {k: np.full((n, v), np.nan) for k in extra}
    extra_flat = {
        k: a.transpose(dim, "layer", "neuron").values.reshape(n, -1)
        if dim in a.dims
        else np.broadcast_to(a.transpose("layer", "neuron").values.reshape(-1), (n, layers.size * n_neurons))
        for k, a in extra.items()
    }
    blocked = None if exclude is None else np.asarray(exclude, bool).reshape(-1)
    for i in range(n):
        flat = score.values[i].reshape(-1).astype(np.float64)
        eligible = flat > 0
        if blocked is not None:
            eligible &= ~blocked
        order = [j for j in rank_order(np.where(eligible, flat, -np.inf)) if eligible[j]][:v]
        k = len(order)
        out_layer[i, :k] = layers[np.asarray(order, np.int64) // n_neurons] if k else []
        out_neuron[i, :k] = neurons[np.asarray(order, np.int64) % n_neurons] if k else []
        out_score[i, :k] = flat[order]
        for name, values in extra_flat.items():
            out_extra[name][i, :k] = values[i][order]
    ds = xr.Dataset(
        {
            "layer": ((dim, "rank"), out_layer),
            "neuron": ((dim, "rank"), out_neuron),
            "score": ((dim, "rank"), out_score),
            **{name: ((dim, "rank"), values) for name, values in out_extra.items()},
        },
        coords={dim: score[dim].values, "rank": np.arange(v)},
    )
    ds["n_key"] = (dim, (out_layer >= 0).sum(1).astype(np.int64))
    ds.attrs.update(v=int(v))
    return ds


def key_neurons(
    ig: xr.DataArray,
    *,
    t: float = T_DEFAULT,
    v: int = V_DEFAULT,
    u: float = U_DEFAULT,
    clusters=None,
    remove_common: bool = False,
    cluster_dim: str = "domain",
) -> KeyNeurons:
    """NA-ICA key neurons (top v positive scores) and common neurons, per query or per cluster."""
    scores = naica_scores(ig, t=t, clusters=clusters, cluster_dim=cluster_dim)
    common = common_neurons(scores, u)
    exclude = None
    if remove_common:
        exclude = (scores["occ"] > common.attrs["threshold"]).transpose("layer", "neuron").values
    key = top_neurons(scores["score"], v, exclude=exclude, extra={"na": scores["na"], "ica": scores["ica"]})
    key.attrs.update(
        method="na-ica",
        t=float(t),
        v=int(v),
        u=float(u),
        remove_common=bool(remove_common),
        n_clusters=scores.attrs["n_clusters"],
        common_threshold=common.attrs["threshold"],
        n_common=int(common.sizes["common"]),
        cluster_dim=scores.attrs["cluster_dim"],
        tie_break="score desc, layer asc, neuron asc",
    )
    return KeyNeurons(key=key, common=common, scores=scores)


def key_pairs(key: xr.Dataset, cluster) -> list[tuple[int, int]]:
    """The (layer, neuron) pairs of one cluster's key neurons, in rank order (padding left out)."""
    row = key.sel({key["layer"].dims[0]: cluster})
    return [(int(l), int(n)) for l, n in zip(row["layer"].values, row["neuron"].values) if l >= 0]
