"""Cross-task analyses of section 4.6 / appendix C of the NeuronLLM paper, on a finished `nsneurons run`:
common and task-specific neurons (C.1, Table 5), the cross-task matrix (C.2, Figures 2 and 4),
task-dependent functionality (C.5, Table 8, at the paper's budgets: crosstask_budgets), layer distributions (C.6, Figures 5-7) and the
intervention-budget sensitivity (C.4, Table 7).

This module holds the analyses (no model): neuron sets, re-ranking the stored scores, layer
statistics. `nsneurons.runners.crosstask.run_crosstask(recipe, out)` re-ranks the stored scores (no
IG is recomputed), runs the interventions on each task's evaluation proxies and writes
`crosstask.zarr` (one zarr group per Dataset, read them with `runfolder.open_crosstask`);
nsneurons.crosstask_report writes `figures/crosstask_*.png` (+ .svg; drawn by
nsneurons.crosstask_figures) and `crosstask.md`.

Decisions:
- Common good (bad) neurons of a method: in the good (bad) set of more than one task (neurons.zarr).
  Order: number of tasks desc, mean rank over those tasks asc, then (layer, neuron) asc; all are
  stored, the first ones up to the budget K are intervened on (Table 5).
- Task-specific neurons: the task's full ranking (same method, scores, z, t, seed as the run, so its
  first K are neurons.zarr's, which is checked) minus every common neuron of the method, good or
  bad; the first K per role (= the stored set with common neurons removed and refilled).
- The budget K is split by good:bad ratio like the run's sweep (good = round(ratio * K) first good,
  the rest first bad); a good-only method uses ratio 1. Tables 5 and 7 take the best over the recipe's
  ratios; the cross-task matrix uses one ratio (default 0.5); Table 8 uses per-task good and bad budgets
  (crosstask_budgets). A condition with no neuron is skipped (NaN).
- Budget values above half the attributed neurons are clamped to it and deduplicated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import selection
from .figures import layer_counts
from .recipe import CrossTask, Recipe, RecipeError
from .recipe_checks import check_budget
from .runfolder import CROSSTASK_GROUPS as GROUPS  # noqa: F401  (the groups of crosstask.zarr)
from .runfolder import RunFolder
from .selection import ROLES
from .store import example_scores, open_scores

DEFAULT_K = CrossTask().k_values  # Table 7


CrossTaskSettings = CrossTask  # the recipe's `crosstask:` section


def settings_of(recipe: Recipe, **overrides) -> CrossTask:
    """The recipe's `crosstask:` section with non-None keyword overrides."""
    changes: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    s = dataclasses.replace(recipe.crosstask, **changes)
    if not 0.0 <= s.ratio <= 1.0:
        raise RecipeError(f"crosstask.ratio: expected a ratio in [0, 1], got {s.ratio}")
    if not s.k_values:
        raise RecipeError("crosstask.k_values: expected a non-empty list")
    for i, k in enumerate(s.k_values):
        check_budget(k, f"crosstask.k_values[{i}]")
    return s


def load_crosstask_recipe(path, overrides=()) -> tuple[Recipe, CrossTask]:
    """A recipe file (with `--set` overrides) and its `crosstask:` settings."""
    from .recipe import load_recipe

    recipe = load_recipe(path, overrides)
    return recipe, settings_of(recipe)


# ---- neuron sets ---------------------------------------------------------------------------


def _set(layer, neuron, **extra) -> xr.Dataset:
    data = {"layer": (("role", "rank"), layer), "neuron": (("role", "rank"), neuron)}
    data.update({k: (("role", "rank"), v) for k, v in extra.items()})
    return xr.Dataset(data, coords={"role": list(ROLES), "rank": np.arange(layer.shape[1])})


def common_neurons(neurons: xr.Dataset, size: int | None = None) -> xr.Dataset:
    """Common good/bad neurons of one method's sets (dims task, role, rank): dims (role, rank) with
    layer, neuron (-1 pads) and n_tasks (0 pads); `size` rows (None: all common neurons, at least 1).
    attrs n_good / n_bad count every common neuron."""
    found, attrs = {}, {}
    for role in ROLES:
        ranks: dict[tuple[int, int], list[int]] = {}
        for task in neurons["task"].values:
            part = neurons.sel(task=task, role=role)
            for rank, (l, n) in enumerate(zip(part["layer"].values, part["neuron"].values)):
                if l >= 0:
                    ranks.setdefault((int(l), int(n)), []).append(rank)
        common = sorted(
            (key for key, r in ranks.items() if len(r) > 1), key=lambda key: (-len(ranks[key]), np.mean(ranks[key]), key)
        )
        found[role] = [(key, len(ranks[key])) for key in common]
        attrs[f"n_{role}"] = len(common)
    size = size if size is not None else max(1, *(len(v) for v in found.values()))
    layer, neuron, n_tasks = np.full((2, size), -1), np.full((2, size), -1), np.zeros((2, size), dtype=int)
    for i, role in enumerate(ROLES):
        for j, ((l, n), count) in enumerate(found[role][:size]):
            layer[i, j], neuron[i, j], n_tasks[i, j] = l, n, count
    ds = _set(layer, neuron, n_tasks=n_tasks)
    ds.attrs.update(attrs)
    return ds


