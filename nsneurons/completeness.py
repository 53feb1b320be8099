"""IG's completeness check per layer, and the report's warning about layers where it fails.

With a zero baseline, exact IG sums over a layer's neurons to delta = F(x) - F(x with the layer's
neurons zeroed at the answer position). The scores store keeps both sides (`ig_sum`, `ig_delta`);
the relative gap |ig_sum - delta| / |delta| measures the quadrature's error at this m. Where its median
over examples and proxies exceeds the recipe's `attribution.gap_threshold`, that layer's neuron ranking
rests on an inaccurate integral: the report lists those layers (docs/ig.md has measurements).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from .store import COMPLETENESS, open_scores
from .tables import markdown

DEFAULT_THRESHOLD = 0.1  # the recipe's attribution.gap_threshold default


def relative_gap(scores: xr.Dataset) -> xr.DataArray:
    """|ig_sum - ig_delta| / |ig_delta| per cell of the store (0 where both are 0, inf where only delta is)."""
    diff = abs(scores["ig_sum"] - scores["ig_delta"])
    delta = abs(scores["ig_delta"])
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = xr.where(diff == 0, 0.0, diff / delta)
    return gap.rename("completeness_relative_gap")


def median_gap(scores: xr.Dataset) -> xr.DataArray:
    """Median relative gap per layer, over every other dim (examples and proxies)."""
    gap = relative_gap(scores)
    return gap.median([d for d in gap.dims if d != "layer"])


def flagged_table(stores: Mapping[str, xr.Dataset], threshold: float) -> str:
    """Markdown rows (store, layer, median gap, m, quadrature) of the layers above `threshold`; "" if none."""
    rows = []
    for name, scores in stores.items():
        medians = median_gap(scores)
        for layer, value in zip(medians["layer"].values, medians.values):
            if value > threshold:
                rows.append(
                    [
                        name,
                        str(int(layer)),
                        f"{100 * float(value):.1f}%",
                        str(scores.attrs.get("steps", "?")),
                        str(scores.attrs.get("quadrature", "?")),
                    ]
                )
    return markdown(["scores", "layer", "median gap", "m", "quadrature"], rows) if rows else ""


def _threshold(out_dir: Path) -> float:
    """attribution.gap_threshold of the run's recipe.yaml (the default if it has none)."""
    import yaml

    path = out_dir / "recipe.yaml"
    recipe = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return float(((recipe or {}).get("attribution") or {}).get("gap_threshold", DEFAULT_THRESHOLD))


def report_section(out_dir, threshold: float | None = None) -> list[str]:
    """The report's paragraphs on layers whose IG fails the completeness check ([] when none does).

    Reads every scores store of the run (out_dir/scores/*.zarr) that has `ig_sum` and `ig_delta`."""
    out_dir = Path(out_dir)
    threshold = _threshold(out_dir) if threshold is None else threshold
    stores = {}
    for path in sorted((out_dir / "scores").glob("*.zarr")):
        scores = open_scores(path)
        if all(name in scores for name in COMPLETENESS):
            stores[path.stem] = scores[list(COMPLETENESS)].load().assign_attrs(scores.attrs)
    table = flagged_table(stores, threshold)
    if not table:
        return []
    return [
        "## IG completeness",
        f"Layers whose IG misses F(x) - F(layer zeroed) by more than {threshold:.0%} (median over the identification "
        "examples and proxies of |sum of the layer's IG - (F(x) - F(zeroed))| / |F(x) - F(zeroed)|). Neuron rankings "
        "from these layers are unreliable at this number of steps m and quadrature: use more steps "
        "(attribution.steps) or attribution.quadrature: gausslegendre (docs/ig.md).",
        table,
    ]
