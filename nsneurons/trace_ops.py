"""Torch-only helpers that run inside nnsight traces, and the records that travel through them.

They only use torch, so on NDIF (where nsneurons is not installed) this module is shipped by value
with `nnsight.register`, like `nsneurons.targets`. A trace body may call these functions (envoys
are plain arguments); it may not call functions of other nsneurons modules, which NDIF cannot import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class OptionIndex(NamedTuple):
    """Where the four options' tokens are read in a pass's logits, viewed as [units, R, S, vocab]
    (nsneurons.option_units builds it): option i's k-th token t_ik is predicted at [*, rows[i, k],
    positions[i, k]]; entries with valid False are padding (options differ in length)."""

    rows: torch.Tensor  # [4, L] long: the sequence within a unit (0 in a shared-prefix unit; i on the full path)
    positions: torch.Tensor  # [4, L] long: the position within that sequence whose logits predict t_ik
    tokens: torch.Tensor  # [4, L] long: t_ik
    valid: torch.Tensor  # [4, L] bool: k < len(option i)
    shape: tuple[int, int]  # (R, S): sequences per unit and positions per sequence


class PromptPlan(NamedTuple):
    """One prompt of a shared-prefix session, made before it (the session body runs on NDIF)."""

    prompt_len: int  # tokens before the last one: the cached prefix
    own_ids: torch.Tensor | None  # [1, own] the prompt's tokens after the prompts' common prefix (None: none)
    own_inputs: dict | None  # position_ids and the explicit causal attention_mask of those tokens
    queries: dict  # rows -> (query ids, position ids, 4-D mask) of the query traces
    answer_ids: torch.Tensor  # [4] the answer tokens' vocabulary ids
    target_ids: torch.Tensor  # [4] their columns in the logits the target reads
    correct: int  # index of the correct option
    pattern: torch.Tensor | None = None  # [T, T] bool: who sees whom inside a unit (None: one token per option, T = 1)
    option_index: OptionIndex | None = None  # where the options' tokens are read (None: one token per option)


class PassSpec(NamedTuple):
    """How a pass turns its rows into results (the same for every pass of a session)."""

    target_fn: Callable[..., torch.Tensor]  # F: (logits [rows, V], target ids, correct) -> [rows] (nsneurons.targets)
    steps: int  # m
    weights: torch.Tensor | None  # quadrature weights w_k (None: all 1/m; nsneurons.quadrature)
    x_row: int  # the unscaled row: F(x) and the option logits
    first_group_row: int  # the rows from here on are the layers' groups, one after another
    score_fn: Callable[..., torch.Tensor] | None = None  # F on option scores [rows, 4] (nsneurons.targets.SCORE_TARGETS)


class PassResult(NamedTuple):
    """What one trace (one prompt, one chunk of layers) computed, as CPU float32 tensors."""

    ig: torch.Tensor  # [layers, neurons] Eq. 1
    activation: torch.Tensor  # [layers, neurons] unscaled activation at the answer position
    f_table: torch.Tensor  # [layers, rows] F per row of each layer's group; row 0: the layer zeroed (alpha = 0)
    f_x: torch.Tensor  # [] F(x), the unmodified model
    option_logits: torch.Tensor  # [4] the options' scores, unmodified model: summed log-probs (or the answer tokens' logits)


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


def query_mask(prompt_len: int, n: int, dtype, device, pattern: torch.Tensor | None = None) -> torch.Tensor:
    """4-D additive mask for n query units after a cached prefix of prompt_len tokens: each unit's
    tokens see the whole prefix and, inside their own unit, whom `pattern` [T, T] allows (None: a unit
    is one token, which sees itself only: the queries are independent copies of the last token)."""
    if pattern is not None:
        size = n * pattern.shape[0]
        mask = torch.full((1, 1, size, prompt_len + size), torch.finfo(dtype).min, dtype=dtype, device=device)
        mask[..., :prompt_len] = 0
        blocks = torch.kron(torch.eye(n), pattern.float()).to(device) > 0
        mask[0, 0, :, prompt_len:] = mask[0, 0, :, prompt_len:].masked_fill(blocks, 0)
        return mask
    mask = torch.full((1, 1, n, prompt_len + n), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask[..., :prompt_len] = 0
    idx = torch.arange(n, device=device)
    mask[0, 0, idx, prompt_len + idx] = 0
    return mask


def shared_prefix_queries(ids: torch.Tensor, n: int, dtype, device, unit=None):
    """n copies of the last token as query tokens after the cached prompt prefix: input ids,
    position ids (all at the last token's position) and a 4-D mask letting each see the prefix
    and itself only. Passing the mask also keeps nnsight from adding its default one (docs/design.md).
    Used by attribution (the IG rows) and intervention (the conditions' rows).
    `unit` (ids [1, T], positions [1, T], pattern [T, T]; nsneurons.option_units): n copies of that
    unit instead, side by side under a block-diagonal mask (options longer than one token)."""
    prompt_len = ids.shape[1] - 1
    if unit is not None:
        unit_ids, unit_positions, pattern = unit
        query, positions = unit_ids.repeat(1, n).to(device), unit_positions.repeat(1, n).to(device)
        return query, positions, query_mask(prompt_len, n, dtype, device, pattern)
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


def grow_block_arg(value, n: int, prompt_len: int, pattern: torch.Tensor | None = None):
    """One argument of a transformer block, prepared by the model for ONE query row, made fit n rows.

    The rows are copies of the same token at the same position, so every per-row tensor ([1, 1, ...]:
    position ids, rotary cos/sin) is expanded, and the 4-D attention mask is rebuilt for n rows.
    Anything else (caches, flags, None) passes through. With `pattern` [T, T] a row is a unit of T
    tokens (nsneurons.option_units): per-token tensors [1, T, ...] are tiled to [1, n * T, ...].
    """
    width = 1 if pattern is None else pattern.shape[0]
    if torch.is_tensor(value):
        if value.dim() == 4 and value.shape[-2] == width and value.shape[-1] == prompt_len + width:
            if value.dtype == torch.bool:
                return query_mask(prompt_len, n, torch.float32, value.device, pattern) == 0
            if not ((value == 0) | (value <= torch.finfo(value.dtype).min)).all():
                # A mask carrying position biases (ALiBi): rebuilding it as 0 / -inf would drop them.
                raise ValueError(
                    "a block's attention mask carries biases (ALiBi?), which the staircase path "
                    "cannot resize; use path 'prefix' or 'full' for this model"
                )
            return query_mask(prompt_len, n, value.dtype, value.device, pattern)
        if value.dim() >= 2 and value.shape[0] == 1 and value.shape[1] == width:
            return value.expand(1, n, *value.shape[2:]) if width == 1 else value.repeat(1, n, *[1] * (value.dim() - 2))
        return value
    if isinstance(value, tuple):
        return tuple(grow_block_arg(v, n, prompt_len, pattern) for v in value)
    return value


def block_hidden(inputs) -> torch.Tensor:
    """The hidden states a block was called with: its first positional argument, or `hidden_states=`."""
    args, kwargs = inputs
    return args[0] if args else kwargs["hidden_states"]


def grow_block_inputs(inputs, hidden: torch.Tensor, prompt_len: int, pattern: torch.Tensor | None = None):
    """(args, kwargs) of a block, with the hidden states replaced by `hidden` ([1, n * T, d]) and the
    other arguments resized for its n rows (units of T tokens: `pattern`, see grow_block_arg)."""
    args, kwargs = inputs
    n = hidden.shape[1] // (1 if pattern is None else pattern.shape[0])
    kwargs = {k: grow_block_arg(v, n, prompt_len, pattern) for k, v in kwargs.items()}
    if args:
        return (hidden,) + tuple(grow_block_arg(a, n, prompt_len, pattern) for a in args[1:]), kwargs
    return (), {**kwargs, "hidden_states": hidden}


def staircase_rows(blocks, sites, chunk, n_layers: int, alphas: torch.Tensor, prompt_len: int, pattern=None):
    """Inside a trace of ONE query row: from the chunk's first block up, layer j's group of rows joins
    at block j's input (copies of the row there) and its neurons are scaled by the alphas.
    Returns (the scaled tensors, the layers' unscaled activations), one per layer of the chunk.
    With `pattern` [T, T] a row is a unit of T tokens, scaled at its first token (the answer position)."""
    scaled, originals = [], []
    rows, width = len(alphas), 1 if pattern is None else pattern.shape[0]
    for layer in range(chunk[0], n_layers):
        block_inputs = blocks[layer].inputs
        hidden = block_hidden(block_inputs)
        if layer in chunk:
            copies = hidden[:, :1].expand(1, rows, hidden.shape[2]) if width == 1 else hidden[:, :width].repeat(1, rows, 1)
            hidden = torch.cat([hidden, copies], dim=1)
        blocks[layer].inputs = grow_block_inputs(block_inputs, hidden, prompt_len, pattern)
        if layer in chunk:
            neurons = sites[layer].input
            original = neurons[0, 0].detach().clone()  # row 0 is never scaled
            step_values = scaled_copies(original, alphas)
            if width == 1:
                neurons[0, hidden.shape[1] - rows :] = step_values
            else:
                neurons[0, hidden.shape[1] - rows * width :: width] = step_values
            scaled.append(step_values)
            originals.append(original)
    return scaled, originals


def flat_rows(sites, chunk, alphas: torch.Tensor, pattern: torch.Tensor | None = None):
    """Inside a trace of len(chunk) x rows query rows: group j's rows scale layer chunk[j]'s neurons.
    Returns (the scaled tensors, the layers' unscaled activations). Rows of T tokens (`pattern` [T, T]:
    units of multi-token options) are scaled at their first token (the answer position)."""
    scaled, originals = [], []
    rows, width = len(alphas), 1 if pattern is None else pattern.shape[0]
    for j, layer in enumerate(chunk):
        neurons = sites[layer].input
        # Every row of group j sees layer j unscaled (only layer j is scaled in group j).
        original = neurons[0, j * rows * width].detach().clone()
        step_values = scaled_copies(original, alphas)
        if width == 1:
            neurons[0, j * rows : (j + 1) * rows] = step_values
        else:
            neurons[0, j * rows * width : (j + 1) * rows * width : width] = step_values
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


def option_scores(logits: torch.Tensor, index: OptionIndex) -> torch.Tensor:
    """[units, 4] summed log-probabilities of the four options' tokens (Eq. 2), float32 at least."""
    sequences, width = index.shape
    lp = torch.log_softmax(logits.reshape(-1, sequences, width, logits.shape[-1]).float(), dim=-1)
    device = lp.device
    picked = lp[:, index.rows.to(device), index.positions.to(device), index.tokens.to(device)]
    return torch.where(index.valid.to(device), picked, torch.zeros((), dtype=picked.dtype, device=device)).sum(-1)


def pass_result(spec: PassSpec, logits, target_ids, correct: int, scaled, originals, index=None) -> PassResult:
    """F per row, one backward over the scaled tensors, Eq. 1 per layer, and the unmodified model's F and
    option scores (from `spec.x_row`). `index` (an OptionIndex): options longer than one token, F on
    their summed log-probabilities (`spec.score_fn`); None: F on the answer tokens' logits."""
    if index is not None:
        assert spec.score_fn is not None, "options longer than one token need PassSpec.score_fn"
        scores = option_scores(logits, index)
        return _record(spec, spec.score_fn(scores, correct), scores[spec.x_row], scaled, originals)
    # Flattened: GPT-2 views its grown output as [rows, 1, ...] (its input shape was [1, 1]).
    logits = logits.reshape(-1, logits.shape[-1])
    f_rows = spec.target_fn(logits, target_ids.to(logits.device), correct)
    return _record(spec, f_rows, logits[spec.x_row, target_ids.to(logits.device)], scaled, originals)


def _record(spec: PassSpec, f_rows: torch.Tensor, option_values: torch.Tensor, scaled, originals) -> PassResult:
    """The saved PassResult of one pass from F per row."""
    grads = torch.autograd.grad(f_rows.sum(), scaled)
    ig = torch.stack([integrated_gradient(o, g, spec.steps, spec.weights) for o, g in zip(originals, grads)]).cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    act = torch.stack(originals).float().cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    f_table = f_rows[spec.first_group_row :].detach().float().reshape(len(originals), -1).cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    f_x = f_rows[spec.x_row].detach().float().cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    option_logits = option_values.detach().float().cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    return PassResult(ig, act, f_table, f_x, option_logits)
