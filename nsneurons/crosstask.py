"""Cross-task analyses of section 4.6 / appendix C of the NeuronLLM paper, on a finished `nsneurons run`:
common and task-specific neurons (C.1, Table 5), the cross-task matrix (C.2, Figures 2 and 4),
task-dependent functionality (C.5, Table 8, at the paper's budgets: crosstask_budgets), layer distributions (C.6, Figures 5-7) and the
intervention-budget sensitivity (C.4, Table 7).

`run_crosstask(recipe, out)` re-ranks the stored scores (`scores/<task>-<target>.zarr`; no IG is
recomputed), runs the interventions on each task's evaluation proxies and writes `crosstask.zarr`
(one zarr group per Dataset, read them with `open_crosstask`), `figures/crosstask_*.png` (+ .svg;
drawn by nsneurons.crosstask_figures) and `crosstask.md`.

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
import math
from pathlib import Path

import numpy as np
import xarray as xr

from . import crosstask_budgets, figures, metrics, pipeline, report, selection
from .crosstask_figures import plot_budget, plot_common_layers, plot_cross_task, plot_layer_change  # noqa: F401  (re-exported)
from .intervention import BASELINE, correct_table, degrader, enhancer, option_probs
from .metrics import DIRECTIONS, METRIC_NAMES
from .recipe import CrossTask, Recipe, RecipeError
from .selection import ROLES
from .store import example_scores, open_scores
from .zarrio import open_store

DEFAULT_K = CrossTask().k_values  # Table 7
GROUPS = ("common", "specific", "matrix", "layers", "budget", "table8")
_CHUNK = 64  # conditions per option_probs call (bounds the [C, layers, neurons] multiplier table)


CrossTaskSettings = CrossTask  # the recipe's `crosstask:` section


def settings_of(recipe: Recipe, **overrides) -> CrossTask:
    """The recipe's `crosstask:` section with non-None keyword overrides."""
    s = dataclasses.replace(recipe.crosstask, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None})
    if not 0.0 <= s.ratio <= 1.0:
        raise RecipeError(f"crosstask.ratio: expected a ratio in [0, 1], got {s.ratio}")
    if not s.k_values or min(s.k_values) < 1:
        raise RecipeError(f"crosstask.k_values: expected ints >= 1, got {list(s.k_values)}")
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
        common = sorted((key for key, r in ranks.items() if len(r) > 1), key=lambda key: (-len(ranks[key]), np.mean(ranks[key]), key))
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
        layer[i, :len(picked)], neuron[i, :len(picked)] = lv[picked], nv[picked]
        score[i, :len(picked)] = part["score"].values[picked] if "score" in part else np.nan
    ds = _set(layer, neuron, score=score)
    ds.attrs.update(attrs)
    return ds


def full_ranking(recipe: Recipe, out: Path, task: str, method: str, n_layers: int, n_neurons: int) -> xr.Dataset:
    """Re-rank a task's stored scores exactly as the run selected (neuron set with K = half the grid)."""
    targets = [t for t in ("ace", "qrnca", "tn") if (out / "scores" / f"{task}-{t}.zarr").exists()]
    if not targets:
        raise FileNotFoundError(f"no scores store for task {task!r} under {out / 'scores'}; run `nsneurons run` first")
    needs = selection.method_needs(method)
    if needs not in (None, "activation") and needs not in targets:
        raise FileNotFoundError(f"method {method!r} needs {out / 'scores' / f'{task}-{needs}.zarr'}")
    first = open_scores(out / "scores" / f"{task}-{(needs if needs in targets else targets[0])}.zarr")
    scores = {needs: example_scores(first).load()} if needs in targets else {}
    activations = first["activation"].load() if needs == "activation" else None
    grid = first.sizes["layer"] * first.sizes["neuron"]
    return selection.select(method, k=grid // 2, scores=scores, activations=activations, n_layers=n_layers,
                            n_neurons=n_neurons, z=recipe.selection.z, t=recipe.selection.kn_threshold, seed=recipe.seed)


# ---- interventions -------------------------------------------------------------------------

