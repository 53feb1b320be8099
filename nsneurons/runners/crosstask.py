"""`nsneurons crosstask RECIPE`: the cross-task analyses of nsneurons.crosstask on a finished `nsneurons run`.

Re-ranks the stored scores (no IG is recomputed), checks they give the run's neuron sets, runs the
interventions (common neurons, the cross-task matrix, the budget sweep, Table 8) on each task's
evaluation proxies, writes crosstask.zarr (one group per Dataset) and, through
nsneurons.crosstask_report, crosstask.md and figures/crosstask_*.png.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .. import crosstask_budgets, metrics, selection
from ..budget import resolve, resolved_k
from ..conditions import evaluate_conditions
from ..crosstask import common_neurons, full_ranking, layer_statistics, pairs_of, settings_of, task_specific
from ..crosstask_report import write_crosstask_report
from ..intervention import Condition, degrader, enhancer
from ..metrics import DIRECTIONS, METRIC_NAMES
from ..recipe import CrossTask, Recipe, RecipeError
from ..runfolder import RunFolder, evaluation_proxies, fingerprint, model_for, open_outputs
from ..selection import ROLES
from ..zarrio import open_store, write_atomically


@dataclass(frozen=True)
class _Plan:
    """What every task's conditions are built from."""

    settings: CrossTask  # the recipe's crosstask section with the call's overrides
    tasks: list  # task names, in recipe order
    methods: list  # methods of the common / specific / matrix analyses
    budget_methods: list  # methods of the budget sweep (Table 7)
    k: int  # the run's budget K
    ratios: list  # the run's good:bad ratios and 1.0
    ks: list  # budget values, clamped to half the attributed neurons
    with_bad: dict  # method -> whether it has bad neurons
    rankings: dict  # (task, method) -> full ranking
    common_ds: xr.Dataset  # common neurons per method
    specific: dict  # (task, method) -> task-specific set
    chosen: xr.Dataset | None  # Table 8 sets (None: skipped)


def run_crosstask(
    recipe: Recipe,
    out_dir=None,
    *,
    model=None,
    methods=None,
    budget_methods=None,
    k_values=None,
    ratio=None,
    progress: bool = True,
) -> Path:
    """All analyses of nsneurons.crosstask on a finished run; returns the path of crosstask.md."""
    out = Path(out_dir) if out_dir is not None else recipe.output_dir()
    folder = RunFolder(out)
    _require_run(recipe, folder)
    neurons = open_outputs(out)["neurons"].load()
    s = settings_of(recipe, methods=methods, budget_methods=budget_methods, k_values=k_values, ratio=ratio)
    methods, budget_methods = _methods(s, [str(m) for m in neurons["selector"].values])
    model = model or model_for(recipe)
    stamp = fingerprint(recipe, model.provenance)
    for task in recipe.tasks:
        if open_store(folder.task(task.name)).attrs.get("fingerprint") != stamp:
            raise RecipeError(f"{folder.task(task.name)} was made with other settings or another model; rerun `nsneurons run`")
    plan, sets, specific_ds, budgets = _plan(recipe, out, model, neurons, s, methods, budget_methods)
    effects, n_examples = _measure(recipe, model, out, plan, progress)
    attrs = {
        "k": plan.k,
        "recipe": recipe.name,
        "model": str(model.provenance.get("model")),
        "n_layers": model.n_layers,
        "n_neurons": model.n_neurons,
        "fingerprint": stamp,
    }
    kmax = min(r.sizes["rank"] for r in plan.rankings.values())
    common_ds = plan.common_ds.assign(effect=effects["common"]).assign_attrs(attrs)
    datasets = {
        "common": common_ds,
        "specific": specific_ds.assign_attrs(attrs),
        "matrix": xr.Dataset(
            {"effect": effects["matrix"], "n_examples": ("eval_task", n_examples)}, attrs={**attrs, "ratio": s.ratio}
        ),
        "layers": layer_statistics(sets, specific_ds, common_ds, model.n_layers).assign_attrs(attrs),
        "budget": xr.Dataset(
            {"sweep": effects["budget"], "n_examples": ("task", n_examples)},
            attrs={**attrs, "k_values": [v if isinstance(v, str) else int(v) for v in s.k_values], "k_max": kmax},
        ),
        "table8": _table8(plan, budgets, effects["table8"], attrs),
    }
    write_atomically(folder.crosstask, datasets)
    return write_crosstask_report(out, datasets)


