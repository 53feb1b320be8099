"""Integrated gradients of every FFN neuron at the answer position, inside nnsight traces (Eq. 1).

IG_i = a_i / m * sum_k dF/d(scaled a_i) at scaled a = alpha_k * a, for one layer at a time
(other layers untouched), alpha_k = k/m (right Riemann, the paper's Eq. 1) or (k - 1/2)/m (midpoint).

Three ways to compute the same numbers (`AttributionConfig.path`):
- `staircase` (default, fastest): scaling the last position cannot change earlier positions
  (causal attention), so the prompt minus its last token runs once with a KV cache. The last
  token then runs as ONE query row after that shared prefix; at the input of each attributed
  block j, m + 1 copies of the row join (all at the last token's position, under a 4-D mask
  that lets each see the prefix and itself only) and layer j's neurons of those copies are
  scaled. Rows of layer j never run the blocks below j, where they would equal the unscaled
  row: about half the row-layers of `prefix`. Row 0 stays unscaled and gives F(x).
- `prefix`: the same, with all layers x (m + 1) rows present from the embedding on.
- `full` (reference): per layer, a batch of m + 1 full prompts.
Each group's row 0 is alpha = 0 (for the completeness diagnostic). One backward per pass. For
targets that only need the four answer tokens' logits (`targets.ANSWER_LOGITS_ONLY`), the output
layer computes those four columns only. Passing an explicit mask also avoids nnsight's silent
default-mask bug with caches (docs/design.md, "Masks with a KV cache"). Each runs inside one
`session`, so on NDIF the prefix cache never leaves the server.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import nnsight
import numpy as np
import torch

from . import targets as _targets
from . import trace_ops as _trace_ops
from .answers import answer_token_ids
from .architectures import get_path
from .tasks.base import AnswerFormat, Proxy
from .trace_ops import shared_prefix_queries

Quadrature = Literal["right", "midpoint"]
Path_ = Literal["staircase", "prefix", "full"]


@dataclass(frozen=True)
class AttributionConfig:
    """How IG is computed. Every field is recorded in the store's provenance."""

    target: str = "ace"  # a name in nsneurons.targets.TARGETS
    steps: int = 16  # m in Eq. 1
    quadrature: Quadrature = "right"  # alpha_k = k/m ("right", the paper) or (k - 1/2)/m
    path: Path_ = "staircase"  # "staircase" (fastest, default), "prefix", or "full" (per-layer full prompts, the reference)
    layers_per_pass: int | None = None  # None: as many as the memory budget allows
    answer_format: AnswerFormat = "letters"

    def __post_init__(self):
        _targets.get_target(self.target)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.quadrature not in ("right", "midpoint"):
            raise ValueError(f"quadrature must be 'right' or 'midpoint', got {self.quadrature!r}")
        if self.path not in ("staircase", "prefix", "full"):
            raise ValueError(f"path must be 'staircase', 'prefix' or 'full', got {self.path!r}")


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


def _ship_trace_code(model) -> None:
    """Remote traces run where nsneurons is not installed: ship the torch-only helpers by value."""
    if model.remote:
        nnsight.register(_targets)
        nnsight.register(_trace_ops)


def _answer_head(model, target: str):
    """The output layer's envoy when F needs only the four answer logits and that layer is a plain
    linear map (so its four rows, and its bias's four entries where it has one, such as GPT-J's,
    give exactly those logits); else None (full-vocabulary logits)."""
    if target not in _targets.ANSWER_LOGITS_ONLY:
        return None
    head = model.hf_model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return None
    name = next(name for name, module in model.hf_model.named_modules() if module is head)
    return get_path(model.lm, name)


def attribute_proxy(model, proxy: Proxy, config: AttributionConfig, layers: Sequence[int] | None = None) -> ProxyAttribution:
    """IG of every neuron of `layers` (default: all) for one proxy question."""
    return attribute_proxies(model, [proxy], config, layers)[0]


def attribute_proxies(model, proxies: Sequence[Proxy], config: AttributionConfig,
                      layers: Sequence[int] | None = None) -> list[ProxyAttribution]:
    """IG of every neuron of `layers` (default: all) for several proxy questions, in one session.

    On the shared-prefix paths the tokens the prompts have in common (an example's three proxies
    share role, rules, demonstration and question stem) run once; each prompt's own remaining
    tokens then extend that cache. Same numbers as one `attribute_proxy` call per proxy."""
    layers = checked_layers(model, layers)
    if not proxies:
        raise ValueError("no proxies to attribute")
    prompts = [_prepare(model, proxy, config) for proxy in proxies]
    alphas = alphas_for(config.steps, config.quadrature)
    longest = max(ids.shape[1] for ids, _ in prompts)
    per_pass = config.layers_per_pass or _auto_layers_per_pass(model, len(layers), config.steps, longest)
    chunks = [layers[i : i + per_pass] for i in range(0, len(layers), per_pass)]
    corrects = [proxy.correct for proxy in proxies]
    if config.path == "full":
        per_prompt = [_full_path(model, ids, answer_ids, correct, config, alphas, chunks)
                      for (ids, answer_ids), correct in zip(prompts, corrects)]
    else:
        per_prompt = _prefix_path(model, prompts, corrects, config, alphas, chunks, staircase=config.path == "staircase")
    return [_assemble(results) for results in per_prompt]


