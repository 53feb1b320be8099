"""`nsneurons run RECIPE` (experiment "neuronllm"): every stage of the paper's experiment, resumable, one task at a time.

Stages per task: QATT proxies -> baseline screen of candidate examples -> evaluation set
(understood / not understood, seeded) -> IG scores for the targets the methods need (resumable
stores) -> selection by every method -> intervention sweep (good:bad ratios under budget K, plus
good-only / bad-only ablation) -> metrics. Then the combined datasets, report.md and figures.
A task whose results file exists with the same recipe fingerprint is not recomputed; the
fingerprint holds the model and the data by content (hashes, hub commits), not by path. One run per
output folder at a time (a lock file names the holder); every store is written whole or not at all.
The folder's layout, the fingerprint and the start of a run are nsneurons.runfolder's.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import xarray as xr

from .. import budget, cells, conditions, selection
from ..attribution import AttributionConfig
from ..budget import resolved_k
from ..distractors import run_check
from ..evaluation_set import evaluation_set, reference_screens, screen
from ..faults import checkpoint
from ..intervention import BASELINE, correct_table, option_probs
from ..ksweep import run_sweep
from ..recipe import Recipe, RecipeError, check_against_model
from ..runfolder import RunFolder, cached_task, digest, fingerprint_inputs, run_in_folder
from ..scoring import score_proxies
from ..splits import task_proxies, unwrapped
from ..store import example_scores
from ..zarrio import write_atomically

log = logging.getLogger("nsneurons")


def run_recipe(recipe: Recipe, *, model=None, progress: bool = True, shard=None) -> Path:
    """Run every stage; returns the output folder. Interrupted runs resume; finished tasks are skipped.
    A second run on the same output folder meanwhile is refused (OutputLockedError names the holder).
    shard (nsneurons.shards.Shard): only this worker's share of the IG scores (see `_score_shard`)."""
    if recipe.experiment != "neuronllm":
        raise RecipeError(f"experiment: nsneurons.runners.neuronllm runs experiment 'neuronllm', got {recipe.experiment!r}")
    if shard is not None:
        return run_in_folder(recipe, functools.partial(_score_shard, shard=shard), model=model, progress=progress, shard=shard)
    return run_in_folder(recipe, _run_tasks, model=model, progress=progress)


def _run_tasks(recipe: Recipe, model, folder: RunFolder, *, progress: bool) -> None:
    folder.tasks.mkdir(parents=True, exist_ok=True)
    check_against_model(recipe, model.n_layers, model.n_neurons)
    inputs = fingerprint_inputs(recipe, model.provenance)
    stamp = digest(inputs)
    per_task, screens = {}, None
    for task in recipe.tasks:
        path = folder.task(task.name)
        cached = cached_task(path, inputs)
        if cached is not None:
            print(f"task {task.name}: results exist with the same settings, skipped ({path})")
            per_task[task.name] = cached
            continue
        print(f"task {task.name}: running")
        if screens is None:
            screens = reference_screens(recipe, lambda t: task_proxies(unwrapped(recipe), t)[1], progress=progress)
        parts = run_task(recipe, model, task, folder.root, understood=screens.get(task.name), progress=progress)
        ds = _task_dataset(parts)
        ds.attrs = {"fingerprint": stamp, "task": task.name, "settings": json.dumps(inputs, sort_keys=True, default=str)}
        write_atomically(path, ds)
        per_task[task.name] = ds
    _combine_and_report(recipe, model, folder, per_task, stamp, progress)
    checkpoint("run.reported")


def _score_stores(
    recipe: Recipe, model, task, id_proxies, out: Path, progress: bool, shard=None, store: str | None = None
) -> dict[str, xr.Dataset]:
    """The IG scores store of every target the methods need, scores/<store, default the task's name>-<target>.zarr
    (with `shard`: this worker's examples written)."""
    a = recipe.attribution
    stores = {}
    for target in selection.ig_targets(recipe.selection.methods):
        config = AttributionConfig(target=target, **a.ig_settings())
        stores[target] = score_proxies(
            model,
            id_proxies,
            config,
            RunFolder(out).scores(store or task.name, target),
            layers=a.layers,
            provenance={
                "task": task.name,
                "seed": recipe.seed,
                "recipe": recipe.name,
                "data_source": (task.source or "packaged fixture") + (f"@{task.revision}" if task.revision else ""),
            },
            progress=progress,
            shard=shard,
        )
    return stores


