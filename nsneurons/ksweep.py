"""The K sweep of `nsneurons run` (`selection.k_sweep`): each method's first K good (and bad) neurons at
several budgets K, re-selected from the stored scores (no IG is recomputed), switched on the task's
evaluation examples and scored like Table 1, with its bootstrap intervals.

Decisions:
- Neurons: the stored scores re-ranked exactly as the run selected them (crosstask.full_ranking; RANDOM
  once per draw, seeds seed, seed + 1, ...), the first K of each role. One total order per method, so the
  set at K is the first K of the set at any larger K, and at the run's K it is the run's set (checked).
- Ratio: each (task, method, direction) keeps the good:bad ratio of its Table 1 cell (`chosen_ratio`,
  per half; a good-only method 1), so the sweep varies K alone. Sweeping every ratio at every K would
  multiply its cost by the number of ratios. Hence at K = selection.k the sweep's cells are Table 1's.
- Both directions (degrade: silence good, excite bad; enhance: the reverse): Table 1 has both, and each
  costs one condition per (method, draw, K, ratio); switch sets that coincide are run once.
- Intervals: the bootstrap of nsneurons.cells (the same resampled examples per task as the tables).
- Stored: ksweep/<task>.zarr per task, resumable (a store with the same fingerprint is reused), and
  ksweep.zarr (the tasks combined, with the cells). The report's section: nsneurons.report_ksweep.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from . import budget, selection
from .cells import CI, HALF_OF, HALVES, QUANTITIES, quantities, task_indices
from .conditions import MEASURES, evaluate_conditions, method_ratios, per_example
from .crosstask import full_ranking
from .intervention import Condition, degrader, enhancer
from .metrics import DIRECTIONS
from .runfolder import RunFolder, digest, evaluation_proxies
from .uncertainty import percentile_interval, resampled_means
from .zarrio import open_checked, write_atomically


def rankings(recipe, out, task: str, model, neurons: xr.Dataset) -> dict[str, list[xr.Dataset]]:
    """Each method's full re-ranking per draw; draw 0 must start with the run's stored set of the task."""
    s, k = recipe.selection, budget.resolved_k(recipe, model.n_layers, model.n_neurons)
    found = {}
    for m in s.methods:
        draws = s.random_draws if selection.method_needs(m) is None else 1
        found[m] = [full_ranking(recipe, out, task, m, model.n_layers, model.n_neurons, draw=d) for d in range(draws)]
        stored = neurons.sel(task=task, selector=m)
        if not all(np.array_equal(found[m][0][v].values[:, :k], stored[v].values) for v in ("layer", "neuron")):
            raise ValueError(f"re-ranking the stored scores of task {task!r} with {m!r} does not give neurons.zarr's set")
    return found


def _ratios(chosen: xr.DataArray, method: str, direction: str) -> dict[str, float]:
    """{half: ratio} of a method's Table 1 cell (a good-only method: 1)."""
    if method_ratios(method, (0.0, 1.0)) == (1.0,):
        return dict.fromkeys(HALVES, 1.0)
    return {h: float(chosen.sel(selector=method, direction=direction, half=h)) for h in HALVES}


def plan(ranked: dict[str, list[xr.Dataset]], chosen: xr.DataArray, ks) -> tuple[list[Condition], dict[tuple, list[str]]]:
    """Conditions to run, and per (method, direction, k, half) the condition of each draw that answers it."""
    conditions: dict[tuple, Condition] = {}
    answers: dict[tuple, list[str]] = {}
    for m, draws in ranked.items():
        for d in DIRECTIONS:
            for half, ratio in _ratios(chosen, m, d).items():
                for k in ks:
                    for draw, ranking in enumerate(draws):
                        good, bad = selection.ratio_split(ranking, k, ratio)
                        switch = degrader if d == "degrade" else enhancer
                        made = switch(good, bad, f"ksweep/{m}/{d}/{k}/{ratio:g}/{draw}")
                        same = conditions.setdefault((d, frozenset(made.silence), frozenset(made.excite)), made)
                        answers.setdefault((m, d, k, half), []).append(same.name)
    return list(conditions.values()), answers


