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

from . import content, metrics, selection
from .answers import check_answer_tokens
from .attribution import AttributionConfig
from .faults import checkpoint
from .intervention import BASELINE, Condition, correct_table, degrader, enhancer, option_probs
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
    return content.data_identity(task.source, DATA_DIR / fixture if fixture else None)


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
        max_questions=task.max_questions, config=task.config, **task.options)
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


def _conditions(recipe: Recipe, neuron_sets: dict[str, xr.Dataset]) -> tuple[list[Condition], list[tuple]]:
    """All intervention conditions of a task, and for each its key (kind, method, direction, ratio-or-group)."""
    k = recipe.selection.k
    conditions, keys = [], []
    for method, ns in neuron_sets.items():
        has_bad = bool((ns.layer.sel(role="bad").values >= 0).any())
        ratios = recipe.evaluation.ratios if has_bad else (1.0,)
        for ratio in ratios:
            good, bad = selection.ratio_split(ns, k, ratio)
            conditions += [degrader(good, bad, f"{method}/degrade/{ratio:g}"), enhancer(good, bad, f"{method}/enhance/{ratio:g}")]
            keys += [("sweep", method, "degrade", ratio), ("sweep", method, "enhance", ratio)]
        if recipe.evaluation.ablation:
            groups = [("good", selection.to_pairs(ns, "good", k))]
            if has_bad:
                groups.append(("bad", selection.to_pairs(ns, "bad", k)))
            for group, pairs in groups:
                empty = []
                deg = degrader(pairs, empty) if group == "good" else degrader(empty, pairs)
                enh = enhancer(pairs, empty) if group == "good" else enhancer(empty, pairs)
                conditions += [Condition(f"{method}/degrade/{group}", deg.silence, deg.excite),
                               Condition(f"{method}/enhance/{group}", enh.silence, enh.excite)]
                keys += [("ablation", method, "degrade", group), ("ablation", method, "enhance", group)]
    return conditions, keys