def _scores(recipe: Recipe, model, task, id_proxies, out: Path, progress: bool, store: str | None = None):
    """Example scores per target the methods need, and the activations (ACT reads any store)."""
    es, activations = {}, None
    for target, ds in _score_stores(recipe, model, task, id_proxies, out, progress, store=store).items():
        es[target] = example_scores(ds).load()
        activations = ds["activation"].load() if activations is None else activations
    return es, activations


def _score_shard(recipe: Recipe, model, folder: RunFolder, *, progress: bool, shard) -> None:
    """`nsneurons run --shard i/n`: this worker's share of every task's IG stores, nothing else; the
    later stages (selection, interventions, report) run once, after every shard, without --shard."""
    from ..shards import progress_line

    check_against_model(recipe, model.n_layers, model.n_neurons)
    for task in recipe.tasks:
        id_proxies, _ = task_proxies(recipe, task, model.tokenizer)
        for target, ds in _score_stores(recipe, model, task, id_proxies, folder.root, progress, shard).items():
            path = folder.scores(task.name, target)
            print(progress_line(path, ds["done"].values, shard, "once every store is complete, `nsneurons run` without --shard"))


def _neuron_sets(recipe: Recipe, model, es, activations) -> dict[str, list[xr.Dataset]]:
    """Every method's neuron set; RANDOM once per draw (seeds seed, seed + 1, ...)."""
    s, k = recipe.selection, resolved_k(recipe, model.n_layers, model.n_neurons)
    draws = {m: s.random_draws if selection.method_needs(m) is None else 1 for m in s.methods}
    return {
        m: [
            selection.select(
                m,
                k=k,
                scores=es,
                activations=activations,
                n_layers=model.n_layers,
                n_neurons=model.n_neurons,
                z=s.z,
                t=s.kn_threshold,
                seed=recipe.seed + d,
            )
            for d in range(draws[m])
        ]
        for m in s.methods
    }


def run_task(recipe: Recipe, model, task, out: Path, *, understood: dict[str, bool] | None = None, progress: bool = True) -> dict:
    """One task end to end; returns its arrays (see nsneurons.conditions), neurons, baseline, example."""
    id_proxies, candidate_proxies = task_proxies(recipe, task, model.tokenizer)
    # Answer tokens and prompt lengths were checked for every task before any work (preflight.check_prompts).
    if understood is None:  # screened by this model (the default); else by a reference model or a saved set
        understood = screen(recipe, model, candidate_proxies, progress=progress)
    sample = evaluation_set(recipe, task, id_proxies, candidate_proxies, understood)
    if sample.short:
        log.warning("task %s: %s", task.name, sample.message())
    eval_proxies = [p for p in candidate_proxies if p.example_id in set(sample.ids)]

    es, activations = _scores(recipe, model, task, id_proxies, out, progress)
    neuron_sets = _neuron_sets(recipe, model, es, activations)
    ratios = sorted(set(recipe.evaluation.ratios) | {1.0})  # good-only methods run at 1.0 (their K good neurons)
    k = resolved_k(recipe, model.n_layers, model.n_neurons)
    planned, answers = conditions.plan(neuron_sets, k, ratios, recipe.evaluation.ablation)
    probs = option_probs(
        model,
        eval_proxies,
        [BASELINE, *planned],
        position=recipe.evaluation.position,
        batch_size=recipe.evaluation.batch_size,
        progress=progress,
    )
    arrays: dict[str, Any] = conditions.collect(correct_table(probs), answers, sample.ids, list(recipe.selection.methods), ratios)
    original = arrays["original_example"]
    arrays["baseline"] = xr.DataArray(
        [
            float(original.sel(measure="acc").mean()),
            float(original.sel(measure="com").mean()),
            len(sample.ids),
            sample.n_understood,
        ],
        dims="metric",
        coords={"metric": ["acc", "com", "n_examples", "n_understood"]},
    )
    methods = list(recipe.selection.methods)
    arrays["neurons"] = xr.concat(
        [sets[0].drop_attrs() for sets in neuron_sets.values()], dim=xr.DataArray(methods, dims="selector", name="selector")
    )
    arrays["example"] = _example_probs(probs, eval_proxies, answers, recipe)
    arrays["evaluation_examples"] = list(sample.ids)
    arrays["evaluation_understood"] = [understood[i] for i in sample.ids]
    return arrays