def sweep_task(
    recipe, model, out, task, results: xr.Dataset, ranked: dict, ks, *, progress: bool, label: str = "K sweep"
) -> xr.Dataset:
    """One task's per-example Acc and Com under every (method, direction, K, half) of `ranked`'s neurons
    (method -> a full ranking per draw) and unmodified."""
    ids = [str(i) for i in open_checked(RunFolder(out).task(task.name)).evaluation_example.values]
    chosen = results["chosen_ratio"].sel(task=task.name)
    methods = list(ranked)
    conditions, answers = plan(ranked, chosen, ks)
    print(f"{label}: evaluating {len(conditions)} conditions on task {task.name}")
    ev = recipe.evaluation
    correct = evaluate_conditions(
        model,
        evaluation_proxies(recipe, task, out),
        conditions,
        position=ev.position,
        batch_size=ev.batch_size,
        progress=progress,
    )
    shape = (len(methods), len(DIRECTIONS), len(ks), len(HALVES), len(MEASURES), len(ids))
    values = np.full(shape, np.nan)
    for (m, d, k, half), names in answers.items():
        where = (methods.index(m), DIRECTIONS.index(d), list(ks).index(k), HALVES.index(half))
        values[where] = np.mean([per_example(correct, n, ids) for n in names], axis=0)  # over draws, as Table 1
    ratio = [[[_ratios(chosen, m, d)[h] for h in HALVES] for d in DIRECTIONS] for m in methods]
    coords = {"selector": methods, "direction": list(DIRECTIONS), "k": list(ks), "half": list(HALVES), "measure": list(MEASURES)}
    return xr.Dataset(
        {
            "example": (("selector", "direction", "k", "half", "measure", "eval_index"), values),
            "original": (("measure", "eval_index"), per_example(correct, "none", ids)),
            "ratio": (("selector", "direction", "half"), np.array(ratio)),
        },
        coords={**coords, "eval_index": np.arange(len(ids))},
    )


def run_sweep(recipe, model, out, results: xr.Dataset, neurons: xr.Dataset, stamp: str, *, progress: bool) -> xr.Dataset:
    """Every task's sweep (reusing ksweep/<task>.zarr made with the same settings), then ksweep.zarr."""
    folder, n_total = RunFolder(out), model.n_layers * model.n_neurons
    ks = budget.sweep_ks(recipe, model.n_layers, model.n_neurons)
    task_stamp = digest({"run": stamp, "k_sweep": list(ks)})
    per_task = {}
    for task in recipe.tasks:
        path = folder.ksweep_task(task.name)
        if path.exists() and (cached := open_checked(path).load()).attrs.get("fingerprint") == task_stamp:
            print(f"K sweep: task {task.name}: results exist with the same settings, skipped ({path})")
            per_task[task.name] = cached
            continue
        ranked = rankings(recipe, out, task.name, model, neurons)
        ds = sweep_task(recipe, model, out, task, results, ranked, ks, progress=progress)
        ds.attrs = {"fingerprint": task_stamp, "task": task.name}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, ds)
        per_task[task.name] = ds
    ev = recipe.evaluation
    combined = combine(per_task, resamples=ev.bootstrap, seed=recipe.seed, level=ev.confidence)
    combined.attrs = {
        **{k: v for k, v in results.attrs.items() if k in ("model", "recipe", "n_layers", "n_neurons", "k", "k_given")},
        "n_ffn_neurons": n_total,
        "k_sweep_given": json.dumps(list(recipe.selection.k_sweep)),
        "resamples": ev.bootstrap,
        "level": ev.confidence,
        "bootstrap_seed": recipe.seed,
    }
    combined = combined.assign_coords(k_share=("k", [budget.percent(int(k), n_total) + "%" for k in ks]))
    write_atomically(folder.ksweep, combined)
    return combined


def combine(per_task: dict[str, xr.Dataset], *, resamples: int, seed: int, level: float, positions=None) -> xr.Dataset:
    """The tasks stacked (eval_index padded with NaN) and `cell` (task, selector, direction, k, quantity, ci):
    each quantity at its half's ratio, the estimate and the bootstrap interval, as nsneurons.cells does.
    positions: each task's place among the run's tasks (default: the order given), which seeds its resamples."""
    tasks = xr.DataArray(list(per_task), dims="task", name="task")
    stacked = xr.concat([ds.drop_attrs() for ds in per_task.values()], dim=tasks, join="outer")
    first = next(iter(per_task.values()))
    cell = np.full((len(per_task), first.sizes["selector"], len(DIRECTIONS), first.sizes["k"], len(QUANTITIES), len(CI)), np.nan)
    for t, ds in enumerate(per_task.values()):
        orig = ds["original"].values
        idx = task_indices(orig.shape[1], t if positions is None else positions[t], resamples, seed)
        for (m, d, k), _ in np.ndenumerate(cell[t, ..., 0, 0]):
            for half in HALVES:
                cond = ds["example"].isel(selector=m, k=k).sel(direction=DIRECTIONS[d], half=half).values
                if not np.isfinite(cond).all():
                    continue
                est = quantities(orig[0].mean(), cond[0].mean(), orig[1].mean(), cond[1].mean(), DIRECTIONS[d])
                acc_o, acc_i, com_o, com_i = (resampled_means(a, idx) for a in (orig[0], cond[0], orig[1], cond[1]))
                samples = quantities(acc_o, acc_i, com_o, com_i, DIRECTIONS[d])
                for q, name in enumerate(QUANTITIES):
                    if HALF_OF[name] == half:
                        lo, hi = percentile_interval(samples[name], level)
                        cell[t, m, d, k, q] = [float(est[name]), float(lo), float(hi)]
    dims = ("task", "selector", "direction", "k", "quantity", "ci")
    return stacked.assign(cell=(dims, cell)).assign_coords(quantity=list(QUANTITIES), ci=list(CI))
