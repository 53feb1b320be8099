"""The nnsight sessions that compute IG: the shared-prefix paths (staircase, prefix) and the full-prompt reference.

Each returns, per prompt, one `trace_ops.PassResult` per chunk of layers (see nsneurons.attribution
for what the paths do and why they give the same numbers).

How a session body must be written (what breaks `remote="local"` and NDIF): nnsight ships a session
body as `ast.unparse` of its statements, keeping only the first statement's line number, and then
finds each nested `with lm.trace(...)` by its line number in that regenerated text. So, in a session
body, everything up to its last nested `with` must already be laid out as `ast.unparse` writes it:
one statement per line, no comment or blank line, no statement over several lines (a long `with`
stays on one line). Otherwise a later trace's block is misplaced and fails: one comment line after
`per_prompt = []` below gave `WithBlockNotFoundError` under `remote="local"` (nnsight 0.8.1; before a
nested `.backward()` the notes saw `TypeError: 'NoneType' object does not support the context manager
protocol`). `tests/test_attribution.py` runs every path under `remote="local"`. Trace bodies call only
`trace_ops` (shipped to NDIF by value) and `targets`. A formatter would break the rule, so the
session bodies are fenced with `# fmt: off` / `# fmt: on`.
"""

from __future__ import annotations

from collections.abc import Sequence

import nnsight
import torch

from . import targets as _targets
from . import trace_ops
from .architectures import get_path
from .option_units import full_rows, option_unit, single_token
from .placement import offloaded
from .trace_ops import PassResult, PassSpec, PromptPlan


def ship_trace_code(model) -> None:
    """Remote traces run where nsneurons is not installed: ship the torch-only helpers by value."""
    if model.remote:
        nnsight.register(_targets)
        nnsight.register(trace_ops)


def answer_head(model, target: str):
    """The output layer's envoy when F needs only the four answer logits and that layer is a plain
    linear map (so its four rows, and its bias's four entries where it has one, such as GPT-J's,
    give exactly those logits); else None (full-vocabulary logits)."""
    if target not in _targets.ANSWER_LOGITS_ONLY:
        return None
    head = model.hf_model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or offloaded(head):  # offloaded: its weights are read below, outside its forward
        return None
    name = next(name for name, module in model.hf_model.named_modules() if module is head)
    return get_path(model.lm, name)


def common_prefix_len(sequences: Sequence[torch.Tensor]) -> int:
    """Number of leading tokens that all 1-D token sequences share."""
    n = min(len(seq) for seq in sequences)
    for seq in sequences[1:]:
        differs = (seq[:n] != sequences[0][:n]).nonzero()
        n = int(differs[0]) if len(differs) else n
    return n


def prefix_cache_plans(model, prompts, corrects, chunks, rows: int, staircase: bool, answers_only: bool):
    """Everything the prefix-cache traces need, built before the session (whose body runs on NDIF, where
    nsneurons is not installed): the prompts' common prefix ids, and per prompt a `PromptPlan`.

    Every prompt minus its last token is a cached prefix: its first `common` tokens run once, then
    each prompt's own tokens extend them (under an explicit causal mask: docs/design.md). A prompt whose
    options are longer than one token queries with units (nsneurons.option_units) instead of its last token."""
    dtype, device = model.compute_dtype, model.device
    common = common_prefix_len([ids[0, :-1] for ids, _ in prompts])
    plans = []
    for (ids, options), correct in zip(prompts, corrects):
        prompt_len = ids.shape[1] - 1
        own = prompt_len - common
        own_ids = own_inputs = None
        if own > 0:
            own_ids = ids[:, common:prompt_len].to(device)
            own_inputs = dict(
                position_ids=torch.arange(common, prompt_len, device=device)[None],
                attention_mask=trace_ops.extension_mask(common, own, dtype, device),
            )
        sizes = [1] if staircase else sorted({len(c) * rows for c in chunks})
        answer_ids = torch.tensor([option[0] for option in options])
        unit = index = None
        if not single_token(options):
            unit, index = option_unit(ids, options)
        queries = {n: trace_ops.shared_prefix_queries(ids, n, dtype, device, unit) for n in sizes}
        # With only the answer logits computed, they come in A..D order.
        target_ids = torch.arange(len(answer_ids)) if answers_only and unit is None else answer_ids
        pattern = None if unit is None else unit[2]
        plans.append(PromptPlan(prompt_len, own_ids, own_inputs, queries, answer_ids, target_ids, correct, pattern, index))
    return prompts[0][0][:, :common], plans