def run_task(recipe: Recipe, model, task, out: Path, *, progress: bool = True) -> dict[str, xr.Dataset]:
    """One task end to end; returns its datasets (sweep, ablation, neurons, baseline, example)."""
    id_proxies, candidate_proxies = task_proxies(recipe, task)
    check_answer_tokens(model.tokenizer, id_proxies + candidate_proxies, recipe.answer_format)
    # Screen candidates with the unmodified model, then draw the evaluation set (appendix A.1).
    screen = correct_table(option_probs(model, candidate_proxies, [BASELINE], answer_format=recipe.answer_format,
                                        batch_size=recipe.evaluation.batch_size, progress=progress)).sel(condition="none")
    understood = {str(e): bool(screen.sel(example=e).sum() >= 2) for e in screen.example.values}
    sample = metrics.sample_eval_set(understood, recipe.evaluation.understood, recipe.evaluation.not_understood,
                                     exclude=[p.example_id for p in id_proxies], seed=recipe.seed)
    if sample.short:
        log.warning("task %s: %s", task.name, sample.message())
    chosen = set(sample.ids)
    eval_proxies = [p for p in candidate_proxies if p.example_id in chosen]

    # IG scores for the targets that the methods need (ACT reads activations from any store).
    needs = {selection.method_needs(m) for m in recipe.selection.methods}
    targets = sorted(t for t in needs if t not in (None, "activation")) or ["ace"]
    a = recipe.attribution
    es, activations = {}, None
    for target in targets:
        config = AttributionConfig(target=target, steps=a.steps, quadrature=a.quadrature, path=a.path,
                                   layers_per_pass=a.layers_per_pass, answer_format=recipe.answer_format)
        ds = score_proxies(model, id_proxies, config, out / "scores" / f"{task.name}-{target}.zarr",
                           layers=a.layers, provenance={"task": task.name, "seed": recipe.seed, "recipe": recipe.name},
                           progress=progress)
        es[target] = example_scores(ds).load()
        activations = ds["activation"].load() if activations is None else activations

    neuron_sets = {m: selection.select(m, k=recipe.selection.k, scores=es, activations=activations,
                                       n_layers=model.n_layers, n_neurons=model.n_neurons, z=recipe.selection.z,
                                       t=recipe.selection.kn_threshold, seed=recipe.seed)
                   for m in recipe.selection.methods}

    conditions, keys = _conditions(recipe, neuron_sets)
    probs = option_probs(model, eval_proxies, [BASELINE, *conditions], answer_format=recipe.answer_format,
                         position=recipe.evaluation.position, batch_size=recipe.evaluation.batch_size, progress=progress)
    correct = correct_table(probs)
    original = correct.sel(condition="none").values
    methods = list(recipe.selection.methods)
    ratios = list(recipe.evaluation.ratios)
    sweep = xr.DataArray(np.full((len(methods), 2, len(ratios), len(metrics.METRIC_NAMES)), np.nan),
                         dims=("method", "direction", "ratio", "metric"),
                         coords={"method": methods, "direction": list(metrics.DIRECTIONS), "ratio": ratios, "metric": list(metrics.METRIC_NAMES)})
    ablation = xr.DataArray(np.full((len(methods), 2, 2, len(metrics.METRIC_NAMES)), np.nan),
                            dims=("method", "direction", "group", "metric"),
                            coords={"method": methods, "direction": list(metrics.DIRECTIONS), "group": ["good", "bad"], "metric": list(metrics.METRIC_NAMES)})
    for condition, (kind, method, direction, where) in zip(conditions, keys):
        result = metrics.evaluate_condition(original, correct.sel(condition=condition.name).values, direction)
        values = [result.as_dict()[name] for name in metrics.METRIC_NAMES]
        target = sweep.loc[dict(method=method, direction=direction, ratio=where)] if kind == "sweep" else \
            ablation.loc[dict(method=method, direction=direction, group=where)]
        target[...] = values
    baseline = xr.DataArray([metrics.accuracy(original), metrics.comprehension(original), len(chosen), sample.n_understood],
                            dims="metric", coords={"metric": ["acc", "com", "n_examples", "n_understood"]})
    neurons = xr.concat([ns.drop_attrs() if hasattr(ns, "drop_attrs") else ns for ns in neuron_sets.values()],
                        dim=xr.DataArray(methods, dims="method", name="method"))
    example = _example_probs(probs, eval_proxies, methods, recipe)
    return {"sweep": sweep, "ablation": ablation, "neurons": neurons, "baseline": baseline, "example": example,
            "evaluation_examples": [p.example_id for p in eval_proxies if p.proxy == 0]}


def _example_probs(probs: xr.DataArray, eval_proxies, methods, recipe) -> xr.Dataset:
    """Figure-10-style table: one evaluation proxy's option probabilities under each method's switches."""
    first = eval_proxies[0]
    index = next(i for i, p in enumerate(eval_proxies) if p is first)
    ratio = 0.5 if 0.5 in recipe.evaluation.ratios else recipe.evaluation.ratios[-1]
    names = ["none"]
    for m in methods:
        for direction in ("degrade", "enhance"):
            for r in (ratio, 1.0):
                name = f"{m}/{direction}/{r:g}"
                if name in probs.condition.values and name not in names:
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
    out = recipe.output_dir()
    with output_lock(out / LOCK_NAME):
        return _run_recipe(recipe, out, model=model, progress=progress)


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    tmp.replace(path)


