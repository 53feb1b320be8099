"""`nsneurons run RECIPE`: every stage of the paper's experiment, resumable, one task at a time.

Stages per task: QATT proxies -> baseline screen of candidate examples -> evaluation set
(understood / not understood, seeded) -> IG scores for the targets the methods need (resumable
stores) -> selection by every method -> intervention sweep (good:bad ratios under budget K, plus
good-only / bad-only ablation) -> metrics. Then the combined datasets, report.md and figures.
A task whose results file exists with the same recipe fingerprint is not recomputed; the
fingerprint holds the model and the data by content (hashes, hub commits), not by path. One run per
output folder at a time (a lock file names the holder); every store is written whole or not at all.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import xarray as xr

from . import cells, conditions, content, preflight, selection
from .evaluation_set import evaluation_set, reference_screens, screen
from .attribution import AttributionConfig
from .faults import checkpoint
from .intervention import BASELINE, correct_table, option_probs
from .recipe import Recipe, check_against_model
from .runlock import LOCK_NAME, output_lock
from .scoring import score_proxies
from .store import example_scores
from .zarrio import open_checked, write_atomically

log = logging.getLogger("nsneurons")

# Settings that change a task's results (the rest, such as output folder or description, do not).
_FINGERPRINT_EXCLUDES = ("output", "description", "ndif_host", "crosstask")


def fingerprint(recipe: Recipe, model_provenance: dict) -> str:
    return _digest(fingerprint_inputs(recipe, model_provenance))


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_inputs(recipe: Recipe, model_provenance: dict) -> dict:
    """What a task's results depend on: the recipe's settings, the model and each task's data, by
    content (a moved folder is the same model; replaced weights or an edited file are not)."""
    data = {k: v for k, v in recipe.to_dict().items() if k not in _FINGERPRINT_EXCLUDES}
    # Where it ran (device, NDIF host) does not change the numbers.
    prov = {k: v for k, v in model_provenance.items() if k != "device" and not k.startswith("ndif_")}
    if prov.get("weights_sha256"):
        data.pop("model"), prov.pop("model", None)
    data["model_provenance"] = prov
    data["tasks"] = [{**t, "source": _task_data(task)} for t, task in zip(data["tasks"], recipe.tasks)]
    return data


def _task_data(task) -> dict:
    from .tasks import get_task
    from .tasks.loading import DATA_DIR

    fixture = get_task(task.name).fixture
    return content.data_identity(task.source, DATA_DIR / fixture if fixture else None, revision=task.revision)


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two fingerprint inputs."""
    keys = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed(a, b, f"{prefix}{k}.")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and a != b:
            keys += _changed(dict(enumerate(a)), dict(enumerate(b)), f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _cached_task(path: Path, inputs: dict) -> xr.Dataset | None:
    """A task's stored results if made with these inputs; a damaged store is an error, never reused."""
    if not path.exists():
        return None
    cached = open_checked(path).load()
    if cached.attrs.get("fingerprint") == _digest(inputs):
        return cached
    try:
        what = ", ".join(_changed(json.loads(cached.attrs["settings"]), json.loads(json.dumps(inputs, default=str)))[:6])
    except (KeyError, ValueError):
        what = "settings not recorded (an older nsneurons)"
    print(f"task {cached.attrs.get('task', path.stem)}: stored results were made differently ({what}); recomputing")
    return None


def _load_model(recipe: Recipe):
    from .models import load_model

    remote = recipe.backend == "remote"
    where = {}
    if remote:
        from .remote import connect

        where = connect(host=recipe.ndif_host)
    model = load_model(recipe.model, device=recipe.device, dtype=recipe.dtype, revision=recipe.revision, remote=remote,
                       trust_remote_code=recipe.trust_remote_code)
    model.provenance.update(where)
    return model


def task_proxies(recipe: Recipe, task) -> tuple[list, list]:
    """(identification proxies, evaluation-candidate proxies) of one task, disjoint, seeded."""
    from .tasks import build_task_proxies, task_questions, task_spec

    demo_pool, questions = task_questions(
        task.name, task.source, recipe.seed, demo_split=task.demo_split, scored_split=task.scored_split,
        max_questions=task.max_questions, config=task.config, revision=task.revision, **task.options)
    tr = recipe.identification_examples
    if len(questions) <= tr:
        raise ValueError(f"task {task.name!r}: {len(questions)} scored questions, need more than identification_examples={tr}")
    order = np.random.default_rng([recipe.seed, 7]).permutation(len(questions))
    identification = [questions[i] for i in sorted(order[:tr])]
    candidates = [questions[i] for i in sorted(order[tr:])]
    if recipe.evaluation.candidates is not None:
        candidates = candidates[: recipe.evaluation.candidates]
    spec = task_spec(task.name)
    make = lambda qs: build_task_proxies(qs, demo_pool, spec, recipe.seed, recipe.answer_format)  # noqa: E731
    return make(identification), make(candidates)


def _scores(recipe: Recipe, model, task, id_proxies, out: Path, progress: bool):
    """Example scores per target the methods need, and the activations (ACT reads any store)."""
    needs = {selection.method_needs(m) for m in recipe.selection.methods}
    targets = sorted(t for t in needs if t not in (None, "activation")) or ["ace"]
    a = recipe.attribution
    es, activations = {}, None
    for target in targets:
        config = AttributionConfig(target=target, steps=a.steps, quadrature=a.quadrature, path=a.path,
                                   layers_per_pass=a.layers_per_pass, answer_format=recipe.answer_format)
        ds = score_proxies(model, id_proxies, config, out / "scores" / f"{task.name}-{target}.zarr",
                           layers=a.layers, provenance={"task": task.name, "seed": recipe.seed, "recipe": recipe.name,
                                       "data_source": (task.source or "packaged fixture") + (f"@{task.revision}" if task.revision else "")},
                           progress=progress)
        es[target] = example_scores(ds).load()
        activations = ds["activation"].load() if activations is None else activations
    return es, activations


def _neuron_sets(recipe: Recipe, model, es, activations) -> dict[str, list[xr.Dataset]]:
    """Every method's neuron set; RANDOM once per draw (seeds seed, seed + 1, ...)."""
    s = recipe.selection
    draws = {m: s.random_draws if selection.method_needs(m) is None else 1 for m in s.methods}
    return {m: [selection.select(m, k=s.k, scores=es, activations=activations, n_layers=model.n_layers,
                                 n_neurons=model.n_neurons, z=s.z, t=s.kn_threshold, seed=recipe.seed + d)
                for d in range(draws[m])]
            for m in s.methods}


def run_task(recipe: Recipe, model, task, out: Path, *, understood: dict[str, bool] | None = None,
             progress: bool = True) -> dict:
    """One task end to end; returns its arrays (see nsneurons.conditions), neurons, baseline, example."""
    id_proxies, candidate_proxies = task_proxies(recipe, task)
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
    planned, answers = conditions.plan(neuron_sets, recipe.selection.k, ratios, recipe.evaluation.ablation)
    probs = option_probs(model, eval_proxies, [BASELINE, *planned], answer_format=recipe.answer_format,
                         position=recipe.evaluation.position, batch_size=recipe.evaluation.batch_size, progress=progress)
    arrays = conditions.collect(correct_table(probs), answers, sample.ids, list(recipe.selection.methods), ratios)
    original = arrays["original_example"]
    arrays["baseline"] = xr.DataArray(
        [float(original.sel(measure="acc").mean()), float(original.sel(measure="com").mean()), len(sample.ids),
         sample.n_understood], dims="metric", coords={"metric": ["acc", "com", "n_examples", "n_understood"]})
    methods = list(recipe.selection.methods)
    arrays["neurons"] = xr.concat([sets[0].drop_attrs() for sets in neuron_sets.values()],
                                  dim=xr.DataArray(methods, dims="selector", name="selector"))
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
    return xr.Dataset({"prob": table.drop_vars(["example", "proxy", "correct"], errors="ignore")},
                      coords={"correct_letter": first.correct_letter, "prompt": first.prompt})


def evaluation_proxies(recipe: Recipe, task, out: Path) -> list:
    """The evaluation proxies a finished run used for `task` (read back from its results)."""
    ids = set(open_checked(Path(out) / "tasks" / f"{task.name}.zarr").evaluation_example.values.tolist())
    _, candidates = task_proxies(recipe, task)
    return [p for p in candidates if p.example_id in ids]


def run_recipe(recipe: Recipe, *, model=None, progress: bool = True) -> Path:
    """Run every stage; returns the output folder. Interrupted runs resume; finished tasks are skipped.
    A second run on the same output folder meanwhile is refused (OutputLockedError names the holder)."""
    prompts = preflight.recipe_prompts(recipe)  # data errors stop the run before it writes or loads anything
    out = recipe.output_dir()
    with output_lock(out / LOCK_NAME):
        return _run_recipe(recipe, out, prompts, model=model, progress=progress)


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    tmp.replace(path)


def _run_recipe(recipe: Recipe, out: Path, prompts, *, model, progress: bool) -> Path:
    import yaml

    (out / "tasks").mkdir(parents=True, exist_ok=True)
    _write_text_atomically(out / "recipe.yaml", yaml.safe_dump(json.loads(json.dumps(recipe.to_dict())), sort_keys=False))
    checkpoint("run.recipe-written")
    model = model or _load_model(recipe)
    print(model.describe())
    preflight.check_prompts(model, recipe, prompts)  # lengths and answer tokens, before any IG
    if recipe.experiment == "naica":
        return _run_naica(recipe, model, out, progress=progress)
    check_against_model(recipe, model.n_layers, model.n_neurons)
    inputs = fingerprint_inputs(recipe, model.provenance)
    stamp = _digest(inputs)
    per_task, screens = {}, None
    for task in recipe.tasks:
        path = out / "tasks" / f"{task.name}.zarr"
        cached = _cached_task(path, inputs)
        if cached is not None:
            print(f"task {task.name}: results exist with the same settings, skipped ({path})")
            per_task[task.name] = cached
            continue
        print(f"task {task.name}: running")
        if screens is None:
            screens = reference_screens(recipe, lambda t: task_proxies(recipe, t)[1], progress=progress)
        parts = run_task(recipe, model, task, out, understood=screens.get(task.name), progress=progress)
        ds = _task_dataset(parts)
        ds.attrs = {"fingerprint": stamp, "task": task.name, "settings": json.dumps(inputs, sort_keys=True, default=str)}
        write_atomically(path, ds)
        per_task[task.name] = ds
    _combine_and_report(recipe, model, out, per_task)
    checkpoint("run.reported")
    return out


def _task_dataset(parts: dict) -> xr.Dataset:
    """One task's results as stored in tasks/<task>.zarr."""
    names = ("sweep", "ablation", "original_example", "sweep_example", "ablation_example", "draw_quantity")
    # The baseline has its own measures (acc, com, counts): a dim of its own keeps `metric` clean.
    return xr.Dataset(
        {**{n: parts[n] for n in names}, "baseline": parts["baseline"].rename(metric="baseline_metric"),
         "layer": parts["neurons"].layer, "neuron": parts["neurons"].neuron, "score": parts["neurons"].score,
         # Without its scalar prompt / letter coords, which would leak into every combined output.
         "example_prob": parts["example"].prob.reset_coords(drop=True)},
        coords={"example_correct_letter": str(parts["example"].correct_letter.values),
                "example_prompt": str(parts["example"].prompt.values),
                "evaluation_example": ("eval_index", parts["evaluation_examples"]),
                "evaluation_understood": ("eval_index", parts["evaluation_understood"])})


def _run_naica(recipe: Recipe, model, out: Path, *, progress: bool) -> Path:
    from .naica_apps import run_naica
    from .tasks.domain_qa import load_domain_qa

    n = recipe.naica
    questions = load_domain_qa(n.source, seed=recipe.seed, domains=n.domains, max_per_domain=n.max_per_domain, config=n.config)
    run_naica(model, questions, out_dir=out, t=n.t, v=n.v, u=n.u, steps=n.steps, seed=recipe.seed,
              answer_format=recipe.answer_format, held_out_fraction=n.held_out_fraction, progress=progress,
              remove_common=n.remove_common, path=recipe.attribution.path)
    print(f"report: {out / 'report.md'}")
    return out


def open_outputs(out) -> dict[str, xr.Dataset]:
    """The combined datasets of a finished run: results, neurons, baseline, examples."""
    out = Path(out)
    return {name: open_checked(out / f"{name}.zarr") for name in ("results", "neurons", "baseline", "examples")}


_PER_TASK_ONLY = ["example_prob", "example_correct_letter", "example_prompt", "evaluation_example", "evaluation_understood"]


def _combine(recipe: Recipe, model, per_task: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """Stack the tasks (examples padded along eval_index) and add the scored cells with intervals."""
    tasks = xr.DataArray(list(per_task), dims="task", name="task")
    stacked = xr.concat([ds.drop_vars(_PER_TASK_ONLY) for ds in per_task.values()],
                        dim=tasks, coords="minimal", compat="override", join="outer")
    ev = recipe.evaluation
    source = ("examples of " + ev.examples_from) if ev.examples_from else \
        ("screened by " + ev.screen_model) if ev.screen_model else "screened by this model"
    attrs = {"k": recipe.selection.k, "model": str(model.provenance.get("model")), "recipe": recipe.name,
             "n_layers": model.n_layers, "n_neurons": model.n_neurons, "evaluation_set": source,
             "random_draws": recipe.selection.random_draws, "identification_examples": recipe.identification_examples}
    names = ("sweep", "ablation", "original_example", "sweep_example", "ablation_example", "draw_quantity")
    results = xr.Dataset({n: stacked[n] for n in names}, attrs=attrs)
    settings = {"resamples": ev.bootstrap, "seed": recipe.seed, "level": ev.confidence}
    scored = cells.score_cells(results, best_by=ev.best_by, **settings)
    extra = [cells.group_cells(results, **settings), cells.sweep_intervals(results, **settings)]
    results = xr.merge([results, scored, *extra], combine_attrs="override")
    results.attrs = {**attrs, **scored.attrs}
    neurons = xr.Dataset({"layer": stacked.layer, "neuron": stacked.neuron, "score": stacked.score}, attrs=attrs)
    baseline = xr.Dataset({"baseline": stacked.baseline.rename(baseline_metric="metric")}, attrs=attrs)
    examples = xr.concat([ds.example_prob.rename("prob").reset_coords(drop=True) for ds in per_task.values()], dim=tasks, join="outer")
    ids = [[str(i) for i in ds.evaluation_example.values] for ds in per_task.values()]
    width = max(len(i) for i in ids)
    examples = xr.Dataset({
        "prob": examples,
        "evaluation_example": (("task", "eval_index"), [i + [""] * (width - len(i)) for i in ids]),
        "evaluation_understood": (("task", "eval_index"), [[int(u) for u in ds.evaluation_understood.values] + [-1] * (width - len(i))
                                                           for ds, i in zip(per_task.values(), ids)]),
    }, coords={
        "correct_letter": ("task", [str(ds.example_correct_letter.values) for ds in per_task.values()]),
        "prompt": ("task", [str(ds.example_prompt.values) for ds in per_task.values()])}, attrs={"evaluation_set": source})
    return {"results": results, "neurons": neurons, "baseline": baseline, "examples": examples}


def _combine_and_report(recipe: Recipe, model, out: Path, per_task: dict[str, xr.Dataset]) -> Path:
    outputs = _combine(recipe, model, per_task)
    for name, ds in outputs.items():
        write_atomically(out / f"{name}.zarr", ds)
    from . import report

    path = report.write_report(out, **outputs, title=f"nsneurons report: {recipe.name}",
                               summary={"model": model.describe(), "recipe": recipe.name, "k": recipe.selection.k,
                                        "identification_examples": recipe.identification_examples,
                                        "steps": recipe.attribution.steps, "answer_format": recipe.answer_format,
                                        "evaluation set": outputs["results"].attrs["evaluation_set"],
                                        "ratio per cell": recipe.evaluation.best_by,
                                        "intervals": f"{recipe.evaluation.confidence:.0%} bootstrap over evaluation "
                                                     f"examples, {recipe.evaluation.bootstrap} resamples",
                                        "random draws": recipe.selection.random_draws})
    print(f"report: {path}")
    return out
