"""Integrated gradients of every FFN neuron at the answer position, inside nnsight traces (Eq. 1).

IG_i = a_i / m * sum_k dF/d(scaled a_i) at scaled a = alpha_k * a, for one layer at a time
(other layers untouched), alpha_k = k/m (right Riemann, the paper's Eq. 1) or (k - 1/2)/m (midpoint).

Two ways to compute the same numbers:
- `prefix` (default, fast): scaling the last position cannot change earlier positions (causal
  attention), so the prompt minus its last token runs once with a KV cache; then the last token
  runs as n = layers x (m + 1) query tokens of ONE sequence after that shared prefix, all at the
  last token's position, under a 4-D mask that lets each query see the prefix and itself only.
  Group j scales layer j; row 0 of each group is alpha = 0 (for the completeness diagnostic).
  One backward per pass. Passing an explicit mask also avoids nnsight's silent default-mask bug
  with caches (see docs).
- `full` (reference): per layer, a batch of m + 1 full prompts.
Both run inside one `session`, so on NDIF the prefix cache never leaves the server.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import nnsight
import numpy as np
import torch

from . import targets as _targets
from .answers import answer_token_ids
from .tasks.base import AnswerFormat, Proxy

Quadrature = Literal["right", "midpoint"]
Path_ = Literal["prefix", "full"]


@dataclass(frozen=True)
class AttributionConfig:
    """How IG is computed. Every field is recorded in the store's provenance."""

    target: str = "ace"  # a name in nsneurons.targets.TARGETS
    steps: int = 16  # m in Eq. 1
    quadrature: Quadrature = "right"  # alpha_k = k/m ("right", the paper) or (k - 1/2)/m
    path: Path_ = "prefix"  # "prefix" (fast, default) or "full" (per-layer full prompts, the reference)
    layers_per_pass: int | None = None  # None: as many as the memory budget allows
    answer_format: AnswerFormat = "letters"

    def __post_init__(self):
        _targets.get_target(self.target)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.quadrature not in ("right", "midpoint"):
            raise ValueError(f"quadrature must be 'right' or 'midpoint', got {self.quadrature!r}")
        if self.path not in ("prefix", "full"):
            raise ValueError(f"path must be 'prefix' or 'full', got {self.path!r}")


@dataclass
class ProxyAttribution:
    """Results for one proxy question, as float32 numpy arrays over the attributed layers."""

    ig: np.ndarray  # [layers, neurons]
    activation: np.ndarray  # [layers, neurons], unscaled, at the answer position
    option_prob: np.ndarray  # [4], softmax over the four answer tokens
    target_value: float  # F(x)
    completeness_gap: np.ndarray  # [layers]: sum(IG) - (F(x) - F(layer zeroed))


def alphas_for(steps: int, quadrature: Quadrature) -> torch.Tensor:
    """Rows of one layer group: alpha = 0 (baseline, for the completeness gap), the m quadrature
    points, and alpha = 1 last (F(x) and the option probabilities; for "right" it is the m-th point)."""
    k = torch.arange(1, steps + 1, dtype=torch.float64)
    if quadrature == "right":
        return torch.cat([torch.zeros(1, dtype=torch.float64), k / steps])
    return torch.cat([torch.zeros(1, dtype=torch.float64), (k - 0.5) / steps, torch.ones(1, dtype=torch.float64)])


