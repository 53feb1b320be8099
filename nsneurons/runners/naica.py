"""`nsneurons run RECIPE` of an `experiment: naica` recipe: NA-ICA / QRNCA key neurons (seed 002) and their applications.

IG (target "qrnca") of every neuron for every prompt of every query goes into a resumable scores
store (scores/naica-qrnca.zarr, dims (query, prompt, layer, neuron), the provenance and settings
check of nsneurons.store), written query by query: an interrupted run resumes without redoing the
finished queries. Then the key and common neurons (nsneurons.naica), regions, prediction
(nsneurons.naica_analyses), editing (here: it needs the model), naica.zarr (one group per
Dataset, written whole or not at all), the two figures and report.md (nsneurons.naica_report).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..attribution import AttributionConfig
from ..naica import T_DEFAULT, U_DEFAULT, V_DEFAULT, key_neurons, key_pairs
from ..naica_analyses import (
    EDIT_CONDITIONS,
    domain_key_neurons,
    localized_regions,
    predict_domains,
    random_control,
    split_queries,
)
from ..naica_report import plot_regions, write_report
from ..recipe import Recipe, RecipeError
from ..runfolder import RunFolder, run_in_folder
from ..scoring import score_proxies
from ..tasks.base import Proxy
from ..vocab import AnswerFormat, IGPath, PromptFormat
from ..zarrio import write_atomically


def run_recipe(recipe: Recipe, *, model=None, progress: bool = True) -> Path:
    """NA-ICA end to end on the recipe's domain QA; returns the output folder. An interrupted run
    resumes (finished queries are not attributed again); one run per output folder at a time."""
    if recipe.experiment != "naica":
        raise RecipeError(f"experiment: nsneurons.runners.naica runs experiment 'naica', got {recipe.experiment!r}")
    return run_in_folder(recipe, _run, model=model, progress=progress)


def _run(recipe: Recipe, model, folder: RunFolder, *, progress: bool) -> None:
    from ..tasks.domain_qa import load_domain_qa

    n = recipe.naica
    questions = load_domain_qa(n.source, seed=recipe.seed, domains=n.domains, max_per_domain=n.max_per_domain, config=n.config)
    provenance = {"recipe": recipe.name, "data_source": n.source or "packaged fixture"}
    run_naica(
        model,
        questions,
        out_dir=folder.root,
        t=n.t,
        v=n.v,
        u=n.u,
        steps=n.steps,
        seed=recipe.seed,
        answer_format=recipe.answer_format,
        prompt_format=recipe.prompt_format,
        held_out_fraction=n.held_out_fraction,
        progress=progress,
        remove_common=n.remove_common,
        path=recipe.attribution.path,
        provenance=provenance,
    )
    print(f"report: {folder.report}")


def attribute_queries(
    model,
    proxies_by_query: Mapping[str, Sequence[Proxy]],
    store,
    *,
    steps: int = 20,
    answer_format: AnswerFormat = "letters",
    progress: bool = False,
    path: IGPath = "staircase",
    provenance: Mapping | None = None,
) -> xr.Dataset:
    """IG (target "qrnca") and activations of every neuron for every prompt: (query, prompt, layer, neuron).

    Written query by query into the scores store at `store` (resumed where an earlier call stopped;
    refused if it was made with other settings); returns its arrays, loaded."""
    from ..tasks.domain_qa import TEMPLATE_VERSION

    config = AttributionConfig(target="qrnca", steps=steps, path=path)
    n_prompts = {len(p) for p in proxies_by_query.values()}
    if len(n_prompts) != 1:
        raise ValueError(f"every query needs the same number of prompts, got {sorted(n_prompts)}")
    # A query's prompts (its shuffled-option variants) share their beginning: one session each.
    proxies = [p for ps in proxies_by_query.values() for p in ps]
    provenance = {**(provenance or {}), "task": "naica", "prompt_template": TEMPLATE_VERSION}
    ds = score_proxies(model, proxies, config, store, provenance=provenance, progress=progress, item="query").load()
    # Plain (fixed-width) strings, as the arrays were before they went through the store.
    strings = {n: c for n, c in ds.coords.items() if c.dtype.kind not in "biuf"}
    ds = ds.assign_coords({n: (c.dims, np.asarray(c.values.tolist(), dtype=str)) for n, c in strings.items()})
    arrays = xr.Dataset({name: ds[name] for name in ("ig", "activation", "option_prob", "target_value")}).drop_attrs()
    return arrays.assign_attrs(target="qrnca", steps=int(steps), answer_format=answer_format, path=path)


def edit_key_neurons(
    model,
    proxies_by_query: Mapping[str, Sequence[Proxy]],
    key: xr.Dataset,
    *,
    seed: int = 0,
    answer_format: AnswerFormat = "letters",
    queries: Sequence[str] | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Boost (x2) / suppress (x0) each query's key neurons at the answer position, against as many
    random neurons (seeded per query) as control: mean correct-option probability over the query's prompts."""
    from tqdm.auto import tqdm

    from ..intervention import Condition, option_probs

    queries = list(key["query"].values) if queries is None else list(queries)
    p_correct = np.full((len(queries), len(EDIT_CONDITIONS)), np.nan)
    n_edited = np.zeros(len(queries), np.int64)
    for i, q in enumerate(tqdm(queries, disable=not progress, unit="query", desc="NA-ICA editing")):
        pairs = key_pairs(key, q)
        if not pairs:
            continue
        control = random_control(pairs, model.n_layers, model.n_neurons, np.random.default_rng([seed, i]))
        conditions = [
            Condition("none"),
            Condition("boost", excite=tuple(pairs)),
            Condition("suppress", silence=tuple(pairs)),
            Condition("random_boost", excite=tuple(control)),
            Condition("random_suppress", silence=tuple(control)),
        ]
        proxies = list(proxies_by_query[q])
        probs = option_probs(model, proxies, conditions).values  # [C, P, 4]
        correct = np.asarray([p.correct for p in proxies])
        p_correct[i] = probs[:, np.arange(len(proxies)), correct].mean(axis=1)
        n_edited[i] = len(pairs)
    ds = xr.Dataset(
        {"p_correct": (("query", "condition"), p_correct), "n_edited": ("query", n_edited)},
        coords={"query": queries, "condition": list(EDIT_CONDITIONS)},
    )
    ds["delta"] = ds["p_correct"] - ds["p_correct"].sel(condition="none")
    ds["relative_change"] = ds["delta"] / ds["p_correct"].sel(condition="none")
    ds.attrs.update(seed=int(seed), boost=2.0, suppress=0.0, position="answer")
    return ds


