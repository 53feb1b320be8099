"""The paper's tables as markdown, from the cells of `nsneurons.cells` (stored in results.zarr).

Tables 1 and 2 (RAC/RCC at one ratio per cell, with 95% intervals), signed changes, Tables 3 and 6
(good only / bad only / both), RANDOM's draws, and NeuronLLM's difference to the best baseline.
A cell prints as the paper's "RAC/RCC" with the chosen ratio, and below it the intervals of the
directed changes (below 0 = the wrong way, i.e. Fail): `41.7/37.5 (r=0.5)<br>[25.0, 58.3]/[12.5, 62.5]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import xarray as xr

from .cells import group_cells, score_cells
from .metrics import DIRECTIONS
from .selection import ENABLED_VARIANTS

DIR_LABEL = {"degrade": "Deg", "enhance": "Enh"}
DAGGER = "†"
BR = "<br>"
AVERAGING_RULE = (
    "Average: the mean over every task of the directed change, a Fail entering with its negative value "
    "(the paper's averages are means over all four tasks); an average below 0 is Fail. "
    f"{DAGGER} marks an average that left out a task: undefined (original Acc/Com of 0) or not evaluated."
)
CELL_NOTE = (
    "Each cell: RAC/RCC in % at the one good:bad ratio r chosen for it (criterion: {best_by}); below it the "
    "{level:.0%} bootstrap intervals over evaluation examples ({resamples} resamples, the ratio held fixed) of the "
    "directed changes, where a value below 0 means the wrong way (Fail). Fail = the change went against the "
    "intended direction; undefined = the original Acc/Com is 0; - = not evaluated."
)


def scored(results: xr.Dataset) -> xr.Dataset:
    """results with its cells; computed here (without intervals) when a Dataset has only metrics."""
    if "cell" not in results:
        results = xr.merge([results, score_cells(results)], combine_attrs="override")
    if "group_cell" not in results and "ablation" in results:
        results = xr.merge([results, group_cells(results)], combine_attrs="override")
    return results


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:  # cells go through str()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def value(x: float) -> str:
    """A directed RAC/RCC as the paper prints it: the value, "Fail" (below 0) or "undefined"."""
    return "undefined" if not math.isfinite(x) else "Fail" if x < 0 else f"{x + 0.0:.1f}"  # + 0.0: no "-0.0"


def pair(rac: str, rcc: str) -> str:
    return rac if rac == rcc and rac in ("Fail", "undefined") else f"{rac}/{rcc}"


def interval(lo: float, hi: float) -> str:
    return f"[{lo + 0.0:.1f}, {hi + 0.0:.1f}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def _intervals(block: xr.DataArray, names=("rac", "rcc")) -> str:
    parts = [interval(float(block.sel(quantity=n, ci="lo")), float(block.sel(quantity=n, ci="hi"))) for n in names]
    return "/".join(p or "-" for p in parts) if any(parts) else ""


def _ratio(chosen: xr.DataArray) -> str:
    ra, rc = float(chosen.sel(half="rac")), float(chosen.sel(half="rcc"))
    return f"r={ra:g}" if ra == rc else f"r={ra:g}/{rc:g}"


def _with_intervals(text: str, block: xr.DataArray, names=("rac", "rcc")) -> str:
    ci = _intervals(block, names)
    return f"{text}{BR}{ci}" if ci else text


def table_cell(cells: xr.Dataset, task, method, direction) -> str:
    block = cells["cell"].sel(task=task, selector=method, direction=direction)
    est = block.sel(ci="estimate")
    if not np.isfinite(cells["chosen_ratio"].sel(task=task, selector=method, direction=direction).values).all():
        return "-"
    text = pair(value(float(est.sel(quantity="rac"))), value(float(est.sel(quantity="rcc"))))
    chosen = cells["chosen_ratio"].sel(task=task, selector=method, direction=direction)
    return _with_intervals(f"{text} ({_ratio(chosen)})", block)


def average_cell(cells: xr.Dataset, method, direction) -> str:
    block = cells["average"].sel(selector=method, direction=direction)
    est = block.sel(ci="estimate")
    if not np.isfinite(est.sel(quantity=["acc_change", "com_change"]).values).any():
        return "-"
    complete = bool(cells["average_complete"].sel(selector=method, direction=direction, quantity=["rac", "rcc"]).all())
    text = pair(value(float(est.sel(quantity="rac"))), value(float(est.sel(quantity="rcc"))))
    return _with_intervals(text + ("" if complete else DAGGER), block)


def _header(tasks) -> list[str]:
    return ["method"] + [f"{t} {DIR_LABEL[d]}" for t in [*tasks, "Average"] for d in DIRECTIONS]


def _vs_best_row(cells: xr.Dataset, columns) -> list[str] | None:
    diff, best = cells["vs_best"], cells["best_baseline"]
    if not (best.values != "").any():
        return None
    row = ["neuronllm − best baseline"]
    for column in columns:
        for d in DIRECTIONS:
            parts, names = [], set()
            for half in ("rac", "rcc"):
                x = diff.sel(column=column, direction=d, half=half)
                est, lo, hi = (float(x.sel(ci=c)) for c in ("estimate", "lo", "hi"))
                names.add(str(best.sel(column=column, direction=d, half=half).values))
                star = "*" if math.isfinite(lo) and (lo > 0 or hi < 0) else ""
                parts.append(
                    "-" if not math.isfinite(est) else f"{est:+.1f}{star}" + (f" {interval(lo, hi)}" if math.isfinite(lo) else "")
                )
            row.append("/".join(parts) + (f"{BR}vs {'/'.join(sorted(n for n in names if n))}" if names - {""} else ""))
    return row


def table1(results: xr.Dataset, methods: Sequence[str] | None = None, *, compare: bool = True) -> str:
    """Table 1: rows methods, columns task x Deg/Enh + Average; with `compare`, a last row with
    NeuronLLM minus the best baseline per column (* where its interval excludes 0)."""
    cells = scored(results)
    tasks = list(cells["task"].values)
    methods = list(cells["selector"].values) if methods is None else list(methods)
    rows = []
    for method in methods:
        row = [method]
        for task in tasks:
            row += [table_cell(cells, task, method, d) for d in DIRECTIONS]
        row += [average_cell(cells, method, d) for d in DIRECTIONS]
        rows.append(row)
    extra = _vs_best_row(cells, [*tasks, "Average"]) if compare and "neuronllm" in methods else None
    return markdown(_header(tasks), rows + ([extra] if extra else []))


def table2(results: xr.Dataset) -> str:
    """Table 2: each "enabled" variant (NeuronLLM's good and bad neurons on another target) next to
    its original good-only method."""
    methods = [str(m) for m in results["selector"].values]
    rows = [
        m for enabled, original in ENABLED_VARIANTS.items() if enabled in methods for m in (original, enabled) if m in methods
    ]
    if not rows:
        return "_No enabled variant was run (add tn_enabled or qrnca_enabled to selection.methods)._"
    return table1(results, rows, compare=False)


def signed_change_table(results: xr.Dataset) -> str:
    """Signed Acc/Com changes (new - original, points) at each cell's chosen ratio, with intervals."""
    cells = scored(results)
    tasks = list(cells["task"].values)
    names = ("acc_change", "com_change")
    rows = []
    for method in cells["selector"].values:
        row = [str(method)]
        for task in tasks:
            for d in DIRECTIONS:
                block = cells["cell"].sel(task=task, selector=method, direction=d)
                est = block.sel(ci="estimate")
                if not np.isfinite(est.sel(quantity=list(names)).values).all():
                    row.append("-")
                    continue
                text = "{:+.1f}/{:+.1f}".format(*(float(est.sel(quantity=n)) for n in names))
                chosen = cells["chosen_ratio"].sel(task=task, selector=method, direction=d)
                row.append(_with_intervals(f"{text} ({_ratio(chosen)})", block, names))
        for d in DIRECTIONS:
            block = cells["average"].sel(selector=method, direction=d)
            est = block.sel(ci="estimate")
            ok = np.isfinite(est.sel(quantity=list(names)).values).all()
            row.append(
                _with_intervals("{:+.1f}/{:+.1f}".format(*(float(est.sel(quantity=n)) for n in names)), block, names)
                if ok
                else "-"
            )
        rows.append(row)
    return markdown(_header(tasks), rows)


def _group(block: xr.DataArray, complete: xr.DataArray | None = None) -> str:
    est = block.sel(ci="estimate")
    if not np.isfinite(est.sel(quantity=["acc_change", "com_change"]).values).any():
        return "-"
    mark = "" if complete is None or bool(complete.sel(quantity=["rac", "rcc"]).all()) else DAGGER
    return _with_intervals(pair(value(float(est.sel(quantity="rac"))), value(float(est.sel(quantity="rcc")))) + mark, block)


def _with_bad(results: xr.Dataset) -> list[str]:
    if "ablation" not in results:
        return []
    bad = results["group_cell"].sel(group="bad", ci="estimate", quantity="acc_change")
    return [str(m) for m in results["selector"].values if np.isfinite(bad.sel(selector=m).values).any()]


def table3(results: xr.Dataset) -> str:
    """Table 3: per method with bad neurons and direction, Good / Bad / Both averaged over tasks."""
    results = scored(results)

    def averaged(m, d, g):
        where = {"selector": m, "direction": d, "group": g}
        return _group(results["group_average"].sel(where), results["group_complete"].sel(where))

    rows = [
        [m, DIR_LABEL[d], averaged(m, d, "good"), averaged(m, d, "bad"), average_cell(results, m, d)]
        for m in _with_bad(results)
        for d in DIRECTIONS
    ]
    if not rows:
        return "_No method with bad neurons: no ablation._"
    return markdown(["method", "intervention", "Good", "Bad", "Both"], rows)


def table6(results: xr.Dataset) -> str:
    """Table 6 (appendix C.3): Table 3 per task."""
    results = scored(results)
    tasks = list(results["task"].values)
    rows = []
    for m in _with_bad(results):
        for d in DIRECTIONS:
            row = [m, DIR_LABEL[d]]
            for t in tasks:
                row += [_group(results["group_cell"].sel(task=t, selector=m, direction=d, group=g)) for g in ("good", "bad")]
                row.append(table_cell(results, t, m, d))
            rows.append(row)
    if not rows:
        return "_No method with bad neurons: no ablation._"
    return markdown(["method", "intervention", *(f"{t} {g}" for t in tasks for g in ("Good", "Bad", "Both"))], rows)


def draws_table(results: xr.Dataset) -> str:
    """Methods drawn several times (RANDOM): the mean, spread and range of RAC/RCC over draws."""
    if "draw_quantity" not in results or results.sizes.get("draw", 1) < 2:
        return ""
    q = results["draw_quantity"]
    rows = []
    for m in results["selector"].values:
        for t in results["task"].values:
            for d in DIRECTIONS:
                v = q.sel(selector=m, task=t, direction=d)
                if int(np.isfinite(v.sel(quantity="acc_change").values).sum()) < 2:
                    continue
                cells = []
                for half in ("rac", "rcc"):
                    x = v.sel(quantity=half).values
                    x = x[np.isfinite(x)]
                    x = x + 0.0  # no "-0.0"
                    cells.append(
                        "-"
                        if not x.size
                        else f"{x.mean() + 0.0:.1f} ± {x.std(ddof=1) if x.size > 1 else 0:.1f} [{x.min():.1f}, {x.max():.1f}]"
                    )
                rows.append([str(m), str(t), DIR_LABEL[d], int(np.isfinite(v.sel(quantity="acc_change").values).sum()), *cells])
    if not rows:
        return ""
    return markdown(["method", "task", "direction", "draws", "RAC: mean ± sd [min, max]", "RCC: mean ± sd [min, max]"], rows)
