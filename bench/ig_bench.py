#!/usr/bin/env python
"""Integrated-gradients benchmark: paper-style plain PyTorch against nsneurons' `attribute_proxy`.

One run, one model, one prompt, one set of settings (target "ace", m steps, right Riemann):

  (a) paper      plain PyTorch as the seed paper and its peers (QRNCA, Knowledge Neurons) compute it:
                 per layer, a batch of m copies of the full prompt, the last position's FFN
                 activation scaled by alpha_k at that layer (forward pre-hook on down_proj), one
                 backward. Full-vocabulary logits at every position, as the peers' code does.
  (b) nsneurons  `attribute_proxy(model, proxy, AttributionConfig())`, exactly as a user calls it
                 (default config: path="staircase" -- a shared prefix, each layer's m + 1 rows join
                 at that layer's block -- the four answer-token logits only for "ace", layers per
                 pass chosen by the memory budget).
  (b2-b4)    nsneurons variants: b2 path="prefix" (every row from the embedding on, the previous
                 default); b3 (b) with an attention function for the query rows that computes each
                 row against the prefix keys and its own key only (the masked n x n block is skipped);
                 b4 `attribute_proxies` on an example's three proxies (options in three orders) in
                 one session, as `score_proxies` runs them: their common prefix once; time / 3.
  (c1-c5)    faster plain-PyTorch forms (no nnsight), to locate the limit:
                 c1 shared prefix: the prompt minus its last token runs once with a KV cache, then
                    all L*m scaled copies of the last token are query tokens of ONE sequence after
                    that prefix (4-D mask: each sees the prefix and itself), one backward;
                 c2 c1 + prefix logits at its last position only + answer-token logits only ("ace");
                 c3 c1 + prefix logits at one position + staircase rows; c4 c2 + c3;
                 c5 c4 + prefix+self attention (each query row against the prefix keys and its own).

Reported per strategy: seconds per proxy question for all layers (median of repeats after a
warm-up), speed-up over (a), peak memory (CPU: peak RSS of this process during the strategy,
VmHWM after resetting it through /proc/self/clear_refs; GPU: torch.cuda.max_memory_allocated),
max relative difference from (a) (max |x - a| / max |a| over all neurons), and the overlap of the
top-100 good (highest IG) and bottom-100 bad (lowest IG) neurons with (a)'s.

Modes:
  --mode cpu   the demo model (SmolLM2-135M-Instruct, float32) or `--random` a random-init model of
               its shape; prompt ~256 tokens; m = 16.
  --mode gpu   random-init LLaMA-2-7B shape (hidden 4096, intermediate 11008, 32 layers, 32 heads,
               vocab 32000) in bfloat16 on CUDA, prompt ~300 tokens, m = 16, plus a precision section:
               float32 (a) vs float32 (b), TF32, and the bf16 ranking's overlap with float32.
  --mode ci    a tiny random LLaMA (seconds); used by tests/test_bench.py.

Usage: python bench/ig_bench.py --mode cpu [--random] [--json out.json] [--paper-layers 0,10,20]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import gc
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from nsneurons import targets as _targets  # noqa: E402
from nsneurons.answers import answer_token_ids  # noqa: E402
from nsneurons.attribution import AttributionConfig, attribute_proxies, attribute_proxy  # noqa: E402
from nsneurons.models import wrap  # noqa: E402
from nsneurons.tasks.base import Proxy  # noqa: E402

TOP_K = 100
COLUMNS = [
    "strategy",
    "s / question (all layers, median)",
    "min s",
    "runs",
    "speed-up vs (a)",
    "peak memory",
    "max rel. diff vs (a)",
    "top-100 good overlap",
    "top-100 bad overlap",
]

OPTIONS = ("positive", "negative", "neutral", "not sure")
_REVIEW = [
    "this movie was good in the first part, but the second half of the film was boring and it was too long.",
    "the art of the film is great, and the actors are good, but the story is not sure of what it is.",
    "a person in the movie is an expert in art, and this is a good idea that the film does not use.",
    "the location was great, the building on the river was a good place for the event in the film.",
    "it was not a bad film, it was not a great film, it was a film, and the review is neutral on that.",
    "the music is good, the product placement is bad, and the organization of the scenes is boring.",
]


def build_prompt(tokenizer, target_tokens: int) -> str:
    """A QATT-style sentiment question whose prompt has about `target_tokens` tokens, ending "Answer:"."""
    head = (
        "You are an expert in sentiment analysis. Read the question and the four options, then answer "
        "with the letter (A, B, C or D) of the single correct option.\nQuestion: What is the sentiment of this review?\n"
        "Review: "
    )
    tail = "\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"
    body: list[str] = []
    i = 0
    while True:
        prompt = head + " ".join(body) + tail
        n = len(tokenizer(prompt)["input_ids"])
        if n >= target_tokens or i > 10_000:
            return prompt
        body.append(_REVIEW[i % len(_REVIEW)])
        i += 1
        if len(tokenizer(head + " ".join(body) + tail)["input_ids"]) > target_tokens:
            # Fill the last stretch word by word so the prompt lands close to the target.
            words = body.pop().split()
            for w in words:
                body.append(w)
                if len(tokenizer(head + " ".join(body) + tail)["input_ids"]) >= target_tokens:
                    break


def example_proxies(prompt: str, correct: int) -> list[Proxy]:
    """The prompt as an example's three QATT proxies: the same stem, the options in three orders
    (the first is the prompt itself)."""
    stem, _ = prompt.split("\nOptions:\n")
    proxies = []
    for k, order in enumerate([(0, 1, 2, 3), (2, 0, 3, 1), (3, 2, 1, 0)]):
        options = tuple(OPTIONS[i] for i in order)
        lines = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", options))
        proxies.append(Proxy("bench", k, f"{stem}\nOptions:\n{lines}\nAnswer:", options, order.index(correct), "sentiment"))
    assert proxies[0].prompt == prompt
    return proxies


# ----------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory during a block: CUDA max_memory_allocated, or this process's peak RSS (VmHWM)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None
        self.base_bytes: int | None = None
        self.how = ""

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_bytes = torch.cuda.memory_allocated(self.device)
            self.how = "torch.cuda.max_memory_allocated"
            return self
        try:  # hand freed heap back to the OS, then reset the high-water mark to the current RSS
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.how = "peak RSS (VmHWM, reset per strategy)"
        except OSError:
            self.how = "peak RSS of the whole process so far (ru_maxrss; could not reset)"
        self.base_bytes = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak_bytes = self._status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- strategies


@dataclass
class Problem:
    """Everything the plain-PyTorch strategies need, derived from the same wrapped model and prompt."""

    hf: object
    down_projs: list
    ids: torch.Tensor  # [1, T] on the model's device
    answer_ids: torch.Tensor  # [4] on the model's device
    correct: int
    target: str
    steps: int

    @property
    def alphas(self) -> torch.Tensor:  # right Riemann, the paper's Eq. 1 and nsneurons' default
        return torch.arange(1, self.steps + 1, dtype=torch.float64) / self.steps


def paper_style(pb: Problem, layers, batch: int | None = None, last_logits_only: bool = False) -> torch.Tensor:
    """(a) Per layer: m full-prompt copies, last position scaled at that layer, backward. Returns IG [layers, N]."""
    target_fn = _targets.get_target(pb.target)
    batch = batch or pb.steps
    out = []
    for layer in layers:
        module = pb.down_projs[layer]
        grad_sum, original = None, None
        for start in range(0, pb.steps, batch):
            alphas = pb.alphas[start : start + batch]
            captured = {}

            def scale_last(mod, args, alphas=alphas, captured=captured):
                x = args[0].clone()
                orig = x[0, -1].detach().clone()
                scaled = (orig[None] * alphas.to(orig.dtype).to(orig.device)[:, None]).requires_grad_(True)
                captured["orig"], captured["scaled"] = orig, scaled
                x[:, -1] = scaled
                return (x,) + tuple(args[1:])

            handle = module.register_forward_pre_hook(scale_last)
            try:
                kw = {"logits_to_keep": 1} if last_logits_only else {}
                logits = pb.hf(pb.ids.expand(len(alphas), -1), **kw).logits[:, -1]
            finally:
                handle.remove()
            f = target_fn(logits, pb.answer_ids, pb.correct)
            (g,) = torch.autograd.grad(f.sum(), [captured["scaled"]])
            g = g.float().sum(0)
            grad_sum = g if grad_sum is None else grad_sum + g
            original = captured["orig"]
            del logits, f, captured
        out.append((original.float() * grad_sum / pb.steps).cpu())
    return torch.stack(out)


def _prefix_kv(pb: Problem, last_logits_only: bool):
    kw = {"logits_to_keep": 1} if last_logits_only else {}
    with torch.no_grad():
        res = pb.hf(pb.ids[:, :-1], use_cache=True, **kw)
    cache = getattr(res, "cache", None) or res.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def cache_kw(module, cache) -> dict:
    """The KV cache as `module.forward` takes it: `cache=` (transformers 5.24 here, where
    `past_key_values` still works but is deprecated until 5.40) or `past_key_values=` (earlier 5.x,
    e.g. the GPU image's 5.17, where `cache=` fell into **kwargs and broke (c1)'s attention)."""
    params = inspect.signature(module.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def _query_mask(n: int, prefix_len: int, dtype, device) -> torch.Tensor:
    mask = torch.full((1, 1, n, prefix_len + n), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask[..., :prefix_len] = 0
    idx = torch.arange(n, device=device)
    mask[0, 0, idx, prefix_len + idx] = 0
    return mask


def shared_prefix(pb: Problem, layers) -> torch.Tensor:
    """(c1) Prefix KV cache once; all len(layers)*m scaled last tokens as one sequence; one backward."""
    from transformers import DynamicCache

    target_fn = _targets.get_target(pb.target)
    m = pb.steps
    kv = _prefix_kv(pb, last_logits_only=False)
    prefix_len = pb.ids.shape[1] - 1
    n = len(layers) * m
    dtype = next(pb.hf.parameters()).dtype
    device = pb.ids.device
    scaled, originals, handles = [], [], []
    for g, layer in enumerate(layers):

        def hook(mod, args, g=g):
            x = args[0].clone()
            orig = x[0, g * m].detach().clone()
            s = (orig[None] * pb.alphas.to(orig.dtype).to(orig.device)[:, None]).requires_grad_(True)
            x[0, g * m : (g + 1) * m] = s
            scaled.append(s)
            originals.append(orig)
            return (x,) + tuple(args[1:])

        handles.append(pb.down_projs[layer].register_forward_pre_hook(hook))
    try:
        logits = pb.hf(
            pb.ids[:, -1:].expand(1, n),
            **cache_kw(pb.hf, DynamicCache(ddp_cache_data=kv)),
            position_ids=torch.full((1, n), prefix_len, device=device),
            attention_mask=_query_mask(n, prefix_len, dtype, device),
        ).logits[0]
    finally:
        for h in handles:
            h.remove()
    f = target_fn(logits, pb.answer_ids, pb.correct)
    grads = torch.autograd.grad(f.sum(), scaled)
    return torch.stack([(o.float() * g.float().sum(0) / m).cpu() for o, g in zip(originals, grads)])


def prefix_diag_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Attention for the shared-prefix query rows only: each of the n query rows sees the P prefix
    keys and its own key (the last n keys), never the other rows, so the n x n block of the masked
    form (all masked but its diagonal) is never computed. The mask argument is ignored: this function
    is correct only where the mask has that structure. Grouped-query heads share their key/value head."""
    b, h, n, d = query.shape
    if key.shape[2] == n:  # no cached prefix (the prefix trace itself): ordinary causal attention
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    out_dtype = query.dtype
    if out_dtype != torch.float32:  # accumulate in float32, as the fused kernels do
        query, key, value = query.float(), key.float(), value.float()
    hkv = key.shape[1]
    g = h // hkv
    p = key.shape[2] - n
    scaling = scaling if scaling is not None else d**-0.5
    q = query.reshape(b, hkv, g * n, d)
    kp, ks = key[:, :, :p], key[:, :, p:]
    vp, vs = value[:, :, :p], value[:, :, p:]
    s_prefix = (q @ kp.transpose(-1, -2)) * scaling  # [b, hkv, g*n, p]
    s_self = (q.view(b, hkv, g, n, d) * ks[:, :, None]).sum(-1).reshape(b, hkv, g * n, 1) * scaling
    w = torch.softmax(torch.cat([s_prefix, s_self], dim=-1), dim=-1)
    out = w[..., :p] @ vp + (w[..., p:].view(b, hkv, g, n, 1) * vs[:, :, None]).reshape(b, hkv, g * n, d)
    return out.view(b, h, n, d).transpose(1, 2).contiguous().to(out_dtype), None