def _table8(plan: _Plan, budgets: xr.Dataset | None, effect, attrs: dict) -> xr.Dataset:
    """Table 8's Dataset: the chosen sets, budgets and effects, or only why it was skipped."""
    if plan.chosen is None:
        return xr.Dataset(attrs={**attrs, "skipped": crosstask_budgets.skip_reason(plan.tasks)})
    assert budgets is not None  # sets are chosen only from resolved budgets (_plan)
    return plan.chosen.merge(budgets).assign(effect=effect).assign_attrs({**attrs, **budgets.attrs})


def _require_run(recipe: Recipe, folder: RunFolder) -> None:
    needed = [folder.combined("results"), folder.combined("neurons"), *(folder.task(t.name) for t in recipe.tasks)]
    missing = [p.relative_to(folder.root).as_posix() for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"cross-task analyses need a finished `nsneurons run` of recipe {recipe.name!r} in {folder.root} "
            f"(missing: {', '.join(missing)}); run it first"
        )
    if len(recipe.tasks) < 2:
        raise RecipeError("tasks: cross-task analyses need at least two tasks")


def _methods(s: CrossTask, run_methods: list[str]) -> tuple[list, list]:
    """(methods, budget methods): the settings', else neuronllm (or the run's first) and the run's NeuronLLM/TN/QRNCA."""
    methods = list(s.methods or (["neuronllm"] if "neuronllm" in run_methods else run_methods[:1]))
    budget_methods = list(s.budget_methods or [m for m in ("neuronllm", "tn", "qrnca") if m in run_methods] or run_methods[:1])
    for m in {*methods, *budget_methods} - set(run_methods):
        raise RecipeError(f"crosstask: method {m!r} was not run (the run has {', '.join(run_methods)})")
    return methods, budget_methods


def _rankings(recipe: Recipe, out: Path, model, neurons: xr.Dataset, tasks, methods) -> dict:
    """Every (task, method)'s full re-ranking, checked to start with the run's stored set."""
    k, rankings = resolved_k(recipe, model.n_layers, model.n_neurons), {}
    for t in tasks:
        for m in methods:
            r = rankings[t, m] = full_ranking(recipe, out, t, m, model.n_layers, model.n_neurons)
            stored = neurons.sel(task=t, selector=m)
            if not all(np.array_equal(r[v].values[:, :k], stored[v].values) for v in ("layer", "neuron")):
                raise ValueError(
                    f"re-ranking the stored scores of task {t!r} with {m!r} does not give neurons.zarr's set; rerun `nsneurons run`"
                )
    return rankings


def _plan(recipe: Recipe, out: Path, model, neurons: xr.Dataset, s: CrossTask, methods, budget_methods):
    """(plan, the run's sets, the task-specific sets, Table 8 budgets)."""
    tasks, k = [t.name for t in recipe.tasks], resolved_k(recipe, model.n_layers, model.n_neurons)
    rankings = _rankings(recipe, out, model, neurons, tasks, dict.fromkeys([*methods, *budget_methods]))
    kmax = min(r.sizes["rank"] for r in rankings.values())
    sets = neurons.sel(selector=methods, task=tasks)[["layer", "neuron", "score"]]
    common = {m: common_neurons(sets.sel(selector=m)) for m in methods}
    width = max(c.sizes["rank"] for c in common.values())
    common_ds = xr.concat(
        [
            common_neurons(sets.sel(selector=m), width).assign(n_common=("role", [c.attrs["n_good"], c.attrs["n_bad"]]))
            for m, c in common.items()
        ],
        dim=xr.DataArray(methods, dims="selector"),
    )
    specific = {(t, m): task_specific(rankings[t, m], pairs_of(common[m]), k) for t in tasks for m in methods}
    specific_ds = xr.concat(
        [xr.concat([specific[t, m] for m in methods], dim=xr.DataArray(methods, dims="selector")) for t in tasks],
        dim=xr.DataArray(tasks, dims="task"),
    )
    specific_ds["n_removed"] = (
        ("task", "selector", "role"),
        [[[specific[t, m].attrs[f"n_removed_{r}"] for r in ROLES] for m in methods] for t in tasks],
    )
    budgets = crosstask_budgets.resolve_budgets(s.table8, tasks, model.n_layers * model.n_neurons, kmax)
    chosen = (
        None
        if budgets is None
        else crosstask_budgets.chosen_sets(
            budgets, methods, lambda t, m, n: task_specific(rankings[t, m], pairs_of(common[m]), n)
        )
    )
    plan = _Plan(
        settings=s,
        tasks=tasks,
        methods=methods,
        budget_methods=budget_methods,
        k=k,
        ratios=sorted({*recipe.evaluation.ratios, 1.0}),  # 1.0: where good-only methods are evaluated
        ks=sorted({min(resolve(v, model.n_layers * model.n_neurons), kmax) for v in s.k_values}),
        with_bad={m: selection.METHODS[m].with_bad for m in {*methods, *budget_methods}},
        rankings=rankings,
        common_ds=common_ds,
        specific=specific,
        chosen=chosen,
    )
    return plan, sets, specific_ds, budgets


