"""The paper's table cells, computed one way for every table: one ratio per cell, averages over
all tasks, and 95% bootstrap intervals over evaluation examples.

Quantities of a cell (the `quantity` dim), all in the intended direction of the intervention:
- `rac`, `rcc`: directed relative change in %, (new - orig) / orig * 100, sign flipped for
  degrading. Where it is >= 0 it equals the paper's RAC / RCC (|orig - new| / orig * 100); below 0
  the cell is the paper's "Fail". NaN = undefined (original Acc / Com of 0).
- `acc_change`, `com_change`: signed change new - orig in percentage points (not directed).

Scoring rules (docs/scoring.md quotes the paper for each):
- One ratio per (task, method, direction): section 4.1 says "vary the ratio ... and report the
  best performance among all these configurations". `best_by` picks the ratio whose criterion is
  largest: "mean" (default) the mean of directed RAC and RCC, "rac" or "rcc" one of them; both
  metrics are then reported at that one ratio. "per_metric" (RAC and RCC maximised separately, so
  one cell may mix two ratios) is kept only as a labelled option. Ties go to the lowest ratio.
  Where RAC or RCC is undefined the criterion uses the defined one; where both are, the directed
  change in points (the original is the same at every ratio, so the choice stays consistent).
- Averages are means over every task (the paper: TN Deg on LLaMA 2-7B (47.8 + 17.2 + 63.9 + 9.5)
  / 4 = 34.6), a failed task entering with its negative directed change; an average below 0 is
  Fail. Only undefined or not evaluated tasks are left out (`average_complete` False, a dagger).
- Intervals: percentile bootstrap over examples (nsneurons.uncertainty), the chosen ratio held
  fixed; a method's difference to the best baseline is bootstrapped paired (same resamples).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .metrics import DIRECTIONS
from .selection import BASELINE_METHODS
from .uncertainty import bootstrap_indices, percentile_interval, resampled_means
from .vocab import BEST_BY, BestBy  # noqa: F401  (re-exported: the scoring rule's choices)

QUANTITIES = ("rac", "rcc", "acc_change", "com_change")
HALVES = ("rac", "rcc")
CI = ("estimate", "lo", "hi")
# Which condition a quantity is read at: RAC and the Acc change at the RAC ratio, the rest at RCC's.
HALF_OF = {"rac": "rac", "acc_change": "rac", "rcc": "rcc", "com_change": "rcc"}


def quantities(acc_o, acc_i, com_o, com_i, direction: str) -> dict[str, np.ndarray]:
    """Every quantity (and the directed point changes `acc_dir`, `com_dir`) from Acc/Com fractions;
    arrays broadcast, so resampled values go through the same formula as the estimate."""
    sign = -1.0 if direction == "degrade" else 1.0
    acc_o, acc_i, com_o, com_i = (np.asarray(x, dtype=np.float64) for x in (acc_o, acc_i, com_o, com_i))
    out = {"acc_change": (acc_i - acc_o) * 100.0, "com_change": (com_i - com_o) * 100.0}
    out["acc_dir"], out["com_dir"] = sign * out["acc_change"], sign * out["com_change"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rac"] = np.where(acc_o > 0, out["acc_dir"] / acc_o, np.nan)
        out["rcc"] = np.where(com_o > 0, out["com_dir"] / com_o, np.nan)
    # Rounded far below print precision so a zero change is 0, not a float-noise "Fail".
    return {name: np.round(x, 9) for name, x in out.items()}


def _criterion(q: dict[str, np.ndarray], half: str) -> np.ndarray:
    """Ranking key over ratios for one criterion (see the module doc)."""
    if half in HALVES:
        key = q[half]
        return key if np.isfinite(key).any() else q["acc_dir" if half == "rac" else "com_dir"]
    defined = [q[h] for h in HALVES if np.isfinite(q[h]).any()]
    return np.mean(defined, axis=0) if defined else (q["acc_dir"] + q["com_dir"]) / 2


def choose_ratio(ratios, q: dict[str, np.ndarray], best_by: str) -> dict[str, float]:
    """{"rac": ratio, "rcc": ratio} by `best_by`; ratios not evaluated are NaN in q and never win."""
    if best_by not in BEST_BY:
        raise ValueError(f"best_by must be one of {BEST_BY}, got {best_by!r}")
    ratios = np.asarray(ratios, dtype=np.float64)
    chosen = {}
    for half in HALVES:
        key = _criterion(q, half if best_by == "per_metric" else best_by)
        key = np.where(np.isfinite(key), key, -np.inf)
        order = np.lexsort((ratios, -key))  # largest key first, then lowest ratio
        chosen[half] = float(ratios[order[0]])
    return chosen


# ---- reading a results Dataset -------------------------------------------------------------

_FIELDS = ("acc_original", "acc_intervened", "com_original", "com_intervened")


def _sweep_q(results: xr.Dataset, task, method, direction) -> tuple[np.ndarray, dict] | None:
    cut = results["sweep"].sel(task=task, selector=method, direction=direction)
    values = [cut.sel(metric=f).values for f in _FIELDS]
    evaluated = np.all([np.isfinite(v) for v in values], axis=0)
    if not evaluated.any():
        return None
    ratios = cut["ratio"].values[evaluated]
    acc_o, acc_i, com_o, com_i = (v[evaluated] for v in values)
    return ratios, quantities(acc_o, acc_i, com_o, com_i, direction)


def _example_arrays(results: xr.Dataset, task, var: str, where: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(original (2, n), condition (2, n)) per-example [acc, com] of the evaluated examples."""
    if var not in results or "original_example" not in results:
        return None
    orig = results["original_example"].sel(task=task).transpose("measure", "eval_index").values
    cond = results[var].sel(task=task, **where).transpose("measure", "eval_index").values
    n = int(np.isfinite(orig[0]).sum())  # evaluated examples come first; the rest is padding
    return (orig[:, :n], cond[:, :n]) if n and np.isfinite(cond[:, :n]).all() else None


