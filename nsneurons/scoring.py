"""Score a task's proxies into a store: attribution per proxy, one example per write, resumable."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .attribution import AttributionConfig, attribute_proxies, checked_layers
from .shards import Shard
from .store import ScoreStore, open_scores
from .tasks.base import N_PROXIES, Proxy
from .tasks.formats import TEMPLATE_VERSIONS
from .version import package_version


def group_by_example(proxies: Sequence[Proxy]) -> OrderedDict[str, list[Proxy]]:
    groups: OrderedDict[str, list[Proxy]] = OrderedDict()
    for p in proxies:
        groups.setdefault(p.example_id, []).append(p)
    for example_id, group in groups.items():
        if [p.proxy for p in group] != list(range(N_PROXIES)):
            raise ValueError(f"example {example_id!r} needs proxies 0..{N_PROXIES - 1} in order, got {[p.proxy for p in group]}")
    return groups


def prompts_sha256(proxies: Sequence[Proxy]) -> str:
    """The content of what is scored (prompts, options, answers): an edited data file changes it."""
    rows = [[p.example_id, p.proxy, p.prompt, list(p.options), p.correct] for p in proxies]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def score_provenance(
    model, config: AttributionConfig, extra: dict | None = None, answer_format: str | None = None, prompt_format: str = "qatt"
) -> dict:
    """The store's attrs: the model, the IG settings, and the proxies' answer and prompt formats."""
    prov = dict(model.provenance)
    prov.update(
        target=config.target,
        steps=config.steps,
        quadrature=config.quadrature,
        ig_path=config.path,
        answer_format=answer_format or config.answer_format or "letters",
        prompt_format=prompt_format,
        prompt_template=TEMPLATE_VERSIONS[prompt_format],
        nsneurons_version=package_version(),
    )
    prov.update(extra or {})
    return prov


def answer_formats(proxies: Sequence[Proxy]) -> str:
    """The proxies' answer format (one per store: their answers are scored alike)."""
    found = sorted({p.answer_format for p in proxies})
    if len(found) > 1:
        raise ValueError(f"proxies of one scores store must share an answer format, got {', '.join(found)}")
    return found[0] if found else "letters"


def prompt_formats(proxies: Sequence[Proxy]) -> str:
    """The proxies' prompt format (one per store, like the answer format)."""
    found = sorted({p.prompt_format for p in proxies})
    if len(found) > 1:
        raise ValueError(f"proxies of one scores store must share a prompt format, got {', '.join(found)}")
    return found[0] if found else "qatt"


def attribute_group_with_retries(model, proxies, config, layers=None):
    """`attribute_proxies` (one session, the prompts' common prefix once); on NDIF with retries of
    transient failures and the example named in errors."""
    if not model.on_server:
        return attribute_proxies(model, proxies, config, layers)
    from .remote import with_retries

    # Transient failures (connection refused, timeouts, busy server) are retried with backoff;
    # a server-side error names the example it happened on.
    numbers = ", ".join(str(p.proxy) for p in proxies)
    which = f"proxy {numbers}" if len(proxies) == 1 else f"proxies {numbers}"
    return with_retries(
        lambda: attribute_proxies(model, proxies, config, layers), describe=f"example {proxies[0].example_id!r} {which}"
    )


def score_jobs(model, groups, todo, done, config, layers, path: Path, jobs: int, write, bar) -> None:
    """The examples `todo` as non-blocking NDIF jobs, up to `jobs` in flight; the bar shows the jobs."""
    from .ndif_jobs import JobCounts, score_in_flight

    counts = JobCounts()

    def on_result(index: int, results) -> None:
        write(index, results)
        bar.set_postfix_str(counts.line(), refresh=True)

    def attribute(job_model, group):
        return attribute_proxies(job_model, group, config, layers)

    score_in_flight(
        model, groups, todo, done, attribute, path, jobs, on_result, counts, say=lambda text: bar.write(text, file=sys.stderr)
    )
    bar.set_postfix_str(counts.line(), refresh=True)
    if bar.disable:  # no bar (not a terminal): the jobs' summary still goes to the log
        print(f"NDIF {counts.line()}", file=sys.stderr)


def score_proxies(
    model,
    proxies: Sequence[Proxy],
    config: AttributionConfig,
    path,
    *,
    layers: Sequence[int] | None = None,
    provenance: dict | None = None,
    progress: bool = True,
    item: str = "example",
    shard: Shard | None = None,
    jobs: int | None = None,
):
    """Compute IG for every proxy and write the store at `path`; resumes where a previous run stopped.
    item: the store's first dim, "example" (NeuronLLM) or "query" (NA-ICA: a query's prompts are its proxies).
    shard: score only this worker's examples (nsneurons.shards); other workers fill the rest of the
    same store meanwhile, and the store is returned as it then is (`done` says which are written).
    jobs: on NDIF, keep up to this many examples in flight as non-blocking jobs whose ids are kept next to
    the store (nsneurons.ndif_jobs); None: one blocking session at a time."""
    from tqdm.auto import tqdm

    groups = group_by_example(proxies)
    # Ascending, without repeats (the order attribute_proxies returns them in); checked before the
    # store is made, so a bad selection leaves nothing behind.
    layers = checked_layers(model, layers)
    store = ScoreStore.open_or_create(
        Path(path),
        example_ids=list(groups),
        layers=layers,
        n_neurons=model.n_neurons,
        correct_letters=[[p.correct_letter for p in group] for group in groups.values()],
        provenance=score_provenance(
            model,
            config,
            {**(provenance or {}), "prompts_sha256": prompts_sha256(proxies)},
            answer_formats(proxies),
            prompt_formats(proxies),
        ),
        item=item,
        workers=shard is not None,
    )
    done = store.done()
    mine = np.array([shard is None or shard.takes(i) for i in range(len(groups))], bool)
    with tqdm(
        total=int(mine.sum()) * N_PROXIES,
        initial=int((done & mine).sum()) * N_PROXIES,
        unit="proxy",
        desc=f"IG[{config.target}]",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        todo = [index for index in range(len(groups)) if mine[index] and not done[index]]
        group_list = list(groups.values())

        def write(index: int, results) -> None:
            bar.update(len(results))
            store.write_example(
                index,
                ig=np.stack([r.ig for r in results]),
                activation=np.stack([r.activation for r in results]),
                option_prob=np.stack([r.option_prob for r in results]),
                target_value=np.array([r.target_value for r in results]),
                completeness_gap=np.stack([r.completeness_gap for r in results]),
                ig_sum=np.stack([r.ig_sum for r in results]),
                ig_delta=np.stack([r.ig_delta for r in results]),
            )

        if jobs is not None and model.on_server:
            score_jobs(model, group_list, todo, done, config, layers, Path(path), jobs, write, bar)
        else:
            for index in todo:
                # An example's proxies share their prompt's beginning: one session computes it once.
                write(index, attribute_group_with_retries(model, group_list[index], config, layers))
    if shard is not None and not store.done().all():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # other shards' examples are still to come: expected
            return open_scores(path, allow_incomplete=True)
    return open_scores(path)