def checked_layers(model, layers: Sequence[int] | None) -> list[int]:
    """The layers to attribute, ascending and without repeats (None: all); refused if outside the model."""
    layers = list(range(model.n_layers)) if layers is None else sorted(set(int(layer) for layer in layers))
    if not layers or layers[0] < 0 or layers[-1] >= model.n_layers:
        raise ValueError(f"layers must be a non-empty selection of 0..{model.n_layers - 1}, got {layers}")
    return layers


def _prepare(model, proxy: Proxy, config: AttributionConfig):
    """(input ids [1, T], the four answer token ids) of one proxy, with its prompt checked."""
    answer_ids = torch.tensor(answer_token_ids(model.tokenizer, proxy.prompt, proxy.options, config.answer_format))
    ids = model.tokenizer(proxy.prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] < 2:
        raise ValueError(f"prompt of example {proxy.example_id!r} has fewer than 2 tokens")
    if config.path != "full" and not model.sees_whole_prompt(ids.shape[1]):
        raise ValueError(
            f"prompt of example {proxy.example_id!r} has {ids.shape[1]} tokens, more than the sliding attention "
            f"window of {model.hf_model.config.model_type} ({model.attention_window}); path "
            f"{config.path!r} assumes every layer sees the whole prompt: use path 'full' for this model")
    return ids, answer_ids


def _assemble(results) -> ProxyAttribution:
    """One prompt's per-pass tensors (IG, activations, F per row, F(x), answer logits) as arrays."""
    ig, act, f_rows = (torch.cat([r[i] for r in results]).float() for i in range(3))
    # f_rows [layers, rows]: F per row, row 0 with the layer zeroed (alpha = 0).
    f_x, option_logits = float(results[0][3]), results[0][4]
    gap = ig.sum(1) - (f_x - f_rows[:, 0])
    return ProxyAttribution(
        ig=ig.numpy(), activation=act.numpy(),
        option_prob=torch.softmax(option_logits.float(), -1).numpy().astype(np.float32),
        target_value=f_x, completeness_gap=gap.numpy().astype(np.float32),
    )


def _common_prefix_len(sequences: Sequence[torch.Tensor]) -> int:
    """Number of leading tokens that all 1-D token sequences share."""
    n = min(len(seq) for seq in sequences)
    for seq in sequences[1:]:
        differs = (seq[:n] != sequences[0][:n]).nonzero()
        n = int(differs[0]) if len(differs) else n
    return n