def _samples(arrays, idx: np.ndarray, direction: str) -> dict[str, np.ndarray]:
    orig, cond = arrays
    acc_o, acc_i, com_o, com_i = (resampled_means(a, idx) for a in (orig[0], cond[0], orig[1], cond[1]))
    return quantities(acc_o, acc_i, com_o, com_i, direction)


def task_indices(n: int, task_index: int, resamples: int, seed: int) -> np.ndarray:
    """The resampled examples of the task at `task_index` of a run's tasks: one matrix per (seed, task),
    shared by every table and the K sweep, so their intervals are paired."""
    return bootstrap_indices(n, resamples, [seed, task_index])


def _indices(results: xr.Dataset, resamples: int, seed: int) -> dict:
    if "original_example" not in results:
        return {}
    out = {}
    for i, task in enumerate(results["task"].values):
        n = int(np.isfinite(results["original_example"].sel(task=task, measure="acc").values).sum())
        out[task] = task_indices(n, i, resamples, seed) if n else None
    return out


def _cell(results, task, method, direction, best_by, idx):
    """(chosen {half: ratio}, estimates {quantity}, samples {quantity: (B,)} or None) of one cell."""
    found = _sweep_q(results, task, method, direction)
    if found is None:
        return None
    ratios, q = found
    chosen = choose_ratio(ratios, q, best_by)
    at = {h: int(np.flatnonzero(ratios == chosen[h])[0]) for h in HALVES}
    estimate = {name: float(q[name][at[HALF_OF[name]]]) for name in QUANTITIES}
    samples = None
    if idx is not None:
        per_half = {}
        for half in HALVES:
            arrays = _example_arrays(
                results, task, "sweep_example", {"selector": method, "direction": direction, "ratio": chosen[half]}
            )
            per_half[half] = None if arrays is None else _samples(arrays, idx, direction)
        if all(v is not None for v in per_half.values()):
            samples = {name: per_half[HALF_OF[name]][name] for name in QUANTITIES}
    return chosen, estimate, samples


def _fill(estimate: dict, samples: dict | None, level: float) -> np.ndarray:
    """(quantity, ci) block: estimates, and the interval when samples exist."""
    block = np.full((len(QUANTITIES), len(CI)), np.nan)
    block[:, 0] = [estimate[name] for name in QUANTITIES]
    if samples is not None:
        lo, hi = percentile_interval(np.stack([samples[name] for name in QUANTITIES]), level)
        block[:, 1], block[:, 2] = lo, hi
    return block


