"""Torch-only helpers that run inside nnsight traces, and the records that travel through them.

They only use torch, so on NDIF (where nsneurons is not installed) this module is shipped by value
with `nnsight.register`, like `nsneurons.targets`. A trace body may call these functions (envoys
are plain arguments); it may not call functions of other nsneurons modules, which NDIF cannot import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class PromptPlan(NamedTuple):
    """One prompt of a shared-prefix session, made before it (the session body runs on NDIF)."""

    prompt_len: int  # tokens before the last one: the cached prefix
    own_ids: torch.Tensor | None  # [1, own] the prompt's tokens after the prompts' common prefix (None: none)
    own_inputs: dict | None  # position_ids and the explicit causal attention_mask of those tokens
    queries: dict  # rows -> (query ids, position ids, 4-D mask) of the query traces
    answer_ids: torch.Tensor  # [4] the answer tokens' vocabulary ids
    target_ids: torch.Tensor  # [4] their columns in the logits the target reads
    correct: int  # index of the correct option


class PassSpec(NamedTuple):
    """How a pass turns its rows into results (the same for every pass of a session)."""

    target_fn: Callable[..., torch.Tensor]  # F: (logits [rows, V], target ids, correct) -> [rows] (nsneurons.targets)
    steps: int  # m
    weights: torch.Tensor | None  # quadrature weights w_k (None: all 1/m; nsneurons.quadrature)
    x_row: int  # the unscaled row: F(x) and the option logits
    first_group_row: int  # the rows from here on are the layers' groups, one after another


class PassResult(NamedTuple):
    """What one trace (one prompt, one chunk of layers) computed, as CPU float32 tensors."""

    ig: torch.Tensor  # [layers, neurons] Eq. 1
    activation: torch.Tensor  # [layers, neurons] unscaled activation at the answer position
    f_table: torch.Tensor  # [layers, rows] F per row of each layer's group; row 0: the layer zeroed (alpha = 0)
    f_x: torch.Tensor  # [] F(x), the unmodified model
    option_logits: torch.Tensor  # [4] the answer tokens' logits, unmodified model


def integrated_gradient(original: torch.Tensor, grads: torch.Tensor, steps: int, weights: torch.Tensor | None) -> torch.Tensor:
    """Eq. 1 for one layer: IG_i = a_i * sum_k w_k dF/da_i(alpha_k a), from the gradients of a layer
    group's rows (rows 1..m are the quadrature points: row 0 is alpha = 0 and a trailing alpha = 1 row
    is no point). `weights` None: every w_k is 1/m, computed as sum / m (as always: bit-identical).
    At least float32 (a bfloat16 model's gradients are summed in float32; float64 stays float64)."""
    dtype = torch.promote_types(grads.dtype, torch.float32)
    points, original = grads[1 : steps + 1].to(dtype), original.to(dtype)
    if weights is None:
        return original * points.sum(0) / steps
    return original * (weights.to(points)[:, None] * points).sum(0)


def scaled_copies(original: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """alpha_k * a for every alpha (rows), as a leaf that gradients are taken with respect to."""
    return (original[None] * alphas.to(original.dtype).to(original.device)[:, None]).requires_grad_(True)


def query_mask(prompt_len: int, n: int, dtype, device) -> torch.Tensor:
    """4-D additive mask for n query tokens after a cached prefix of prompt_len tokens: each query
    sees the whole prefix and itself only (the queries are independent copies of the last token)."""
    mask = torch.full((1, 1, n, prompt_len + n), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask[..., :prompt_len] = 0
    idx = torch.arange(n, device=device)
    mask[0, 0, idx, prompt_len + idx] = 0
    return mask


def shared_prefix_queries(ids: torch.Tensor, n: int, dtype, device):
    """n copies of the last token as query tokens after the cached prompt prefix: input ids,
    position ids (all at the last token's position) and a 4-D mask letting each see the prefix
    and itself only. Passing the mask also keeps nnsight from adding its default one (docs/design.md).
    Used by attribution (the IG rows) and intervention (the conditions' rows)."""
    prompt_len = ids.shape[1] - 1
    query = ids[:, prompt_len:].expand(1, n).to(device)
    positions = torch.full((1, n), prompt_len, dtype=torch.long, device=device)
    return query, positions, query_mask(prompt_len, n, dtype, device)


def extension_mask(cached: int, n: int, dtype, device) -> torch.Tensor:
    """4-D additive causal mask for n new tokens after `cached` cached ones (each sees the cache,
    the new tokens before it and itself). Passed explicitly: nnsight's default mask is wrong with
    a cache (docs/design.md)."""
    mask = torch.full((1, 1, n, cached + n), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask[..., :cached] = 0
    mask[0, 0, :, cached:] = torch.triu(mask[0, 0, :, cached:], diagonal=1)
    return mask


def grow_block_arg(value, n: int, prompt_len: int):
    """One argument of a transformer block, prepared by the model for ONE query row, made fit n rows.

    The rows are copies of the same token at the same position, so every per-row tensor ([1, 1, ...]:
    position ids, rotary cos/sin) is expanded, and the 4-D attention mask is rebuilt for n rows.
    Anything else (caches, flags, None) passes through.
    """
    if torch.is_tensor(value):
        if value.dim() == 4 and value.shape[-2] == 1 and value.shape[-1] == prompt_len + 1:
            if value.dtype == torch.bool:
                return query_mask(prompt_len, n, torch.float32, value.device) == 0
            if not ((value == 0) | (value <= torch.finfo(value.dtype).min)).all():
                # A mask carrying position biases (ALiBi): rebuilding it as 0 / -inf would drop them.
                raise ValueError(
                    "a block's attention mask carries biases (ALiBi?), which the staircase path "
                    "cannot resize; use path 'prefix' or 'full' for this model"
                )
            return query_mask(prompt_len, n, value.dtype, value.device)
        if value.dim() >= 2 and value.shape[0] == 1 and value.shape[1] == 1:
            return value.expand(1, n, *value.shape[2:])
        return value
    if isinstance(value, tuple):
        return tuple(grow_block_arg(v, n, prompt_len) for v in value)
    return value


def block_hidden(inputs) -> torch.Tensor:
    """The hidden states a block was called with: its first positional argument, or `hidden_states=`."""
    args, kwargs = inputs
    return args[0] if args else kwargs["hidden_states"]


def grow_block_inputs(inputs, hidden: torch.Tensor, prompt_len: int):
    """(args, kwargs) of a block, with the hidden states replaced by `hidden` ([1, n, d]) and the
    other arguments resized for its n rows."""
    args, kwargs = inputs
    n = hidden.shape[1]
    kwargs = {k: grow_block_arg(v, n, prompt_len) for k, v in kwargs.items()}
    if args:
        return (hidden,) + tuple(grow_block_arg(a, n, prompt_len) for a in args[1:]), kwargs
    return (), {**kwargs, "hidden_states": hidden}


def staircase_rows(blocks, sites, chunk, n_layers: int, alphas: torch.Tensor, prompt_len: int):
    """Inside a trace of ONE query row: from the chunk's first block up, layer j's group of rows joins
    at block j's input (copies of the row there) and its neurons are scaled by the alphas.
    Returns (the scaled tensors, the layers' unscaled activations), one per layer of the chunk."""
    scaled, originals = [], []
    rows = len(alphas)
    for layer in range(chunk[0], n_layers):
        block_inputs = blocks[layer].inputs
        hidden = block_hidden(block_inputs)
        if layer in chunk:
            hidden = torch.cat([hidden, hidden[:, :1].expand(1, rows, hidden.shape[2])], dim=1)
        blocks[layer].inputs = grow_block_inputs(block_inputs, hidden, prompt_len)
        if layer in chunk:
            neurons = sites[layer].input
            original = neurons[0, 0].detach().clone()  # row 0 is never scaled
            step_values = scaled_copies(original, alphas)
            neurons[0, hidden.shape[1] - rows :] = step_values
            scaled.append(step_values)
            originals.append(original)
    return scaled, originals


def flat_rows(sites, chunk, alphas: torch.Tensor):
    """Inside a trace of len(chunk) x rows query rows: group j's rows scale layer chunk[j]'s neurons.
    Returns (the scaled tensors, the layers' unscaled activations)."""
    scaled, originals = [], []
    rows = len(alphas)
    for j, layer in enumerate(chunk):
        neurons = sites[layer].input
        # Every row of group j sees layer j unscaled (only layer j is scaled in group j).
        original = neurons[0, j * rows].detach().clone()
        step_values = scaled_copies(original, alphas)
        neurons[0, j * rows : (j + 1) * rows] = step_values
        scaled.append(step_values)
        originals.append(original)
    return scaled, originals


def answer_logits_only(head, answer_ids: torch.Tensor, has_bias: bool) -> None:
    """Make the output layer compute the four answer tokens' logits only (in A..D order)."""
    picked = answer_ids.to(head.weight.device)
    answer_logits = head.input.to(head.weight.device) @ head.weight[picked].T
    if has_bias:
        answer_logits = answer_logits + head.bias[picked]
    head.skip(answer_logits)


def pass_result(spec: PassSpec, logits, target_ids, correct: int, scaled, originals) -> PassResult:
    """F per row, one backward over the scaled tensors, Eq. 1 per layer, and the unmodified model's F and
    answer logits (from `spec.x_row`)."""
    # Flattened: GPT-2 views its grown output as [rows, 1, ...] (its input shape was [1, 1]).
    logits = logits.reshape(-1, logits.shape[-1])
    f_rows = spec.target_fn(logits, target_ids.to(logits.device), correct)
    grads = torch.autograd.grad(f_rows.sum(), scaled)
    ig = torch.stack([integrated_gradient(o, g, spec.steps, spec.weights) for o, g in zip(originals, grads)]).cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    act = torch.stack(originals).float().cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    f_table = f_rows[spec.first_group_row :].detach().float().reshape(len(originals), -1).cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    f_x = f_rows[spec.x_row].detach().float().cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    option_logits = logits[spec.x_row, target_ids.to(logits.device)].detach().float().cpu().save()
    return PassResult(ig, act, f_table, f_x, option_logits)
