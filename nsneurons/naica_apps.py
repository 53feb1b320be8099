"""NA-ICA applications (seed 002): localized regions, neuron-based domain prediction, editing, `run_naica`.

Domain key neurons (used by regions and prediction) are pooled from the per-query NA-ICA key
neurons of the domain's queries: ranked by frequency (how many of the domain's queries have the
neuron as a key neuron) descending, then summed NA-ICA score descending, then (layer, neuron)
ascending. Pooling works for any number of domains; domain-level NA-ICA (`key_neurons(...,
clusters=domain_of)`) gives ICA = log(D / 2) <= 0 to every one-domain neuron when D <= 2.
Prediction uses key neurons computed from the training queries only (NA-ICA rerun on them), so
held-out queries influence neither NA, ICA nor the domain neuron sets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from . import figures
from .naica import T_DEFAULT, U_DEFAULT, V_DEFAULT, as_query_array, key_neurons, key_pairs
from .tasks.base import LETTERS, Proxy
from .zarrio import open_store

EDIT_CONDITIONS = ("none", "boost", "suppress", "random_boost", "random_suppress")


def attribute_queries(model, proxies_by_query: Mapping[str, Sequence[Proxy]], *, steps: int = 20, answer_format: str = "letters",
                      progress: bool = False, path: str = "staircase") -> xr.Dataset:
    """IG (target "qrnca") and activations of every neuron for every prompt: (query, prompt, layer, neuron)."""
    from tqdm.auto import tqdm

    from .attribution import AttributionConfig
    from .scoring import attribute_group_with_retries

    config = AttributionConfig(target="qrnca", steps=steps, answer_format=answer_format, path=path)
    queries = list(proxies_by_query)
    n_prompts = {len(p) for p in proxies_by_query.values()}
    if len(n_prompts) != 1:
        raise ValueError(f"every query needs the same number of prompts, got {sorted(n_prompts)}")
    n_p = n_prompts.pop()
    shape = (len(queries), n_p, model.n_layers, model.n_neurons)
    ig, act = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    probs, target = np.zeros((len(queries), n_p, 4), np.float32), np.zeros((len(queries), n_p), np.float32)
    letters = np.empty((len(queries), n_p), dtype="<U1")
    bar = tqdm(total=len(queries) * n_p, disable=not progress, unit="prompt", desc="NA-ICA attribution")
    for i, query in enumerate(queries):
        # A query's prompts (its shuffled-option variants) share their beginning: one session each.
        results = attribute_group_with_retries(model, proxies_by_query[query], config)
        for j, (proxy, result) in enumerate(zip(proxies_by_query[query], results)):
            ig[i, j], act[i, j], probs[i, j], target[i, j] = result.ig, result.activation, result.option_prob, result.target_value
            letters[i, j] = proxy.correct_letter
        bar.update(len(results))
    bar.close()
    dims = ("query", "prompt", "layer", "neuron")
    coords = {"query": queries, "prompt": np.arange(n_p), "layer": np.arange(model.n_layers), "neuron": np.arange(model.n_neurons),
              "option": list(LETTERS), "correct_letter": (("query", "prompt"), letters)}
    return xr.Dataset({"ig": (dims, ig), "activation": (dims, act), "option_prob": (("query", "prompt", "option"), probs),
                       "target_value": (("query", "prompt"), target)}, coords=coords,
                      attrs={"target": "qrnca", "steps": int(steps), "answer_format": answer_format, "path": path})


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


def domain_key_neurons(key: xr.Dataset, domain_of: Mapping[str, str], *, queries: Sequence[str] | None = None,
                       v: int | None = None) -> xr.Dataset:
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
    arrays = {name: np.full((len(domains), width), fill, dtype) for name, fill, dtype in
              (("layer", -1, np.int64), ("neuron", -1, np.int64), ("frequency", 0, np.int64), ("score", np.nan, np.float64))}
    for i, d in enumerate(domains):
        for r, ((layer, neuron), (freq, score)) in enumerate(ranked[d]):
            arrays["layer"][i, r], arrays["neuron"][i, r], arrays["frequency"][i, r], arrays["score"][i, r] = layer, neuron, freq, score
    ds = xr.Dataset({k: (("domain", "rank"), a) for k, a in arrays.items()}, coords={"domain": domains, "rank": np.arange(width)})
    ds["n_key"] = ("domain", (arrays["layer"] >= 0).sum(1))
    ds["n_queries"] = ("domain", np.asarray([sum(domain_of[q] == d for q in queries) for d in domains], np.int64))
    ds.attrs.update(pooling="frequency desc, summed score desc, layer asc, neuron asc", v=-1 if v is None else int(v))
    return ds


def _pairs(domain_keys: xr.Dataset, domain) -> set[tuple[int, int]]:
    row = domain_keys.sel(domain=domain)
    return {(int(l), int(n)) for l, n in zip(row["layer"].values, row["neuron"].values) if l >= 0}


def localized_regions(domain_keys: xr.Dataset, n_layers: int) -> xr.Dataset:
    """Layer histogram of each domain's key neurons and pairwise overlap (count and Jaccard)."""
    domains = list(domain_keys["domain"].values)
    sets = {d: _pairs(domain_keys, d) for d in domains}
    counts = np.zeros((len(domains), n_layers), np.int64)
    for i, d in enumerate(domains):
        for layer, _ in sets[d]:
            counts[i, layer] += 1
    overlap = np.array([[len(sets[a] & sets[b]) for b in domains] for a in domains], np.int64)
    union = np.array([[len(sets[a] | sets[b]) for b in domains] for a in domains], np.int64)
    jaccard = np.where(union > 0, overlap / np.maximum(union, 1), np.nan)
    return xr.Dataset({"layer_count": (("domain", "layer"), counts), "overlap": (("domain", "other_domain"), overlap),
                       "jaccard": (("domain", "other_domain"), jaccard)},
                      coords={"domain": domains, "other_domain": domains, "layer": np.arange(n_layers)})