def _example_probs(probs: xr.DataArray, eval_proxies, answers: dict, recipe) -> xr.Dataset:
    """Figure-10-style table: one evaluation proxy's option probabilities under each method's switches."""
    first = eval_proxies[0]
    index = next(i for i, p in enumerate(eval_proxies) if p is first)
    ratio = 0.5 if 0.5 in recipe.evaluation.ratios else recipe.evaluation.ratios[-1]
    names = ["none"]
    for m in recipe.selection.methods:
        for direction in ("degrade", "enhance"):
            for r in (ratio, 1.0):
                name = answers.get(conditions.Key("sweep", m, direction, r))
                if name is not None:
                    if name not in names:
                        names.append(name)
                    break
    table = probs.isel(item=index).sel(condition=names)
    return xr.Dataset(
        {"prob": table.drop_vars(["example", "proxy", "correct"], errors="ignore")},
        coords={"correct_letter": first.correct_letter, "prompt": first.prompt},
    )


def _task_dataset(parts: dict) -> xr.Dataset:
    """One task's results as stored in tasks/<task>.zarr."""
    names = ("sweep", "ablation", "original_example", "sweep_example", "ablation_example", "draw_quantity")
    # The baseline has its own measures (acc, com, counts): a dim of its own keeps `metric` clean.
    return xr.Dataset(
        {
            **{n: parts[n] for n in names},
            "baseline": parts["baseline"].rename(metric="baseline_metric"),
            "layer": parts["neurons"].layer,
            "neuron": parts["neurons"].neuron,
            "score": parts["neurons"].score,
            # Without its scalar prompt / letter coords, which would leak into every combined output.
            "example_prob": parts["example"].prob.reset_coords(drop=True),
        },
        coords={
            "example_correct_letter": str(parts["example"].correct_letter.values),
            "example_prompt": str(parts["example"].prompt.values),
            "evaluation_example": ("eval_index", parts["evaluation_examples"]),
            "evaluation_understood": ("eval_index", parts["evaluation_understood"]),
        },
    )


_PER_TASK_ONLY = ["example_prob", "example_correct_letter", "example_prompt", "evaluation_example", "evaluation_understood"]


