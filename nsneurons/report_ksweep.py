"""The report's K-sweep section (nsneurons.ksweep's ksweep.zarr): where the methods separate and where they
tie, read from the intervals; a table per task and direction; the figure (metric against K per method).

Decisions:
- "Separate" at a K: some two methods' 95% intervals of the directed change do not overlap; "overlap":
  every method's interval shares a point with every other's (max of the lower ends <= min of the upper
  ends). "Ceiling": every method reaches the extreme the metric allows (Acc or Com 0 when degrading, 1
  when enhancing), where no budget can tell them apart.
- The figure plots |RAC| and |RCC| (magnitudes with interval bands, Fail as a red cross: nsneurons.figures),
  K on a log axis, the run's K dotted.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from nsneurons import figures
from nsneurons.budget import describe
from nsneurons.metrics import DIRECTIONS
from nsneurons.tables import BR, DIR_LABEL, interval, markdown, pair, value

_HALF_MEASURE = {"rac": "acc", "rcc": "com"}


def _ks(ds: xr.Dataset) -> list[int]:
    return [int(k) for k in ds["k"].values]


def k_label(ds: xr.Dataset, k: int) -> str:
    return describe(k, int(ds.attrs["n_ffn_neurons"]))


def separation(ds: xr.Dataset, task, direction: str, half: str) -> dict[str, list[int]]:
    """K values where the methods' intervals of `half` separate, overlap, and sit at the ceiling."""
    out: dict[str, list[int]] = {"separate": [], "overlap": [], "ceiling": []}
    block = ds["cell"].sel(task=task, direction=direction, quantity=half)
    extreme = 0.0 if direction == "degrade" else 1.0
    for k in _ks(ds):
        lo, hi = (block.sel(k=k, ci=c).values for c in ("lo", "hi"))
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() < 2:
            continue
        out["overlap" if lo[ok].max() <= hi[ok].min() else "separate"].append(k)
        cond = ds["example"].sel(task=task, direction=direction, k=k, half=half, measure=_HALF_MEASURE[half]).values
        means = np.nanmean(cond, axis=-1)
        if np.isfinite(means).all() and np.allclose(means, extreme):
            out["ceiling"].append(k)
    return out


def _ks_text(ks: list[int]) -> str:
    return ", ".join(str(k) for k in ks) if ks else "none"


def findings(ds: xr.Dataset) -> list[str]:
    """One line per task and direction: where RAC and RCC separate, overlap and hit the ceiling."""
    lines = []
    for task in ds["task"].values:
        for d in DIRECTIONS:
            parts = []
            for half in ("rac", "rcc"):
                s = separation(ds, task, d, half)
                if not s["separate"] and not s["overlap"]:
                    parts.append(f"{half.upper()} has no intervals (undefined: original {_HALF_MEASURE[half].title()} = 0)")
                    continue
                text = f"{half.upper()} separates at K = {_ks_text(s['separate'])}, overlaps at K = {_ks_text(s['overlap'])}"
                parts.append(text + (f" (every method at the ceiling at K = {_ks_text(s['ceiling'])})" if s["ceiling"] else ""))
            lines.append(f"- {task} {DIR_LABEL[d]}: " + "; ".join(parts) + ".")
    return lines


def _cell(block: xr.DataArray) -> str:
    est = {h: float(block.sel(quantity=h, ci="estimate")) for h in ("rac", "rcc")}
    if all(math.isnan(v) for v in est.values()):
        return "-"
    ci = [interval(float(block.sel(quantity=h, ci="lo")), float(block.sel(quantity=h, ci="hi"))) or "-" for h in ("rac", "rcc")]
    return pair(value(est["rac"]), value(est["rcc"])) + BR + "/".join(ci)


def sweep_table(ds: xr.Dataset, task, direction: str) -> str:
    """Rows K (count and share), columns methods; cells RAC/RCC and their intervals."""
    methods = [str(m) for m in ds["selector"].values]
    rows = []
    for k in _ks(ds):
        mark = " (run's K)" if int(ds.attrs.get("k", -1)) == k else ""
        block = ds["cell"].sel(task=task, direction=direction, k=k)
        rows.append([f"{k_label(ds, k)}{mark}", *(_cell(block.sel(selector=m)) for m in methods)])
    return markdown(["K", *methods], rows)


