"""The user loop in a few names: task -> proxies -> score -> select -> intervene -> evaluate.

    import nsneurons as ns
    model = ns.load_model("demo")
    scores = ns.score(model, ns.proxies("sentiment", n=5), "sentiment-ace.zarr")
    neurons = ns.select("neuronllm", scores, k=100)
    ns.evaluate(model, ns.proxies("sentiment", n=20, skip=5), ns.degrade(neurons, ratio=0.5))

Each step is a thin layer over the stage modules (tasks, attribution/scoring, selection,
intervention, metrics) that `nsneurons run` uses, with the same numbers; a recipe run adds the
evaluation-set screening, every method and ratio, intervals and the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import xarray as xr

from . import metrics, selection
from .intervention import BASELINE, Condition, correct_table, degrader, enhancer, option_probs
from .store import example_scores
from .tasks import Proxy, build_task_proxies, task_questions, task_spec
from .vocab import AnswerFormat, IGPath, PromptFormat, Quadrature, TargetName

Scores = xr.Dataset | Mapping[str, xr.Dataset] | Mapping[str, xr.DataArray]


def proxies(
    task: str,
    *,
    n: int | None = None,
    skip: int = 0,
    source: str | None = None,
    seed: int = 0,
    answer_format: AnswerFormat = "letters",
    prompt_format: PromptFormat = "qatt",
    tokenizer=None,
    shots: int | None = None,
) -> list[Proxy]:
    """Proxies (3 per example) of questions skip .. skip + n of a task's scored split.

    `source` is None for the packaged fixture, or a local file or hub dataset id (see nsneurons.tasks);
    disjoint `skip` ranges give disjoint examples (identification vs evaluation). `prompt_format`:
    "qatt" (the paper's), "chat" (inside the chat template of `tokenizer`, e.g. model.tokenizer) or
    "cloze" (answer_format "words"; `shots` solved examples per label, see nsneurons.tasks.formats).
    """
    demos, questions = task_questions(task, source, seed)
    chosen = questions[skip:] if n is None else questions[skip : skip + n]
    if not chosen:
        raise ValueError(f"task {task!r}: no questions in [{skip}, {skip + (n or 0)}) of its {len(questions)}")
    return build_task_proxies(
        chosen, demos, task_spec(task), seed, answer_format, prompt_format=prompt_format, tokenizer=tokenizer, shots=shots
    )


def score(
    model,
    proxies: Sequence[Proxy],
    out,
    *,
    target: TargetName = "ace",
    steps: int = 16,
    quadrature: Quadrature = "right",
    path: IGPath = "staircase",
    progress: bool = False,
) -> xr.Dataset:
    """IG (Eq. 1) of every FFN neuron for every proxy, in a resumable scores store at `out`."""
    from .attribution import AttributionConfig
    from .scoring import score_proxies

    config = AttributionConfig(target=target, steps=steps, quadrature=quadrature, path=path)
    return score_proxies(model, proxies, config, out, progress=progress)


def select(method: str, scores: Scores, *, k: int, z: int = 5000, t: float = 0.2, seed: int = 0) -> xr.Dataset:
    """A method's K good (and bad) neurons from scores stores: one store, or {target: store}.

    The example scores (ES, Eq. 4) of each store's target and the activations (for ACT) are read
    from the stores; a method needing a target that is not there is refused by name.
    """
    stores: dict[str, xr.Dataset | xr.DataArray]
    stores = {scores.attrs.get("target", "ace"): scores} if isinstance(scores, xr.Dataset) else dict(scores)
    if not stores:
        raise ValueError("select: no scores store given")
    if all(isinstance(v, xr.DataArray) for v in stores.values()):  # {target: ES} as selection.select takes
        return selection.select(method, k=k, scores=cast(dict[str, xr.DataArray], stores), z=z, t=t, seed=seed)
    es = {target: example_scores(cast(xr.Dataset, ds)).load() for target, ds in stores.items()}  # stores, not ES
    first = next(iter(stores.values()))
    return selection.select(method, k=k, scores=es, activations=first["activation"].load(), z=z, t=t, seed=seed)


def _split(neurons: xr.Dataset, k: int | None, ratio: float):
    return selection.ratio_split(neurons, neurons.sizes["rank"] if k is None else k, ratio)


def enhance(neurons: xr.Dataset, *, ratio: float = 0.5, k: int | None = None) -> Condition:
    """Excite the first round(ratio x k) good neurons and silence the rest of the budget's bad ones."""
    good, bad = _split(neurons, k, ratio)
    return enhancer(good, bad, f"{neurons.attrs.get('method', 'neurons')}/enhance/{ratio:g}")


def degrade(neurons: xr.Dataset, *, ratio: float = 0.5, k: int | None = None) -> Condition:
    """Silence the first round(ratio x k) good neurons and excite the rest of the budget's bad ones."""
    good, bad = _split(neurons, k, ratio)
    return degrader(good, bad, f"{neurons.attrs.get('method', 'neurons')}/degrade/{ratio:g}")


def evaluate(model, proxies: Sequence[Proxy], *conditions: Condition, batch_size: int = 16) -> xr.Dataset:
    """Acc and Com (%) of the unmodified model ("none") and under each condition, with the paper's
    RAC and RCC (|original - intervened| / original x 100, NaN where the original is 0) and the
    signed changes in points (which say whether a change went the intended way)."""
    everything = [BASELINE, *[c for c in conditions if c != BASELINE]]
    correct = correct_table(option_probs(model, proxies, everything, batch_size=batch_size))
    measured = {"acc": metrics.accuracy, "com": metrics.comprehension}
    values = {m: [f(correct.isel(condition=i)) for i in range(len(everything))] for m, f in measured.items()}
    out = xr.Dataset(coords={"condition": [c.name for c in everything]})
    for m in ("acc", "com"):
        out[m] = ("condition", 100 * np.array(values[m]), {"long_name": f"{m.capitalize()} (%)"})
    for m, half in (("acc", "rac"), ("com", "rcc")):
        changes = [metrics.relative_change(values[m][0], x).percent for x in values[m]]
        out[half] = ("condition", np.array([np.nan if c is None else c for c in changes]), {"long_name": f"{half.upper()} (%)"})
    for m in ("acc", "com"):
        out[f"{m}_change"] = (
            "condition",
            np.array([metrics.signed_change(values[m][0], x) for x in values[m]]),
            {"long_name": f"{m.capitalize()} change (points)"},
        )
    return out