_PREFIX_DIAG = "nsneurons_prefix_diag"


def _register_prefix_diag() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_PREFIX_DIAG, prefix_diag_attention)


class attention_impl:
    """Context manager: run `hf`'s attention with implementation `name`, restore the old one after."""

    def __init__(self, hf, name: str | None):
        self.hf, self.name, self.old = hf, name, None

    def __enter__(self):
        if self.name:
            _register_prefix_diag()
            self.old = self.hf.config._attn_implementation
            self.hf.config._attn_implementation = self.name
        return self

    def __exit__(self, *exc):
        if self.name:
            self.hf.config._attn_implementation = self.old
        return False


def shared_prefix_manual(
    pb: Problem, layers, staircase: bool = True, answer_logits: bool = True, attn: str | None = None
) -> torch.Tensor:
    """(c2) c1 with the decoder blocks called one by one, plus: prefix logits at one position only,
    `answer_logits` (the four answer-token logits only; exact for "ace" alone) and `staircase`
    (group j's rows join at layer j: below it they equal the unscaled row 0, so no copies run there).
    `attn`: an attention implementation for the query rows (prefix_diag_attention: no n x n block)."""
    from transformers import DynamicCache

    if answer_logits and pb.target != "ace":
        raise ValueError("answer_logits computes the four answer logits only, which is exact for the 'ace' target alone")
    target_fn = _targets.get_target(pb.target)
    m = pb.steps
    hf = pb.hf
    base = hf.model
    cache = DynamicCache(ddp_cache_data=_prefix_kv(pb, last_logits_only=True))
    prefix_len = pb.ids.shape[1] - 1
    dtype = next(hf.parameters()).dtype
    device = pb.ids.device
    group = {layer: g for g, layer in enumerate(layers)}
    hidden = base.embed_tokens(pb.ids[:, -1:])  # [1, 1, H]: row 0, never scaled
    if not staircase:
        hidden = hidden.expand(1, 1 + len(layers) * m, -1)
    pos1 = torch.full((1, 1), prefix_len, device=device)
    cos, sin = base.rotary_emb(hidden, position_ids=pos1)
    scaled, originals = [], []
    for li, block in enumerate(base.layers):
        handle = None
        if li in group:
            g = group[li]
            if staircase:
                hidden = torch.cat([hidden, hidden[:, :1].expand(1, m, -1)], dim=1)

            def hook(mod, args, g=g):
                x = args[0]
                orig = x[0, 0].detach()
                s = (orig[None] * pb.alphas.to(orig.dtype).to(orig.device)[:, None]).requires_grad_(True)
                scaled.append(s)
                originals.append(orig)
                lo, hi = 1 + g * m, 1 + (g + 1) * m
                return (torch.cat([x[:, :lo], s[None], x[:, hi:]], dim=1),) + tuple(args[1:])

            handle = pb.down_projs[li].register_forward_pre_hook(hook)
        n = hidden.shape[1]
        try:
            with attention_impl(hf, attn):
                hidden = block(
                    hidden,
                    attention_mask=None if attn else _query_mask(n, prefix_len, dtype, device),
                    position_ids=pos1.expand(1, n),
                    **cache_kw(block, cache),
                    use_cache=True,
                    position_embeddings=(cos.expand(1, n, -1), sin.expand(1, n, -1)),
                )
        finally:
            if handle is not None:
                handle.remove()
        if isinstance(hidden, tuple):
            hidden = hidden[0]
    hidden = base.norm(hidden[0, 1:])  # [len(layers) * m, H]
    if answer_logits:
        f = torch.softmax((hidden @ hf.lm_head.weight[pb.answer_ids].T).float(), -1)[:, pb.correct]
    else:
        f = target_fn(hf.lm_head(hidden), pb.answer_ids, pb.correct)
    grads = torch.autograd.grad(f.sum(), scaled)
    return torch.stack([(o.float() * g.float().sum(0) / m).cpu() for o, g in zip(originals, grads)])


