"""What `nsneurons plan` reads before it counts: the model's shape from its config (no weights are
loaded), its tokenizer, and the recipe's prompts grouped into sessions as the runners group them.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import plan_work
from .plan_work import ModelShape

# SmolLM2-135M-Instruct's config (nsneurons.demo_model), used when the demo folder is not built yet.
_DEMO_CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 30,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "tie_word_embeddings": True,
}

# The models of the NDIF recipes (recipes/*-ndif.yaml), as their config.json gives them: used only
# when the hub cannot be reached (the models are gated), so their plans can be made anywhere.
_SERVED_CONFIGS = {
    "meta-llama/Llama-3.1-8B": {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
    },
    "meta-llama/Llama-3.1-70B": {
        "num_hidden_layers": 80,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_attention_heads": 64,
    },
}
_LLAMA31 = {"model_type": "llama", "vocab_size": 128256, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": False}


def _first(config: dict, *names, default=None):
    return next((config[n] for n in names if config.get(n) is not None), default)


def shape_from_config(config: dict, source: str) -> ModelShape:
    """The sizes that set the cost, from a config.json mapping (LLaMA, GPT-2 and GPT-J spellings)."""
    from .architectures import site_for

    config = config.get("text_config") or config  # multimodal configs keep the language model's sizes inside
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head")
    vocab = _first(config, "vocab_size")
    if None in (hidden, layers, heads, vocab):
        raise ValueError(f"model {source}: its config lacks hidden size, layers, heads or vocab size; cannot plan")
    neurons = _first(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
    kv = _first(config, "num_key_value_heads", default=heads)
    head_dim = _first(config, "head_dim", default=hidden // heads)
    gated = site_for(config["model_type"]).family.startswith("gated")
    attention = hidden * heads * head_dim * 2 + 2 * hidden * kv * head_dim
    per_block = attention + (3 if gated else 2) * hidden * neurons + 2 * hidden
    tied = bool(config.get("tie_word_embeddings", True))
    params = layers * per_block + vocab * hidden * (1 if tied else 2) + hidden
    return ModelShape(config["model_type"], layers, neurons, hidden, vocab, heads, kv, head_dim, per_block, params, source)


def read_model_shape(model: str, revision: str | None = None, trust_remote_code: bool = False) -> ModelShape:
    """A model's shape from its config only: "demo", a save_pretrained folder, a .gguf file, or a hub id."""
    from .content import cache_root
    from .demo_model import HF_DIR_NAME
    from .models import DEMO_ALIASES

    if model.lower() in DEMO_ALIASES:
        path = cache_root() / HF_DIR_NAME / "config.json"
        if not path.is_file():
            return shape_from_config(_DEMO_CONFIG, "demo (built-in config; `nsneurons demo-model` fetches the model)")
        return shape_from_config(json.loads(path.read_text()), f"demo ({path})")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model {model!r}: folder has no config.json (expected a save_pretrained folder)")
        return shape_from_config(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    from transformers import AutoConfig

    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"model {model!r}: no such GGUF file")
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)  # reads the header, not the weights
    else:
        try:
            config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        except OSError:  # offline, or a gated model without a login
            if model not in _SERVED_CONFIGS:
                raise
            return shape_from_config(_LLAMA31 | _SERVED_CONFIGS[model], f"{model} (built-in config; the hub was not reached)")
    return shape_from_config(config.to_dict(), model)


def tokenizer_for(recipe):
    """The model's tokenizer (small files), or None when it cannot be had (then prompts are counted by words)."""
    from .content import cache_root
    from .demo_model import HF_DIR_NAME
    from .models import DEMO_ALIASES

    source = str(cache_root() / HF_DIR_NAME) if recipe.model.lower() in DEMO_ALIASES else recipe.model
    try:
        from transformers import AutoTokenizer

        path = Path(source).expanduser()
        if path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(source, revision=recipe.revision, trust_remote_code=recipe.trust_remote_code)
    except Exception:  # noqa: BLE001 - any failure (offline, no files yet) falls back to a word count
        return None


def _lengths(tokenizer, proxies) -> list[list[int]]:
    """Token ids of each prompt (or ~1.35 tokens per word without a tokenizer: made-up ids, no shared prefix)."""
    if tokenizer is None:
        return [list(range(-i - 1, -i - 1 - max(2, round(1.35 * len(p.prompt.split()))), -1)) for i, p in enumerate(proxies)]
    return tokenizer([p.prompt for p in proxies])["input_ids"]


def _option_lengths(tokenizer, proxies) -> list[tuple[int, ...]]:
    """Tokens of each proxy's options (as the runner scores them); one each without a tokenizer."""
    from .answers import proxy_option_ids

    if tokenizer is None:
        return [(1, 1, 1, 1)] * len(proxies)
    return [tuple(len(o) for o in proxy_option_ids(tokenizer, p)) for p in proxies]


def groups_of(tokenizer, proxies) -> list[plan_work.Group]:
    """Proxies grouped as the runner groups them (one example or query per session), as token counts."""
    ids, options = _lengths(tokenizer, proxies), _option_lengths(tokenizer, proxies)
    by_key: dict[str, tuple[list, list]] = {}
    for p, i, o in zip(proxies, ids, options):
        seqs, opts = by_key.setdefault(p.example_id, ([], []))
        seqs.append(i)
        opts.append(o)
    return [plan_work.group_of(seqs, opts) for seqs, opts in by_key.values()]


def stage_inputs(recipe, tokenizer, prompt_tokens: int | None):
    """{task: (identification groups, candidate groups)} from the data, or assumed with `prompt_tokens` (no data read)."""
    from .preflight import naica_inputs, task_inputs

    if prompt_tokens is None:
        if recipe.experiment == "naica":
            return {"NA-ICA": ([], groups_of(tokenizer, naica_inputs(recipe)))}
        return {
            task: (groups_of(tokenizer, ids), groups_of(tokenizer, cands)) for task, (ids, cands) in task_inputs(recipe).items()
        }
    # An example's 3 proxies differ in their options and answer cue (~16 tokens in the packaged tasks); NA-ICA's
    # prompts differ in their instruction template, so share nothing.
    assumed = lambda n, common: [plan_work.Group((prompt_tokens,) * 3, common)] * n
    if recipe.experiment == "naica":
        n = recipe.naica
        if not (n.domains and n.max_per_domain):
            raise ValueError("naica: planning without the data (--prompt-tokens) needs naica.domains and naica.max_per_domain")
        return {"NA-ICA": ([], assumed(len(n.domains) * n.max_per_domain, 0))}
    ev, common = recipe.evaluation, max(0, prompt_tokens - 17)
    candidates = ev.candidates or 3 * (ev.understood + ev.not_understood)
    return {t.name: (assumed(recipe.identification_examples, common), assumed(candidates, common)) for t in recipe.tasks}
