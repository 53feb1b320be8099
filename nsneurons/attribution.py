"""Integrated gradients of every FFN neuron at the answer position, inside nnsight traces (Eq. 1).

IG_i = a_i * sum_k w_k dF/d(scaled a_i) at scaled a = alpha_k * a, for one layer at a time (other
layers untouched); nodes alpha_k and weights w_k from nsneurons.quadrature: alpha_k = k/m, w_k = 1/m
(right Riemann, the paper's Eq. 1), (k - 1/2)/m (midpoint) or Gauss-Legendre.

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
`session`, so on NDIF the prefix cache never leaves the server (the sessions: nsneurons.ig_paths,
which also says how their bodies must be written).

Options longer than one token (words answers; the paper's Eq. 2): F reads the four options' summed
log-probabilities (nsneurons.targets). On the shared-prefix paths a row is then a *unit* of T tokens,
the last token followed by each option's tokens but its last, each option attending only to its
own tokens (nsneurons.option_units); rows are scaled at the unit's first token. On `full`, each alpha
row is four sequences, prompt + option tokens. Single-token options are exactly the layout above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import quadrature as _quadrature
from . import targets as _targets
from .answers import check_answer_format, proxy_option_ids
from .ig_paths import full_path, prefix_path
from .ig_settings import IGSettings
from .placement import free_gpu_bytes, without_cudnn_attention
from .tasks.base import AnswerFormat, Proxy
from .trace_ops import PassResult


@dataclass(frozen=True)
class AttributionConfig(IGSettings):
    """How IG is computed: the IGSettings a recipe's `attribution:` section shares (steps, quadrature,
    path, layers_per_pass), the target and the answer format. Every field is recorded in the store's provenance."""

    target: str = "ace"  # a name in nsneurons.targets.TARGETS
    # None: each proxy's own (the format travels with the proxies); if given, it must agree with theirs.
    answer_format: AnswerFormat | None = None

    def __post_init__(self):
        _targets.get_target(self.target)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        _quadrature.check(self.quadrature)
        if self.path not in ("staircase", "prefix", "full"):
            raise ValueError(f"path must be 'staircase', 'prefix' or 'full', got {self.path!r}")


@dataclass
class ProxyAttribution:
    """Results for one proxy question, as float32 numpy arrays over the attributed layers."""

    ig: np.ndarray  # [layers, neurons]
    activation: np.ndarray  # [layers, neurons], unscaled, at the answer position
    option_prob: (
        np.ndarray
    )  # [4], softmax over the four options' scores (their answer tokens' logits, or summed log-probs: Eq. 2)
    target_value: float  # F(x)
    completeness_gap: np.ndarray  # [layers]: sum(IG) - (F(x) - F(layer zeroed)), i.e. ig_sum - ig_delta
    ig_sum: np.ndarray  # [layers]: sum of the layer's IG
    ig_delta: np.ndarray  # [layers]: F(x) - F(x with the layer's neurons zeroed at the answer position), the IG baseline