def plot_layer_histogram(regions: xr.Dataset, *, fig=None, subtitle: str = ""):
    """Key neurons per layer, one panel per domain, one y scale; returns the Figure (nsneurons.figures)."""
    domains, layers = [str(d) for d in regions["domain"].values], regions["layer"].values
    fig = figures.new_figure(fig, size=(max(6, 0.25 * len(layers) + 3), 1.1 * len(domains) + 1.2))
    axes = np.ravel(fig.subplots(len(domains), 1, sharex=True, sharey=True, squeeze=False))
    for ax, d in zip(axes, domains):
        ax.bar(layers, regions["layer_count"].sel(domain=d).values, color="tab:blue")
        ax.set_ylabel(d, rotation=0, ha="right", va="center")
        figures.integer_axes(ax, x=True, y=True)
    axes[-1].set_xlabel("layer")
    fig.suptitle("Key neurons per layer, by domain" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return figures.root(fig)


def plot_overlap(regions: xr.Dataset, *, ax=None, subtitle: str = ""):
    """Domain x domain heatmap of shared key neurons on `ax` (or a new Figure); returns the Figure."""
    domains = [str(d) for d in regions["domain"].values]
    if ax is None:
        ax = figures.new_figure(size=(1.0 * len(domains) + 3, 0.9 * len(domains) + 2)).subplots()
    overlap = regions["overlap"].values
    image = ax.imshow(overlap, cmap="viridis")
    ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right")
    ax.set_yticks(range(len(domains)), domains)
    for (i, j), n in np.ndenumerate(overlap):
        ax.text(j, i, str(n), ha="center", va="center", color="w" if n < overlap.max() / 2 else "k")
    ax.figure.colorbar(image, ax=ax, label="shared key neurons")
    ax.set_title("Key-neuron overlap between domains" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return figures.root(ax.figure)


def plot_regions(regions: xr.Dataset, out_dir, subtitle: str = "") -> dict[str, Path]:
    """The two figures above as PNG (200 dpi) + SVG in out_dir; returns the PNG paths."""
    out_dir = Path(out_dir)
    return {"layer_histogram": figures.save(plot_layer_histogram(regions, subtitle=subtitle), out_dir / "naica_layer_histogram.png"),
            "overlap_heatmap": figures.save(plot_overlap(regions, subtitle=subtitle), out_dir / "naica_overlap_heatmap.png")}


def predict_domains(activation: xr.DataArray, domain_keys: xr.Dataset, queries: Sequence[str], domain_of: Mapping[str, str]) -> xr.Dataset:
    """Predict each query's domain: the domain whose key neurons have the highest mean activation at the
    answer position (mean over the neurons and the query's prompts). Ties: first domain in order."""
    activation = as_query_array(activation)
    domains = [str(d) for d in domain_keys["domain"].values]
    per_query = activation.sel(query=list(queries)).mean("prompt").values  # [Q, L, N]
    layer_pos = {int(l): i for i, l in enumerate(activation["layer"].values)}
    neuron_pos = {int(n): i for i, n in enumerate(activation["neuron"].values)}
    means = np.full((len(queries), len(domains)), np.nan)
    for j, d in enumerate(domains):
        pairs = sorted(_pairs(domain_keys, d))
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
    ds = xr.Dataset({"mean_activation": (("query", "domain"), means), "predicted": ("query", np.asarray(predicted, dtype=str)),
                     "true": ("query", np.asarray(truth, dtype=str)), "correct": ("query", correct),
                     "confusion": (("true_domain", "predicted_domain"), confusion)},
                    coords={"query": list(queries), "domain": domains, "true_domain": domains, "predicted_domain": domains})
    ds.attrs.update(accuracy=float(correct.mean()) if len(correct) else float("nan"), n_queries=len(queries))
    return ds


def random_control(pairs: Sequence[tuple[int, int]], n_layers: int, n_neurons: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """As many random neurons as `pairs`, drawn without replacement from all neurons not in `pairs`."""
    taken = np.asarray([layer * n_neurons + neuron for layer, neuron in pairs], np.int64)
    pool = np.setdiff1d(np.arange(n_layers * n_neurons), taken)
    picked = np.sort(rng.choice(pool, size=min(len(pairs), len(pool)), replace=False))
    return [(int(i // n_neurons), int(i % n_neurons)) for i in picked]


def edit_key_neurons(model, proxies_by_query: Mapping[str, Sequence[Proxy]], key: xr.Dataset, *, seed: int = 0,
                     answer_format: str = "letters", queries: Sequence[str] | None = None, progress: bool = False) -> xr.Dataset:
    """Boost (x2) / suppress (x0) each query's key neurons at the answer position, against as many
    random neurons (seeded per query) as control: mean correct-option probability over the query's prompts."""
    from tqdm.auto import tqdm

    from .intervention import Condition, option_probs

    queries = list(key["query"].values) if queries is None else list(queries)
    p_correct = np.full((len(queries), len(EDIT_CONDITIONS)), np.nan)
    n_edited = np.zeros(len(queries), np.int64)
    for i, q in enumerate(tqdm(queries, disable=not progress, unit="query", desc="NA-ICA editing")):
        pairs = key_pairs(key, q)
        if not pairs:
            continue
        control = random_control(pairs, model.n_layers, model.n_neurons, np.random.default_rng([seed, i]))
        conditions = [Condition("none"), Condition("boost", excite=tuple(pairs)), Condition("suppress", silence=tuple(pairs)),
                      Condition("random_boost", excite=tuple(control)), Condition("random_suppress", silence=tuple(control))]
        proxies = list(proxies_by_query[q])
        probs = option_probs(model, proxies, conditions, answer_format=answer_format).values  # [C, P, 4]
        correct = np.asarray([p.correct for p in proxies])
        p_correct[i] = probs[:, np.arange(len(proxies)), correct].mean(axis=1)
        n_edited[i] = len(pairs)
    ds = xr.Dataset({"p_correct": (("query", "condition"), p_correct), "n_edited": ("query", n_edited)},
                    coords={"query": queries, "condition": list(EDIT_CONDITIONS)})
    ds["delta"] = ds["p_correct"] - ds["p_correct"].sel(condition="none")
    ds["relative_change"] = ds["delta"] / ds["p_correct"].sel(condition="none")
    ds.attrs.update(seed=int(seed), boost=2.0, suppress=0.0, position="answer")
    return ds


def save_datasets(path, datasets: Mapping[str, xr.Dataset]) -> Path:
    """One zarr store, one group per dataset (replaced if it exists), whole or not at all, checksummed."""
    from .zarrio import write_atomically

    return write_atomically(path, datasets)


def load_datasets(path, groups: Sequence[str] = ("attribution", "key", "common", "domain_key", "regions", "prediction", "editing")) -> dict[str, xr.Dataset]:
    return {g: open_store(path, group=g).load() for g in groups if (Path(path) / g).exists()}


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def write_report(path, results: Mapping[str, xr.Dataset], figures: Mapping[str, Path], params: Mapping, *, model_description: str = "") -> Path:
    """A short markdown report of one `run_naica`."""
    key, common, dk, regions = results["key"], results["common"], results["domain_key"], results["regions"]
    domains = [str(d) for d in dk["domain"].values]
    lines = ["# NA-ICA / QRNCA key neurons", "", model_description, "",
             "Parameters: " + ", ".join(f"{k} = {v}" for k, v in params.items()), "",
             f"{key.sizes['query']} queries in {len(domains)} domains; key neurons per query: mean {float(key['n_key'].mean()):.1f} "
             f"(at most v = {key.attrs['v']}); common neurons (in more than {key.attrs['common_threshold']} of "
             f"{key.attrs['n_clusters']} queries): {common.sizes['common']}" + (", removed from the key neurons." if key.attrs["remove_common"] else ", kept."),
             "", "## Localized regions", ""]
    layers = regions["layer"].values
    rows = []
    for d in domains:
        counts = regions["layer_count"].sel(domain=d).values
        mean_layer = float((counts * layers).sum() / counts.sum()) if counts.sum() else float("nan")
        rows.append((d, int(dk["n_queries"].sel(domain=d)), int(counts.sum()), f"{mean_layer:.2f}", int(layers[counts.argmax()]) if counts.sum() else "-"))
    lines += _table(("domain", "queries", "key neurons (pooled)", "mean layer", "busiest layer"), rows)
    lines += ["", "Overlap (shared pooled key neurons):", ""]
    lines += _table(("", *domains), [(a, *(int(regions["overlap"].sel(domain=a, other_domain=b)) for b in domains)) for a in domains])
    lines += ["", *(f"![{name}]({Path(p).name})" for name, p in figures.items()), "", "## Neuron-based prediction", ""]
    if "prediction" in results:
        pred = results["prediction"]
        lines.append(f"Accuracy on {pred.attrs['n_queries']} held-out queries: {pred.attrs['accuracy']:.3f} "
                     f"(chance {1 / len(domains):.3f}); domain neurons from {pred.attrs['n_train']} training queries. Confusion (rows: true):")
        lines += [""] + _table(("", *pred["predicted_domain"].values), [(d, *pred["confusion"].sel(true_domain=d).values.tolist()) for d in pred["true_domain"].values])
    else:
        lines.append("Skipped: no held-out queries (held_out_fraction = 0 or one query per domain).")
    edit = results["editing"]
    lines += ["", "## Editing (answer position; x2 boost, x0 suppress; control: as many random neurons)", ""]
    rows = [(c, f"{float(edit['p_correct'].sel(condition=c).mean()):.4f}", f"{float(edit['delta'].sel(condition=c).mean()):+.4f}",
             f"{float(edit['relative_change'].sel(condition=c).mean()) * 100:+.1f}%") for c in EDIT_CONDITIONS]
    lines += _table(("condition", "mean P(correct)", "mean change", "mean relative change"), rows)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_naica(model, questions_by_domain, *, out_dir, t: float = T_DEFAULT, v: int = V_DEFAULT, u: float = U_DEFAULT, steps: int = 20,
              seed: int = 0, answer_format: str = "letters", held_out_fraction: float = 0.3, progress: bool = False,
              remove_common: bool = True, path: str = "staircase") -> dict[str, xr.Dataset]:
    """Scoring, key and common neurons, regions, prediction and editing; writes naica.zarr, 2 PNGs and report.md."""
    from .tasks.domain_qa import domain_of as _domain_of
    from .tasks.domain_qa import domain_proxies

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    domains = _domain_of(questions_by_domain)
    proxies = domain_proxies(questions_by_domain, seed=seed, answer_format=answer_format)
    from .answers import check_answer_tokens

    check_answer_tokens(model.tokenizer, [p for ps in proxies.values() for p in ps], answer_format)
    attribution = attribute_queries(model, proxies, steps=steps, answer_format=answer_format, progress=progress, path=path)
    attribution = attribution.assign_coords(domain=("query", [domains[q] for q in attribution["query"].values]))
    found = key_neurons(attribution["ig"], t=t, v=v, u=u, remove_common=remove_common)
    domain_keys = domain_key_neurons(found.key, domains)
    regions = localized_regions(domain_keys, model.n_layers)
    figure_paths = plot_regions(regions, out_dir, subtitle=f"{model.provenance.get('model', '?')}, t = {t}, v = {v}, u = {u}, "
                                f"n = {attribution.sizes['query']} queries")
    train, held_out = split_queries(domains, held_out_fraction, seed)
    results = {"attribution": attribution, "key": found.key, "common": found.common, "domain_key": domain_keys, "regions": regions}
    if held_out:
        train_found = key_neurons(attribution["ig"].sel(query=train), t=t, v=v, u=u, remove_common=remove_common)
        train_domain_keys = domain_key_neurons(train_found.key, domains, v=v)
        results["prediction"] = predict_domains(attribution["activation"], train_domain_keys, held_out, domains)
        results["prediction"].attrs.update(n_train=len(train), held_out_fraction=float(held_out_fraction))
    results["editing"] = edit_key_neurons(model, proxies, found.key, seed=seed, answer_format=answer_format, progress=progress)
    params = dict(t=t, v=v, u=u, steps=steps, seed=seed, answer_format=answer_format, held_out_fraction=held_out_fraction,
                  remove_common=remove_common, model=model.provenance.get("model", "?"))
    for ds in results.values():
        ds.attrs.setdefault("naica_params", json.dumps(params, default=str))
    save_datasets(out_dir / "naica.zarr", results)
    write_report(out_dir / "report.md", results, figure_paths, params, model_description=model.describe())
    return results
