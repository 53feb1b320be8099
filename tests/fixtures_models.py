"""Tiny random models and offline tokenizers for tests (no hub, no network)."""

from __future__ import annotations

import functools

import torch

# Words that tests and fixture tasks need as whole tokens.
_CORPUS_WORDS = (
    "positive negative neutral not sure person location organization event building art product other "
    "yes no true false Answer Question Options You are an expert Read the question and four options then answer with "
    "letter of single correct option text review sentiment entity type sentence chunk phrase is a the of in on "
    "A B C D movie film good bad great boring was it this"
).split()


def _corpus() -> list[str]:
    lines = []
    for i in range(40):
        lines.append(" ".join(_CORPUS_WORDS[i % 7 :] + _CORPUS_WORDS[: i % 7]))
    lines += ["Answer: A", "Answer: B", "Answer: C", "Answer: D", "A. B. C. D.", "Options:\nA. x\nB. y"] * 20
    return lines


@functools.cache
def _gpt2_style_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok.to_str()


@functools.cache
def _llama_style_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"-()\n"),
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok.to_str()


def gpt2_style_tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_gpt2_style_tokenizer_json()), eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def llama_style_tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_llama_style_tokenizer_json()), unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_hf_model(kind: str = "llama", *, layers: int = 2, vocab_size: int = 600, seed: int = 0):
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        )
    elif kind == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab_size,
            bos_token_id=0,
            eos_token_id=0,
            n_embd=64,
            n_layer=layers,
            n_head=4,
            n_positions=512,
            n_inner=128,
        )
    elif kind == "gpt_neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab_size,
            bos_token_id=0,
            eos_token_id=0,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=512,
        )
    else:
        raise ValueError(kind)
    return _sharpened(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32))


def _sharpened(model):
    """Random init makes logits nearly flat; a larger weight scale gives gradients worth comparing."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(3.0)
    return model.eval()


def tiny_model(kind: str = "llama", *, layers: int = 2, seed: int = 0, remote=False):
    from nsneurons.models import wrap

    tok = gpt2_style_tokenizer() if kind in ("gpt2", "gpt_neox") else llama_style_tokenizer()
    return wrap(tiny_hf_model(kind, layers=layers, vocab_size=len(tok), seed=seed), tok, source=f"tiny-{kind}", remote=remote)


def tiny_model_of_type(model_type: str, *, sliding_window: int = 64, layers: int = 3, seed: int = 0):
    """A 3-layer random model of any architecture in nsneurons' site table (offline tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from nsneurons.models import wrap

    if model_type in ("gpt2", "gpt_neox"):
        return tiny_model(model_type, layers=layers, seed=seed)
    tok = llama_style_tokenizer()
    if model_type == "gptj":
        kwargs = dict(n_embd=64, n_inner=128, n_layer=layers, n_head=4, rotary_dim=8, n_positions=256)
    else:
        kwargs = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            head_dim=16,
            sliding_window=sliding_window,
        )
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), pad_token_id=0, bos_token_id=1, eos_token_id=2, **kwargs)
    torch.manual_seed(seed)
    hf = _sharpened(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32))
    return wrap(hf, tok, source=f"tiny-{model_type}")


def save_tiny_llama(path, *, layers: int = 2, seed: int = 0):
    """A tiny random LLaMA and its tokenizer written with save_pretrained (what `--model FOLDER` loads)."""
    tok = llama_style_tokenizer()
    tiny_hf_model("llama", layers=layers, vocab_size=len(tok), seed=seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


SENTIMENT_OPTIONS = ("positive", "negative", "neutral", "not sure")


def sentiment_proxies(n_examples: int):
    """n_examples x 3 hand-made sentiment proxies, each example's prompt its own, correct (e + p) % 4."""
    from nsneurons.tasks.base import Proxy

    text = "Question: review number {} was good\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"
    return [
        Proxy(f"ex{e}", p, text.format(e), SENTIMENT_OPTIONS, (e + p) % 4, "sentiment")
        for e in range(n_examples)
        for p in range(3)
    ]


def loaded(ds):
    """A store's dataset in memory, its `created` timestamp left out (for assert_identical)."""
    ds = ds.load()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "created"}
    return ds
