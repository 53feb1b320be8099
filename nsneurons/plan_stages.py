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
from .switch_tables import upload_bytes
from .targets import ANSWER_LOGITS_ONLY


def staircase_rows(chunk, n_layers: int, rows_per: int, staircase: bool) -> list[int]:
    """Query rows running each block: staircase rows join at their layer; flat rows run every block."""
    if not staircase:
        return [len(chunk) * rows_per] * n_layers
    return [1 + rows_per * sum(1 for j in chunk if j <= layer) for layer in range(chunk[0], n_layers)]


def auto_layers_per_pass(shape: ModelShape, n_attr: int, steps: int, prompt_len: int, budget: int, row_tokens: int = 1) -> int:
    """attribution's rule for layers_per_pass=None (attribution.layers_per_pass_for) on this shape."""
    from .attribution import layers_per_pass_for  # imported here: attribution brings nnsight in

    return layers_per_pass_for(
        vocab=shape.vocab,
        hidden=shape.hidden,
        n_layers=shape.n_layers,
        n_neurons=shape.n_neurons,
        n_attr=n_attr,
        steps=steps,
        prompt_len=prompt_len,
        budget=budget,
        row_tokens=row_tokens,
    )


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
    """One example's IG session (attribution.attribute_proxies): prefix once, own tokens, one pass per chunk.
    Options longer than one token (T = group.unit_tokens > 1): a shared-prefix row is a unit of T tokens, and
    a full-prompt row is four sequences, prompt + an option's tokens but its last; logits over the vocabulary."""
    rows_per, units = steps + (2 if midpoint else 1), group.unit_tokens
    cols = 4 if answer_only and units == 1 else shape.vocab
    session_down = SESSION_BYTES
    if path == "full":
        seqs = 1 if units == 1 else 4
        for length in group.lengths:
            width = length + max(group.options) - 1
            for chunk in chunks:
                for _ in chunk:  # one trace per layer: rows_per x seqs full sequences, logits at every position
                    tokens = rows_per * seqs * width
                    flops = shape.n_layers * block_flops(shape, tokens, width / 2) + 2 * shape.hidden * shape.vocab * tokens
                    mem = shape.n_layers * tokens * row_bytes(shape, width, act) + tokens * shape.vocab * 12
                    down = (2 * shape.n_neurons + rows_per + 5) * 4
                    t.add(flops=flops, rows=rows_per * seqs, backward=True, transient=mem, down=down)
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
        for chunk in chunks:  # query tokens per block: staircase rows of T tokens each
            rows = [r * units for r in staircase_rows(chunk, shape.n_layers, rows_per, path == "staircase")]
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
    longest, units = max(max(g.lengths) for g in groups), max(g.unit_tokens for g in groups)
    per_pass = layers_per_pass or auto_layers_per_pass(shape, len(layers), steps, longest, ig_budget(rates, shape), units)
    chunks = [layers[i : i + per_pass] for i in range(0, len(layers), per_pass)]
    t = Tally()
    # The output layer computes the 4 answer columns (a plain linear head) when every option is one token.
    answer_only = target in ANSWER_LOGITS_ONLY
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
        f"{'4 answer logits' if answer_only and units == 1 else 'full logits'}"
        + (f", options up to {units} tokens per unit" if units > 1 else "")
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


def shared_prefix_calls(
    t: Tally, shape: ModelShape, prompts: list[int], n_conditions: int, act: int, switched: int = 0, units: int = 1
) -> None:
    """intervention's shared-prefix route per proxy: the prompt minus its last token, then one query row (a unit
    of `units` tokens for multi-token options) per condition. Up: the sparse switch tables of `switched`
    (layer, neuron) pairs (nsneurons.switch_tables), the token and position ids and the query mask."""
    c, q = n_conditions, n_conditions * units
    for length in prompts:
        t.requests += 1
        t.add(flops=prefix_flops(shape, length - 1), up=(length - 1) * 8)
        up = upload_bytes(switched, c) + q * 16 + q * (length - 1 + q) * act
        mem = kv_bytes(shape, length, act) + q * row_bytes(shape, length + q, act) + q * shape.vocab * 4 + up
        flops = shape.n_layers * block_flops(shape, q, length + q) + 2 * shape.hidden * shape.vocab * q
        t.add(flops=flops, rows=q, transient=mem, down=c * 16 + SESSION_BYTES, up=up)


def batched_calls(
    t: Tally, shape: ModelShape, prompts: list[int], n_conditions: int, batch: int, act: int, switched: int = 0
) -> None:
    """intervention.option_probs without a shared prefix (position "all"): batches of (condition, proxy) prompts;
    up: the batch's ids, mask and positions (int64) and the sparse switch tables (at most `switched` pairs)."""
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
            up=tokens * 24 + upload_bytes(switched, len(part)),
        )
        t.requests += 1


def switched_pairs(recipe, n_layers: int, n_neurons: int, k: int) -> int:
    """An upper bound on the distinct (layer, neuron) pairs the run's conditions switch (the columns of the
    switch tables): per method and draw its K good neurons and, with bad ones, its K bad; a method's smaller
    sets (ratios, ablations, a K sweep's smaller K) are parts of these. At most every neuron."""
    s = recipe.selection
    pool = 0
    for m in s.methods:
        method = selection.METHODS[m]
        twin = not method.with_bad and any(selection.ENABLED_VARIANTS.get(other) == m for other in s.methods)
        pool += 0 if twin else (s.random_draws if method.needs is None else 1) * (2 if method.with_bad else 1) * k
    return min(pool, n_layers * n_neurons)


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


def intervention_stage(
    name: str, recipe, shape: ModelShape, rates: Rates, prompts: list[int], counts: dict, *, k: int, units: int = 1
) -> Stage:
    """Every condition of `counts` (+ none) on every evaluation proxy (intervention.option_probs): k, the
    largest K of the stage; units, T of the proxies' options (multi-token options take the shared prefix)."""
    n = 1 + sum(counts.values())  # + the unmodified model ("none")
    t, ev, act = Tally(), recipe.evaluation, DTYPE_BYTES[recipe.dtype]
    switched = switched_pairs(recipe, shape.n_layers, shape.n_neurons, k)
    shared = (ev.position == "answer" and n > 1) or units > 1
    if shared:
        shared_prefix_calls(t, shape, prompts, n, act, switched, units)
    else:
        batched_calls(t, shape, prompts, n, ev.batch_size, act, switched)
    detail = f"{n} conditions x {len(prompts)} proxies: none 1, " + ", ".join(f"{m} {c}" for m, c in counts.items())
    detail += f"; <= {switched:,} switched neurons uploaded per trace"
    rate = rates.fwd_flops if shared else rates.batch_flops or rates.fwd_flops
    return priced(name, "intervene", t, shape, rates, detail, rate)


def ig_targets(recipe) -> list[str]:
    """IG targets the runner scores for the recipe's methods (selection.ig_targets)."""
    return selection.ig_targets(recipe.selection.methods)