def _average(per_task: list, level: float) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """Mean over tasks of (estimate, samples) pairs (None = not evaluated), per the module's rule."""
    block, complete = np.full((len(QUANTITIES), len(CI)), np.nan), np.zeros(len(QUANTITIES), bool)
    found = [c for c in per_task if c is not None]
    if not found:
        return block, complete, None
    samples: dict[str, np.ndarray] | None = {} if all(s is not None for _, s in found) else None
    for i, name in enumerate(QUANTITIES):
        keep = [(e, s) for e, s in found if np.isfinite(e[name])]
        complete[i] = len(keep) == len(per_task)
        if not keep:
            continue
        block[i, 0] = np.round(np.mean([e[name] for e, _ in keep]), 9)
        if samples is not None:
            samples[name] = np.mean([s[name] for _, s in keep], axis=0)
            block[i, 1:] = [x[()] for x in percentile_interval(samples[name], level)]
    return block, complete, samples


def _differences(found: dict, methods, columns, level: float) -> tuple[np.ndarray, np.ndarray]:
    """neuronllm minus the best baseline (by estimate) per (column, direction, half), paired."""
    diff = np.full((len(columns), len(DIRECTIONS), len(HALVES), len(CI)), np.nan)
    best = np.full((len(columns), len(DIRECTIONS), len(HALVES)), "", dtype=object)
    baselines = [m for m in methods if m in BASELINE_METHODS]
    if "neuronllm" not in methods or not baselines:
        return diff, best
    for (c, d, h), _ in np.ndenumerate(best):
        key = (columns[c], DIRECTIONS[d])
        ours = found.get((*key, "neuronllm"))
        theirs = [(found[(*key, m)], m) for m in baselines if found.get((*key, m)) is not None]
        theirs = [(x, m) for x, m in theirs if np.isfinite(x[0][HALVES[h]])]
        if ours is None or not theirs or not np.isfinite(ours[0][HALVES[h]]):
            continue
        (b_est, b_samples), name = max(theirs, key=lambda t: t[0][0][HALVES[h]])
        best[c, d, h] = name
        diff[c, d, h, 0] = ours[0][HALVES[h]] - b_est[HALVES[h]]
        if ours[1] is not None and b_samples is not None:
            lo, hi = percentile_interval(ours[1][HALVES[h]] - b_samples[HALVES[h]], level)
            diff[c, d, h, 1:] = [lo[()], hi[()]]
    return diff, best