def prefix_path(model, prompts, corrects, config, alphas, weights, chunks, staircase: bool) -> list[list[PassResult]]:
    """Shared-prefix computation (staircase or flat rows) of several prompts, in one session so that a
    remote prefix cache stays on the server."""
    from transformers import DynamicCache

    lm, blocks, n_layers = model.lm, model.layers(), model.n_layers
    rows = len(alphas)
    sites = {layer: model.down_proj(layer) for chunk in chunks for layer in chunk}
    head = answer_head(model, config.target)
    head_has_bias = head is not None and model.hf_model.get_output_embeddings().bias is not None
    common_ids, plans = prefix_cache_plans(model, prompts, corrects, chunks, rows, staircase, head is not None)
    common, device = common_ids.shape[1], model.device
    # The unscaled row: row 0 (staircase), or group 0's alpha = 1 row (flat), where the groups begin.
    rows_at = (0, 1) if staircase else (rows - 1, 0)
    spec = PassSpec(_targets.get_target(config.target), config.steps, weights, *rows_at, _targets.get_score_target(config.target))
    ship_trace_code(model)
    # Prefix traces get a cache made without the model's config: it keeps every key (a sliding-window
    # layer's own cache keeps only the last window's), as the queries' mask expects. `per_prompt` is
    # made and saved inside the session: on NDIF only saved values come back. Body layout: module docstring.
    # fmt: off
    with lm.session(remote=model.remote, backend=model.session_backend):
        per_prompt = []
        common_kv = []
        if common > 0:
            with lm.trace(common_ids.to(device), past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1):
                common_cache = lm.output.past_key_values
            common_kv = [(layer.keys.detach(), layer.values.detach()) for layer in common_cache.layers]
        for plan in plans:
            kv = common_kv
            if plan.own_ids is not None:
                own_cache = DynamicCache(ddp_cache_data=common_kv) if common > 0 else DynamicCache()
                with lm.trace(plan.own_ids, past_key_values=own_cache, use_cache=True, logits_to_keep=1, **plan.own_inputs):
                    prompt_cache = lm.output.past_key_values
                kv = [(layer.keys.detach(), layer.values.detach()) for layer in prompt_cache.layers]
            results = []
            for chunk in chunks:
                query, positions, mask = plan.queries[1 if staircase else len(chunk) * rows]
                cache = DynamicCache(ddp_cache_data=kv)
                with lm.trace(query, past_key_values=cache, position_ids=positions, attention_mask=mask):
                    if staircase:
                        scaled, originals = trace_ops.staircase_rows(blocks, sites, chunk, n_layers, alphas, plan.prompt_len, plan.pattern)
                    else:
                        scaled, originals = trace_ops.flat_rows(sites, chunk, alphas, plan.pattern)
                    if head is not None and plan.option_index is None:
                        trace_ops.answer_logits_only(head, plan.answer_ids, head_has_bias)
                    record = trace_ops.pass_result(spec, lm.output.logits, plan.target_ids, plan.correct, scaled, originals, plan.option_index)
                results.append(record)
            per_prompt.append(results)
        nnsight.save(per_prompt)
    # fmt: on
    return per_prompt


def full_path(model, ids, options, correct, config, alphas, weights, chunks) -> list[PassResult]:
    """Reference: per layer, m + 1 copies of the full prompt, last position scaled at that layer.
    `options`: the four options' token sequences (nsneurons.answers.proxy_option_ids)."""
    if not single_token(options):
        return full_path_options(model, ids, options, correct, config, alphas, weights, chunks)
    answer_ids = torch.tensor([option[0] for option in options])
    lm = model.lm
    rows = len(alphas)
    batch = ids.expand(rows, -1)
    sites = [(layer, model.down_proj(layer)) for chunk in chunks for layer in chunk]
    spec = PassSpec(_targets.get_target(config.target), config.steps, weights, rows - 1, 0)  # the alpha = 1 row is x
    ship_trace_code(model)
    # `results` is made and saved inside the session (see prefix_path). Body layout: module docstring.
    # fmt: off
    with lm.session(remote=model.remote, backend=model.session_backend):
        results = []
        for _layer, site in sites:
            with lm.trace(batch):
                neurons = site.input
                original = neurons[0, -1].detach().clone()
                step_values = trace_ops.scaled_copies(original, alphas)
                neurons[:, -1] = step_values
                record = trace_ops.pass_result(spec, lm.output.logits[:, -1], answer_ids, correct, [step_values], [original])
            results.append(record)
        nnsight.save(results)
    # fmt: on
    return results


def full_path_options(model, ids, options, correct, config, alphas, weights, chunks) -> list[PassResult]:
    """The reference for options longer than one token: per layer, m + 1 alpha rows x the four options'
    full sequences (prompt + option tokens but the last; nsneurons.option_units.full_rows), the neurons
    scaled at the last prompt position by one tensor per alpha shared by its four rows."""
    lm = model.lm
    rows, answer_at = len(alphas), ids.shape[1] - 1
    sequences, index = full_rows(ids, options)
    batch = sequences.repeat(rows, 1).to(model.device)
    sites = [(layer, model.down_proj(layer)) for chunk in chunks for layer in chunk]
    spec = PassSpec(
        _targets.get_target(config.target), config.steps, weights, rows - 1, 0, _targets.get_score_target(config.target)
    )
    ship_trace_code(model)
    # `results` is made and saved inside the session (see prefix_path). Body layout: module docstring.
    # fmt: off
    with lm.session(remote=model.remote, backend=model.session_backend):
        results = []
        for _layer, site in sites:
            with lm.trace(batch):
                neurons = site.input
                original = neurons[0, answer_at].detach().clone()
                step_values = trace_ops.scaled_copies(original, alphas)
                neurons[:, answer_at] = step_values.repeat_interleave(4, dim=0)
                record = trace_ops.pass_result(spec, lm.output.logits[:, answer_at:], None, correct, [step_values], [original], index)
            results.append(record)
        nnsight.save(results)
    # fmt: on
    return results
