"""The cost model behind `nsneurons plan`: model shape, rates, stages, and the FLOPs, memory and bytes
of the pieces every stage is made of (nsneurons.plan_stages counts each stage from them).

FLOPs per token and block are 2 x the block's parameters
plus attention (4 x context x heads x head size); a pass with a backward costs BACKWARD_FACTOR
forwards (parameters are frozen: the backward computes activation gradients only). docs/plan.md
states every assumption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

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
    gpus: int = 1  # GPUs a device_map splits the model over: their memory summed, the weights spread evenly
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
    rows: int  # rows reaching the output layer: prompts (full passes) or query tokens (shared-prefix passes: T per unit)
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
    options: tuple[int, ...] = (1, 1, 1, 1)  # tokens of each option (the proxy with the longest unit's)

    @property
    def unit_tokens(self) -> int:
        """T, the tokens of one shared-prefix row: the last prompt token and every option's tokens but its last."""
        return 1 + sum(n - 1 for n in self.options)


def group_of(token_ids, options=None) -> Group:
    """A session's prompts (token ids) and, optionally, each prompt's options' token counts."""
    heads = [list(ids[:-1]) for ids in token_ids]
    n = min(len(h) for h in heads)
    for h in heads[1:]:
        n = next((i for i in range(n) if h[i] != heads[0][i]), n)
    longest = max(options or [(1, 1, 1, 1)], key=lambda o: sum(o))
    return Group(tuple(len(ids) for ids in token_ids), n, tuple(longest))


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


def gpu_key(rates: Rates) -> str:
    """The peak-memory key of the model's device: "cuda", or "2 x cuda" (each of 2 GPUs) for a split model."""
    return rates.device if rates.gpus == 1 else f"{rates.gpus} x {rates.device}"


def forward_stage(name: str, kind: str, shape: ModelShape, rates: Rates, t: Tally, detail: str) -> Stage:
    return priced(name, kind, t, shape, rates, detail, rates.fwd_flops)


def priced(name: str, kind: str, t: Tally, shape: ModelShape, rates: Rates, detail: str, rate: float) -> Stage:
    seconds = t.flops / rate + t.traces * rates.trace_seconds
    if rates.backend == "remote":  # one round trip per request, not per trace
        seconds += (t.requests - t.traces) * rates.trace_seconds + (t.down + t.up) / rates.download_per_s
    weights = shape.weight_bytes(rates.dtype)
    work = int(weights + t.transient * rates.transient_scale)
    peak = (
        {"cpu": rates.base_bytes + work}
        if rates.device == "cpu"
        else {"cpu": rates.base_bytes, gpu_key(rates): work // rates.gpus}
    )
    remote = rates.backend == "remote"
    return Stage(
        name, kind, t.passes, t.backward, t.rows, t.flops, peak, t.down if remote else 0, t.up if remote else 0, seconds, detail
    )
