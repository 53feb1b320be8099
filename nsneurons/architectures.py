"""Where the FFN neurons live, per architecture: the one place that knows module paths.

A "neuron" is one coordinate of the input of the MLP down projection (after the activation
function and, for gated MLPs, after the gate product), at one layer. Adding an architecture
is adding a row to `SITES`; nothing else in nsneurons branches on the model type.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeuronSite:
    """Module paths for one architecture family.

    layers: attribute path from the top-level HF model to the list of transformer blocks.
    down_proj: attribute path, inside one block, to the module whose *input* holds the neurons.
    """

    layers: str
    down_proj: str
    family: str


_GATED = NeuronSite(layers="model.layers", down_proj="mlp.down_proj", family="gated MLP (LLaMA-style)")

SITES: dict[str, NeuronSite] = {
    # Gated MLPs: down_proj(act(gate_proj(x)) * up_proj(x)).
    "llama": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
    "qwen3": _GATED,
    "baichuan": _GATED,
    "gemma": _GATED,
    "gemma2": _GATED,
    "gemma3_text": _GATED,
    "olmo": _GATED,
    "olmo2": _GATED,
    "granite": _GATED,
    "smollm3": _GATED,
    "phi3": _GATED,
    # GPT-2: c_proj(gelu(c_fc(x))); c_proj is a Conv1D whose input is post-GELU.
    "gpt2": NeuronSite(layers="transformer.h", down_proj="mlp.c_proj", family="GPT-2"),
    # GPT-NeoX / Pythia: dense_4h_to_h(gelu(dense_h_to_4h(x))).
    "gpt_neox": NeuronSite(layers="gpt_neox.layers", down_proj="mlp.dense_4h_to_h", family="GPT-NeoX"),
    "gptj": NeuronSite(layers="transformer.h", down_proj="mlp.fc_out", family="GPT-J"),
    # Not OPT: its decoder layer flattens (batch, position) into one axis before fc1/fc2, so its
    # neuron tensor has no position axis to select the answer position on.
}


class UnknownArchitectureError(ValueError):
    pass


def site_for(model_type: str) -> NeuronSite:
    try:
        return SITES[model_type]
    except KeyError:
        known = ", ".join(sorted(SITES))
        raise UnknownArchitectureError(
            f"no FFN neuron site is known for model_type {model_type!r} (known: {known}). "
            "Add a row to nsneurons.architectures.SITES naming the path to the list of blocks and, "
            "inside a block, the MLP down-projection module whose input holds the neurons, e.g. "
            "SITES['mytype'] = NeuronSite(layers='model.layers', down_proj='mlp.down_proj', family='...')."
        ) from None


def sliding_window(config) -> int | None:
    """The attention window of the model's sliding-window layers (Mistral, Gemma 2/3, ...), or None
    when every layer attends to the whole prompt. Read from the HF config, which says it the same
    way for every architecture (`sliding_window`, and `layer_types` / `use_sliding_window` where
    only some layers or none use it)."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


def get_path(obj, path: str):
    """Follow a dotted attribute path (works on HF modules and on nnsight envoys alike)."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def neurons_per_layer(down_proj_module) -> int:
    """Input width of a down projection: nn.Linear (in_features) or GPT-2's Conv1D (weight rows)."""
    if hasattr(down_proj_module, "in_features"):
        return int(down_proj_module.in_features)
    weight = down_proj_module.weight
    # transformers' Conv1D stores weight as (in, out) and has `nf` = out features.
    return int(weight.shape[0]) if hasattr(down_proj_module, "nf") else int(weight.shape[1])
