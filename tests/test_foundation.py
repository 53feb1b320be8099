"""Architecture table, model loading, answer tokens, batched baseline evaluation."""

import numpy as np
import pytest
from fixtures_models import gpt2_style_tokenizer, llama_style_tokenizer, tiny_hf_model
from reference import reference_option_probs

from nsneurons.answers import AnswerTokenError, answer_token_ids
from nsneurons.architectures import UnknownArchitectureError, site_for
from nsneurons.intervention import BASELINE, option_probs
from nsneurons.models import ModelLoadError, load_model, wrap
from nsneurons.tasks.base import Proxy

PROMPT = "Question: was it good\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"


@pytest.mark.parametrize(
    "fixture, family, blocks, module",
    [
        ("tiny_llama", "gated MLP (LLaMA-style)", 3, "down_proj"),
        ("tiny_gpt2", "GPT-2", 2, "c_proj"),
        ("tiny_neox", "GPT-NeoX", 2, "dense_4h_to_h"),
    ],
)
def test_architecture_table_finds_the_neurons(request, fixture, family, blocks, module):
    model = request.getfixturevalue(fixture)
    assert model.site.family == family
    assert (model.n_layers, model.n_neurons, model.total_neurons) == (blocks, 128, blocks * 128)
    assert model.down_proj(0, model.hf_model).__class__.__name__ in ("Linear", "Conv1D")
    assert model.site.down_proj.endswith(module)
    # The neurons are the down projection's input: 128 wide, not the 64-wide hidden state.
    with model.lm.trace("Answer: A"):
        neurons = model.down_proj(model.n_layers - 1).input.save()
    assert neurons.shape[-1] == 128


def test_unknown_architecture_says_how_to_add_it():
    hf = tiny_hf_model("gpt2", layers=1, vocab_size=len(gpt2_style_tokenizer()))
    hf.config.model_type = "mystery"
    with pytest.raises(UnknownArchitectureError, match=r"model_type 'mystery'.*Add a row to nsneurons.architectures.SITES"):
        wrap(hf, gpt2_style_tokenizer())
    assert site_for("mistral").down_proj == "mlp.down_proj"


def test_load_model_from_folder_and_clear_errors(tmp_path):
    tok = llama_style_tokenizer()
    tiny_hf_model("llama", layers=2, vocab_size=len(tok)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model = load_model(str(tmp_path / "m"), device="cpu", dtype="float32")
    assert (model.n_layers, model.n_neurons) == (2, 128)
    assert "2 layers x 128 neurons = 256 FFN neurons" in model.describe()
    with pytest.raises(ModelLoadError, match="GGUF file .*nothing.gguf' does not exist"):
        load_model(str(tmp_path / "nothing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="dtype 'float8'"):
        load_model(str(tmp_path / "m"), dtype="float8")


@pytest.mark.parametrize(
    "make_tok, letter_a, word",
    [
        (llama_style_tokenizer, "▁A", "▁positive"),
        (gpt2_style_tokenizer, "ĠA", "Ġpositive"),
    ],
)
def test_answer_tokens_letters_and_words(make_tok, letter_a, word):
    tok = make_tok()
    options = ("positive", "negative", "neutral", "not sure")
    letters = answer_token_ids(tok, PROMPT, options, "letters")
    assert tok.convert_ids_to_tokens(letters[0]) == letter_a
    assert len(set(letters)) == 4
    words = answer_token_ids(tok, PROMPT, options, "words")
    assert tok.convert_ids_to_tokens(words[0]) == word
    # The first token of " not sure" as it follows "Answer:".
    assert tok.convert_ids_to_tokens(words[3]) == tok.tokenize("Answer: not sure")[-2 if make_tok is gpt2_style_tokenizer else 1]


@pytest.mark.parametrize("make_tok", [llama_style_tokenizer, gpt2_style_tokenizer])
def test_answer_token_collision_names_the_options(make_tok):
    tok = make_tok()
    with pytest.raises(AnswerTokenError, match=r"'not sure' / 'not good'"):
        answer_token_ids(tok, PROMPT, ("positive", "negative", "not sure", "not good"), "words")


def test_batched_option_probs_equal_single_prompts(tiny_llama):
    options = ("positive", "negative", "neutral", "not sure")
    proxies = [Proxy(f"e{i}", 0, "Review: " + "good " * (3 * i + 1) + "\n" + PROMPT, options, i % 4, "s") for i in range(6)]
    probs = option_probs(tiny_llama, proxies, [BASELINE], batch_size=4)  # lengths differ within each batch
    for i, proxy in enumerate(proxies):
        ids = tiny_llama.tokenizer(proxy.prompt, return_tensors="pt").input_ids
        answers = list(answer_token_ids(tiny_llama.tokenizer, proxy.prompt, options, "letters"))
        single = reference_option_probs(tiny_llama.hf_model, ids, answers)[0].numpy()
        np.testing.assert_allclose(probs.values[0, i], single, atol=1e-5)
    assert np.allclose(probs.values.sum(-1), 1, atol=1e-5)
