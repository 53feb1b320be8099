"""The report's ratio-sweep figure: |RAC| and |RCC| against the good:bad ratio per task and direction,
with 95% bootstrap intervals and Fail marked by a red cross (drawn with nsneurons.figures).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from nsneurons import figures
from nsneurons.metrics import DIRECTIONS, ConditionResult
from nsneurons.report_cells import sweep_results, tasks_and_methods
from nsneurons.tables import DIR_LABEL


def _signed_relative(res: ConditionResult, half: str) -> float:
    cell = getattr(res, half)
    return math.nan if cell.change.undefined else (-1 if cell.fail else 1) * cell.change.percent


def _interval(results: xr.Dataset, task, method, direction, ratio, half) -> tuple[float, float]:
    """(lo, hi) of the directed change from `sweep_ci`; NaN when the run has no intervals."""
    if "sweep_ci" not in results:
        return math.nan, math.nan
    ci = results["sweep_ci"].sel(task=task, selector=method, direction=direction, half=half, ratio=ratio)
    return float(ci.sel(ci="lo")), float(ci.sel(ci="hi"))


def _draw_sweep(ax, results, task, d, swept, colors) -> bool:
    """One panel: |RAC| (solid) and |RCC| (dashed) per swept selector with intervals, Fail as red crosses."""
    drawn = False
    for k, method in enumerate(swept):
        found = sweep_results(results, task, method, d)
        ratios = sorted(found)
        for half, style, marker in (("rac", "-", "o"), ("rcc", "--", "s")):
            points = [
                figures.magnitude(_signed_relative(found[r], half), *_interval(results, task, method, d, r, half)) for r in ratios
            ]
            ys = [p[0] for p in points]
            drawn |= any(math.isfinite(y) for y in ys)
            ax.errorbar(
                ratios,
                ys,
                yerr=np.array([[p[1] for p in points], [p[2] for p in points]]),
                fmt=style,
                marker=marker,
                color=colors[k % len(colors)],
                capsize=2,
                elinewidth=0.8,
                label=f"{method} {half.upper()}",
            )
            fails = [(r, p[0]) for r, p in zip(ratios, points) if p[3]]
            if fails:
                ax.scatter(*zip(*fails), label=figures.FAIL_LABEL, **figures.FAIL_STYLE)
    return drawn


def plot_ratio_sweep(results: xr.Dataset, path=None, *, fig=None):
    """Per task (rows) and direction (columns): |RAC| (solid) and |RCC| (dashed) against the good:bad
    ratio for the selectors evaluated at more than one ratio, with 95% bootstrap intervals; Fail
    points (the wrong direction) are marked with a red cross; one y scale. Returns the Figure."""
    tasks, methods = tasks_and_methods(results)
    swept = [m for m in methods if any(len(sweep_results(results, t, m, d)) > 1 for t in tasks for d in DIRECTIONS)]
    fig = figures.new_figure(fig, size=(9.5, 2.4 * len(tasks) + 1.0))
    if not swept:
        fig.text(0.5, 0.5, "no selector was evaluated at more than one good:bad ratio", ha="center", va="center")
        return figures.finish(fig, path)
    axes = fig.subplots(len(tasks), 2, squeeze=False, sharex=True, sharey=True)
    colors = [f"C{i}" for i in range(10)]
    n = figures.n_examples(results)
    for i, task in enumerate(tasks):
        for j, d in enumerate(DIRECTIONS):
            ax = axes[i, j]
            if not _draw_sweep(ax, results, task, d, swept, colors):
                ax.text(0.5, 0.5, "undefined (original Acc/Com = 0)", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(
                f"{task} (n = {n[str(task)]}): {DIR_LABEL[d]}" if str(task) in n else f"{task}: {DIR_LABEL[d]}", fontsize=9
            )
            ax.set_xlim(-0.05, 1.05)
            ax.set_ylim(bottom=0)
        axes[i, 0].set_ylabel("|RAC|, |RCC| (%)")
    for ax in axes[-1]:
        ax.set_xlabel("good:bad ratio (good = round(ratio·K))")
    figures.legend_outside(fig, axes)
    fig.suptitle(
        "Good:bad ratio sweep\n" + figures.describe(results.attrs, "n = evaluation examples of the task" if n else None),
        fontsize=10,
    )
    return figures.finish(fig, path)