# ----------------------------------------------------------------------------- comparison


def max_rel_diff(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(x - ref).max() / max(np.abs(ref).max(), 1e-30))


def top_overlap(x: np.ndarray, ref: np.ndarray, k: int = TOP_K) -> tuple[float, float]:
    """(good, bad): fraction of ref's top-k highest / bottom-k lowest IG neurons that x also ranks there."""
    xf, rf = x.ravel(), ref.ravel()
    k = min(k, rf.size)
    order_x, order_r = np.argsort(xf, kind="stable"), np.argsort(rf, kind="stable")
    good = len(set(order_x[-k:]) & set(order_r[-k:])) / k
    bad = len(set(order_x[:k]) & set(order_r[:k])) / k
    return good, bad


@dataclass
class Row:
    name: str
    seconds: list[float]  # per timed repeat, for the layers timed
    seconds_per_question: float  # median, scaled to all layers where only a subset was timed
    peak_bytes: int | None
    memory_how: str
    ig: np.ndarray = field(repr=False)  # [compared layers, N]
    note: str = ""
    extrapolated_from: int | None = None  # number of layers actually timed, if fewer than all
    others_cpu: list[float] = field(default_factory=list)  # share of the machine's CPU other processes used, per timing
    retries: int = 0
    max_rel_diff: float | None = None
    good_overlap: float | None = None
    bad_overlap: float | None = None
    speedup: float | None = None

    @property
    def min_per_question(self) -> float:
        return min(self.seconds) * self.seconds_per_question / statistics.median(self.seconds)


