"""The cost model behind `nsneurons plan`: passes, rows, FLOPs, memory and bytes of each stage.

Work is counted the way the runner does it (nsneurons.attribution, intervention, conditions,
evaluation_set, naica_apps, crosstask); FLOPs per token and block are 2 x the block's parameters
plus attention (4 x context x heads x head size); a pass with a backward costs BACKWARD_FACTOR
forwards (parameters are frozen: the backward computes activation gradients only). docs/plan.md
states every assumption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import conditions, selection
from .targets import ANSWER_LOGITS_ONLY

BACKWARD_FACTOR = 2.0  # forward + activation-only backward, in forwards
SESSION_BYTES = 2048  # pickling overhead of one saved NDIF result (estimate)
CONDITIONS_PER_CALL = 64  # crosstask evaluates its conditions in calls of this many (its chunk size)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1 << 30


@dataclass(frozen=True)
class ModelShape:
    """The sizes that set a run's cost, read from the model's config (no weights)."""

    model_type: str  # config model_type
    n_layers: int  # transformer blocks
    n_neurons: int  # FFN neurons per layer (MLP intermediate size)
    hidden: int  # hidden size
    vocab: int  # vocabulary size (columns of full logits)
    n_heads: int  # attention (query) heads
    n_kv_heads: int  # key/value heads (grouped-query attention)
    head_dim: int  # size of one head
    block_params: int  # parameters of one block (attention, MLP, norms)
    n_params: int  # all parameters (embeddings counted once when tied)
    source: str  # where the config was read

    def weight_bytes(self, dtype: str) -> int:
        return self.n_params * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class Rates:
    """How counted work becomes seconds and bytes: per-device defaults, or measured (`--measure`)."""

    backend: str  # "local" or "remote" (NDIF)
    device: str  # "cpu", "cuda" or "ndif": where the model runs
    dtype: str  # compute dtype
    ig_flops: float  # FLOP/s of IG passes (forward + backward), quiet machine
    fwd_flops: float  # FLOP/s of shared-prefix forwards (interventions: a prefix, then one query row per condition)
    trace_seconds: float  # fixed cost per trace (nnsight set-up; on NDIF the round trip)
    base_bytes: int  # client process memory before the model (python, torch, transformers, nnsight, xarray)
    batch_flops: float = 0.0  # FLOP/s of batches of full prompts (the screen); 0: fwd_flops
    transient_scale: float = 1.0  # measured / modelled activation memory of a pass (1: uncalibrated)
    download_per_s: float = 25e6  # NDIF bandwidth (down and up), bytes/s
    load_seconds_per_gb: float = 4.0  # loading weights (disk, conversion); NDIF: none
    load_peak_factor: float = 2.0  # resident bytes while loading, in weights (file pages + tensors on CPU)
    other_seconds: float = 25.0  # imports, data, selection, bootstrap, zarr writes, report and figures
    calibrated: bool = False  # True when measured by --measure
    notes: tuple[str, ...] = field(default=())  # how the rates were had

    def fixed_seconds(self, shape: ModelShape) -> float:
        return self.other_seconds

    def describe(self) -> str:
        how = "calibrated by --measure" if self.calibrated else "UNCALIBRATED per-device defaults (run with --measure)"
        return (
            f"{self.device} {self.dtype}: IG {self.ig_flops / 1e9:,.0f} GFLOP/s, interventions {self.fwd_flops / 1e9:,.0f} "
            f"GFLOP/s, screen {(self.batch_flops or self.fwd_flops) / 1e9:,.0f} GFLOP/s, "
            f"{self.trace_seconds * 1e3:.0f} ms per trace; {how}"
        )


def default_rates(backend: str, device: str, dtype: str) -> Rates:
    """Documented defaults (docs/plan.md): a CPU core, an H100-class GPU, or NDIF."""
    if backend == "remote":
        gpu = 45e12 if dtype != "float32" else 20e12
        return Rates(
            "remote",
            "ndif",
            dtype,
            gpu,
            gpu,
            1.5,
            int(0.6e9),
            load_seconds_per_gb=0.0,
            notes=("NDIF: server GPU rates are guesses; each trace pays a round trip and queueing",),
        )
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        gpu = 45e12 if dtype != "float32" else 20e12
        return Rates("local", "cuda", dtype, gpu, gpu, 0.02, int(0.6e9), load_seconds_per_gb=1.0)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_thread = {"bfloat16": 75e9}.get(dtype, 50e9)  # effective, with nnsight's overheads (docs/plan.md)
    rate = per_thread * threads * 0.7
    return Rates(
        "local",
        "cpu",
        dtype,
        rate,
        rate,
        0.02,
        int(0.6e9),
        notes=(f"CPU: {per_thread / 1e9:.0f} GFLOP/s per thread x {threads} threads x 0.7 parallel efficiency",),
    )


@dataclass(frozen=True)
class Stage:
    """One unit of a run's work, counted and priced."""

    name: str  # e.g. "sentiment: IG ace"
    kind: str  # load, screen, ig, intervene, naica-ig, naica-edit, crosstask
    passes: int  # forward passes (traces)
    backward: int  # of those, passes with a backward
    rows: int  # rows reaching the output layer: prompts (full passes) or query rows (shared-prefix passes)
    flops: float  # counted work
    peak_bytes: dict  # peak memory per device ("cpu", "cuda", "ndif")
    download_bytes: int  # saved tensors coming back from NDIF (0 locally)
    upload_bytes: int  # tensors sent with the traces to NDIF (0 locally)
    seconds: float  # estimated time
    detail: str = ""  # what was counted


