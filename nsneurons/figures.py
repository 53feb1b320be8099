"""The run's figures (Figure 5 layer distribution, good:bad ratio sweep) and the helpers every figure
of nsneurons shares (report, cross-task analyses, NA-ICA).

Decisions:
- Figures are `matplotlib.figure.Figure` objects made without pyplot: the global backend (a
  notebook's inline display, say) is never touched, and nothing stays open in pyplot's registry.
  A plot function draws into `fig=` (a Figure or SubFigure; one-panel ones take `ax=`) or a new
  constrained-layout Figure, and returns the Figure; `save` writes it.
- Saved as PNG at 200 dpi plus an SVG next to it (vector, for papers).
- Titles name the model, K and n (evaluation examples per task; identification examples for the
  layer distribution, which is what the neurons were selected from).
- Fail (a change in the wrong direction) is a red cross on the magnitude, never a negative value;
  an interval is mapped to magnitudes (|x| over the interval: 0 when it straddles 0).
- Panels that are compared share their y scale (or colour scale); legends sit outside the axes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from .budget import attrs_text

DPI = 200
FAIL_STYLE = {"marker": "x", "color": "tab:red", "s": 36, "zorder": 4, "linewidths": 1.5}
FAIL_LABEL = "Fail (changed the wrong way)"


def new_figure(fig=None, *, size: tuple[float, float]):
    """`fig` when given (drawn into), else a new constrained-layout Figure of `size` inches."""
    if fig is not None:
        return fig
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def root(fig):
    """The top-level Figure of a Figure or SubFigure."""
    while getattr(fig, "_parent", None) is not None and fig._parent is not fig:
        fig = fig._parent
    return fig


def save(fig, path) -> Path:
    """PNG at `DPI` at `path` and an SVG copy beside it; returns the PNG path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = root(fig)
    fig.savefig(path, dpi=DPI)
    fig.savefig(path.with_suffix(".svg"))
    return path


def describe(attrs, extra: str | None = None) -> str:
    """'model, K = 5[, extra]' from a Dataset's attrs (parts that are unknown are left out)."""
    # A local folder or file is named by its last part (a cache path says nothing); hub ids stay whole.
    model = str(attrs.get("model") or "")
    parts = [Path(model).name if model.startswith(("/", ".", "~")) else model] if model else []
    parts += [f"K = {attrs_text(attrs) or attrs['k']}"] if attrs.get("k") is not None else []
    return ", ".join(parts + ([extra] if extra else []))


def finish(fig, path=None):
    """The top-level Figure, saved to `path` first when given."""
    if path is not None:
        save(fig, path)
    return root(fig)


def n_examples(results: xr.Dataset) -> dict[str, int]:
    """Evaluation examples per task (the finite entries of `original_example`); empty when not stored."""
    if "original_example" not in results:
        return {}
    acc = results["original_example"].sel(measure="acc")
    return {str(t): int(np.isfinite(acc.sel(task=t).values).sum()) for t in results["task"].values}


def magnitude(signed: float, lo: float = math.nan, hi: float = math.nan) -> tuple[float, float, float, bool]:
    """(|value|, lower, upper distance of the interval of |x|, fail) of a directed change."""
    v = abs(signed)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return v, 0.0, 0.0, signed < 0
    low = 0.0 if lo < 0 < hi else min(abs(lo), abs(hi))
    return v, max(v - low, 0.0), max(max(abs(lo), abs(hi)) - v, 0.0), signed < 0


def integer_axes(ax, x: bool = True, y: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    if x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def label_layer_grid(axes, n_panels: int, ncols: int) -> None:
    """A grid of per-layer panels: unused axes hidden, "neurons" on the left column, "layer" (with tick
    labels) under the last panel of each column."""
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("neurons")
    for ax in axes[max(0, n_panels - ncols) : n_panels]:
        ax.set_xlabel("layer")
        ax.xaxis.set_tick_params(labelbottom=True)


def legend_outside(fig, axes) -> None:
    """One legend for the figure, below the panels (clear of the title and the data), from the axes'
    labelled artists (deduplicated)."""
    handles: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=8, ncols=min(len(handles), 4))


# ---- Figure 5: layer distribution ----------------------------------------------------------


def layer_counts(neurons: xr.Dataset, n_layers: int) -> xr.DataArray:
    """Neurons per layer: (task, selector, role, layer) counts of the selected neurons (-1 = none)."""
    layer = neurons["layer"].transpose("task", "selector", "role", "rank").values
    counts = np.zeros(layer.shape[:3] + (n_layers,), dtype=int)
    for idx in np.ndindex(layer.shape[:3]):
        picked = layer[idx][layer[idx] >= 0]
        counts[idx] = np.bincount(picked.astype(int), minlength=n_layers)[:n_layers]
    coords = {d: [str(v) for v in neurons[d].values] for d in ("task", "selector", "role")}
    return xr.DataArray(
        counts,
        dims=("task", "selector", "role", "layer"),
        coords={**coords, "layer": np.arange(n_layers)},
        name="count",
        attrs={"long_name": "selected neurons in the layer", "units": "neurons"},
    )


def plot_layer_distribution(neurons: xr.Dataset, n_layers: int, path=None, *, fig=None, title: str | None = None):
    """Figure 5: neurons per layer, one panel per (selector, role) that has neurons (a good-only
    selector has no bad panel), one line per task and the task average dashed; shared y scale.
    Returns the Figure (saved to `path` too when given)."""
    counts = layer_counts(neurons, n_layers)
    panels = [
        (m, r)
        for m in counts["selector"].values
        for r in ("good", "bad")
        if r in counts["role"].values and (r == "good" or counts.sel(selector=m, role=r).sum() > 0)
    ]
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(fig, size=(4.2 * ncols + 1.6, 2.1 * nrows + 0.8))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    x = np.arange(n_layers)
    for ax, (m, role) in zip(axes, panels):
        c = counts.sel(selector=m, role=role)
        for task in c["task"].values:
            ax.plot(x, c.sel(task=task).values, marker=".", label=str(task))
        ax.plot(x, c.mean("task").values, "k--", label="average over tasks")
        ax.set_title(f"{m}: {role} neurons", fontsize=9)
        integer_axes(ax, x=True, y=True)
    label_layer_grid(axes, len(panels), ncols)
    legend_outside(fig, axes)
    n = neurons.attrs.get("identification_examples")
    fig.suptitle(
        title
        or "Layer distribution of selected neurons\n"
        + describe(neurons.attrs, f"selected on n = {n} identification examples" if n else None),
        fontsize=10,
    )
    return finish(fig, path)