def layers_per_pass_for(
    *,
    vocab: int,
    hidden: int,
    n_layers: int,
    n_neurons: int,
    n_attr: int,
    steps: int,
    prompt_len: int,
    budget: int,
    row_tokens: int = 1,
) -> int:
    """Layers per pass when `layers_per_pass` is None: a memory budget (bytes) over a per-row estimate, where
    logits and activations per query token dominate (a row is `row_tokens` tokens: a unit of multi-token
    options). At most `n_attr`, the layers attributed. `nsneurons plan` counts with the same rule."""
    bytes_per_row = 4 * (2 * vocab + n_layers * (12 * hidden + 4 * n_neurons) + 2 * prompt_len)
    rows = max(1, budget // (bytes_per_row * row_tokens))
    return int(max(1, min(n_attr, rows // (steps + 2))))


def _auto_layers_per_pass(model, n_layers: int, steps: int, prompt_len: int, row_tokens: int = 1) -> int:
    """layers_per_pass_for with this model's sizes and memory budget: 8 GiB on NDIF, half the free memory of
    a GPU, 4 GiB on CPU."""
    cfg = model.hf_model.config
    hidden = getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 1024)  # absent or None/0: GPT-2's n_embd
    if model.on_server:
        budget = 8 << 30
    elif model.device.type == "cuda":
        budget = int(free_gpu_bytes(model.hf_model) * 0.5)  # every GPU a split model runs on, summed
    else:
        budget = 4 << 30
    return layers_per_pass_for(
        vocab=cfg.vocab_size,
        hidden=hidden,
        n_layers=model.n_layers,
        n_neurons=model.n_neurons,
        n_attr=n_layers,
        steps=steps,
        prompt_len=prompt_len,
        budget=budget,
        row_tokens=row_tokens,
    )


def attribute_proxy(model, proxy: Proxy, config: AttributionConfig, layers: Sequence[int] | None = None) -> ProxyAttribution:
    """IG of every neuron of `layers` (default: all) for one proxy question."""
    return attribute_proxies(model, [proxy], config, layers)[0]


@without_cudnn_attention
def attribute_proxies(
    model, proxies: Sequence[Proxy], config: AttributionConfig, layers: Sequence[int] | None = None
) -> list[ProxyAttribution]:
    """IG of every neuron of `layers` (default: all) for several proxy questions, in one session.

    On the shared-prefix paths the tokens the prompts have in common (an example's three proxies
    share role, rules, demonstration and question stem) run once; each prompt's own remaining
    tokens then extend that cache. Same numbers as one `attribute_proxy` call per proxy."""
    layers = checked_layers(model, layers)
    if not proxies:
        raise ValueError("no proxies to attribute")
    prompts = [_prepare(model, proxy, config) for proxy in proxies]
    alphas = _quadrature.alphas_for(config.steps, config.quadrature)
    weights = _quadrature.step_weights(config.steps, config.quadrature)
    longest = max(ids.shape[1] for ids, _ in prompts)
    row_tokens = max(unit_tokens(options) for _, options in prompts)
    per_pass = config.layers_per_pass or _auto_layers_per_pass(model, len(layers), config.steps, longest, row_tokens)
    chunks = [layers[i : i + per_pass] for i in range(0, len(layers), per_pass)]
    corrects = [proxy.correct for proxy in proxies]
    if config.path == "full":
        per_prompt = [
            full_path(model, ids, options, correct, config, alphas, weights, chunks)
            for (ids, options), correct in zip(prompts, corrects)
        ]
    else:
        per_prompt = prefix_path(model, prompts, corrects, config, alphas, weights, chunks, staircase=config.path == "staircase")
    return [_assemble(results) for results in per_prompt]


def checked_layers(model, layers: Sequence[int] | None) -> list[int]:
    """The layers to attribute, ascending and without repeats (None: all); refused if outside the model."""
    layers = list(range(model.n_layers)) if layers is None else sorted(set(int(layer) for layer in layers))
    if not layers or layers[0] < 0 or layers[-1] >= model.n_layers:
        raise ValueError(f"layers must be a non-empty selection of 0..{model.n_layers - 1}, got {layers}")
    return layers


def unit_tokens(options) -> int:
    """Tokens of one shared-prefix row (T): the last prompt token and every option's tokens but its last
    (`options`: the options' token sequences, or their lengths)."""
    return 1 + sum((option if isinstance(option, int) else len(option)) - 1 for option in options)


def _prepare(model, proxy: Proxy, config: AttributionConfig):
    """(input ids [1, T], the four options' token sequences) of one proxy, with its prompt checked."""
    check_answer_format([proxy], config.answer_format)
    options = proxy_option_ids(model.tokenizer, proxy)
    ids = model.tokenizer(proxy.prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] < 2:
        raise ValueError(f"prompt of example {proxy.example_id!r} has fewer than 2 tokens")
    # The options' tokens must see the whole prompt too (their last input sits longest - 1 tokens on).
    seen = ids.shape[1] + max(len(option) for option in options) - 1
    if config.path != "full" and not model.sees_whole_prompt(seen):
        raise ValueError(
            f"prompt of example {proxy.example_id!r} has {ids.shape[1]} tokens"
            + (f" ({seen} with its options' tokens)" if seen > ids.shape[1] else "")
            + ", more than the sliding attention "
            f"window of {model.hf_model.config.model_type} ({model.attention_window}); path "
            f"{config.path!r} assumes every layer sees the whole prompt: use path 'full' for this model"
        )
    return ids, options


def _assemble(results: Sequence[PassResult]) -> ProxyAttribution:
    """One prompt's passes as arrays over its layers, with the completeness check per layer."""
    ig = torch.cat([r.ig for r in results]).float()
    act = torch.cat([r.activation for r in results]).float()
    f_rows = torch.cat([r.f_table for r in results]).float()  # [layers, rows]; row 0: the layer zeroed (alpha = 0)
    f_x, option_logits = float(results[0].f_x), results[0].option_logits
    ig_sum, ig_delta = ig.sum(1), f_x - f_rows[:, 0]
    gap = ig_sum - ig_delta
    return ProxyAttribution(
        ig=ig.numpy(),
        activation=act.numpy(),
        option_prob=torch.softmax(option_logits.float(), -1).numpy().astype(np.float32),
        target_value=f_x,
        completeness_gap=gap.numpy().astype(np.float32),
        ig_sum=ig_sum.numpy().astype(np.float32),
        ig_delta=ig_delta.numpy().astype(np.float32),
    )
