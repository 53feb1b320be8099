"""Switch neurons inside nnsight traces: silence (x0), excite (x2), enhancer, degrader (section 3.5).

A condition is a per-layer multiplier vector over the neurons (1 everywhere, 0 where silenced,
2 where excited), applied to the input of the MLP down projection at the answer position (the
last real token; default) or at every position. Several conditions share one batch: each batch
row is (condition, proxy), and each row gets its own multipliers. Prompts are left-padded with
explicit position ids, so every row's answer position is the last one and the numbers equal
unbatched runs. The traces carry only the switched columns of each touched layer and their
multipliers (nsneurons.switch_tables), never the dense [conditions, layers, neurons] table.

Options longer than one token (the paper's Eq. 2): an option's probability is the softmax over the
four options' summed log-probabilities. Every proxy then takes the shared-prefix route (one query
unit per condition after the cached prompt prefix, nsneurons.option_units; the multipliers apply at
each unit's first token, the answer position). position="all" is refused there: the option tokens
would need the switches at every position of their own sequence too, i.e. one full run per
condition and option, which this module does not do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import xarray as xr

from .answers import check_answer_format, proxy_option_ids
from .option_units import option_unit, single_token
from .placement import without_cudnn_attention
from .switch_tables import EXCITE, SILENCE, rows_of, switch_tables
from .tasks.base import LETTERS, AnswerFormat, Proxy
from .vocab import ConditionKey, Position


@dataclass(frozen=True)
class Condition:
    """A named set of neuron switches: `silence` and `excite` are (layer, neuron) pairs; `key`, where
    the condition was planned from one (nsneurons.conditions), is what its name was built from."""

    name: str
    silence: tuple[tuple[int, int], ...] = ()
    excite: tuple[tuple[int, int], ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    key: ConditionKey | None = field(default=None, compare=False)

    def multipliers(self, n_layers: int, n_neurons: int) -> torch.Tensor:
        """[n_layers, n_neurons] of 1, 0 (silenced) and 2 (excited)."""
        table = torch.ones(n_layers, n_neurons)
        for pairs, value in ((self.silence, SILENCE), (self.excite, EXCITE)):
            for layer, neuron in pairs:
                if not (0 <= layer < n_layers and 0 <= neuron < n_neurons):
                    raise ValueError(
                        f"condition {self.name!r}: neuron ({layer}, {neuron}) is outside {n_layers} layers x {n_neurons} neurons"
                    )
                table[layer, neuron] = value
        return table


BASELINE = Condition("none")


def enhancer(good: Sequence, bad: Sequence, name: str = "enhancer", *, key: ConditionKey | None = None) -> Condition:
    """Excite good neurons and silence bad ones."""
    return Condition(name, silence=tuple(map(tuple, bad)), excite=tuple(map(tuple, good)), key=key)


def degrader(good: Sequence, bad: Sequence, name: str = "degrader", *, key: ConditionKey | None = None) -> Condition:
    """Silence good neurons and excite bad ones."""
    return Condition(name, silence=tuple(map(tuple, good)), excite=tuple(map(tuple, bad)), key=key)


def _left_padded(tokenizer, prompts: Sequence[str]):
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, width - len(e) :] = torch.tensor(e)
        mask[row, width - len(e) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


@without_cudnn_attention
def option_probs(
    model,
    proxies: Sequence[Proxy],
    conditions: Sequence[Condition] = (BASELINE,),
    *,
    answer_format: AnswerFormat | None = None,
    position: Position = "answer",
    batch_size: int = 16,
    progress: bool = False,
) -> xr.DataArray:
    """Softmax over the four answer tokens for every (condition, proxy): DataArray (condition, item, option).

    The answer tokens follow each proxy's own `answer_format`; `answer_format=`, if given, must agree with it.

    `item` is indexed by (example, proxy) coordinates; unstack with `.set_index(item=["example", "proxy"]).unstack("item")`.
    """
    from tqdm.auto import tqdm

    if position not in ("answer", "all"):
        raise ValueError(f"position must be 'answer' or 'all', got {position!r}")
    check_answer_format(proxies, answer_format)
    options = [proxy_option_ids(model.tokenizer, p) for p in proxies]
    tables = switch_tables(conditions, model.n_layers, model.n_neurons)  # {layer: (columns, [C, columns])}
    if not all(single_token(o) for o in options):
        out = _option_unit_probs(model, proxies, options, tables, len(conditions), position, progress)
        return _labelled(out, conditions, proxies)
    answer_ids = torch.tensor([[o[0] for o in opts] for opts in options])
    rows = [(c, i) for c in range(len(conditions)) for i in range(len(proxies))]
    # Sorting by prompt length keeps padding small; results go back to their own slots.
    rows.sort(key=lambda r: len(proxies[r[1]].prompt))
    out = torch.zeros(len(conditions), len(proxies), 4)
    sites = {layer: model.down_proj(layer) for layer in tables}
    if model.remote:
        import nnsight

        from . import targets

        nnsight.register(targets)
    # Prompts are counted only for a model with a sliding window (the shared prefix needs them inside it).
    shared_prefix_ok = model.attention_window is None or all(
        model.sees_whole_prompt(len(model.tokenizer(p.prompt)["input_ids"])) for p in proxies
    )
    if position == "answer" and len(conditions) > 1 and shared_prefix_ok:
        # Switches at the answer position cannot change earlier positions: one shared prefix per proxy,
        # then every condition as one query token after it (exact, ~C times cheaper than C full prompts).
        for i in tqdm(range(len(proxies)), disable=not progress, unit="proxy", desc=f"option probs x{len(conditions)}"):
            out[:, i] = _retrying(
                model,
                lambda: _shared_prefix_probs(model, proxies[i].prompt, tables, len(conditions), answer_ids[i], sites),  # noqa: B023 - called now
                f"example {proxies[i].example_id!r} proxy {proxies[i].proxy}",
            )
        rows = []
    for start in tqdm(range(0, len(rows), batch_size), disable=not progress, unit="batch", desc="option probs"):
        batch = rows[start : start + batch_size]
        ids, mask, positions = _left_padded(model.tokenizer, [proxies[i].prompt for _, i in batch])
        cond_index = torch.tensor([c for c, _ in batch])
        batch_answers = answer_ids[[i for _, i in batch]]
        probs = _retrying(
            model,
            lambda: _batch_probs(model, ids, mask, positions, rows_of(tables, cond_index), sites, batch_answers, position),  # noqa: B023
            f"examples {sorted({proxies[i].example_id for _, i in batch})[:3]}",
        )
        for (c, i), p in zip(batch, probs):
            out[c, i] = p
    return _labelled(out, conditions, proxies)


def _labelled(out: torch.Tensor, conditions: Sequence[Condition], proxies: Sequence[Proxy]) -> xr.DataArray:
    """[C, proxies, 4] option probabilities as the DataArray option_probs returns."""
    return xr.DataArray(
        out.numpy(),
        dims=("condition", "item", "option"),
        coords={
            "condition": [c.name for c in conditions],
            "option": list(LETTERS),
            "example": ("item", [p.example_id for p in proxies]),
            "proxy": ("item", [p.proxy for p in proxies]),
            "correct": ("item", [p.correct for p in proxies]),
        },
    )


def _retrying(model, fn, describe: str):
    """On NDIF, retry transient failures and name the example in server errors; locally just call."""
    if not model.on_server:
        return fn()
    from .remote import with_retries

    return with_retries(fn, describe=describe)


def _batch_probs(model, ids, mask, positions, scales, sites, answers, position) -> torch.Tensor:
    """Option probabilities [B, 4] of a left-padded batch, row b under the multipliers scales[layer][1][b]
    of the columns scales[layer][0] (switch_tables.rows_of)."""
    # The block must not name `model`: on NDIF it would be pickled by reference to nsneurons,
    # which the server does not have.
    lm = model.lm
    with lm.trace(ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, remote=model.remote):
        for layer, (columns, scale) in scales.items():
            neurons = sites[layer].input
            columns, scale = columns.to(neurons.device), scale.to(neurons.device, neurons.dtype)  # [U], [B, U]
            if position == "answer":
                neurons[:, -1, columns] = neurons[:, -1, columns] * scale
            else:
                neurons[:, :, columns] = neurons[:, :, columns] * scale[:, None, :]
        logits = lm.output.logits[:, -1].float()
        picked = torch.gather(logits, 1, answers.to(logits.device))
        probs = torch.softmax(picked, dim=-1).cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    return probs


def _shared_prefix_probs(model, prompt: str, tables: dict, n: int, answer_ids: torch.Tensor, sites: dict) -> torch.Tensor:
    """Option probabilities [n, 4] of one prompt under n conditions applied at its last token (tables: switch_tables)."""
    from transformers import DynamicCache

    from .trace_ops import shared_prefix_queries

    lm = model.lm
    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
    prompt_len = ids.shape[1] - 1
    dtype, device = model.compute_dtype, model.device
    query, positions, mask = shared_prefix_queries(ids, n, dtype, device)
    with lm.session(remote=model.remote):
        with lm.trace(ids[:, :prompt_len], past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1):
            prefix_cache = lm.output.past_key_values
        cache = DynamicCache(ddp_cache_data=[(layer.keys, layer.values) for layer in prefix_cache.layers])
        with lm.trace(query, past_key_values=cache, position_ids=positions, attention_mask=mask):
            for layer, (columns, table) in tables.items():
                neurons = sites[layer].input
                columns = columns.to(neurons.device)
                neurons[0, :, columns] = neurons[0, :, columns] * table.to(neurons.device, neurons.dtype)
            logits = lm.output.logits[0].float()
            probs = torch.softmax(logits[:, answer_ids.to(logits.device)], dim=-1).cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    return probs


def correct_table(probs: xr.DataArray) -> xr.DataArray:
    """Whether the most probable option is the correct one: bool (condition, example, proxy)."""
    chosen = probs.argmax("option")
    right = chosen == probs["correct"]
    return right.set_index(item=["example", "proxy"]).unstack("item")


def generate(model, prompt: str, condition: Condition = BASELINE, *, max_new_tokens: int = 20) -> str:
    """Greedy generation with the condition's switches applied at every position of every step."""
    tables = switch_tables([condition], model.n_layers, model.n_neurons)
    sites = {layer: model.down_proj(layer) for layer in tables}
    lm = model.lm  # not `model` inside the block (see _batch_probs)
    with lm.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False, remote=model.remote) as tracer:
        with tracer.iter[:max_new_tokens]:
            for layer, (columns, table) in tables.items():
                neurons = sites[layer].input
                columns = columns.to(neurons.device)
                neurons[..., columns] = neurons[..., columns] * table[0].to(neurons.device, neurons.dtype)
        tokens = lm.generator.output.save()
    ids = tokens[0] if tokens.dim() == 2 else tokens
    n_prompt = len(model.tokenizer(prompt)["input_ids"])
    return model.tokenizer.decode(ids[n_prompt:], skip_special_tokens=True)