def _split(neuron_set: xr.Dataset, k: int, ratio: float, with_bad: bool):
    n_good = selection.good_count(k, ratio if with_bad else 1.0)
    return selection.to_pairs(neuron_set, "good", n_good), selection.to_pairs(neuron_set, "bad", k - n_good)


def _add(conditions: list, keys: list, key: tuple, good, bad) -> None:
    """A degrader and an enhancer (skipped without neurons); key = (effect name, coordinates)."""
    if good or bad:
        name = key[0] + "/" + "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in key[1].values())
        conditions += [degrader(good, bad, f"{name}/degrade"), enhancer(good, bad, f"{name}/enhance")]
        keys += [(key[0], {**key[1], "direction": d}) for d in ("degrade", "enhance")]


def _evaluate(model, recipe: Recipe, proxies, conditions, progress) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Correctness (example, proxy) of the unmodified model and under each condition."""
    original, found = None, {}
    chunks = [conditions[i:i + _CHUNK] for i in range(0, len(conditions), _CHUNK)] or [[]]
    for chunk in chunks:
        batch = [BASELINE, *chunk] if original is None else list(chunk)
        probs = option_probs(model, proxies, batch, answer_format=recipe.answer_format, position=recipe.evaluation.position,
                             batch_size=recipe.evaluation.batch_size, progress=progress)
        correct = correct_table(probs)
        original = correct.sel(condition="none").values if original is None else original
        found.update({c.name: correct.sel(condition=c.name).values for c in chunk})
    return original, found


def _require_run(recipe: Recipe, out: Path) -> None:
    missing = [p for p in ["results.zarr", "neurons.zarr", *(f"tasks/{t.name}.zarr" for t in recipe.tasks)] if not (out / p).exists()]
    if missing:
        raise FileNotFoundError(f"cross-task analyses need a finished `nsneurons run` of recipe {recipe.name!r} in {out} "
                                f"(missing: {', '.join(missing)}); run it first")
    if len(recipe.tasks) < 2:
        raise RecipeError("tasks: cross-task analyses need at least two tasks")


def _nan(**coords) -> xr.DataArray:
    return xr.DataArray(np.full([len(v) for v in coords.values()], np.nan), dims=list(coords), coords=coords)


def run_crosstask(recipe: Recipe, out_dir=None, *, model=None, methods=None, budget_methods=None, k_values=None,
                  ratio=None, progress: bool = True) -> Path:
    """All analyses of the module doc on a finished run; returns the path of crosstask.md."""
    out = Path(out_dir) if out_dir is not None else recipe.output_dir()
    _require_run(recipe, out)
    neurons = pipeline.open_outputs(out)["neurons"].load()
    run_methods = [str(m) for m in neurons["selector"].values]
    s = settings_of(recipe, methods=methods, budget_methods=budget_methods, k_values=k_values, ratio=ratio)
    methods = list(s.methods or (["neuronllm"] if "neuronllm" in run_methods else run_methods[:1]))
    budget_methods = list(s.budget_methods or [m for m in ("neuronllm", "tn", "qrnca") if m in run_methods] or run_methods[:1])
    for m in {*methods, *budget_methods} - set(run_methods):
        raise RecipeError(f"crosstask: method {m!r} was not run (the run has {', '.join(run_methods)})")
    model = model or pipeline._load_model(recipe)
    stamp = pipeline.fingerprint(recipe, model.provenance)
    for task in recipe.tasks:
        if open_store(out / "tasks" / f"{task.name}.zarr").attrs.get("fingerprint") != stamp:
            raise RecipeError(f"{out}/tasks/{task.name}.zarr was made with other settings or another model; rerun `nsneurons run`")
    tasks, k = [t.name for t in recipe.tasks], recipe.selection.k
    ratios = sorted({*recipe.evaluation.ratios, 1.0})  # 1.0: where good-only methods are evaluated
    with_bad = {m: selection.METHODS[m].with_bad for m in {*methods, *budget_methods}}
    rankings = {}
    for t in tasks:
        for m in dict.fromkeys([*methods, *budget_methods]):
            r = rankings[t, m] = full_ranking(recipe, out, t, m, model.n_layers, model.n_neurons)
            stored = neurons.sel(task=t, selector=m)
            if not all(np.array_equal(r[v].values[:, :k], stored[v].values) for v in ("layer", "neuron")):
                raise ValueError(f"re-ranking the stored scores of task {t!r} with {m!r} does not give neurons.zarr's set; rerun `nsneurons run`")
    kmax = min(r.sizes["rank"] for r in rankings.values())
    ks = sorted({min(int(v), kmax) for v in s.k_values})

    sets = neurons.sel(selector=methods, task=tasks)[["layer", "neuron", "score"]]
    common = {m: common_neurons(sets.sel(selector=m)) for m in methods}
    width = max(c.sizes["rank"] for c in common.values())
    common_ds = xr.concat([common_neurons(sets.sel(selector=m), width).assign(n_common=("role", [c.attrs["n_good"], c.attrs["n_bad"]]))
                           for m, c in common.items()], dim=xr.DataArray(methods, dims="selector"))
    specific = {(t, m): task_specific(rankings[t, m], pairs_of(common[m]), k) for t in tasks for m in methods}
    specific_ds = xr.concat([xr.concat([specific[t, m] for m in methods], dim=xr.DataArray(methods, dims="selector"))
                             for t in tasks], dim=xr.DataArray(tasks, dims="task"))
    specific_ds["n_removed"] = (("task", "selector", "role"), [[[specific[t, m].attrs[f"n_removed_{r}"] for r in ROLES]
                                                              for m in methods] for t in tasks])
    budgets = crosstask_budgets.resolve_budgets(s.table8, tasks, model.n_layers * model.n_neurons, kmax)
    chosen = None if budgets is None else crosstask_budgets.chosen_sets(
        budgets, methods, lambda t, m, n: task_specific(rankings[t, m], pairs_of(common[m]), n))
    d, mt = list(DIRECTIONS), list(METRIC_NAMES)
    effects = {"common": _nan(selector=methods, task=tasks, direction=d, ratio=ratios, metric=mt),
               "matrix": _nan(selector=methods, source_task=tasks, eval_task=tasks, direction=d, metric=mt),
               "budget": _nan(task=tasks, selector=budget_methods, k=ks, direction=d, ratio=ratios, metric=mt),
               "table8": None if chosen is None else crosstask_budgets.empty_effect(chosen)}
    n_examples = []  # evaluation examples per task (figure titles)
    for task in tasks:
        conditions, keys = [], []
        for m in methods:
            for r in ratios if with_bad[m] else [1.0]:
                _add(conditions, keys, ("common", {"selector": m, "task": task, "ratio": r}), *_split(common_ds.sel(selector=m), k, r, with_bad[m]))
            for source in tasks:
                _add(conditions, keys, ("matrix", {"selector": m, "source_task": source, "eval_task": task}),
                     *_split(specific[source, m], k, s.ratio, with_bad[m]))
        for m in budget_methods:
            for kk in ks:
                for r in ratios if with_bad[m] else [1.0]:
                    _add(conditions, keys, ("budget", {"task": task, "selector": m, "k": kk, "ratio": r}), *_split(rankings[task, m], kk, r, with_bad[m]))
        if chosen is not None and task in chosen["source_task"].values:
            crosstask_budgets.add_conditions(conditions, keys, chosen, task)
        print(f"cross-task: evaluating {len(conditions)} conditions on task {task}")
        proxies = pipeline.evaluation_proxies(recipe, recipe.tasks[tasks.index(task)], out)
        n_examples.append(len({p.example_id for p in proxies}))
        original, found = _evaluate(model, recipe, proxies, conditions, progress)
        for c, (kind, where) in zip(conditions, keys):
            values = metrics.evaluate_condition(original, found[c.name], where["direction"]).as_dict()
            effects[kind].loc[where] = [values[name] for name in METRIC_NAMES]

    attrs = {"k": k, "recipe": recipe.name, "model": str(model.provenance.get("model")), "n_layers": model.n_layers,
             "n_neurons": model.n_neurons, "fingerprint": stamp}
    common_ds = common_ds.assign(effect=effects["common"]).assign_attrs(attrs)
    datasets = {"common": common_ds, "specific": specific_ds.assign_attrs(attrs),
                "matrix": xr.Dataset({"effect": effects["matrix"], "n_examples": ("eval_task", n_examples)}, attrs={**attrs, "ratio": s.ratio}),
                "layers": layer_statistics(sets, specific_ds, common_ds, model.n_layers).assign_attrs(attrs),
                "budget": xr.Dataset({"sweep": effects["budget"], "n_examples": ("task", n_examples)}, attrs={**attrs, "k_values": [int(v) for v in s.k_values], "k_max": kmax}),
                "table8": xr.Dataset(attrs={**attrs, "skipped": crosstask_budgets.skip_reason(tasks)}) if chosen is None else
                chosen.merge(budgets).assign(effect=effects["table8"]).assign_attrs({**attrs, **budgets.attrs})}
    _write_groups(datasets, out / "crosstask.zarr")
    return write_crosstask_report(out, datasets)


def layer_statistics(original: xr.Dataset, specific: xr.Dataset, common: xr.Dataset, n_layers: int) -> xr.Dataset:
    """Layer histograms (C.6): count (set, task, method, role, layer) for the run's sets and the
    task-specific ones, their task mean, change = specific - original (Figure 7), common (Figure 6)."""
    count = xr.concat([report.layer_counts(original, n_layers), report.layer_counts(specific.transpose("task", "selector", "role", "rank"), n_layers)],
                      dim=xr.DataArray(["original", "specific"], dims="set"))
    common_count = report.layer_counts(common[["layer", "neuron"]].expand_dims(task=["common"]), n_layers).squeeze("task", drop=True)
    return xr.Dataset({"count": count, "mean": count.mean("task"), "change": count.sel(set="specific", drop=True) - count.sel(set="original", drop=True),
                       "common": common_count})


def _write_groups(datasets: dict[str, xr.Dataset], path: Path) -> None:
    from .zarrio import write_atomically

    write_atomically(path, datasets)


def open_crosstask(out) -> dict[str, xr.Dataset]:
    """The Datasets of `run_crosstask`: common, specific, matrix, layers, budget (lazy)."""
    path = Path(out) / "crosstask.zarr"
    if not path.exists():
        raise FileNotFoundError(f"no {path}; run `nsneurons crosstask RECIPE` after `nsneurons run RECIPE`")
    return {name: open_store(path, group=name) for name in GROUPS}


# ---- tables --------------------------------------------------------------------------------

def _cross_table(matrix, method, direction, rows_dim, cell, header) -> str:
    cut = matrix["effect"].sel(selector=method, direction=direction)
    cols_dim = "source_task" if rows_dim == "eval_task" else "eval_task"
    rows = [[header[1].format(r), *(cell({m: float(v) for m, v in zip(METRIC_NAMES, cut.sel({rows_dim: r, cols_dim: c}).sel(metric=list(METRIC_NAMES)).values)})
                                     for c in cut[cols_dim].values)] for r in cut[rows_dim].values]
    return report._markdown([header[0], *(header[2].format(c) for c in cut[cols_dim].values)], rows)


def matrix_table(matrix: xr.Dataset, method: str, direction: str) -> str:
    """Figure 2/4 as numbers: rows eval task, columns source task's specific neurons; signed Acc/Com change (points)."""
    return _cross_table(matrix, method, direction, "eval_task", lambda v: "-" if not math.isfinite(v["acc_change"]) else
                        f"{v['acc_change']:+.1f}/{v['com_change']:+.1f}", ("eval task \\ neurons of", "{}", "{}"))