def _auto_layers_per_pass(model, n_layers: int, steps: int, prompt_len: int) -> int:
    """Layers per pass from a memory budget: logits and activations per query row dominate."""
    cfg = model.hf_model.config
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 1024)
    bytes_per_row = 4 * (2 * cfg.vocab_size + model.n_layers * (12 * hidden + 4 * model.n_neurons) + 2 * prompt_len)
    if model.on_server:
        budget = 8 << 30
    elif model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        budget = int(free * 0.5)
    else:
        budget = 4 << 30
    rows = max(1, budget // bytes_per_row)
    return int(max(1, min(n_layers, rows // (steps + 2))))


def shared_prefix_queries(ids: torch.Tensor, n: int, dtype, device):
    """n copies of the last token as query tokens after the cached prompt prefix: input ids,
    position ids (all at the last token's position) and a 4-D mask letting each see the prefix
    and itself only. Passing the mask also keeps nnsight from adding its default one (see docs)."""
    prompt_len = ids.shape[1] - 1
    query = ids[:, prompt_len:].expand(1, n).to(device)
    positions = torch.full((1, n), prompt_len, dtype=torch.long, device=device)
    mask = torch.full((1, 1, n, prompt_len + n), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask[..., :prompt_len] = 0
    mask[0, 0, torch.arange(n), prompt_len + torch.arange(n)] = 0
    return query, positions, mask


def _ship_trace_code(model) -> None:
    """Remote traces run where nsneurons is not installed: ship the target functions by value."""
    if model.remote:
        import nnsight

        nnsight.register(_targets)


def attribute_proxy(model, proxy: Proxy, config: AttributionConfig, layers: Sequence[int] | None = None) -> ProxyAttribution:
    """IG of every neuron of `layers` (default: all) for one proxy question."""
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    answer_ids = torch.tensor(answer_token_ids(model.tokenizer, proxy.prompt, proxy.options, config.answer_format))
    ids = model.tokenizer(proxy.prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] < 2:
        raise ValueError(f"prompt of example {proxy.example_id!r} has fewer than 2 tokens")
    alphas = alphas_for(config.steps, config.quadrature)
    per_pass = config.layers_per_pass or _auto_layers_per_pass(model, len(layers), config.steps, ids.shape[1])
    chunks = [layers[i : i + per_pass] for i in range(0, len(layers), per_pass)]
    if config.path == "prefix":
        results = _prefix_path(model, ids, answer_ids, proxy.correct, config, alphas, chunks)
    else:
        results = _full_path(model, ids, answer_ids, proxy.correct, config, alphas, chunks)
    ig, act, f_rows = (torch.cat([r[i] for r in results]).float() for i in range(3))
    # f_rows [layers, rows]: F per row; the last row (alpha = 1) gives F(x), row 0 the zeroed layer.
    last_logits = results[0][3]
    target_fn = _targets.get_target(config.target)
    f_x = float(target_fn(last_logits, answer_ids, proxy.correct))
    gap = ig.sum(1) - (f_x - f_rows[:, 0])
    return ProxyAttribution(
        ig=ig.numpy(), activation=act.numpy(),
        option_prob=_targets.option_probs(last_logits, answer_ids).numpy().astype(np.float32),
        target_value=f_x, completeness_gap=gap.numpy().astype(np.float32),
    )


def _prefix_path(model, ids, answer_ids, correct, config, alphas, chunks):
    """Shared-prefix computation; one session so a remote prefix cache stays on the server."""
    from transformers import DynamicCache

    lm = model.lm
    target_fn = _targets.get_target(config.target)
    prompt_len = ids.shape[1] - 1
    rows = len(alphas)
    dtype, device = model.compute_dtype, model.device
    sites = {layer: model.down_proj(layer) for chunk in chunks for layer in chunk}
    steps = config.steps
    # Built here, not in the session: the session body runs on NDIF, where nsneurons is not installed.
    queries = {len(c) * rows: shared_prefix_queries(ids, len(c) * rows, dtype, device) for c in chunks}
    _ship_trace_code(model)
    with lm.session(remote=model.remote):
        # Made and saved inside the session: on NDIF the body runs on the server, and only
        # saved values come back (a list made outside would stay empty here).
        results = []
        with lm.trace(ids[:, :prompt_len], use_cache=True, logits_to_keep=1):
            prefix_cache = lm.output.past_key_values
        kv = [(layer.keys.detach(), layer.values.detach()) for layer in prefix_cache.layers]
        for chunk in chunks:
            n = len(chunk) * rows
            query, positions, mask = queries[n]
            cache = DynamicCache(ddp_cache_data=kv)
            with lm.trace(query, past_key_values=cache, position_ids=positions, attention_mask=mask):
                scaled, originals = [], []
                for j, layer in enumerate(chunk):
                    neurons = sites[layer].input
                    # Every row of group j sees layer j unscaled (only layer j is scaled in group j).
                    original = neurons[0, j * rows].detach().clone()
                    step_values = (original[None] * alphas.to(original.dtype).to(original.device)[:, None]).requires_grad_(True)
                    neurons[0, j * rows : (j + 1) * rows] = step_values
                    scaled.append(step_values)
                    originals.append(original)
                logits = lm.output.logits[0]
                f_rows = target_fn(logits, answer_ids.to(logits.device), correct)
                grads = torch.autograd.grad(f_rows.sum(), scaled)
                # Row 0 (alpha = 0) and a trailing alpha = 1 row (midpoint) are no quadrature points.
                ig = torch.stack([o.float() * g[1 : steps + 1].float().sum(0) / steps for o, g in zip(originals, grads)]).cpu().save()
                act = torch.stack(originals).float().cpu().save()
                f_table = f_rows.detach().float().reshape(len(chunk), rows).cpu().save()
                last = logits[rows - 1].detach().float().cpu().save()
            results.append((ig, act, f_table, last))
        nnsight.save(results)
    return results


def _full_path(model, ids, answer_ids, correct, config, alphas, chunks):
    """Reference: per layer, m + 1 copies of the full prompt, last position scaled at that layer."""
    lm = model.lm
    target_fn = _targets.get_target(config.target)
    rows = len(alphas)
    batch = ids.expand(rows, -1)
    sites = [(layer, model.down_proj(layer)) for chunk in chunks for layer in chunk]
    steps = config.steps
    _ship_trace_code(model)
    with lm.session(remote=model.remote):
        results = []  # made and saved inside the session (see _prefix_path)
        for layer, site in sites:
            with lm.trace(batch):
                neurons = site.input
                original = neurons[0, -1].detach().clone()
                step_values = (original[None] * alphas.to(original.dtype).to(original.device)[:, None]).requires_grad_(True)
                neurons[:, -1] = step_values
                logits = lm.output.logits[:, -1]
                f_rows = target_fn(logits, answer_ids.to(logits.device), correct)
                grads = torch.autograd.grad(f_rows.sum(), [step_values])
                ig = (original.float() * grads[0][1 : steps + 1].float().sum(0) / steps)[None].cpu().save()
                act = original[None].float().cpu().save()
                f_table = f_rows.detach().float()[None].cpu().save()
                last = logits[rows - 1].detach().float().cpu().save()
            results.append((ig, act, f_table, last))
        nnsight.save(results)
    return results
