"""Figures of the cross-task analyses (nsneurons.crosstask): the cross-task matrix (Figures 2/4), the
layer change after removing common neurons (Figure 7), the common neurons' layers (Figure 6) and
the budget sensitivity (Table 7 as lines). Conventions of nsneurons.figures: each takes `fig=`,
returns the Figure (saved to `path` when given); compared panels share one y or colour scale, with
one colour bar for the figure; titles name the model, K and n.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import figures
from .metrics import DIRECTIONS
from .report import DIR_LABEL, best_cells
from .selection import ROLES


def _grid(fig, rows, cols, size, **share):
    fig = figures.new_figure(fig, size=size)
    return fig, fig.subplots(len(rows), len(cols), squeeze=False, **share)


def _n_label(ds: xr.Dataset, task) -> str:
    """'task (n = 40)' with the task's evaluation examples when the Dataset stores them."""
    if "n_examples" not in ds:
        return str(task)
    dim = ds["n_examples"].dims[0]
    return f"{task} (n = {int(ds['n_examples'].sel({dim: task}))})"


def _symmetric_limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def plot_cross_task(matrix: xr.Dataset, path=None, metric: str = "acc_change", *, fig=None):
    """Figures 2/4: per selector (rows) and direction (columns), eval task (vertical) x source task's
    specific neurons (horizontal), colour = `metric` (default signed Acc change, points), one colour
    scale for every panel."""
    effect = matrix["effect"].sel(metric=metric)
    tasks = [str(t) for t in effect["source_task"].values]
    methods = [str(m) for m in effect["selector"].values]
    side = 1.0 + 0.9 * len(tasks)
    fig, axes = _grid(fig, methods, DIRECTIONS, (2 * side + 2.2, side * len(methods) + 1.0))
    vmax = _symmetric_limit(effect.values)
    for (i, m), (j, d) in ((a, b) for a in enumerate(methods) for b in enumerate(DIRECTIONS)):
        ax, values = axes[i, j], effect.sel(selector=m, direction=d).transpose("eval_task", "source_task").values
        image = ax.imshow(values, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        for (r, c), v in np.ndenumerate(values):
            ax.text(
                c,
                r,
                "-" if not np.isfinite(v) else f"{v:+.1f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if np.isfinite(v) and abs(v) > 0.6 * vmax else "black",
            )  # legible on dark cells
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_yticks(range(len(tasks)), [_n_label(matrix, t) for t in tasks] if j == 0 else [])
        ax.set_title(f"{m}: {DIR_LABEL[d]}", fontsize=9)
        ax.set_xlabel("task-specific neurons of", fontsize=8)
        if j == 0:
            ax.set_ylabel("evaluated on", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.7, label=f"{metric} (points)")
    fig.suptitle(f"Cross-task evaluation, ratio {matrix.attrs.get('ratio', '?')}\n{figures.describe(matrix.attrs)}", fontsize=10)
    return figures.finish(fig, path)


def plot_layer_change(layers: xr.Dataset, path=None, *, fig=None):
    """Figure 7: task x layer heatmap of (task-specific - original) neuron counts per selector and
    role (a good-only selector's bad panel is left out), one colour scale."""
    change = layers["change"]
    methods = [str(m) for m in change["selector"].values]
    panels = [(m, r) for m in methods for r in ROLES if r == "good" or layers["count"].sel(selector=m, role=r).sum() > 0]
    fig = figures.new_figure(fig, size=(11, (1.0 + 0.35 * change.sizes["task"]) * len(panels) + 1.0))
    axes = np.ravel(fig.subplots(len(panels), 1, squeeze=False, sharex=True))
    vmax = max(1.0, _symmetric_limit(change.values.astype(float)))
    for ax, (m, role) in zip(axes, panels):
        image = ax.imshow(
            change.sel(selector=m, role=role).transpose("task", "layer").values,
            aspect="auto",
            cmap="RdBu_r",
            vmin=-vmax,
            vmax=vmax,
        )
        ax.set_yticks(range(change.sizes["task"]), [str(t) for t in change["task"].values])
        ax.set_title(f"{m}: {role} neurons", fontsize=9)
        figures.integer_axes(ax)
    axes[-1].set_xlabel("layer")
    fig.colorbar(image, ax=axes, shrink=0.7, label="task-specific - original (neurons)")
    fig.suptitle(f"Layer change after removing common neurons\n{figures.describe(layers.attrs)}", fontsize=10)
    return figures.finish(fig, path)


def plot_common_layers(layers: xr.Dataset, path=None, *, fig=None):
    """Figure 6: layer histogram of the common good and bad neurons per selector (panels without
    common neurons are left out), one y scale."""
    common = layers["common"]
    panels = [(str(m), r) for m in common["selector"].values for r in ROLES if common.sel(selector=m, role=r).sum() > 0]
    fig = figures.new_figure(fig, size=(9, 1.9 * max(1, (len(panels) + 1) // 2) + 1.0))
    if not panels:
        fig.text(0.5, 0.5, "no neuron is common to two tasks", ha="center", va="center")
        return figures.finish(fig, path)
    ncols = 2 if len(panels) > 1 else 1
    axes = np.ravel(fig.subplots((len(panels) + ncols - 1) // ncols, ncols, squeeze=False, sharex=True, sharey=True))
    for ax, (m, role) in zip(axes, panels):
        ax.bar(common["layer"].values, common.sel(selector=m, role=role).values)
        ax.set_title(f"{m}: common {role} neurons", fontsize=9)
        figures.integer_axes(ax, x=True, y=True)
    figures.label_layer_grid(axes, len(panels), ncols)
    fig.suptitle(f"Layers of the common neurons\n{figures.describe(layers.attrs)}", fontsize=10)
    return figures.finish(fig, path)


def plot_budget(budget: xr.Dataset, path=None, *, fig=None):
    """Table 7 as lines: best-over-ratio |RAC| (solid) / |RCC| (dashed) against K, per task and
    direction, Fail marked with a red cross; one y scale."""
    sweep = budget["sweep"]
    tasks = [str(t) for t in sweep["task"].values]
    fig, axes = _grid(fig, tasks, DIRECTIONS, (9.5, 2.3 * len(tasks) + 1.0), sharex=True, sharey=True)
    ks = sweep["k"].values
    for (i, t), (j, d) in ((a, b) for a in enumerate(tasks) for b in enumerate(DIRECTIONS)):
        ax = axes[i, j]
        for c, m in enumerate(sweep["selector"].values):
            best = [best_cells(xr.Dataset({"sweep": sweep.sel(k=kk)}), t, m, d) for kk in ks]
            for half, style in (("rac", "-o"), ("rcc", "--s")):
                ys = [np.nan if b is None or (pct := b[half].change.percent) is None else pct for b in best]
                ax.plot(ks, ys, style, color=f"C{c}", label=f"{m} {half.upper()}")
                fails = [(kk, y) for kk, y, b in zip(ks, ys, best) if b is not None and b[half].fail and np.isfinite(y)]
                if fails:
                    ax.scatter(*zip(*fails), label=figures.FAIL_LABEL, **figures.FAIL_STYLE)
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{_n_label(budget, t)}: {DIR_LABEL[d]}", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("|RAC|, |RCC| (%)")
    for ax in axes[-1]:
        ax.set_xlabel("budget K (neurons per role)")
    figures.legend_outside(fig, axes)
    fig.suptitle(
        f"Budget sensitivity (one ratio per cell, docs/scoring.md)\n{figures.describe({**budget.attrs, 'k': None})}", fontsize=10
    )
    return figures.finish(fig, path)