def budget_table(budget: xr.Dataset, task: str | None = None) -> str:
    """Table 7: rows methods, columns K x Deg/Enh, best-over-ratio RAC/RCC (task None: average over tasks)."""
    sweep, tasks = budget["sweep"], [str(t) for t in budget["task"].values]
    header = ["method"] + [f"K={int(kk)} {report.DIR_LABEL[d]}" for kk in sweep["k"].values for d in DIRECTIONS]
    rows = []
    for m in sweep["selector"].values:
        row = [str(m)]
        for kk in sweep["k"].values:
            results = xr.Dataset({"sweep": sweep.sel(k=kk)})
            for d in DIRECTIONS:
                cells = [report.best_cells(results, t, m, d) for t in ([task] if task else tasks)]
                row.append(report._fmt(cells[0]) if task else report._fmt(*report.average_cells(cells)))
        rows.append(row)
    return report._markdown(header, rows)


def write_crosstask_report(out, datasets: dict[str, xr.Dataset] | None = None) -> Path:
    """figures/crosstask_*.png and crosstask.md from the stored Datasets; links it from report.md."""
    out = Path(out)
    ds = datasets or {name: d.load() for name, d in open_crosstask(out).items()}
    fig = out / "figures"
    common, matrix, layers, budget = ds["common"], ds["matrix"], ds["layers"], ds["budget"]
    specific = ds["specific"].transpose("task", "selector", "role", "rank")
    drawn = {("matrix", "matrix"): plot_cross_task(matrix), ("common", "common_layers"): plot_common_layers(layers),
             ("change", "layer_change"): plot_layer_change(layers), ("budget", "budget"): plot_budget(budget),
             ("specific", "layer_distribution_specific"): figures.plot_layer_distribution(
                 specific, int(layers.sizes["layer"]), title="Layer distribution of task-specific neurons\n" + figures.describe(common.attrs))}
    pngs = {key: figures.save(f, fig / f"crosstask_{name}.png") for (key, name), f in drawn.items()}
    link = {key: p.relative_to(out).as_posix() for key, p in pngs.items()}
    methods = [str(m) for m in matrix["selector"].values]
    counts = [[m, *(int(common["n_common"].sel(selector=m, role=r)) for r in ROLES),
               *(int(ds["specific"]["n_removed"].sel(selector=m, role=r).sum()) for r in ROLES)] for m in methods]
    parts = [f"# Cross-task analyses: {common.attrs.get('recipe', '')}",
             f"Model `{common.attrs.get('model')}`; K = {common.attrs.get('k')}; cross-task ratio {matrix.attrs.get('ratio')}.",
             "## Common neurons (C.1)", "Common good (bad) neurons: selected as good (bad) for more than one task. "
             "Removed = common neurons among the tasks' top-K sets (summed over tasks), refilled from the next-ranked.",
             report._markdown(["method", "common good", "common bad", "removed good", "removed bad"], counts),
             "### Intervening up to K common neurons on every task (Table 5)",
             "RAC/RCC at one good:bad ratio per cell (the largest mean of RAC and RCC, docs/scoring.md); - = no common "
             "neuron. The cross-task tables carry no intervals yet (the run's Tables 1-6 do).", report.table1(xr.Dataset({"sweep": common["effect"]})),
             "## Cross-task matrix (Figures 2 and 4)",
             "Task-specific neurons of one task (columns) intervened, evaluated on every task (rows); "
             "signed Acc/Com change in points (intervened - original).", f"![cross-task]({link['matrix']})"]
    for m in methods:
        for d in DIRECTIONS:
            parts += [f"**{m}, {report.DIR_LABEL[d]}**", matrix_table(matrix, m, d)]
    parts += crosstask_budgets.report_section(ds["table8"])
    parts += ["## Layer distributions (C.6, Figures 5-7)",
              "Run's sets: report.md (layer_distribution.png). Task-specific sets:", f"![specific]({link['specific']})",
              "Common neurons (Figure 6):", f"![common]({link['common']})",
              "Change after removing common neurons and refilling (Figure 7; red = more, blue = fewer):", f"![change]({link['change']})",
              "## Budget sensitivity (Table 7)",
              f"Neurons re-selected from the stored scores at each K (requested {budget.attrs.get('k_values')}, "
              f"clamped to {budget.attrs.get('k_max')}), RAC/RCC at one ratio per cell (the largest mean of RAC and RCC), "
              "on the task's own evaluation set."]
    for t in budget["task"].values:
        parts += [f"**{t}**", budget_table(budget, str(t))]
    parts += ["**Average over tasks**", budget_table(budget), report.AVERAGING_RULE, f"![budget]({link['budget']})"]
    path = out / "crosstask.md"
    path.write_text("\n\n".join(parts) + "\n")
    main = out / "report.md"
    if main.exists() and "crosstask.md" not in main.read_text():
        with main.open("a") as f:
            f.write("\n## Cross-task analyses\n\nSee [crosstask.md](crosstask.md).\n")
    return path
