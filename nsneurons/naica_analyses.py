"""NA-ICA applications (seed 002), the analyses: held-out split, domain key neurons, localized regions,
neuron-based domain prediction, the random control of editing. No model here: the runner
(nsneurons.runners.naica) attributes and edits, nsneurons.naica_report writes the report.

Domain key neurons (used by regions and prediction) are pooled from the per-query NA-ICA key
neurons of the domain's queries: ranked by frequency (how many of the domain's queries have the
neuron as a key neuron) descending, then summed NA-ICA score descending, then (layer, neuron)
ascending. Pooling works for any number of domains; domain-level NA-ICA (`key_neurons(...,
clusters=domain_of)`) gives ICA = log(D / 2) <= 0 to every one-domain neuron when D <= 2.
Prediction uses key neurons computed from the training queries only (NA-ICA rerun on them), so
held-out queries influence neither NA, ICA nor the domain neuron sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from .naica import as_query_array

EDIT_CONDITIONS = ("none", "boost", "suppress", "random_boost", "random_suppress")


def split_queries(domain_of: Mapping[str, str], held_out_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held_out) query ids: per domain round(fraction x n) held out (seeded), at least 1 when
    fraction > 0 and the domain has >= 2 queries, never all of them. Query order is kept."""
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    held: set[str] = set()
    domains = list(dict.fromkeys(domain_of.values()))
    for domain in domains:
        queries = sorted(q for q, d in domain_of.items() if d == domain)
        n = int(round(held_out_fraction * len(queries)))
        if held_out_fraction > 0 and len(queries) >= 2:
            n = min(max(n, 1), len(queries) - 1)
        else:
            n = 0
        held.update(np.random.default_rng([seed, domains.index(domain)]).permutation(queries)[:n].tolist())
    return [q for q in domain_of if q not in held], [q for q in domain_of if q in held]


def domain_key_neurons(
    key: xr.Dataset, domain_of: Mapping[str, str], *, queries: Sequence[str] | None = None, v: int | None = None
) -> xr.Dataset:
    """Per domain, the pooled key neurons of its queries: Dataset (domain, rank) of layer, neuron, frequency, score."""
    queries = list(key["query"].values) if queries is None else list(queries)
    domains = list(dict.fromkeys(domain_of[q] for q in queries))
    pooled: dict[str, dict[tuple[int, int], list]] = {d: {} for d in domains}
    for q in queries:
        row = key.sel(query=q)
        for layer, neuron, score in zip(row["layer"].values, row["neuron"].values, row["score"].values):
            if layer >= 0:
                entry = pooled[domain_of[q]].setdefault((int(layer), int(neuron)), [0, 0.0])
                entry[0] += 1
                entry[1] += float(score)
    ranked = {d: sorted(p.items(), key=lambda e: (-e[1][0], -e[1][1], e[0][0], e[0][1])) for d, p in pooled.items()}
    if v is not None:
        ranked = {d: r[:v] for d, r in ranked.items()}
    width = max([len(r) for r in ranked.values()] + [v or 0, 1])
    arrays = {
        name: np.full((len(domains), width), fill, dtype)
        for name, fill, dtype in (
            ("layer", -1, np.int64),
            ("neuron", -1, np.int64),
            ("frequency", 0, np.int64),
            ("score", np.nan, np.float64),
        )
    }
    for i, d in enumerate(domains):
        for r, ((layer, neuron), (freq, score)) in enumerate(ranked[d]):
            arrays["layer"][i, r], arrays["neuron"][i, r], arrays["frequency"][i, r], arrays["score"][i, r] = (
                layer,
                neuron,
                freq,
                score,
            )
    ds = xr.Dataset({k: (("domain", "rank"), a) for k, a in arrays.items()}, coords={"domain": domains, "rank": np.arange(width)})
    ds["n_key"] = ("domain", (arrays["layer"] >= 0).sum(1))
    ds["n_queries"] = ("domain", np.asarray([sum(domain_of[q] == d for q in queries) for d in domains], np.int64))
    ds.attrs.update(pooling="frequency desc, summed score desc, layer asc, neuron asc", v=-1 if v is None else int(v))
    return ds