def _combine(recipe: Recipe, model, per_task: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """Stack the tasks (examples padded along eval_index) and add the scored cells with intervals."""
    tasks = xr.DataArray(list(per_task), dims="task", name="task")
    stacked = xr.concat(
        [ds.drop_vars(_PER_TASK_ONLY) for ds in per_task.values()], dim=tasks, coords="minimal", compat="override", join="outer"
    )
    ev = recipe.evaluation
    source = (
        ("examples of " + ev.examples_from)
        if ev.examples_from
        else ("screened by " + ev.screen_model)
        if ev.screen_model
        else "screened by this model"
    )
    attrs = {
        "k": resolved_k(recipe, model.n_layers, model.n_neurons),
        **({"k_given": recipe.selection.k} if isinstance(recipe.selection.k, str) else {}),  # a share as written
        "k_share": budget.share_text(resolved_k(recipe, model.n_layers, model.n_neurons), model.n_layers * model.n_neurons),
        "model": str(model.provenance.get("model")),
        "recipe": recipe.name,
        "n_layers": model.n_layers,
        "n_neurons": model.n_neurons,
        "evaluation_set": source,
        "random_draws": recipe.selection.random_draws,
        "identification_examples": recipe.identification_examples,
    }
    names = ("sweep", "ablation", "original_example", "sweep_example", "ablation_example", "draw_quantity")
    results = xr.Dataset({n: stacked[n] for n in names}, attrs=attrs)
    settings: dict[str, Any] = {"resamples": ev.bootstrap, "seed": recipe.seed, "level": ev.confidence}
    scored = cells.score_cells(results, best_by=ev.best_by, **settings)
    extra: list[xr.Dataset | xr.DataArray] = [cells.group_cells(results, **settings), cells.sweep_intervals(results, **settings)]
    results = xr.merge([results, scored, *extra], combine_attrs="override")
    results.attrs = {**attrs, **scored.attrs}
    neurons = xr.Dataset({"layer": stacked.layer, "neuron": stacked.neuron, "score": stacked.score}, attrs=attrs)
    baseline = xr.Dataset({"baseline": stacked.baseline.rename(baseline_metric="metric")}, attrs=attrs)
    examples = xr.concat(
        [ds.example_prob.rename("prob").reset_coords(drop=True) for ds in per_task.values()], dim=tasks, join="outer"
    )
    ids = [[str(i) for i in ds.evaluation_example.values] for ds in per_task.values()]
    width = max(len(i) for i in ids)
    examples = xr.Dataset(
        {
            "prob": examples,
            "evaluation_example": (("task", "eval_index"), [i + [""] * (width - len(i)) for i in ids]),
            "evaluation_understood": (
                ("task", "eval_index"),
                [
                    [int(u) for u in ds.evaluation_understood.values] + [-1] * (width - len(i))
                    for ds, i in zip(per_task.values(), ids)
                ],
            ),
        },
        coords={
            "correct_letter": ("task", [str(ds.example_correct_letter.values) for ds in per_task.values()]),
            "prompt": ("task", [str(ds.example_prompt.values) for ds in per_task.values()]),
        },
        attrs={"evaluation_set": source},
    )
    return {"results": results, "neurons": neurons, "baseline": baseline, "examples": examples}


def _combine_and_report(recipe: Recipe, model, folder: RunFolder, per_task: dict[str, xr.Dataset], stamp: str, progress) -> None:
    outputs = _combine(recipe, model, per_task)
    for name, ds in outputs.items():
        write_atomically(folder.combined(name), ds)
    from .. import report

    sweep = checked = None
    if recipe.selection.k_sweep:  # from the stored scores, after the tables it takes each cell's ratio from
        sweep = run_sweep(recipe, model, folder.root, outputs["results"], outputs["neurons"], stamp, progress=progress)
    if recipe.selection.distractor_check:

        def score(task, proxies, store):
            return _scores(recipe, model, task, proxies, folder.root, progress, store=store)

        checked = run_check(recipe, model, folder.root, outputs["results"], outputs["neurons"], score, progress=progress)

    path = report.write_report(
        folder.root,
        **outputs,
        title=f"nsneurons report: {recipe.name}",
        summary={
            "model": model.describe(),
            "recipe": recipe.name,
            "k": budget.attrs_text(outputs["results"].attrs),
            "identification_examples": recipe.identification_examples,
            "steps": recipe.attribution.steps,
            "answer_format": recipe.answer_format,
            **({"prompt_format": recipe.prompt_format} if recipe.prompt_format != "qatt" else {}),
            "evaluation set": outputs["results"].attrs["evaluation_set"],
            "ratio per cell": recipe.evaluation.best_by,
            "intervals": f"{recipe.evaluation.confidence:.0%} bootstrap over evaluation "
            f"examples, {recipe.evaluation.bootstrap} resamples",
            "random draws": recipe.selection.random_draws,
        },
        ksweep=sweep,
        distractors=checked,
    )
    print(f"report: {path}")