# ----------------------------------------------------------------------------- timing on a shared machine


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def _own_jiffies() -> int:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


@dataclass
class Gate:
    """Timing on a machine other people use: wait for a quiet moment before each timing, measure how
    much CPU other processes took during it, and retry a timing they disturbed (keep the fastest try).
    Off (no waiting, no retries) on CUDA and when /proc is missing."""

    enabled: bool = True
    threshold: float = 0.10  # others' share of the machine's CPU above which a timing counts as disturbed
    wait_s: float = 60.0  # longest wait for a quiet moment before a timing
    tries: int = 3  # timings per measurement at most
    log: object = print

    def others_share(self, start, end, own_start, own_end) -> float:
        busy = end[0] - start[0]
        total = max(end[1] - start[1], 1)
        return max(0.0, (busy - (own_end - own_start)) / total)

    def wait_quiet(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            m0, o0 = _machine_jiffies(), _own_jiffies()
            time.sleep(0.5)
            if self.others_share(m0, _machine_jiffies(), o0, _own_jiffies()) < self.threshold / 2:
                return

    def time(self, fn, device) -> tuple[float, object, float, int]:
        """(seconds, fn's value, others' CPU share, tries) of the best of up to `tries` timings."""
        best = None
        for attempt in range(1, (self.tries if self.enabled else 1) + 1):  # noqa: B007 - read after the loop
            if self.enabled:
                self.wait_quiet()
            _sync(device)
            m0, o0 = (_machine_jiffies(), _own_jiffies()) if self.enabled else (None, None)
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            dt = time.perf_counter() - t0
            share = self.others_share(m0, _machine_jiffies(), o0, _own_jiffies()) if self.enabled else 0.0
            if best is None or dt < best[0]:
                best = (dt, out, share)
            if share <= self.threshold:
                break
            self.log(f"    disturbed: other processes used {share:.0%} of the CPU during a {dt:.2f} s timing")
        return best[0], best[1], best[2], attempt


def run_strategy(name: str, fn, device, repeats: int, gate: Gate, warmup=None, note: str = "", log=print) -> Row:
    """Warm up under the memory meter (fn, or `warmup` if given), then time `repeats` calls of fn.

    Peak memory is read on the warm-up so that resetting it (malloc_trim) costs no timed run."""
    mem = PeakMemory(device)
    with mem:
        (warmup or fn)()
    times, shares, retries, ig = [], [], 0, None
    for r in range(repeats):
        dt, out, share, tries = gate.time(fn, device)
        times.append(dt)
        shares.append(share)
        retries += tries - 1
        ig = out if ig is None else ig
        log(f"  {name}: run {r + 1}/{repeats}: {dt:.3f} s (others used {share:.0%} of the CPU)")
    return Row(
        name,
        times,
        statistics.median(times),
        mem.peak_bytes,
        mem.how,
        np.asarray(ig, dtype=np.float32),
        note,
        others_cpu=shares,
        retries=retries,
    )


def run_paper(
    name: str, pb, layers, all_layers, device, repeats: int, gate: Gate, batch: int, last_logits: bool, log=print
) -> Row:
    """(a) timed layer by layer (each layer its own gated timing), summed, scaled to all layers if a subset.

    Warm-up and peak memory: the lowest layer alone, whose graph is the largest of the per-layer passes."""
    mem = PeakMemory(device)
    with mem:
        paper_style(pb, [min(layers)], batch, last_logits)
    totals, shares, retries, ig, per_layer = [], [], 0, None, []
    for r in range(repeats):
        outs, times, layer_shares = [], [], []
        for layer in layers:
            dt, out, share, tries = gate.time(lambda layer=layer: paper_style(pb, [layer], batch, last_logits), device)
            outs.append(out)
            times.append(dt)
            layer_shares.append(share)
            retries += tries - 1
            log(f"  {name}: run {r + 1}/{repeats}, layer {layer}: {dt:.2f} s (others used {share:.0%} of the CPU)")
        # A second chance, at the end, for layers that other processes disturbed in every try.
        for i, layer in enumerate(layers):
            if gate.enabled and layer_shares[i] > gate.threshold:
                dt, _, share, tries = gate.time(lambda layer=layer: paper_style(pb, [layer], batch, last_logits), device)
                retries += tries
                log(f"  {name}: run {r + 1}/{repeats}, layer {layer} again: {dt:.2f} s (others used {share:.0%} of the CPU)")
                if dt < times[i]:
                    times[i], layer_shares[i] = dt, share
        totals.append(sum(times))
        shares += layer_shares
        if r == 0:
            per_layer = times
        ig = torch.cat(outs) if ig is None else ig
    subset = len(layers) < len(all_layers)
    note = f"batch {batch}" + (", last-position logits only" if last_logits else ", full logits at all positions")
    row = Row(
        name,
        totals,
        statistics.median(totals) * len(all_layers) / len(layers),
        mem.peak_bytes,
        mem.how,
        np.asarray(ig, dtype=np.float32),
        note,
        len(layers) if subset else None,
        shares,
        retries,
    )
    row.per_layer_seconds = per_layer
    return row


def compare(rows: list[Row], ref: Row, ref_layers, all_layers) -> None:
    idx = [all_layers.index(layer) for layer in ref_layers]
    for row in rows:
        x = row.ig if row.ig.shape[0] == len(ref_layers) else row.ig[idx]
        row.max_rel_diff = max_rel_diff(x, ref.ig)
        row.good_overlap, row.bad_overlap = top_overlap(x, ref.ig)
        row.speedup = ref.seconds_per_question / row.seconds_per_question


def _gib(b):
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        secs = f"{r.seconds_per_question:.3f}"
        if r.extrapolated_from:
            secs += f" (extrapolated from {r.extrapolated_from} layers)"
        fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
        lines.append(
            "| "
            + " | ".join(
                [
                    r.name,
                    secs,
                    f"{r.min_per_question:.3f}",
                    str(len(r.seconds)),
                    fmt(r.speedup, "{:.1f}x"),
                    _gib(r.peak_bytes),
                    fmt(r.max_rel_diff, "{:.2e}"),
                    fmt(r.good_overlap, "{:.0%}"),
                    fmt(r.bad_overlap, "{:.0%}"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- models

LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


# The same architecture, small enough that bfloat16 on a CPU (slow there) runs the gpu-mode flow in
# seconds: --shrink here and in bench/gpu_check.py. The vocabulary still covers the offline
# tokenizer's ids (< 600).
LLAMA2_SHRUNK = dict(
    LLAMA2_7B,
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=640,
)


def random_llama(config_kwargs: dict, dtype, device: str, seed: int, scale: float = 1.0):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(**config_kwargs)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    if scale != 1.0:
        with torch.no_grad():
            for p in hf.parameters():
                if p.dim() >= 2:
                    p.mul_(scale)
    return hf.eval()


def build(args):
    """(hf model, tokenizer, description) for the mode."""
    if args.mode == "ci":
        from fixtures_models import llama_style_tokenizer, tiny_hf_model

        tok = llama_style_tokenizer()
        hf = tiny_hf_model("llama", layers=args.ci_layers, vocab_size=len(tok), seed=args.seed)
        return hf, tok, f"tiny random LLaMA ({args.ci_layers} layers, hidden 64, intermediate 128; weights x3), float32"
    if args.mode == "cpu":
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from nsneurons.demo_model import ensure_demo_model_dir

        folder = ensure_demo_model_dir()
        tok = AutoTokenizer.from_pretrained(str(folder))
        if args.random:
            torch.manual_seed(args.seed)
            cfg = AutoConfig.from_pretrained(str(folder))
            hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
            return (
                hf,
                tok,
                "random-init model of SmolLM2-135M's shape (30 layers, hidden 576, intermediate 1536, 9/3 heads, vocab 49152), float32",
            )
        hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        return hf, tok, "SmolLM2-135M-Instruct (demo model, Q4_1 GGUF dequantized), float32"
    # gpu
    from fixtures_models import llama_style_tokenizer

    tok = llama_style_tokenizer()  # offline; its ids (< 600) are valid in a 32000-word vocabulary
    if args.shrink:  # the gpu-mode flow on a small LLaMA-2-style model, on CUDA if there is one, else CPU
        device = "cuda" if torch.cuda.is_available() else "cpu"
        hf = random_llama(LLAMA2_SHRUNK, torch.bfloat16, device, args.seed)
        return (
            hf,
            tok,
            f"--shrink: random-init LLaMA-2-style model (4 layers, hidden 64, intermediate 172, vocab 640) on {device}, bfloat16",
        )
    if not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA device (torch sees none); --shrink runs its flow on a small model on CPU")
    hf = random_llama(LLAMA2_7B, torch.bfloat16, "cuda", args.seed)
    return hf, tok, "random-init LLaMA-2-7B shape (32 layers, hidden 4096, intermediate 11008, 32 heads, vocab 32000), bfloat16"


# ----------------------------------------------------------------------------- main


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except OSError:
        info["cpu"] = platform.processor()
    info["loadavg_1m"] = os.getloadavg()[0]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import nnsight
        import transformers

        info["transformers"], info["nnsight"] = transformers.__version__, nnsight.__version__
    except ImportError:
        pass
    return info


MODE_DEFAULTS = {
    "ci": dict(prompt_tokens=48, steps=16, repeats=2, repeats_paper=1),
    "cpu": dict(prompt_tokens=256, steps=16, repeats=3, repeats_paper=1),
    "gpu": dict(prompt_tokens=300, steps=16, repeats=5, repeats_paper=3),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=sorted(MODE_DEFAULTS), required=True)
    p.add_argument("--random", action="store_true", help="cpu mode: a random-init model of the demo model's shape")
    p.add_argument("--prompt-tokens", type=int, help="prompt length in tokens (cpu 256, gpu 300, ci 48)")
    p.add_argument("--steps", type=int, help="m, the number of alpha steps (16)")
    p.add_argument("--repeats", type=int, help="timed runs of (b) and (c) after one warm-up (median)")
    p.add_argument("--repeats-paper", type=int, help="timed runs of (a) after a one-layer warm-up")
    p.add_argument(
        "--paper-layers",
        help="time (a) on these layers only (comma list, or 'every:K') and "
        "extrapolate linearly to all layers; comparisons then use these layers",
    )
    p.add_argument("--paper-batch", type=int, help="(a): rows per forward (default m; halved on CUDA OOM)")
    p.add_argument(
        "--paper-last-logits",
        action="store_true",
        help="(a): logits at the last position only (kinder to (a) than the peers' code)",
    )
    p.add_argument("--no-limit", action="store_true", help="skip the (c) strategies")
    p.add_argument("--precision", action="store_true", help="add the precision section (default in gpu mode)")
    p.add_argument(
        "--gate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for a quiet CPU before each timing and retry timings other processes disturbed "
        "(default: on in cpu mode, off in ci and gpu modes)",
    )
    p.add_argument(
        "--gate-threshold",
        type=float,
        default=0.10,
        help="others' share of the machine's CPU that marks a timing as disturbed (0.10)",
    )
    p.add_argument("--gate-wait", type=float, default=60.0, help="longest wait for a quiet moment, seconds (60)")
    p.add_argument("--gate-tries", type=int, default=3, help="timings per measurement at most; the fastest is kept (3)")
    p.add_argument(
        "--shrink",
        action="store_true",
        help="gpu mode: a 4-layer LLaMA-2-style model instead of 7B (checks the flow; runs on CPU without CUDA)",
    )
    p.add_argument("--ci-layers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--correct", type=int, default=1, help="index of the correct option (0..3)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for k, v in MODE_DEFAULTS[args.mode].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.mode == "gpu":
        args.precision = True
    if args.gate is None:
        args.gate = args.mode == "cpu"
    return args


def _paper_layers(spec: str | None, n_layers: int) -> list[int]:
    if not spec:
        return list(range(n_layers))
    if spec.startswith("every:"):
        k = int(spec.split(":", 1)[1])
        return list(range(0, n_layers, k))
    return [int(x) for x in spec.split(",")]


def _paper_row(pb, layers, all_layers, args, device, name, repeats, gate, log):
    """(a), robust to CUDA OOM (halves the batch), timed on `layers` and extrapolated to all layers."""
    batch = args.paper_batch or pb.steps
    while True:
        try:
            return run_paper(name, pb, layers, all_layers, device, repeats, gate, batch, args.paper_last_logits, log=log)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch = max(1, batch // 2)
            gc.collect()
            torch.cuda.empty_cache()
            log(f"  {name}: CUDA out of memory; retrying with batch {batch}")


def run(args) -> dict:
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, file=sys.stderr, flush=True))
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_start = os.getloadavg()[0]
    t_build = time.perf_counter()
    hf, tok, description = build(args)
    model = wrap(hf, tok, source=description)
    device = model.device
    gate = Gate(
        enabled=args.gate and device.type == "cpu" and Path("/proc/stat").exists(),
        threshold=args.gate_threshold,
        wait_s=args.gate_wait,
        tries=args.gate_tries,
        log=log,
    )
    prompt = build_prompt(tok, args.prompt_tokens)
    ids = tok(prompt, return_tensors="pt")["input_ids"].to(device)
    answer_ids = torch.tensor(answer_token_ids(tok, prompt, OPTIONS, "letters"), device=device)
    proxy = Proxy("bench", 0, prompt, OPTIONS, args.correct, "sentiment")
    config = AttributionConfig(steps=args.steps)  # default config otherwise: ace, right, path="staircase"
    all_layers = list(range(model.n_layers))
    paper_layers = _paper_layers(args.paper_layers, model.n_layers)
    pb = Problem(hf, [model.down_proj(i, hf) for i in all_layers], ids, answer_ids, args.correct, config.target, args.steps)
    log(
        f"{description}: {model.n_layers} layers x {model.n_neurons} neurons, prompt {ids.shape[1]} tokens, "
        f"m = {args.steps}, built in {time.perf_counter() - t_build:.1f} s"
    )

    rows: list[Row] = []
    failed: list[dict] = []

    def optional(name, fn):
        """A variant that may fail (out of memory, a kernel or library version difference) without
        costing the run (a) and (b): recorded in the result and the run goes on."""
        try:
            row = run_strategy(name, fn, device, args.repeats, gate, log=log)
        except Exception as err:  # noqa: BLE001 - reported in the JSON and the table's notes
            log(f"  {name}: FAILED: {type(err).__name__}: {err}")
            failed.append({"name": name, "error": f"{type(err).__name__}: {str(err)[:500]}"})
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return None
        rows.append(row)
        return row

    # (b) and (c) first: (a) leaves the largest heap behind.
    rows.append(
        run_strategy(
            "(b) nsneurons attribute_proxy (default: path=staircase)",
            lambda: attribute_proxy(model, proxy, config).ig,
            device,
            args.repeats,
            gate,
            log=log,
        )
    )
    if not args.no_limit:
        flat = dataclasses.replace(config, path="prefix")
        optional("(b2) nsneurons, path=prefix (every row from the embedding on)", lambda: attribute_proxy(model, proxy, flat).ig)

        def with_prefix_diag():
            with attention_impl(model.hf_model, _PREFIX_DIAG):
                return attribute_proxy(model, proxy, config).ig

        optional("(b3) = (b) + prefix+self attention function (no n x n masked block)", with_prefix_diag)
        # An example's three proxies (options in three orders) in one session, as score_proxies runs
        # them: their common prefix once. Compared on the first proxy (= (a)'s prompt); time / 3.
        example = example_proxies(prompt, args.correct)
        per_example = optional(
            "(b4) nsneurons attribute_proxies: an example's 3 proxies in one session, per proxy",
            lambda: attribute_proxies(model, example, config)[0].ig,
        )
        if per_example is not None:
            per_example.seconds_per_question /= len(example)
            per_example.seconds = [t / len(example) for t in per_example.seconds]
        variants = [
            (
                "(c1) plain PyTorch, shared prefix, one sequence (what (b) does, no nnsight)",
                lambda: shared_prefix(pb, all_layers),
            ),
            (
                "(c2) c1 + prefix logits at 1 position + answer logits only",
                lambda: shared_prefix_manual(pb, all_layers, staircase=False, answer_logits=True),
            ),
            (
                "(c3) c1 + prefix logits at 1 position + staircase rows",
                lambda: shared_prefix_manual(pb, all_layers, staircase=True, answer_logits=False),
            ),
            ("(c4) c2 + staircase rows", lambda: shared_prefix_manual(pb, all_layers, staircase=True, answer_logits=True)),
            (
                "(c5) c4 + prefix+self attention (no n x n masked block)",
                lambda: shared_prefix_manual(pb, all_layers, staircase=True, answer_logits=True, attn=_PREFIX_DIAG),
            ),
        ]
        for name, fn in variants:
            optional(name, fn)
    paper = _paper_row(
        pb,
        paper_layers,
        all_layers,
        args,
        device,
        "(a) paper-style plain PyTorch (per layer, m full prompts)",
        args.repeats_paper,
        gate,
        log,
    )
    rows.insert(0, paper)
    compare(rows, paper, paper_layers, all_layers)
    dtype = str(next(hf.parameters()).dtype).removeprefix("torch.")
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("ig_bench.py") else []
    result = {
        "mode": args.mode,
        "model": description,
        "dtype": dtype,
        "device": str(device),
        "n_layers": model.n_layers,
        "n_neurons": model.n_neurons,
        "prompt_tokens": int(ids.shape[1]),
        "steps": args.steps,
        "target": config.target,
        "quadrature": config.quadrature,
        "paper_layers": paper_layers,
        "ratio_a_over_b": paper.seconds_per_question / rows[1].seconds_per_question,
        "memory": paper.memory_how,
        "columns": COLUMNS,
        "table": markdown_table(rows),
        "rows": [_row_json(r) for r in rows],
        "started": started,
        "loadavg_1m_start": load_start,
        "gate": {"enabled": gate.enabled, "threshold": gate.threshold, "wait_s": gate.wait_s, "tries": gate.tries},
        "command": " ".join(["python bench/ig_bench.py"] + argv) if argv else "python bench/ig_bench.py (called in-process)",
    }
    result["failed_strategies"] = failed
    if args.precision:
        try:
            result["precision"] = precision_section(
                args, model, proxy, config, pb, rows, paper_layers, all_layers, device, gate, log
            )
        except Exception as err:  # noqa: BLE001 - the main table above still stands
            log(f"  precision section: FAILED: {type(err).__name__}: {err}")
            result["precision_error"] = f"{type(err).__name__}: {str(err)[:500]}"
    result["machine"] = machine()
    result["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return result


def _row_json(r: Row) -> dict:
    return {
        "name": r.name,
        "seconds": r.seconds,
        "seconds_per_question": r.seconds_per_question,
        "min_seconds_per_question": r.min_per_question,
        "extrapolated_from_layers": r.extrapolated_from,
        "peak_memory_bytes": r.peak_bytes,
        "note": r.note,
        "others_cpu_share": r.others_cpu,
        "retried_timings": r.retries,
        "per_layer_seconds": getattr(r, "per_layer_seconds", None),
        "speedup_vs_a": r.speedup,
        "max_rel_diff_vs_a": r.max_rel_diff,
        "top100_good_overlap": r.good_overlap,
        "top100_bad_overlap": r.bad_overlap,
    }


def precision_section(args, model, proxy, config, pb, rows, paper_layers, all_layers, device, gate, log) -> dict:
    """float32 (a) vs float32 (b) on the same low-precision-representable weights, TF32 (b) on CUDA,
    and how the low-precision (bfloat16) ranking overlaps the float32 one. Leaves the model in float32."""
    low_dtype = next(model.hf_model.parameters()).dtype
    if low_dtype == torch.float32:  # ci/cpu: round the weights to bf16 and time both paths there first
        model.hf_model.to(torch.bfloat16)
        low_wrapped = wrap(model.hf_model, model.tokenizer, source="bf16")
        low_b = run_strategy(
            "(b) nsneurons, bfloat16", lambda: attribute_proxy(low_wrapped, proxy, config).ig, device, args.repeats, gate, log=log
        )
        low_a = _paper_row(
            Problem(model.hf_model, pb.down_projs, pb.ids, pb.answer_ids, pb.correct, pb.target, pb.steps),
            paper_layers,
            all_layers,
            args,
            device,
            "(a) paper-style, bfloat16",
            args.repeats_paper,
            gate,
            log,
        )
        low_name = "bfloat16"
    else:
        low_name = str(low_dtype).removeprefix("torch.")
        low_a = dataclasses.replace(rows[0], name=f"(a) paper-style, {low_name}")
        low_b = dataclasses.replace(rows[1], name=f"(b) nsneurons, {low_name}")
    hf = model.hf_model.float()
    f32 = wrap(hf, model.tokenizer, source="float32")
    pb32 = Problem(hf, [f32.down_proj(i, hf) for i in all_layers], pb.ids, pb.answer_ids, pb.correct, pb.target, pb.steps)
    repeats_a32 = 1 if args.mode == "gpu" else args.repeats_paper
    a32 = _paper_row(pb32, paper_layers, all_layers, args, device, "(a) paper-style, float32", repeats_a32, gate, log)
    b32 = run_strategy(
        "(b) nsneurons, float32", lambda: attribute_proxy(f32, proxy, config).ig, device, args.repeats, gate, log=log
    )
    prows = [a32, b32]
    if device.type == "cuda":
        prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            prows.append(
                run_strategy(
                    "(b) nsneurons, float32 weights, TF32 matmuls",
                    lambda: attribute_proxy(f32, proxy, config).ig,
                    device,
                    args.repeats,
                    gate,
                    log=log,
                )
            )
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    prows += [low_a, low_b]
    compare(prows, a32, paper_layers, all_layers)
    idx = [all_layers.index(layer) for layer in paper_layers]
    b_vs_b = top_overlap(low_b.ig[idx], b32.ig[idx])
    # (b) rows hold every layer: against float32 (b) their rankings compare over all neurons, not
    # only (a)'s subset (what a user of the precision mode gets).
    all_layers_vs_b32 = {}
    for row in prows[2:]:
        if row.ig.shape == b32.ig.shape and row.name.startswith("(b)"):
            good, bad = top_overlap(row.ig, b32.ig)
            all_layers_vs_b32[row.name] = {
                "max_rel_diff": max_rel_diff(row.ig, b32.ig),
                "top100_good_overlap": good,
                "top100_bad_overlap": bad,
                "seconds_per_question": row.seconds_per_question,
            }
    return {
        "all_layers_vs_float32_b": all_layers_vs_b32,
        "reference": "(a) paper-style, float32",
        "low_precision": low_name,
        "table": markdown_table(prows),
        "rows": [_row_json(r) for r in prows],
        "low_b_vs_float32_b": {
            "max_rel_diff": max_rel_diff(low_b.ig[idx], b32.ig[idx]),
            "top100_good_overlap": b_vs_b[0],
            "top100_bad_overlap": b_vs_b[1],
        },
    }


def report(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"## IG benchmark, mode {result['mode']}",
        "",
        f"- command: `{result['command']}`",
        f"- model: {result['model']}; {result['n_layers']} layers x {result['n_neurons']} neurons; device {result['device']}",
        f"- prompt {result['prompt_tokens']} tokens, m = {result['steps']}, target {result['target']}, quadrature {result['quadrature']}",
        f"- machine: {m.get('cpu', '?')}{' / ' + m['gpu'] if 'gpu' in m else ''}, {m.get('cores')} cores, torch {m.get('torch')}, "
        f"transformers {m.get('transformers', '?')}, nnsight {m.get('nnsight', '?')}; started {result['started']}; "
        f"1-minute load average {result['loadavg_1m_start']:.2f} at start, {m['loadavg_1m']:.2f} at end; "
        f"finished {result.get('finished', '?')}",
        "- timing: "
        + (
            f"gated (before each timing, waited up to {result['gate']['wait_s']:.0f} s for a quiet CPU; a timing during which "
            f"other processes used more than {result['gate']['threshold']:.0%} of the machine's CPU was retried, up to "
            f"{result['gate']['tries']} tries, fastest kept)"
            if result["gate"]["enabled"]
            else "not gated"
        )
        + "; (a) timed layer by layer and summed; (b), (c) medians of the runs after one warm-up",
        f"- memory: {result['memory']}",
        "",
        result["table"],
        "",
        f"(a)/(b) = {result['ratio_a_over_b']:.1f}x",
    ]
    lines += [f"FAILED {f['name']}: {f['error']}" for f in result.get("failed_strategies", [])]
    if "precision_error" in result:
        lines.append(f"FAILED precision section: {result['precision_error']}")
    if "precision" in result:
        p = result["precision"]
        v = p["low_b_vs_float32_b"]
        lines += [
            "",
            f"### Precision (reference: {p['reference']}; {p['low_precision']} weights converted to float32)",
            "",
            p["table"],
            "",
            f"{p['low_precision']} (b) vs float32 (b): max rel. diff {v['max_rel_diff']:.2e}, "
            f"top-100 good {v['top100_good_overlap']:.0%}, bad {v['top100_bad_overlap']:.0%}",
        ]
        for name, w in p.get("all_layers_vs_float32_b", {}).items():
            lines.append(
                f"{name} vs float32 (b), all layers: max rel. diff {w['max_rel_diff']:.2e}, "
                f"top-100 good {w['top100_good_overlap']:.0%}, bad {w['top100_bad_overlap']:.0%}"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(report(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
