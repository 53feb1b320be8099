"""One task's interventions with typed keys, and the per-example values they give.

`plan` turns neuron sets into `Condition`s (each distinct switch set once: a good-only method's
ratio-1.0 sweep and its good-only ablation are the same intervention, as are ratio 1.0 / 0.0 and
the good-only / bad-only ablation of a method with bad neurons) and a map from `Key` to the
condition that answers it. `collect` reads a correctness table back into labelled arrays:

- `original_example`, `sweep_example`, `ablation_example`: per evaluation example, Acc (share of
  its proxies right) and Com (1 when at least 2 of 3 are right) along `measure`; `eval_index`
  counts the examples (padding NaN), so tasks with different examples stack. Methods drawn
  several times (RANDOM) hold the mean over draws, which keeps every metric linear in them.
- `sweep`, `ablation`: the metric vectors of `metrics.METRIC_NAMES` from those means.
- `draw_quantity`: each draw's own directed RAC / RCC and signed changes (mean and spread).

Baselines as the paper runs them (section 4.1: "100 good neurons for the other methods"): a
method without bad neurons is evaluated at ratio 1.0 only (its K good neurons), never swept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from . import metrics, selection
from .cells import QUANTITIES, quantities
from .intervention import BASELINE, Condition, correct_table, degrader, enhancer, option_probs
from .vocab import ConditionKey, Direction, condition_name

MEASURES = ("acc", "com")
CHUNK = 64  # conditions per option_probs call (bounds the query rows and switch tables of one trace)
Key = ConditionKey  # (kind, method, direction, where, draw); its stored name is vocab.condition_name(key)


def method_ratios(method: str, ratios: Sequence[float]) -> tuple[float, ...]:
    """The ratios a method is evaluated at: the recipe's, or 1.0 alone for a good-only method."""
    return tuple(ratios) if selection.METHODS[method].with_bad else (1.0,)


def _switch(good, bad, key: Key) -> Condition:
    return (degrader if key.direction == "degrade" else enhancer)(good, bad, condition_name(key), key=key)


def plan(
    neuron_sets: dict[str, list[xr.Dataset]], k: int, ratios: Sequence[float], ablation: bool
) -> tuple[list[Condition], dict[Key, str]]:
    """Conditions to run and, per key, the name of the condition that answers it."""
    conditions: dict[tuple, Condition] = {}
    answers: dict[Key, str] = {}

    def add(key: Key, good, bad):
        condition = _switch(good, bad, key)
        switches = (frozenset(condition.silence), frozenset(condition.excite))
        answers[key] = conditions.setdefault(switches, condition).name

    for method, draws in neuron_sets.items():
        with_bad = selection.METHODS[method].with_bad
        for draw, ns in enumerate(draws):
            for ratio in method_ratios(method, ratios):
                good, bad = selection.ratio_split(ns, k, ratio)
                for direction in metrics.DIRECTIONS:
                    add(Key("sweep", method, direction, ratio, draw), good, bad)
            if not ablation:
                continue
            for group in selection.ROLES if with_bad else ("good",):
                pairs = selection.to_pairs(ns, group, k)
                good, bad = (pairs, []) if group == "good" else ([], pairs)
                for direction in metrics.DIRECTIONS:
                    add(Key("ablation", method, direction, group, draw), good, bad)
    return list(conditions.values()), answers


def per_example(correct: xr.DataArray, name: str, examples: Sequence[str]) -> np.ndarray:
    """(measure, example) Acc and Com of one condition, examples in the given order."""
    table = correct.sel(condition=name).sel(example=list(examples)).transpose("example", "proxy").values
    return np.stack([table.mean(axis=1), (table.sum(axis=1) >= 2).astype(float)])


def _metric_vector(original: np.ndarray, intervened: np.ndarray, direction: Direction) -> list[float]:
    result = metrics.ConditionResult(
        direction, *(float(x) for x in (original[0].mean(), intervened[0].mean(), original[1].mean(), intervened[1].mean()))
    )
    values = result.as_dict()
    return [values[name] for name in metrics.METRIC_NAMES]


def _empty(dims: dict) -> xr.DataArray:
    return xr.DataArray(np.full(tuple(len(v) for v in dims.values()), np.nan), dims=tuple(dims), coords=dims)


def collect(
    correct: xr.DataArray, answers: dict[Key, str], examples: Sequence[str], methods: Sequence[str], ratios: Sequence[float]
) -> dict[str, xr.DataArray]:
    """Labelled per-example and metric arrays of one task (see the module doc)."""
    n = len(examples)
    original = per_example(correct, "none", examples)
    base = {"selector": list(methods), "direction": list(metrics.DIRECTIONS)}
    out = {
        "original_example": xr.DataArray(
            original, dims=("measure", "eval_index"), coords={"measure": list(MEASURES), "eval_index": np.arange(n)}
        ),
        "sweep_example": _empty({**base, "ratio": list(ratios), "measure": list(MEASURES), "eval_index": np.arange(n)}),
        "ablation_example": _empty(
            {**base, "group": list(selection.ROLES), "measure": list(MEASURES), "eval_index": np.arange(n)}
        ),
        "sweep": _empty({**base, "ratio": list(ratios), "metric": list(metrics.METRIC_NAMES)}),
        "ablation": _empty({**base, "group": list(selection.ROLES), "metric": list(metrics.METRIC_NAMES)}),
    }
    draws = 1 + max(key.draw for key in answers)
    draw_q = _empty({**base, "draw": np.arange(draws), "quantity": list(QUANTITIES)})
    grouped: dict[ConditionKey, list[np.ndarray]] = {}
    for key, name in answers.items():
        grouped.setdefault(key._replace(draw=0), []).append(per_example(correct, name, examples))
        if key.kind == "sweep" and key.where == 1.0:
            values = per_example(correct, name, examples)
            q = quantities(original[0].mean(), values[0].mean(), original[1].mean(), values[1].mean(), key.direction)
            draw_q.loc[dict(selector=key.method, direction=key.direction, draw=key.draw)] = [float(q[x]) for x in QUANTITIES]
    for key, per_draw in grouped.items():
        mean = np.mean(per_draw, axis=0)  # over draws
        cut = {"selector": key.method, "direction": key.direction, ("ratio" if key.kind == "sweep" else "group"): key.where}
        out[f"{key.kind}_example"].loc[cut] = mean
        out[key.kind].loc[cut] = _metric_vector(original, mean, key.direction)
    out["draw_quantity"] = draw_q
    return out


def evaluate_conditions(
    model, proxies, conditions: Sequence[Condition], *, position, batch_size: int, progress: bool
) -> xr.DataArray:
    """Correctness (condition, example, proxy) of the unmodified model ("none") and under each condition,
    in calls of at most CHUNK conditions (the cross-task analyses and the K sweep share it)."""
    parts: list[xr.DataArray] = []
    chunks = [list(conditions[i : i + CHUNK]) for i in range(0, len(conditions), CHUNK)] or [[]]
    for chunk in chunks:
        batch = [BASELINE, *chunk] if not parts else chunk
        probs = option_probs(model, proxies, batch, position=position, batch_size=batch_size, progress=progress)
        parts.append(correct_table(probs))
    return xr.concat(parts, dim="condition")
