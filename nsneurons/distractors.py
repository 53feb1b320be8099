"""Distractor sensitivity (`selection.distractor_check`): do the neurons depend on the distractors?

The identification examples are rendered again with a second, independently drawn set of distractors
(the task's converter run with another seed: NER draws 3 of its coarse types, chunking its rule-made
segmentations, commonsense which wrong choice of five to drop), scored again (IG, every target the
methods need), and each method's top-K good and bad neurons are compared with the run's: the overlap
|A ∩ B| / K per role, and Table 1's interventions (same ratio, same evaluation examples, same
bootstrap) with the redrawn neurons, so the change in RAC/RCC shows what the difference does.

Decisions:
- Only the options change: stem, correct option text, demonstrations and the proxies' shuffles are the
  run's (the redrawn question's options replace the original's, matched by example id).
- A task whose every identification question gets the same options again (sentiment: its options are
  its whole label set, 3 classes and "not sure") has nothing to redraw: reported "n/a" with the reason.
- Cloze prompts list no options (nsneurons.tasks.formats): reported "n/a" for them.
- RANDOM does not read the scores: its sets cannot change and it is left out.
- Scores go to scores/<task>~distractors-<target>.zarr (resumable like the run's); the results to
  distractors.zarr. The check is outside the run's fingerprint, like the K sweep.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import xarray as xr

from . import budget, selection
from .crosstask import full_ranking
from .ksweep import combine, sweep_task
from .runfolder import RunFolder
from .zarrio import write_atomically

SEED_OFFSET = 1_000_003  # the second draw's converter seed: recipe.seed + SEED_OFFSET
SUFFIX = "~distractors"  # scores/<task>~distractors-<target>.zarr


def redrawn_questions(recipe, task, ids) -> tuple[list, list, int]:
    """(demo pool, the identification questions `ids` with a second draw of distractors, how many changed)."""
    from .tasks import task_questions

    def load(seed, cap):
        return task_questions(
            task.name,
            task.source,
            seed,
            demo_split=task.demo_split,
            scored_split=task.scored_split,
            max_questions=cap,
            config=task.config,
            revision=task.revision,
            **task.options,
        )

    demo_pool, questions = load(recipe.seed, task.max_questions)
    again = {q.example_id: q for q in load(recipe.seed + SEED_OFFSET, None)[1]}
    by_id = {q.example_id: q for q in questions}
    out, changed = [], 0
    for i in ids:
        q, r = by_id[i], again[i]
        if r.options[r.answer] != q.options[q.answer]:
            raise ValueError(f"task {task.name!r}, example {i!r}: the second draw changed the correct option")
        changed += set(r.options) != set(q.options)
        out.append(dataclasses.replace(q, options=r.options, answer=r.answer))
    return demo_pool, out, changed


def redrawn_proxies(recipe, task, id_proxies, tokenizer=None) -> tuple[list, int]:
    """The identification proxies again (in the recipe's prompt format; chat needs the tokenizer), with the
    second draw's options; and how many questions changed."""
    from .tasks import build_task_proxies, task_spec

    ids = list(dict.fromkeys(p.example_id for p in id_proxies))
    demo_pool, questions, changed = redrawn_questions(recipe, task, ids)
    spec = task_spec(task.name)
    proxies = build_task_proxies(
        questions, demo_pool, spec, recipe.seed, recipe.answer_format, prompt_format=recipe.prompt_format, tokenizer=tokenizer
    )
    return proxies, changed


def overlap(a: xr.Dataset, b: xr.Dataset, role: str, k: int) -> float:
    """|A ∩ B| / k of two neuron sets' first k neurons of a role."""
    pairs = [set(selection.to_pairs(s, role, k)) for s in (a, b)]
    return len(pairs[0] & pairs[1]) / k


def check_task(recipe, model, out, task, results: xr.Dataset, neurons: xr.Dataset, score, *, progress: bool):
    """One task's check: (Dataset with overlap and the redrawn sets' per-example values, None) or (None, why n/a).
    `score(task, proxies, store_name)` scores the proxies into scores/<store_name>-<target>.zarr (the runner's)."""
    from .splits import task_proxies

    if recipe.prompt_format == "cloze":
        return None, "cloze prompts list no options: the distractors are not shown to the model"
    id_proxies, _ = task_proxies(recipe, task, model.tokenizer)
    proxies, changed = redrawn_proxies(recipe, task, id_proxies, model.tokenizer)
    if not changed:
        return None, "the second draw gives every identification question the same options (they are the task's whole label set)"
    score(task, proxies, task.name + SUFFIX)
    k = budget.resolved_k(recipe, model.n_layers, model.n_neurons)
    methods = [m for m in recipe.selection.methods if selection.method_needs(m) is not None]
    ranked = {m: [full_ranking(recipe, out, task.name + SUFFIX, m, model.n_layers, model.n_neurons)] for m in methods}
    ds = sweep_task(recipe, model, out, task, results, ranked, [k], progress=progress, label="distractor check")
    roles = list(selection.ROLES)
    values = [
        [
            overlap(neurons.sel(task=task.name, selector=m), ranked[m][0], r, k)
            if selection.METHODS[m].with_bad or r == "good"
            else np.nan
            for r in roles
        ]
        for m in methods
    ]
    checked = ds.assign(overlap=(("selector", "role"), values), n_changed=changed, n_questions=len(proxies) // 3)
    return checked.assign_coords(role=roles), None


def run_check(recipe, model, out, results: xr.Dataset, neurons: xr.Dataset, score, *, progress: bool) -> xr.Dataset:
    """Every task's check, combined with Table 1's bootstrap (the same resamples per task); distractors.zarr."""
    found, skipped, positions = {}, {}, []
    for i, task in enumerate(recipe.tasks):
        ds, why = check_task(recipe, model, out, task, results, neurons, score, progress=progress)
        if ds is None:
            skipped[task.name] = why
            continue
        found[task.name] = ds
        positions.append(i)
    ev = recipe.evaluation
    combined = (
        combine(found, resamples=ev.bootstrap, seed=recipe.seed, level=ev.confidence, positions=positions)
        if found
        else xr.Dataset()
    )
    combined.attrs = {"k": int(results.attrs["k"]), "not_applicable": json.dumps(skipped), "seed_offset": SEED_OFFSET}
    write_atomically(RunFolder(out).distractors, combined)
    return combined


def _pair(block: xr.DataArray) -> str:
    from .tables import pair, value

    return pair(*(value(float(block.sel(quantity=h, ci="estimate"))) for h in ("rac", "rcc")))


def _change(ours: xr.DataArray, theirs: xr.DataArray) -> str:
    diffs = [float(theirs.sel(quantity=h, ci="estimate")) - float(ours.sel(quantity=h, ci="estimate")) for h in ("rac", "rcc")]
    return "/".join("-" if not math.isfinite(d) else f"{d + 0.0:+.1f}" for d in diffs)


def report_section(ds: xr.Dataset, results: xr.Dataset) -> list[str]:
    """The report's "Distractor sensitivity" section: per task, overlap and RAC/RCC of the run vs the redrawn sets."""
    from .tables import DIR_LABEL, interval, markdown

    parts = [
        "## Distractor sensitivity",
        "The identification examples again with a second, independently drawn set of distractors (stems, correct "
        "options, demonstrations and option shuffles unchanged), scored again; each method's top-K neurons compared "
        "with the run's (overlap = shared neurons / K per role), and Table 1's interventions repeated with the redrawn "
        "neurons (each cell's ratio, the same evaluation examples and bootstrap). Cells: RAC/RCC of the run -> with the "
        "redrawn neurons [interval of the latter] (change). RANDOM does not read the scores and is left out.",
    ]
    for task, why in json.loads(ds.attrs.get("not_applicable", "{}")).items():
        parts.append(f"**{task}**: n/a, {why}.")
    for task in ds["task"].values if "task" in ds.dims else []:
        rows = []
        for m in ds["selector"].values:
            row = [str(m)] + [
                "-" if math.isnan(x) else f"{x:.0%}" for x in ds["overlap"].sel(task=task, selector=m).values.tolist()
            ]
            for d in ("degrade", "enhance"):
                ours = results["cell"].sel(task=task, selector=m, direction=d)
                theirs = ds["cell"].sel(task=task, selector=m, direction=d).squeeze("k", drop=True)
                ci = "/".join(
                    interval(float(theirs.sel(quantity=h, ci="lo")), float(theirs.sel(quantity=h, ci="hi"))) or "-"
                    for h in ("rac", "rcc")
                )
                row.append(f"{_pair(ours)} -> {_pair(theirs)} {ci} ({_change(ours, theirs)})")
            rows.append(row)
        n = f"{int(ds['n_changed'].sel(task=task))} of {int(ds['n_questions'].sel(task=task))}"
        header = ["method", "good overlap", "bad overlap", *(f"{DIR_LABEL[d]}: run -> redrawn" for d in ("degrade", "enhance"))]
        parts += [f"**{task}** ({n} identification questions got other distractors)", markdown(header, rows)]
    return parts