@dataclass(frozen=True)
class Group:
    """Prompts the runner handles in one session (an example's 3 proxies, a query's prompts)."""

    lengths: tuple[int, ...]  # tokens of each prompt
    common: int  # leading tokens shared by every prompt minus its last token (computed once)


def group_of(token_ids) -> Group:
    heads = [list(ids[:-1]) for ids in token_ids]
    n = min(len(h) for h in heads)
    for h in heads[1:]:
        n = next((i for i in range(n) if h[i] != heads[0][i]), n)
    return Group(tuple(len(ids) for ids in token_ids), n)


# ---- FLOPs and memory of the pieces ------------------------------------------------------


def block_flops(shape: ModelShape, rows: float, ctx: float) -> float:
    """One block's forward for `rows` token rows, each attending over `ctx` positions."""
    return rows * (2 * shape.block_params + 4 * ctx * shape.n_heads * shape.head_dim)


def prefix_flops(shape: ModelShape, tokens: int, start: int = 0) -> float:
    """A cached-prefix forward of `tokens` tokens after `start` cached ones; logits of the last only."""
    return shape.n_layers * block_flops(shape, tokens, start + tokens / 2) + 2 * shape.hidden * shape.vocab


def kv_bytes(shape: ModelShape, tokens: int, act: int) -> int:
    return 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * tokens * act


def row_bytes(shape: ModelShape, ctx: float, act: int) -> float:
    """Activations one row keeps for the backward in one block (norms, q/k/v, attention, MLP)."""
    return (10 * shape.hidden + 4 * shape.n_neurons + 2 * shape.n_heads * ctx) * act


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
    """The memory budget attribution assumes: 8 GiB on NDIF, 4 GiB on CPU, half a free GPU (80 GB assumed)."""
    if rates.device == "ndif":
        return 8 * GIB
    if rates.device == "cuda":
        return int((80e9 - shape.weight_bytes(rates.dtype)) * 0.5)
    return 4 * GIB


@dataclass
class Tally:
    """Running sums of one stage."""

    passes: int = 0
    backward: int = 0
    rows: int = 0
    flops: float = 0.0
    transient: float = 0.0  # largest activation memory of one pass
    down: int = 0
    up: int = 0
    traces: int = 0
    requests: int = 0  # NDIF requests: a session (IG example, intervention proxy) or a lone trace (screen batch)

    def add(
        self,
        *,
        flops: float,
        rows: int = 0,
        backward: bool = False,
        transient: float = 0.0,
        down: int = 0,
        up: int = 0,
        passes: int = 1,
    ) -> None:
        self.passes += passes
        self.traces += passes
        self.backward += passes if backward else 0
        self.rows += rows
        self.flops += flops * (BACKWARD_FACTOR if backward else 1.0)
        self.transient = max(self.transient, transient)
        self.down += down
        self.up += up


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


def forward_stage(name: str, kind: str, shape: ModelShape, rates: Rates, t: Tally, detail: str) -> Stage:
    return priced(name, kind, t, shape, rates, detail, rates.fwd_flops)


def priced(name: str, kind: str, t: Tally, shape: ModelShape, rates: Rates, detail: str, rate: float) -> Stage:
    seconds = t.flops / rate + t.traces * rates.trace_seconds
    if rates.backend == "remote":  # one round trip per request, not per trace
        seconds += (t.requests - t.traces) * rates.trace_seconds + (t.down + t.up) / rates.download_per_s
    weights = shape.weight_bytes(rates.dtype)
    work = int(weights + t.transient * rates.transient_scale)
    peak = {"cpu": rates.base_bytes + work} if rates.device == "cpu" else {"cpu": rates.base_bytes, rates.device: work}
    remote = rates.backend == "remote"
    return Stage(
        name, kind, t.passes, t.backward, t.rows, t.flops, peak, t.down if remote else 0, t.up if remote else 0, seconds, detail
    )


def load_stage(recipe, shape: ModelShape, rates: Rates) -> Stage:
    """Loading the weights: on CPU the file's pages and the model's tensors are both resident for a while."""
    weights = shape.weight_bytes(rates.dtype)
    if rates.device == "ndif":
        return Stage("load model (skeleton; NDIF holds the weights)", "load", 0, 0, 0, 0.0, {"cpu": rates.base_bytes}, 0, 0, 2.0)
    if rates.device == "cpu":
        peak = {"cpu": rates.base_bytes + int(rates.load_peak_factor * weights)}
    else:
        peak = {"cpu": rates.base_bytes + weights, rates.device: weights}
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


def condition_counts(recipe) -> dict[str, int]:
    """Distinct interventions per method, as nsneurons.conditions.plan dedups them (docs/plan.md)."""
    s, ev = recipe.selection, recipe.evaluation
    ratios = sorted(set(ev.ratios) | {1.0})
    counts = {}
    for m in s.methods:
        method = selection.METHODS[m]
        draws = s.random_draws if method.needs is None else 1
        if method.with_bad:
            goods = {selection.good_count(s.k, r) for r in conditions.method_ratios(m, ratios)}
            goods |= {s.k, 0} if ev.ablation else set()  # good-only = all K good, bad-only = all K bad
            counts[m] = 2 * len(goods) * draws
        else:  # ratio 1.0 = the good-only ablation; the "enabled" twin's ratio 1.0 is the same K good neurons
            twin = any(selection.ENABLED_VARIANTS.get(other) == m for other in s.methods)
            counts[m] = 0 if twin else 2 * draws
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
    return sorted({selection.method_needs(m) for m in recipe.selection.methods} - {None, "activation"}) or ["ace"]