def _prefix_path(model, prompts, corrects, config, alphas, chunks, staircase: bool):
    """Shared-prefix computation (staircase or flat rows) of several prompts; one session so a
    remote prefix cache stays on the server. Returns, per prompt and pass: IG, activations, F per
    row, F(x), the answer logits."""
    from transformers import DynamicCache

    lm = model.lm
    target_fn = _targets.get_target(config.target)
    rows = len(alphas)
    dtype, device = model.compute_dtype, model.device
    sites = {layer: model.down_proj(layer) for chunk in chunks for layer in chunk}
    blocks = model.layers()
    n_layers, steps = model.n_layers, config.steps
    head = _answer_head(model, config.target)
    head_has_bias = head is not None and model.hf_model.get_output_embeddings().bias is not None
    # Built here, not in the session: the session body runs on NDIF, where nsneurons is not installed.
    # Every prompt minus its last token is a cached prefix: its first `common` tokens run once,
    # then each prompt's own tokens extend them (under an explicit causal mask: docs/design.md).
    common = _common_prefix_len([ids[0, :-1] for ids, _ in prompts])
    common_ids = prompts[0][0][:, :common]
    plans = []
    for (ids, answer_ids), correct in zip(prompts, corrects):
        prompt_len = ids.shape[1] - 1
        own = prompt_len - common
        extension = None
        if own > 0:
            extension = (ids[:, common:prompt_len].to(device),
                         torch.arange(common, prompt_len, device=device)[None],
                         _trace_ops.extension_mask(common, own, dtype, device))
        if staircase:
            queries = {1: shared_prefix_queries(ids, 1, dtype, device)}
        else:
            queries = {len(c) * rows: shared_prefix_queries(ids, len(c) * rows, dtype, device) for c in chunks}
        # With only the answer logits computed, they come in A..D order.
        target_ids = torch.arange(len(answer_ids)) if head is not None else answer_ids
        plans.append((prompt_len, extension, queries, answer_ids, target_ids, correct))
    _ship_trace_code(model)
    # Prefix traces get a cache made without the model's config: it keeps every key (a
    # sliding-window layer's own cache keeps only the last window's), as the queries' mask expects.
    # (Notes stay out of the session body, and its `with` lines on one line each: nnsight's
    # remote="local" path misplaced a later trace's line after a comment or a two-line `with` there.)
    with lm.session(remote=model.remote):
        # Made and saved inside the session: on NDIF the body runs on the server, and only
        # saved values come back (a list made outside would stay empty here).
        per_prompt = []
        common_kv = []
        if common > 0:
            with lm.trace(common_ids.to(device), past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1):
                common_cache = lm.output.past_key_values
            common_kv = [(layer.keys.detach(), layer.values.detach()) for layer in common_cache.layers]
        for prompt_len, extension, queries, answer_ids, target_ids, correct in plans:
            kv = common_kv
            if extension is not None:
                own_ids, own_positions, own_mask = extension
                own_cache = DynamicCache(ddp_cache_data=common_kv) if common > 0 else DynamicCache()
                own_inputs = dict(past_key_values=own_cache, position_ids=own_positions, attention_mask=own_mask)
                with lm.trace(own_ids, use_cache=True, logits_to_keep=1, **own_inputs):
                    prompt_cache = lm.output.past_key_values
                kv = [(layer.keys.detach(), layer.values.detach()) for layer in prompt_cache.layers]
            results = []
            for chunk in chunks:
                query, positions, mask = queries[1 if staircase else len(chunk) * rows]
                cache = DynamicCache(ddp_cache_data=kv)
                with lm.trace(query, past_key_values=cache, position_ids=positions, attention_mask=mask):
                    scaled, originals = [], []
                    if staircase:
                        # Blocks from the chunk's first layer up: rows join at their own layer.
                        for layer in range(chunk[0], n_layers):
                            block_inputs = blocks[layer].inputs
                            hidden = _trace_ops.block_hidden(block_inputs)
                            if layer in chunk:
                                hidden = torch.cat([hidden, hidden[:, :1].expand(1, rows, hidden.shape[2])], dim=1)
                            blocks[layer].inputs = _trace_ops.grow_block_inputs(block_inputs, hidden, prompt_len)
                            if layer in chunk:
                                neurons = sites[layer].input
                                original = neurons[0, 0].detach().clone()
                                step_values = _trace_ops.scaled_copies(original, alphas)
                                neurons[0, hidden.shape[1] - rows :] = step_values
                                scaled.append(step_values)
                                originals.append(original)
                    else:
                        for j, layer in enumerate(chunk):
                            neurons = sites[layer].input
                            # Every row of group j sees layer j unscaled (only layer j is scaled in group j).
                            original = neurons[0, j * rows].detach().clone()
                            step_values = _trace_ops.scaled_copies(original, alphas)
                            neurons[0, j * rows : (j + 1) * rows] = step_values
                            scaled.append(step_values)
                            originals.append(original)
                    if head is not None:
                        picked = answer_ids.to(head.weight.device)
                        answer_logits = head.input @ head.weight[picked].T
                        if head_has_bias:
                            answer_logits = answer_logits + head.bias[picked]
                        head.skip(answer_logits)
                    # Flattened: GPT-2 views its grown output as [rows, 1, ...] (its input shape was [1, 1]).
                    logits = lm.output.logits.reshape(-1, lm.output.logits.shape[-1])
                    f_rows = target_fn(logits, target_ids.to(logits.device), correct)
                    grads = torch.autograd.grad(f_rows.sum(), scaled)
                    # Row 0 (alpha = 0) and a trailing alpha = 1 row (midpoint) are no quadrature points.
                    ig = torch.stack([o.float() * g[1 : steps + 1].float().sum(0) / steps for o, g in zip(originals, grads)]).cpu().save()
                    act = torch.stack(originals).float().cpu().save()
                    # Unscaled row: row 0 (staircase), or group 0's alpha = 1 row (flat).
                    x_row = 0 if staircase else rows - 1
                    group_rows = f_rows[1:] if staircase else f_rows
                    f_table = group_rows.detach().float().reshape(len(chunk), rows).cpu().save()
                    f_x = f_rows[x_row].detach().float().cpu().save()
                    option_logits = logits[x_row, target_ids.to(logits.device)].detach().float().cpu().save()
                results.append((ig, act, f_table, f_x, option_logits))
            per_prompt.append(results)
        nnsight.save(per_prompt)
    return per_prompt


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
                step_values = _trace_ops.scaled_copies(original, alphas)
                neurons[:, -1] = step_values
                logits = lm.output.logits[:, -1]
                f_rows = target_fn(logits, answer_ids.to(logits.device), correct)
                grads = torch.autograd.grad(f_rows.sum(), [step_values])
                ig = (original.float() * grads[0][1 : steps + 1].float().sum(0) / steps)[None].cpu().save()
                act = original[None].float().cpu().save()
                f_table = f_rows.detach().float()[None].cpu().save()
                f_x = f_rows[rows - 1].detach().float().cpu().save()
                option_logits = logits[rows - 1, answer_ids.to(logits.device)].detach().float().cpu().save()
            results.append((ig, act, f_table, f_x, option_logits))
        nnsight.save(results)
    return results