def _split(neuron_set: xr.Dataset, k: int, ratio: float, with_bad: bool):
    n_good = selection.good_count(k, ratio if with_bad else 1.0)
    return selection.to_pairs(neuron_set, "good", n_good), selection.to_pairs(neuron_set, "bad", k - n_good)


def _add(conditions: list, keys: list, key: tuple, good, bad) -> None:
    """A degrader and an enhancer (skipped without neurons); key = (effect name, coordinates)."""
    if good or bad:
        name = key[0] + "/" + "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in key[1].values())
        conditions += [degrader(good, bad, f"{name}/degrade"), enhancer(good, bad, f"{name}/enhance")]
        keys += [(key[0], {**key[1], "direction": d}) for d in ("degrade", "enhance")]


def _task_conditions(plan: _Plan, task: str) -> tuple[list, list]:
    """The conditions evaluated on `task` and their (effect name, coordinates) keys."""
    conditions: list[Condition] = []
    keys: list[tuple[str, dict]] = []
    k, bad = plan.k, plan.with_bad
    for m in plan.methods:
        for r in plan.ratios if bad[m] else [1.0]:
            _add(
                conditions,
                keys,
                ("common", {"selector": m, "task": task, "ratio": r}),
                *_split(plan.common_ds.sel(selector=m), k, r, bad[m]),
            )
        for source in plan.tasks:
            _add(
                conditions,
                keys,
                ("matrix", {"selector": m, "source_task": source, "eval_task": task}),
                *_split(plan.specific[source, m], k, plan.settings.ratio, bad[m]),
            )
    for m in plan.budget_methods:
        for kk in plan.ks:
            for r in plan.ratios if bad[m] else [1.0]:
                _add(
                    conditions,
                    keys,
                    ("budget", {"task": task, "selector": m, "k": kk, "ratio": r}),
                    *_split(plan.rankings[task, m], kk, r, bad[m]),
                )
    if plan.chosen is not None and task in plan.chosen["source_task"].values:
        crosstask_budgets.add_conditions(conditions, keys, plan.chosen, task)
    return conditions, keys


def _nan(**coords) -> xr.DataArray:
    return xr.DataArray(np.full([len(v) for v in coords.values()], np.nan), dims=list(coords), coords=coords)


def _measure(recipe: Recipe, model, out: Path, plan: _Plan, progress: bool) -> tuple[dict, list[int]]:
    """Every condition's metrics on each task's evaluation proxies; (effects by name, evaluation examples per task)."""
    d, mt, tasks = list(DIRECTIONS), list(METRIC_NAMES), plan.tasks
    effects = {
        "common": _nan(selector=plan.methods, task=tasks, direction=d, ratio=plan.ratios, metric=mt),
        "matrix": _nan(selector=plan.methods, source_task=tasks, eval_task=tasks, direction=d, metric=mt),
        "budget": _nan(task=tasks, selector=plan.budget_methods, k=plan.ks, direction=d, ratio=plan.ratios, metric=mt),
        "table8": None if plan.chosen is None else crosstask_budgets.empty_effect(plan.chosen),
    }
    n_examples = []  # evaluation examples per task (figure titles)
    for task in tasks:
        conditions, keys = _task_conditions(plan, task)
        print(f"cross-task: evaluating {len(conditions)} conditions on task {task}")
        proxies = evaluation_proxies(recipe, recipe.tasks[tasks.index(task)], out, model.tokenizer)
        n_examples.append(len({p.example_id for p in proxies}))
        original, found = _evaluate(model, recipe, proxies, conditions, progress)
        for c, (kind, where) in zip(conditions, keys):
            values = metrics.evaluate_condition(original, found[c.name], where["direction"]).as_dict()
            effect = effects[kind]
            assert effect is not None  # table8 keys come only with chosen sets (_task_conditions)
            effect.loc[where] = [values[name] for name in METRIC_NAMES]
    return effects, n_examples


def _evaluate(model, recipe: Recipe, proxies, conditions, progress) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Correctness (example, proxy) of the unmodified model and under each condition."""
    correct = evaluate_conditions(
        model,
        proxies,
        conditions,
        position=recipe.evaluation.position,
        batch_size=recipe.evaluation.batch_size,
        progress=progress,
    )
    return correct.sel(condition="none").values, {c.name: correct.sel(condition=c.name).values for c in conditions}