def score_cells(
    results: xr.Dataset, *, best_by: str = "mean", resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> xr.Dataset:
    """Every table cell of a results Dataset (dims task, method, direction, ratio, metric; with the
    per-example arrays `original_example` / `sweep_example` the intervals too, else NaN)."""
    tasks, methods = list(results["task"].values), list(results["selector"].values)
    idx = _indices(results, resamples, seed)
    chosen = np.full((len(tasks), len(methods), len(DIRECTIONS), len(HALVES)), np.nan)
    cell = np.full((len(tasks), len(methods), len(DIRECTIONS), len(QUANTITIES), len(CI)), np.nan)
    found = {}
    for (t, m, d), _ in np.ndenumerate(chosen[..., 0]):
        got = _cell(results, tasks[t], methods[m], DIRECTIONS[d], best_by, idx.get(tasks[t]))
        if got is None:
            continue
        chosen[t, m, d] = [got[0][h] for h in HALVES]
        cell[t, m, d] = _fill(got[1], got[2], level)
        found[(tasks[t], DIRECTIONS[d], methods[m])] = got[1:]
    average = np.full((len(methods), len(DIRECTIONS), len(QUANTITIES), len(CI)), np.nan)
    complete = np.zeros((len(methods), len(DIRECTIONS), len(QUANTITIES)), bool)
    for (m, d), _ in np.ndenumerate(complete[..., 0]):
        per_task = [found.get((t, DIRECTIONS[d], methods[m])) for t in tasks]
        average[m, d], complete[m, d], avg_samples = _average(per_task, level)
        if any(c is not None for c in per_task):
            found[("Average", DIRECTIONS[d], methods[m])] = (
                {q: average[m, d, i, 0] for i, q in enumerate(QUANTITIES)},
                avg_samples,
            )
    columns = [*tasks, "Average"]
    diff, best = _differences(found, methods, columns, level)
    base = {"task": tasks, "selector": methods, "direction": list(DIRECTIONS)}
    return xr.Dataset(
        {
            "chosen_ratio": (("task", "selector", "direction", "half"), chosen),
            "cell": (("task", "selector", "direction", "quantity", "ci"), cell),
            "average": (("selector", "direction", "quantity", "ci"), average),
            "average_complete": (("selector", "direction", "quantity"), complete),
            "vs_best": (("column", "direction", "half", "ci"), diff),
            "best_baseline": (("column", "direction", "half"), best.astype(str)),
        },
        coords={**base, "half": list(HALVES), "quantity": list(QUANTITIES), "ci": list(CI), "column": columns},
        attrs={
            "best_by": best_by,
            "resamples": int(resamples),
            "bootstrap_seed": int(seed),
            "level": float(level),
            "has_intervals": bool(idx),
        },
    )


def group_cells(results: xr.Dataset, *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> xr.Dataset:
    """Good-only / bad-only cells (Tables 3 and 6): `group_cell` (task, method, direction, group,
    quantity, ci) and `group_average` over tasks by the same rule as `average`."""
    tasks, methods, groups = (list(results[d].values) for d in ("task", "selector", "group"))
    idx = _indices(results, resamples, seed)
    out = np.full((len(tasks), len(methods), len(DIRECTIONS), len(groups), len(QUANTITIES), len(CI)), np.nan)
    avg = np.full(out.shape[1:], np.nan)
    complete = np.zeros(out.shape[1:-1], bool)
    for (m, d, g), _ in np.ndenumerate(avg[..., 0, 0]):
        per_task: list[tuple[dict[str, float], dict[str, np.ndarray] | None] | None] = []
        for t, task in enumerate(tasks):
            where = {"selector": methods[m], "direction": DIRECTIONS[d], "group": groups[g]}
            values = [float(results["ablation"].sel(task=task, **where).sel(metric=f)) for f in _FIELDS]
            if not np.all(np.isfinite(values)):
                per_task.append(None)
                continue
            acc_o, acc_i, com_o, com_i = values
            estimate = {k: float(v) for k, v in quantities(acc_o, acc_i, com_o, com_i, DIRECTIONS[d]).items()}
            arrays = _example_arrays(results, task, "ablation_example", where)
            samples = None if arrays is None or idx.get(task) is None else _samples(arrays, idx[task], DIRECTIONS[d])
            out[t, m, d, g] = _fill(estimate, samples, level)
            per_task.append((estimate, samples))
        avg[m, d, g], complete[m, d, g], _ = _average(per_task, level)
    coords = {
        "task": tasks,
        "selector": methods,
        "direction": list(DIRECTIONS),
        "group": groups,
        "quantity": list(QUANTITIES),
        "ci": list(CI),
    }
    dims = ("task", "selector", "direction", "group", "quantity", "ci")
    return xr.Dataset(
        {"group_cell": (dims, out), "group_average": (dims[1:], avg), "group_complete": (dims[1:-1], complete)}, coords=coords
    )


def sweep_intervals(results: xr.Dataset, *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> xr.DataArray:
    """Directed RAC / RCC at every evaluated ratio with its interval (the ratio-sweep figure):
    `sweep_ci` (task, method, direction, ratio, half, ci)."""
    tasks, methods, ratios = (list(results[d].values) for d in ("task", "selector", "ratio"))
    idx = _indices(results, resamples, seed)
    out = np.full((len(tasks), len(methods), len(DIRECTIONS), len(ratios), len(HALVES), len(CI)), np.nan)
    for (t, m, d), _ in np.ndenumerate(out[..., 0, 0, 0]):
        found = _sweep_q(results, tasks[t], methods[m], DIRECTIONS[d])
        if found is None:
            continue
        for r, q in zip(found[0], zip(*(found[1][h] for h in HALVES))):
            i = ratios.index(r)
            out[t, m, d, i, :, 0] = q
            arrays = _example_arrays(
                results, tasks[t], "sweep_example", {"selector": methods[m], "direction": DIRECTIONS[d], "ratio": r}
            )
            if arrays is not None and idx.get(tasks[t]) is not None:
                samples = _samples(arrays, idx[tasks[t]], DIRECTIONS[d])
                lo, hi = percentile_interval(np.stack([samples[h] for h in HALVES]), level)
                out[t, m, d, i, :, 1], out[t, m, d, i, :, 2] = lo, hi
    return xr.DataArray(
        out,
        dims=("task", "selector", "direction", "ratio", "half", "ci"),
        coords={
            "task": tasks,
            "selector": methods,
            "direction": list(DIRECTIONS),
            "ratio": ratios,
            "half": list(HALVES),
            "ci": list(CI),
        },
        name="sweep_ci",
    )