def _option_unit_probs(model, proxies, options, tables: dict, n: int, position, progress) -> torch.Tensor:
    """[n, proxies, 4] option probabilities under n conditions (tables: switch_tables) when some option is
    longer than one token: per proxy, one query unit per condition after the cached prompt prefix (module docstring)."""
    from tqdm.auto import tqdm

    if position != "answer":
        raise ValueError(
            "position='all' needs every option's tokens run under the switches as well, which nsneurons does not "
            "do for options longer than one token (words answers); use position='answer' or single-token options"
        )
    out = torch.zeros(n, len(proxies), 4)
    sites = {layer: model.down_proj(layer) for layer in tables}
    for i in tqdm(range(len(proxies)), disable=not progress, unit="proxy", desc=f"option probs x{n}"):
        ids = model.tokenizer(proxies[i].prompt, return_tensors="pt")["input_ids"]
        seen = ids.shape[1] + max(len(o) for o in options[i]) - 1
        if not model.sees_whole_prompt(seen):
            raise ValueError(
                f"example {proxies[i].example_id!r}: the prompt and its options' tokens are {seen} tokens, more than the "
                f"sliding attention window of {model.hf_model.config.model_type} ({model.attention_window}); options "
                "longer than one token are scored after a shared prompt prefix, which needs every layer to see it all"
            )
        unit, index = option_unit(ids, options[i])
        out[:, i] = _retrying(
            model,
            lambda: _unit_probs(model, ids, unit, index, tables, n, sites),  # noqa: B023 - called now
            f"example {proxies[i].example_id!r} proxy {proxies[i].proxy}",
        )
    return out