def _key_results(
    attribution: xr.Dataset, domains: dict, n_layers: int, *, t, v, u, remove_common, seed, held_out_fraction
) -> dict:
    """Key and common neurons, domain key neurons, regions and (with held-out queries) prediction."""
    found = key_neurons(attribution["ig"], t=t, v=v, u=u, remove_common=remove_common)
    domain_keys = domain_key_neurons(found.key, domains)
    results = {
        "attribution": attribution,
        "key": found.key,
        "common": found.common,
        "domain_key": domain_keys,
        "regions": localized_regions(domain_keys, n_layers),
    }
    train, held_out = split_queries(domains, held_out_fraction, seed)
    if held_out:
        train_found = key_neurons(attribution["ig"].sel(query=train), t=t, v=v, u=u, remove_common=remove_common)
        train_domain_keys = domain_key_neurons(train_found.key, domains, v=v)
        results["prediction"] = predict_domains(attribution["activation"], train_domain_keys, held_out, domains)
        results["prediction"].attrs.update(n_train=len(train), held_out_fraction=float(held_out_fraction))
    return results


def run_naica(
    model,
    questions_by_domain,
    *,
    out_dir,
    t: float = T_DEFAULT,
    v: int = V_DEFAULT,
    u: float = U_DEFAULT,
    steps: int = 20,
    seed: int = 0,
    answer_format: AnswerFormat = "letters",
    prompt_format: PromptFormat = "qatt",
    held_out_fraction: float = 0.3,
    progress: bool = False,
    remove_common: bool = True,
    path: IGPath = "staircase",
    provenance: Mapping | None = None,
) -> dict[str, xr.Dataset]:
    """Scoring (resumable, scores/naica-qrnca.zarr), key and common neurons, regions, prediction and editing;
    writes naica.zarr, 2 PNGs and report.md. provenance: recorded in the scores store (recipe, data source).
    prompt_format: "qatt" or "chat" (the model's chat template); see nsneurons.tasks.domain_qa."""
    from ..answers import check_answer_tokens
    from ..tasks.domain_qa import domain_of, domain_proxies

    folder = RunFolder(out_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    domains = domain_of(questions_by_domain)
    proxies = domain_proxies(
        questions_by_domain, seed=seed, answer_format=answer_format, prompt_format=prompt_format, tokenizer=model.tokenizer
    )
    check_answer_tokens(model.tokenizer, [p for ps in proxies.values() for p in ps])
    attribution = attribute_queries(
        model,
        proxies,
        folder.naica_scores,
        steps=steps,
        answer_format=answer_format,
        progress=progress,
        path=path,
        provenance={"seed": seed, **(provenance or {})},
    )
    attribution = attribution.assign_coords(domain=("query", [domains[q] for q in attribution["query"].values]))
    results = _key_results(
        attribution,
        domains,
        model.n_layers,
        t=t,
        v=v,
        u=u,
        remove_common=remove_common,
        seed=seed,
        held_out_fraction=held_out_fraction,
    )
    subtitle = f"{model.provenance.get('model', '?')}, t = {t}, v = {v}, u = {u}, n = {attribution.sizes['query']} queries"
    figure_paths = plot_regions(results["regions"], folder.root, subtitle=subtitle)
    results["editing"] = edit_key_neurons(
        model, proxies, results["key"], seed=seed, answer_format=answer_format, progress=progress
    )
    params = dict(
        t=t,
        v=v,
        u=u,
        steps=steps,
        seed=seed,
        answer_format=answer_format,
        held_out_fraction=held_out_fraction,
        remove_common=remove_common,
        model=model.provenance.get("model", "?"),
        **({"prompt_format": prompt_format} if prompt_format != "qatt" else {}),  # qatt runs' outputs stay as they were
    )
    for ds in results.values():
        ds.attrs.setdefault("naica_params", json.dumps(params, default=str))
    write_atomically(folder.naica, results)
    write_report(folder.report, results, figure_paths, params, model_description=model.describe())
    return results
