"""The cost of each stage of a run, counted the way its runner works: IG sessions (attribution), the
screen (evaluation_set), interventions (intervention, conditions) and the model load, on the shared
cost model of nsneurons.plan_work (FLOPs, memory, pricing). docs/plan.md states every assumption.
"""

from __future__ import annotations

from . import conditions, selection
from .budget import resolve
from .plan_work import (
    DTYPE_BYTES,
    GIB,
    SESSION_BYTES,
    Group,
    ModelShape,
    Rates,
    Stage,
    Tally,
    block_flops,
    gpu_key,
    kv_bytes,
    prefix_flops,
    priced,
    row_bytes,
)
from .targets import ANSWER_LOGITS_ONLY


def staircase_rows(chunk, n_layers: int, rows_per: int, staircase: bool) -> list[int]:
    """Query rows running each block: staircase rows join at their layer; flat rows run every block."""
    if not staircase:
        return [len(chunk) * rows_per] * n_layers
    return [1 + rows_per * sum(1 for j in chunk if j <= layer) for layer in range(chunk[0], n_layers)]


def auto_layers_per_pass(shape: ModelShape, n_attr: int, steps: int, prompt_len: int, budget: int) -> int:
    """attribution's rule for layers_per_pass=None: a memory budget over a per-row estimate."""
    per_row = 4 * (2 * shape.vocab + shape.n_layers * (12 * shape.hidden + 4 * shape.n_neurons) + 2 * prompt_len)
    return int(max(1, min(n_attr, max(1, budget // per_row) // (steps + 2))))


def ig_budget(rates: Rates, shape: ModelShape) -> int:
    """The memory budget attribution assumes: 8 GiB on NDIF, 4 GiB on CPU, half the free memory of the
    GPUs (80 GB each assumed; a split model's summed)."""
    if rates.device == "ndif":
        return 8 * GIB
    if rates.device == "cuda":
        return int((80e9 * rates.gpus - shape.weight_bytes(rates.dtype)) * 0.5)
    return 4 * GIB


def ig_group(
    t: Tally, shape: ModelShape, group: Group, chunks, *, steps: int, midpoint: bool, path: str, answer_only: bool, act: int
) -> None:
    """One example's IG session (attribution.attribute_proxies): prefix once, own tokens, one pass per chunk."""
    rows_per = steps + (2 if midpoint else 1)
    cols = 4 if answer_only else shape.vocab
    session_down = SESSION_BYTES
    if path == "full":
        for length in group.lengths:
            for chunk in chunks:
                for _ in chunk:  # one trace per layer: rows_per full prompts, logits at every position
                    tokens = rows_per * length
                    flops = shape.n_layers * block_flops(shape, tokens, length / 2) + 2 * shape.hidden * shape.vocab * tokens
                    mem = shape.n_layers * rows_per * length * row_bytes(shape, length, act) + tokens * shape.vocab * 12
                    t.add(flops=flops, rows=rows_per, backward=True, transient=mem, down=(2 * shape.n_neurons + rows_per + 5) * 4)
        t.down += session_down
        t.requests += 1
        return
    t.requests += 1
    if group.common:
        t.add(flops=prefix_flops(shape, group.common))
    for length in group.lengths:
        own = length - 1 - group.common
        if own > 0:
            t.add(flops=prefix_flops(shape, own, group.common))
        prefix = length - 1
        for chunk in chunks:
            rows = staircase_rows(chunk, shape.n_layers, rows_per, path == "staircase")
            flops = sum(block_flops(shape, r, prefix + r) for r in rows) + 2 * shape.hidden * cols * rows[-1]
            mem = sum(r * row_bytes(shape, prefix + r, act) for r in rows) + rows[-1] * cols * 12 + kv_bytes(shape, prefix, act)
            t.add(
                flops=flops,
                rows=rows[-1],
                backward=True,
                transient=mem,
                down=(2 * len(chunk) * shape.n_neurons + len(chunk) * rows_per + 5) * 4,
            )
    t.down += session_down


def ig_stage(
    name: str,
    kind: str,
    recipe,
    shape: ModelShape,
    rates: Rates,
    groups,
    *,
    target: str,
    steps: int,
    layers=None,
    layers_per_pass=None,
) -> Stage:
    """IG of every proxy of `groups` for one target (scoring.score_proxies / naica_apps.attribute_queries)."""
    a = recipe.attribution
    layers = sorted(set(layers)) if layers else list(range(shape.n_layers))
    longest = max(max(g.lengths) for g in groups)
    per_pass = layers_per_pass or auto_layers_per_pass(shape, len(layers), steps, longest, ig_budget(rates, shape))
    chunks = [layers[i : i + per_pass] for i in range(0, len(layers), per_pass)]
    t = Tally()
    answer_only = target in ANSWER_LOGITS_ONLY  # the output layer computes the 4 answer columns (a plain linear head)
    for g in groups:
        ig_group(
            t,
            shape,
            g,
            chunks,
            steps=steps,
            midpoint=a.quadrature == "midpoint",
            path=a.path,
            answer_only=answer_only,
            act=DTYPE_BYTES[recipe.dtype],
        )
    detail = (
        f"{sum(len(g.lengths) for g in groups)} prompts in {len(groups)} sessions, {len(layers)} layers in "
        f"{len(chunks)} pass(es) of <= {per_pass} layers, m = {steps}, path {a.path}, "
        f"{'4 answer logits' if answer_only else 'full logits'}"
    )
    return priced(name, kind, t, shape, rates, detail, rates.ig_flops)


def load_stage(recipe, shape: ModelShape, rates: Rates) -> Stage:
    """Loading the weights: on CPU the file's pages and the model's tensors are both resident for a while."""
    weights = shape.weight_bytes(rates.dtype)
    if rates.device == "ndif":
        return Stage("load model (skeleton; NDIF holds the weights)", "load", 0, 0, 0, 0.0, {"cpu": rates.base_bytes}, 0, 0, 2.0)
    if rates.device == "cpu":
        peak = {"cpu": rates.base_bytes + int(rates.load_peak_factor * weights)}
    else:
        peak = {"cpu": rates.base_bytes + weights, gpu_key(rates): weights // rates.gpus}
    return Stage(
        "load model",
        "load",
        0,
        0,
        0,
        0.0,
        peak,
        0,
        0,
        2.0 + rates.load_seconds_per_gb * weights / 1e9,
        f"{weights / 1e9:.2f} GB of {rates.dtype} weights",
    )


def screen_stage(name: str, recipe, shape: ModelShape, rates: Rates, prompts: list[int]) -> Stage:
    """evaluation_set.screen: the unmodified model on every candidate proxy, batches of full prompts."""
    t, act, batch = Tally(), DTYPE_BYTES[recipe.dtype], recipe.evaluation.batch_size
    ordered = sorted(prompts)
    for i in range(0, len(ordered), batch):
        part = ordered[i : i + batch]
        width = part[-1]
        rows = len(part) * width
        mem = rows * (3 * shape.n_neurons + 6 * shape.hidden) * act + len(part) * shape.n_heads * width * width * act
        t.add(
            flops=shape.n_layers * block_flops(shape, rows, width / 2) + 2 * shape.hidden * shape.vocab * len(part),
            rows=len(part),
            transient=mem + kv_bytes(shape, rows, act),
            down=len(part) * 16 + SESSION_BYTES,
        )
        t.requests += 1
    return priced(
        name, "screen", t, shape, rates, f"{len(prompts)} proxies in batches of {batch}", rates.batch_flops or rates.fwd_flops
    )


def shared_prefix_calls(t: Tally, shape: ModelShape, prompts: list[int], n_conditions: int, act: int) -> None:
    """intervention._shared_prefix_probs per proxy: the prompt minus its last token, then one query row per condition."""
    c = n_conditions
    for length in prompts:
        t.requests += 1
        t.add(flops=prefix_flops(shape, length - 1))
        mem = (
            kv_bytes(shape, length, act)
            + c * (row_bytes(shape, length + c, act))
            + c * shape.vocab * 4
            + c * shape.n_layers * shape.n_neurons * 4
        )
        flops = shape.n_layers * block_flops(shape, c, length + c) + 2 * shape.hidden * shape.vocab * c
        t.add(flops=flops, rows=c, transient=mem, down=c * 16 + SESSION_BYTES, up=c * shape.n_layers * shape.n_neurons * 4)


def batched_calls(t: Tally, shape: ModelShape, prompts: list[int], n_conditions: int, batch: int, act: int) -> None:
    """intervention.option_probs without a shared prefix (position "all"): batches of (condition, proxy) prompts."""
    rows = sorted(prompts * n_conditions)
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        tokens = len(part) * part[-1]
        mem = tokens * (3 * shape.n_neurons + 6 * shape.hidden) * act + kv_bytes(shape, tokens, act)
        t.add(
            flops=shape.n_layers * block_flops(shape, tokens, part[-1] / 2) + 2 * shape.hidden * shape.vocab * len(part),
            rows=len(part),
            transient=mem,
            down=len(part) * 16 + SESSION_BYTES,
            up=len(part) * shape.n_layers * shape.n_neurons * 4,
        )
        t.requests += 1


def condition_counts(recipe, n_total: int | None = None) -> dict[str, int]:
    """Distinct interventions per method, as nsneurons.conditions.plan dedups them (docs/plan.md);
    n_total: the model's FFN neurons, which a K given as a share needs."""
    s, ev = recipe.selection, recipe.evaluation
    k = resolve(s.k, n_total) if n_total is not None else s.k
    ratios = sorted(set(ev.ratios) | {1.0})
    counts = {}
    for m in s.methods:
        method = selection.METHODS[m]
        draws = s.random_draws if method.needs is None else 1
        if method.with_bad:
            goods = {selection.good_count(k, r) for r in conditions.method_ratios(m, ratios)}
            goods |= {k, 0} if ev.ablation else set()  # good-only = all K good, bad-only = all K bad
            counts[m] = 2 * len(goods) * draws
        else:  # ratio 1.0 = the good-only ablation; the "enabled" twin's ratio 1.0 is the same K good neurons
            twin = any(selection.ENABLED_VARIANTS.get(other) == m for other in s.methods)
            counts[m] = 0 if twin else 2 * draws
    return counts


def k_sweep_counts(recipe, n_layers: int, n_neurons: int) -> dict[str, int]:
    """Interventions per method of the K sweep (nsneurons.ksweep.plan), an upper bound (coinciding switch sets
    run once): draws x K values x 2 directions x the ratios of a cell (2 halves only under per_metric)."""
    from .budget import sweep_ks

    s, ks = recipe.selection, len(sweep_ks(recipe, n_layers, n_neurons))
    halves = 2 if recipe.evaluation.best_by == "per_metric" else 1
    counts = {}
    for m in s.methods:
        method = selection.METHODS[m]
        counts[m] = (s.random_draws if method.needs is None else 1) * ks * 2 * (halves if method.with_bad else 1)
    return counts


def intervention_stage(name: str, recipe, shape: ModelShape, rates: Rates, prompts: list[int], counts: dict) -> Stage:
    n = 1 + sum(counts.values())  # + the unmodified model ("none")
    t, ev = Tally(), recipe.evaluation
    shared = ev.position == "answer" and n > 1
    if shared:
        shared_prefix_calls(t, shape, prompts, n, DTYPE_BYTES[recipe.dtype])
    else:
        batched_calls(t, shape, prompts, n, ev.batch_size, DTYPE_BYTES[recipe.dtype])
    detail = f"{n} conditions x {len(prompts)} proxies: none 1, " + ", ".join(f"{m} {c}" for m, c in counts.items())
    rate = rates.fwd_flops if shared else rates.batch_flops or rates.fwd_flops
    return priced(name, "intervene", t, shape, rates, detail, rate)


def ig_targets(recipe) -> list[str]:
    """IG targets the methods need (pipeline: every target but activation and random; ace when none)."""
    needs = {selection.method_needs(m) for m in recipe.selection.methods}
    return sorted(t for t in needs if t is not None and t != "activation") or ["ace"]