def _unit_probs(model, ids, unit, index, tables: dict, n: int, sites: dict) -> torch.Tensor:
    """Option probabilities [n, 4] of one prompt under n conditions (tables: switch_tables), each a unit
    (option_units) after the cached prefix, switched at the unit's first token. Session body layout: nsneurons.ig_paths."""
    from transformers import DynamicCache

    from . import targets, trace_ops

    # The session body must not name `model` (see _batch_probs).
    lm, prefix = model.lm, ids[:, : ids.shape[1] - 1].to(model.device)
    width = unit[0].shape[1]
    query, positions, mask = trace_ops.shared_prefix_queries(ids, n, model.compute_dtype, model.device, unit)
    if model.remote:
        import nnsight

        nnsight.register(targets)
        nnsight.register(trace_ops)
    # fmt: off
    with lm.session(remote=model.remote):
        with lm.trace(prefix, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1):
            prefix_cache = lm.output.past_key_values
        cache = DynamicCache(ddp_cache_data=[(layer.keys, layer.values) for layer in prefix_cache.layers])
        with lm.trace(query, past_key_values=cache, position_ids=positions, attention_mask=mask):
            for layer, (columns, table) in tables.items():
                neurons = sites[layer].input
                columns = columns.to(neurons.device)
                neurons[0, ::width, columns] = neurons[0, ::width, columns] * table.to(neurons.device, neurons.dtype)
            scores = trace_ops.option_scores(lm.output.logits, index)
            probs = torch.softmax(scores, dim=-1).cpu().save()  # type: ignore[attr-defined]  # nnsight adds .save() to tensors inside a trace
    # fmt: on
    return probs
