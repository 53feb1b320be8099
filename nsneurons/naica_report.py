"""NA-ICA's report.md and its two figures (key neurons per layer by domain, the domain overlap heatmap)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from . import figures
from .naica_analyses import EDIT_CONDITIONS
from .runfolder import RunFolder, write_text_atomically


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
    folder = RunFolder(out_dir)
    return {
        "layer_histogram": figures.save(plot_layer_histogram(regions, subtitle=subtitle), folder.naica_figure("layer_histogram")),
        "overlap_heatmap": figures.save(plot_overlap(regions, subtitle=subtitle), folder.naica_figure("overlap_heatmap")),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def _regions_table(regions: xr.Dataset, dk: xr.Dataset, domains: list[str]) -> list[str]:
    """Per domain: queries, pooled key neurons, their mean layer and the layer holding the most."""
    layers = regions["layer"].values
    rows = []
    for d in domains:
        counts = regions["layer_count"].sel(domain=d).values
        mean_layer = float((counts * layers).sum() / counts.sum()) if counts.sum() else float("nan")
        rows.append(
            (
                d,
                int(dk["n_queries"].sel(domain=d)),
                int(counts.sum()),
                f"{mean_layer:.2f}",
                int(layers[counts.argmax()]) if counts.sum() else "-",
            )
        )
    return _table(("domain", "queries", "key neurons (pooled)", "mean layer", "busiest layer"), rows)


def _editing_table(edit: xr.Dataset) -> list[str]:
    """Per editing condition: mean P(correct), its mean change and mean relative change."""
    rows = [
        (
            c,
            f"{float(edit['p_correct'].sel(condition=c).mean()):.4f}",
            f"{float(edit['delta'].sel(condition=c).mean()):+.4f}",
            f"{float(edit['relative_change'].sel(condition=c).mean()) * 100:+.1f}%",
        )
        for c in EDIT_CONDITIONS
    ]
    return _table(("condition", "mean P(correct)", "mean change", "mean relative change"), rows)


def write_report(
    path, results: Mapping[str, xr.Dataset], figures: Mapping[str, Path], params: Mapping, *, model_description: str = ""
) -> Path:
    """A short markdown report of one `run_naica`."""
    key, common, dk, regions = results["key"], results["common"], results["domain_key"], results["regions"]
    domains = [str(d) for d in dk["domain"].values]
    lines = [
        "# NA-ICA / QRNCA key neurons",
        "",
        model_description,
        "",
        "Parameters: " + ", ".join(f"{k} = {v}" for k, v in params.items()),
        "",
        f"{key.sizes['query']} queries in {len(domains)} domains; key neurons per query: mean {float(key['n_key'].mean()):.1f} "
        f"(at most v = {key.attrs['v']}); common neurons (in more than {key.attrs['common_threshold']} of "
        f"{key.attrs['n_clusters']} queries): {common.sizes['common']}"
        + (", removed from the key neurons." if key.attrs["remove_common"] else ", kept."),
        "",
        "## Localized regions",
        "",
    ]
    lines += _regions_table(regions, dk, domains)
    lines += ["", "Overlap (shared pooled key neurons):", ""]
    lines += _table(
        ("", *domains), [(a, *(int(regions["overlap"].sel(domain=a, other_domain=b)) for b in domains)) for a in domains]
    )
    lines += ["", *(f"![{name}]({Path(p).name})" for name, p in figures.items()), "", "## Neuron-based prediction", ""]
    if "prediction" in results:
        pred = results["prediction"]
        lines.append(
            f"Accuracy on {pred.attrs['n_queries']} held-out queries: {pred.attrs['accuracy']:.3f} "
            f"(chance {1 / len(domains):.3f}); domain neurons from {pred.attrs['n_train']} training queries. Confusion (rows: true):"
        )
        lines += [""] + _table(
            ("", *pred["predicted_domain"].values),
            [(d, *pred["confusion"].sel(true_domain=d).values.tolist()) for d in pred["true_domain"].values],
        )
    else:
        lines.append("Skipped: no held-out queries (held_out_fraction = 0 or one query per domain).")
    lines += ["", "## Editing (answer position; x2 boost, x0 suppress; control: as many random neurons)", ""]
    lines += _editing_table(results["editing"])
    path = Path(path)
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path