def pairs_of(neuron_set: xr.Dataset) -> set[tuple[int, int]]:
    """Every (layer, neuron) of a set, both roles."""
    return {(int(l), int(n)) for l, n in zip(neuron_set["layer"].values.ravel(), neuron_set["neuron"].values.ravel()) if l >= 0}


def task_specific(ranking: xr.Dataset, exclude, k: int) -> xr.Dataset:
    """The first k neurons per role of `ranking` (a neuron set, best first) that are not in `exclude`
    ((layer, neuron) pairs): the ranking's top k minus `exclude`, refilled from the next-ranked.
    -1 (score NaN) pads when the ranking runs out. attrs n_removed_<role>: excluded among its top k."""
    width = int(max([int(ranking["neuron"].max()), *(n for _, n in exclude)], default=0)) + 1
    banned = np.array([l * width + n for l, n in exclude], dtype=np.int64)
    layer, neuron, score = np.full((2, k), -1), np.full((2, k), -1), np.full((2, k), np.nan)
    attrs = {}
    for i, role in enumerate(ROLES):
        part = ranking.sel(role=role)
        lv, nv = part["layer"].values.astype(np.int64), part["neuron"].values.astype(np.int64)
        keep = (lv >= 0) & ~np.isin(lv * width + nv, banned)
        attrs[f"n_removed_{role}"] = int(((lv[:k] >= 0) & ~keep[:k]).sum())
        picked = np.flatnonzero(keep)[:k]
        layer[i, : len(picked)], neuron[i, : len(picked)] = lv[picked], nv[picked]
        score[i, : len(picked)] = part["score"].values[picked] if "score" in part else np.nan
    ds = _set(layer, neuron, score=score)
    ds.attrs.update(attrs)
    return ds


def full_ranking(recipe: Recipe, out: Path, task: str, method: str, n_layers: int, n_neurons: int, draw: int = 0) -> xr.Dataset:
    """Re-rank a task's stored scores exactly as the run selected (neuron set with K = half the grid);
    `draw`: RANDOM's draw (seed + draw, as the run draws)."""
    folder = RunFolder(out)
    targets = [t for t in ("ace", "qrnca", "tn") if folder.scores(task, t).exists()]
    if not targets:
        raise FileNotFoundError(f"no scores store for task {task!r} under {folder.scores_dir}; run `nsneurons run` first")
    needs = selection.method_needs(method)
    if needs not in (None, "activation") and needs not in targets:
        raise FileNotFoundError(f"method {method!r} needs {folder.scores(task, needs)}")
    first = open_scores(folder.scores(task, needs if needs in targets else targets[0]))
    scores = {needs: example_scores(first).load()} if needs in targets else {}
    activations = first["activation"].load() if needs == "activation" else None
    grid = first.sizes["layer"] * first.sizes["neuron"]
    return selection.select(
        method,
        k=grid // 2,
        scores=scores,
        activations=activations,
        n_layers=n_layers,
        n_neurons=n_neurons,
        z=recipe.selection.z,
        t=recipe.selection.kn_threshold,
        seed=recipe.seed + draw,
    )


def layer_statistics(original: xr.Dataset, specific: xr.Dataset, common: xr.Dataset, n_layers: int) -> xr.Dataset:
    """Layer histograms (C.6): count (set, task, method, role, layer) for the run's sets and the
    task-specific ones, their task mean, change = specific - original (Figure 7), common (Figure 6)."""
    count = xr.concat(
        [layer_counts(original, n_layers), layer_counts(specific.transpose("task", "selector", "role", "rank"), n_layers)],
        dim=xr.DataArray(["original", "specific"], dims="set"),
    )
    common_count = layer_counts(common[["layer", "neuron"]].expand_dims(task=["common"]), n_layers).squeeze("task", drop=True)
    return xr.Dataset(
        {
            "count": count,
            "mean": count.mean("task"),
            "change": count.sel(set="specific", drop=True) - count.sel(set="original", drop=True),
            "common": common_count,
        }
    )
