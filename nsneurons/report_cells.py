"""Table 1's cells from the stored `sweep` Dataset: the RAC/RCC pair at the ratio `nsneurons.cells`
chooses, and the average over tasks (Fail counted negative). The report, the cross-task analyses
and the figures read them here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import xarray as xr

from nsneurons import cells as scoring_rules
from nsneurons.metrics import METRIC_NAMES, Cell, ConditionResult, RelativeChange, format_cell
from nsneurons.tables import DAGGER
from nsneurons.vocab import Direction

_FIELDS = ("acc_original", "acc_intervened", "com_original", "com_intervened")


def _result(metrics: xr.DataArray, direction: Direction) -> ConditionResult | None:
    """ConditionResult from one metric vector, None when it was not evaluated (NaN)."""
    values = [float(metrics.sel(metric=name)) for name in _FIELDS]
    return ConditionResult(direction, *values) if all(math.isfinite(v) for v in values) else None


def sweep_results(results: xr.Dataset, task, method, direction) -> dict[float, ConditionResult]:
    """{ratio: ConditionResult} of the evaluated ratios of one (task, method, direction)."""
    cut = results["sweep"].sel(task=task, selector=method, direction=direction)
    found = {float(r): _result(cut.sel(ratio=r), direction) for r in cut["ratio"].values}
    return {ratio: res for ratio, res in found.items() if res is not None}


def _as_cell(x: float, ratio: float | None) -> Cell:
    if not math.isfinite(x):
        return Cell(RelativeChange(None), fail=False, ratio=ratio)
    return Cell(RelativeChange(abs(x)), fail=x < 0, ratio=ratio)


def best_cells(results: xr.Dataset, task, method, direction, best_by: str = "mean") -> dict[str, Cell] | None:
    """{"rac", "rcc"} cells at the one ratio `nsneurons.cells.choose_ratio` picks (None: not evaluated)."""
    found = sweep_results(results, task, method, direction)
    if not found:
        return None
    ratios = sorted(found)
    acc_o, acc_i, com_o, com_i = (np.array([getattr(found[r], f) for r in ratios]) for f in _FIELDS)
    q = scoring_rules.quantities(acc_o, acc_i, com_o, com_i, direction)
    chosen = scoring_rules.choose_ratio(ratios, q, best_by)
    return {h: _as_cell(float(q[h][ratios.index(chosen[h])]), chosen[h]) for h in ("rac", "rcc")}


def average_cells(cells: Sequence[dict[str, Cell] | None]) -> tuple[dict[str, Cell] | None, bool]:
    """Mean over every evaluated task of the directed changes (Fail counts negative, AVERAGING_RULE);
    returns ({"rac", "rcc"} cells, whether an undefined task was left out)."""
    evaluated = [c for c in cells if c is not None]
    if not evaluated:
        return None, False
    out, left_out = {}, False
    for half in ("rac", "rcc"):
        values = [(-1 if c[half].fail else 1) * p for c in evaluated if (p := c[half].change.percent) is not None]
        left_out |= len(values) < len(evaluated)
        out[half] = _as_cell(float(np.mean(values)) if values else math.nan, None)
    return out, left_out


def format_cells(cells: dict[str, Cell] | None, left_out: bool = False) -> str:
    """One table cell: RAC/RCC of `best_cells` (- when none; a dagger when a task was left out of an average)."""
    return "-" if cells is None else format_cell(cells["rac"], cells["rcc"]) + (DAGGER if left_out else "")


def tasks_and_methods(results: xr.Dataset) -> tuple[list, list]:
    """The tasks and selectors of `results.sweep` (an error naming the metrics it lacks)."""
    missing = set(METRIC_NAMES) - {str(m) for m in results["sweep"]["metric"].values}
    if missing:
        raise ValueError(f"results.sweep lacks metrics {sorted(missing)}")
    return list(results["task"].values), list(results["selector"].values)