def domain_pairs(domain_keys: xr.Dataset, domain) -> set[tuple[int, int]]:
    """The (layer, neuron) pairs of one domain's pooled key neurons (padding left out)."""
    row = domain_keys.sel(domain=domain)
    return {(int(l), int(n)) for l, n in zip(row["layer"].values, row["neuron"].values) if l >= 0}


def localized_regions(domain_keys: xr.Dataset, n_layers: int) -> xr.Dataset:
    """Layer histogram of each domain's key neurons and pairwise overlap (count and Jaccard)."""
    domains = list(domain_keys["domain"].values)
    sets = {d: domain_pairs(domain_keys, d) for d in domains}
    counts = np.zeros((len(domains), n_layers), np.int64)
    for i, d in enumerate(domains):
        for layer, _ in sets[d]:
            counts[i, layer] += 1
    overlap = np.array([[len(sets[a] & sets[b]) for b in domains] for a in domains], np.int64)
    union = np.array([[len(sets[a] | sets[b]) for b in domains] for a in domains], np.int64)
    jaccard = np.where(union > 0, overlap / np.maximum(union, 1), np.nan)
    return xr.Dataset(
        {
            "layer_count": (("domain", "layer"), counts),
            "overlap": (("domain", "other_domain"), overlap),
            "jaccard": (("domain", "other_domain"), jaccard),
        },
        coords={"domain": domains, "other_domain": domains, "layer": np.arange(n_layers)},
    )


def predict_domains(
    activation: xr.DataArray, domain_keys: xr.Dataset, queries: Sequence[str], domain_of: Mapping[str, str]
) -> xr.Dataset:
    """Predict each query's domain: the domain whose key neurons have the highest mean activation at the
    answer position (mean over the neurons and the query's prompts). Ties: first domain in order."""
    activation = as_query_array(activation)
    domains = [str(d) for d in domain_keys["domain"].values]
    per_query = activation.sel(query=list(queries)).mean("prompt").values  # [Q, L, N]
    layer_pos = {int(l): i for i, l in enumerate(activation["layer"].values)}
    neuron_pos = {int(n): i for i, n in enumerate(activation["neuron"].values)}
    means = np.full((len(queries), len(domains)), np.nan)
    for j, d in enumerate(domains):
        pairs = sorted(domain_pairs(domain_keys, d))
        if pairs:
            li = [layer_pos[l] for l, _ in pairs]
            ni = [neuron_pos[n] for _, n in pairs]
            means[:, j] = per_query[:, li, ni].mean(axis=1)
    filled = np.where(np.isnan(means), -np.inf, means)
    predicted = [domains[int(np.argmax(row))] if np.isfinite(row).any() else "" for row in filled]
    truth = [domain_of[q] for q in queries]
    confusion = np.zeros((len(domains), len(domains)), np.int64)
    for t, p in zip(truth, predicted):
        if p and t in domains:
            confusion[domains.index(t), domains.index(p)] += 1
    correct = np.asarray([t == p for t, p in zip(truth, predicted)])
    ds = xr.Dataset(
        {
            "mean_activation": (("query", "domain"), means),
            "predicted": ("query", np.asarray(predicted, dtype=str)),
            "true": ("query", np.asarray(truth, dtype=str)),
            "correct": ("query", correct),
            "confusion": (("true_domain", "predicted_domain"), confusion),
        },
        coords={"query": list(queries), "domain": domains, "true_domain": domains, "predicted_domain": domains},
    )
    ds.attrs.update(accuracy=float(correct.mean()) if len(correct) else float("nan"), n_queries=len(queries))
    return ds


def random_control(
    pairs: Sequence[tuple[int, int]], n_layers: int, n_neurons: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """As many random neurons as `pairs`, drawn without replacement from all neurons not in `pairs`."""
    taken = np.asarray([layer * n_neurons + neuron for layer, neuron in pairs], np.int64)
    pool = np.setdiff1d(np.arange(n_layers * n_neurons), taken)
    picked = np.sort(rng.choice(pool, size=min(len(pairs), len(pool)), replace=False))
    return [(int(i // n_neurons), int(i % n_neurons)) for i in picked]