def _panel(ax, ds: xr.Dataset, task, direction: str, half: str) -> None:
    from matplotlib.ticker import NullLocator

    ks = _ks(ds)
    if not np.isfinite(ds["cell"].sel(task=task, direction=direction, quantity=half, ci="estimate").values).any():
        ax.text(
            0.5, 0.5, f"undefined (original {_HALF_MEASURE[half].title()} = 0)", ha="center", va="center", transform=ax.transAxes
        )
    for i, m in enumerate(ds["selector"].values):
        block = ds["cell"].sel(task=task, direction=direction, selector=m, quantity=half)
        points = [figures.magnitude(*(float(block.sel(k=k, ci=c)) for c in ("estimate", "lo", "hi"))) for k in ks]
        ys = np.array([p[0] for p in points])
        color = f"C{i % 10}"
        ax.plot(ks, ys, marker="o", ms=3, color=color, label=str(m))
        ax.fill_between(ks, ys - [p[1] for p in points], ys + [p[2] for p in points], color=color, alpha=0.15, lw=0)
        fails = [(k, p[0]) for k, p in zip(ks, points) if p[3]]
        if fails:
            ax.scatter(*zip(*fails), label=figures.FAIL_LABEL, **figures.FAIL_STYLE)
    if ds.attrs.get("k") is not None:
        ax.axvline(int(ds.attrs["k"]), color="0.5", ls=":", lw=1, label="the run's K")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(bottom=0)


def plot_k_sweep(ds: xr.Dataset, path=None, *, fig=None):
    """Per task (rows): |RAC| and |RCC| of Deg and Enh (columns) against K for every method, with 95%
    interval bands; Fail marked; one y scale. Returns the Figure."""
    tasks = list(ds["task"].values)
    fig = figures.new_figure(fig, size=(13.0, 2.5 * len(tasks) + 1.2))
    axes = fig.subplots(len(tasks), 4, squeeze=False, sharex=True, sharey=True)
    columns = [(d, h) for d in DIRECTIONS for h in ("rac", "rcc")]
    for i, task in enumerate(tasks):
        for j, (d, h) in enumerate(columns):
            _panel(axes[i, j], ds, task, d, h)
            axes[i, j].set_title(f"{task}: {DIR_LABEL[d]} |{h.upper()}|", fontsize=9)
        axes[i, 0].set_ylabel("|change| (%)")
    n = int(ds.attrs["n_ffn_neurons"])
    for ax in axes[-1]:
        ax.set_xlabel(f"K (neurons per role; of {n:,} FFN neurons)")
    figures.legend_outside(fig, axes)
    fig.suptitle(
        "Budget sweep: intervention effect against K\n" + figures.describe(ds.attrs, "bands: 95% bootstrap"), fontsize=10
    )
    return figures.finish(fig, path)


def report_section(ds: xr.Dataset, out_dir, figure_dir) -> list[str]:
    """The report's "Budget sweep" section: what was done, where methods separate, the tables, the figure."""
    png = figures.save(plot_k_sweep(ds), figure_dir / "k_sweep.png")
    parts = [
        "## Budget sweep (K)",
        "Each method's first K good (and bad) neurons, re-selected from the stored scores (no IG recomputed), "
        "switched on the evaluation examples at the good:bad ratio of its Table 1 cell (good-only methods: their K good "
        "neurons); RANDOM is the mean over its draws. Cells as Table 1: RAC/RCC in %, below them the "
        f"{float(ds.attrs.get('level', 0.95)):.0%} bootstrap intervals of the directed changes (the same resampled "
        "examples as Table 1, so the run's K repeats Table 1's cells). K values as given: "
        f"{ds.attrs.get('k_sweep_given', '?')}.",
        "Where the methods separate (some two methods' intervals do not overlap) and where they overlap; "
        "the ceiling: every method drives Acc (RAC) or Com (RCC) to 0 (Deg) or 1 (Enh).",
        "\n".join(findings(ds)),
        f"![K sweep]({png.relative_to(out_dir).as_posix()})",
        "Vector copy: k_sweep.svg.",
    ]
    for task in ds["task"].values:
        for d in DIRECTIONS:
            parts += [f"**{task}, {DIR_LABEL[d]}**", sweep_table(ds, task, d)]
    return parts