def _run_recipe(recipe: Recipe, out: Path, *, model, progress: bool) -> Path:
    import yaml

    (out / "tasks").mkdir(parents=True, exist_ok=True)
    _write_text_atomically(out / "recipe.yaml", yaml.safe_dump(json.loads(json.dumps(recipe.to_dict())), sort_keys=False))
    checkpoint("run.recipe-written")
    model = model or _load_model(recipe)
    print(model.describe())
    if recipe.experiment == "naica":
        return _run_naica(recipe, model, out, progress=progress)
    check_against_model(recipe, model.n_layers, model.n_neurons)
    inputs = fingerprint_inputs(recipe, model.provenance)
    stamp = _digest(inputs)
    per_task = {}
    for task in recipe.tasks:
        path = out / "tasks" / f"{task.name}.zarr"
        cached = _cached_task(path, inputs)
        if cached is not None:
            print(f"task {task.name}: results exist with the same settings, skipped ({path})")
            per_task[task.name] = cached
            continue
        print(f"task {task.name}: running")
        parts = run_task(recipe, model, task, out, progress=progress)
        # The baseline has its own measures (acc, com, counts): a dim of its own keeps `metric` clean.
        ds = xr.Dataset({"sweep": parts["sweep"], "ablation": parts["ablation"],
                         "baseline": parts["baseline"].rename(metric="measure"),
                         "layer": parts["neurons"].layer, "neuron": parts["neurons"].neuron, "score": parts["neurons"].score,
                         "example_prob": parts["example"].prob.rename(option="option")},
                        coords={"example_correct_letter": parts["example"].correct_letter, "example_prompt": parts["example"].prompt,
                                "evaluation_example": parts["evaluation_examples"]})
        ds.attrs = {"fingerprint": stamp, "task": task.name, "settings": json.dumps(inputs, sort_keys=True, default=str)}
        _write_atomically(ds, path)
        per_task[task.name] = ds
    _combine_and_report(recipe, model, out, per_task)
    checkpoint("run.reported")
    return out


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


def _write_atomically(ds: xr.Dataset, path: Path) -> None:
    write_atomically(path, ds)


def open_outputs(out) -> dict[str, xr.Dataset]:
    """The combined datasets of a finished run: results, neurons, baseline, examples."""
    out = Path(out)
    return {name: open_checked(out / f"{name}.zarr") for name in ("results", "neurons", "baseline", "examples")}


def _combine_and_report(recipe: Recipe, model, out: Path, per_task: dict[str, xr.Dataset]) -> Path:
    tasks = xr.DataArray(list(per_task), dims="task", name="task")
    stacked = xr.concat([ds.drop_vars(["example_prob", "example_correct_letter", "example_prompt", "evaluation_example"]) for ds in per_task.values()],
                        dim=tasks, coords="minimal", compat="override", join="outer")
    attrs = {"k": recipe.selection.k, "model": str(model.provenance.get("model")), "recipe": recipe.name,
             "n_layers": model.n_layers, "n_neurons": model.n_neurons}
    results = xr.Dataset({"sweep": stacked.sweep, "ablation": stacked.ablation}, attrs=attrs)
    neurons = xr.Dataset({"layer": stacked.layer, "neuron": stacked.neuron, "score": stacked.score}, attrs=attrs)
    baseline = xr.Dataset({"baseline": stacked.baseline.rename(measure="metric")}, attrs=attrs)
    examples = xr.concat([ds.example_prob.rename("prob").reset_coords(drop=True) for ds in per_task.values()], dim=tasks, join="outer")
    examples = xr.Dataset({"prob": examples}, coords={
        "correct_letter": ("task", [str(ds.example_correct_letter.values) for ds in per_task.values()]),
        "prompt": ("task", [str(ds.example_prompt.values) for ds in per_task.values()])})
    for name, ds in (("results", results), ("neurons", neurons), ("baseline", baseline), ("examples", examples)):
        _write_atomically(ds, out / f"{name}.zarr")
    from . import report

    path = report.write_report(out, results=results, neurons=neurons, baseline=baseline,
                               examples=examples, title=f"nsneurons report: {recipe.name}",
                               summary={"model": model.describe(), "recipe": recipe.name, "k": recipe.selection.k,
                                        "identification_examples": recipe.identification_examples,
                                        "steps": recipe.attribution.steps, "answer_format": recipe.answer_format})
    print(f"report: {path}")
    return out
