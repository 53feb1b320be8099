"""Torch-only helpers that run inside nnsight traces.

They only use torch, so on NDIF (where nsneurons is not installed) this module is shipped by value
with `nnsight.register`, like `nsneurons.targets`.
"""
from __future__ import annotations

import torch


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
                raise ValueError("a block's attention mask carries biases (ALiBi?), which the staircase path "
                                 "cannot resize; use path 'prefix' or 'full' for this model")
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
