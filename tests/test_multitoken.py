"""Options longer than one token (the paper's Eq. 2): summed log-probabilities on every IG path and in
interventions, against independent plain-PyTorch references (tests/reference.py)."""

import math

import numpy as np
import pytest
import torch
from reference import REFERENCE_SCORE_TARGETS, reference_ig_options, reference_option_scores

from nsneurons import targets, trace_ops
from nsneurons.answers import AnswerTokenError, check_answer_tokens, option_token_ids, proxy_option_ids
from nsneurons.attribution import AttributionConfig, attribute_proxies, attribute_proxy
from nsneurons.intervention import BASELINE, Condition, option_probs
from nsneurons.tasks.base import Proxy

PROMPT = (
    "You are an expert. Read the question and four options then answer with the text of the correct option.\n"
    "Question: this movie was good\nOptions:\nA. positive\nB. not sure\nC. not good at\nD. bad film\nAnswer:"
)
# Under both tiny tokenizers: 1, 2, 4 and 2 tokens; B and C share their first token (" not").
OPTIONS = ("positive", "not sure", "not good at", "bad film")
LENGTHS = (1, 2, 4, 2)


def _proxy(correct=1, prompt=PROMPT, options=OPTIONS):
    return Proxy("e1", 0, prompt, options, correct, "sentiment", answer_format="words")


def _max_rel(a, b):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def model(request):
    return request.getfixturevalue(request.param)


def test_options_are_token_sequences_and_first_token_collisions_are_fine(llama_tok, gpt2_tok):
    for tok in (llama_tok, gpt2_tok):
        sequences = option_token_ids(tok, PROMPT, OPTIONS, "words")
        assert tuple(len(s) for s in sequences) == LENGTHS
        assert sequences[1][0] == sequences[2][0] and sequences[1] != sequences[2]
        # The tokens are those that follow the prompt in context.
        full = tok(PROMPT + " not good at")["input_ids"]
        assert sequences[2] == tuple(full[len(full) - 4 :])
        assert all(len(s) == 1 for s in option_token_ids(tok, PROMPT, OPTIONS, "letters"))


def test_identical_option_sequences_are_refused(llama_tok):
    with pytest.raises(AnswerTokenError, match=r"options 'bad film' and ' bad film ' have the same tokens"):
        option_token_ids(llama_tok, PROMPT, ("positive", "bad film", "not sure", " bad film "), "words")
    proxy = _proxy(options=("positive", "bad film", "not sure", " bad film "))
    with pytest.raises(AnswerTokenError, match=r"task 'sentiment', example 'e1': options 'bad film' and ' bad film '"):
        check_answer_tokens(llama_tok, [proxy])


def test_target_formulas_on_a_small_lp_table():
    probs = torch.tensor([[0.5, 0.2, 0.1, 0.05], [0.01, 0.02, 0.03, 0.04]])
    lp = probs.log()
    # ace: softmax over lp = p_c / sum p; qrnca: p_c; tn: p_c - mean of the wrong p.
    assert torch.allclose(targets.ace_scores(lp, 0), torch.tensor([0.5 / 0.85, 0.01 / 0.10]))
    assert torch.allclose(targets.qrnca_scores(lp, 2), torch.tensor([0.1, 0.03]))
    assert torch.allclose(targets.tn_scores(lp, 1), torch.tensor([0.2 - 0.65 / 3, 0.02 - 0.08 / 3]))
    for name in targets.TARGETS:  # the test's reference formulas agree
        assert torch.allclose(targets.get_score_target(name)(lp, 3), REFERENCE_SCORE_TARGETS[name](lp, 3))
    # Single-token options: lp = log_softmax(logits)[ids] gives the logits-based targets' numbers.
    logits, ids = torch.randn(3, 11), torch.tensor([4, 7, 1, 9])
    single = torch.log_softmax(logits, -1)[:, ids]
    for name in targets.TARGETS:
        assert torch.allclose(targets.get_score_target(name)(single, 2), targets.get_target(name)(logits, ids, 2), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(targets.TARGETS))
@pytest.mark.parametrize("path", ["staircase", "prefix", "full"])
def test_multi_token_ig_equals_plain_pytorch_reference(model, target, path):
    proxy = _proxy()
    options = proxy_option_ids(model.tokenizer, proxy)
    assert tuple(len(o) for o in options) == LENGTHS
    result = attribute_proxy(model, proxy, AttributionConfig(target=target, path=path, steps=8, layers_per_pass=2))
    ids = model.tokenizer(PROMPT, return_tensors="pt").input_ids
    lp = reference_option_scores(model.hf_model, ids, options)
    np.testing.assert_allclose(result.option_prob, torch.softmax(lp, -1).numpy(), rtol=1e-5)
    assert result.target_value == pytest.approx(float(REFERENCE_SCORE_TARGETS[target](lp, proxy.correct)), rel=1e-5)
    for layer in range(model.n_layers):
        ref = reference_ig_options(
            model.hf_model, model.down_proj(layer, model.hf_model), ids, options, target, proxy.correct, steps=8
        )
        assert _max_rel(result.ig[layer], ref) <= 1e-5, (target, path, layer)
        assert float(ref.abs().max()) > 1e-7  # the comparison is not between two zero arrays
    np.testing.assert_allclose(result.completeness_gap, result.ig_sum - result.ig_delta, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("path, target", [("staircase", "ace"), ("prefix", "tn")])
def test_mixed_prompts_in_one_session_equal_separate_runs(tiny_llama, path, target):
    """A single-token (letters) proxy and a multi-token one share a session (ace: the first with the
    four-logit head, the second with whole-vocabulary logits); each equals its own full-path run."""
    letters = Proxy("e2", 1, PROMPT.replace("text of the", "letter of the"), OPTIONS, 1, "sentiment")
    config = AttributionConfig(target=target, path=path, layers_per_pass=1)
    both = attribute_proxies(tiny_llama, [letters, _proxy()], config)
    for proxy, result in zip([letters, _proxy()], both):
        alone = attribute_proxy(tiny_llama, proxy, AttributionConfig(target=target, path="full"))
        assert _max_rel(result.ig, alone.ig) <= 1e-5
        np.testing.assert_allclose(result.option_prob, alone.option_prob, rtol=1e-5)


def test_single_token_words_keep_their_logit_head_path(tiny_llama):
    """All-single-token options are T = 1: ace's four-logit head, option_prob = softmax of the four logits."""
    proxy = _proxy(correct=0, options=("positive", "negative", "neutral", "good"))
    assert all(len(o) == 1 for o in proxy_option_ids(tiny_llama.tokenizer, proxy))
    result = attribute_proxy(tiny_llama, proxy, AttributionConfig(target="ace"))
    ids = tiny_llama.tokenizer(proxy.prompt, return_tensors="pt").input_ids
    answer_ids = [o[0] for o in proxy_option_ids(tiny_llama.tokenizer, proxy)]
    with torch.no_grad():
        logits = tiny_llama.hf_model(ids).logits[0, -1, answer_ids]
    np.testing.assert_allclose(result.option_prob, torch.softmax(logits, -1).numpy(), rtol=1e-5)


def _conditions():
    return [
        BASELINE,
        Condition("silence", silence=tuple((layer, n) for layer in (0, 1) for n in range(0, 128, 2))),
        Condition("excite", excite=tuple((1, n) for n in range(1, 128, 3))),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("n_conditions", [1, 3])
def test_option_probs_under_conditions_equal_hook_reference(model, n_conditions):
    conditions = _conditions()[-n_conditions:]
    proxies = [_proxy(), _proxy(correct=0, prompt="Question: this film was bad\n" + PROMPT)]
    probs = option_probs(model, proxies, conditions)
    assert probs.shape == (n_conditions, 2, 4)
    for c, condition in enumerate(conditions):
        table = condition.multipliers(model.n_layers, model.n_neurons)
        hooks = {model.down_proj(layer, model.hf_model): table[layer] for layer in range(model.n_layers)}
        for i, proxy in enumerate(proxies):
            ids = model.tokenizer(proxy.prompt, return_tensors="pt").input_ids
            lp = reference_option_scores(model.hf_model, ids, proxy_option_ids(model.tokenizer, proxy), hooks)
            np.testing.assert_allclose(probs.values[c, i], torch.softmax(lp, -1).numpy(), rtol=1e-5, atol=1e-7)
    if n_conditions == 3:  # the switches do change the probabilities (by 5% or more, relatively)
        assert np.abs(np.log(probs.values[1]) - np.log(probs.values[0])).max() > 0.05


def test_multi_token_position_all_and_short_windows_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="position='all' needs every option's tokens run under the switches"):
        option_probs(tiny_llama, [_proxy()], _conditions(), position="all")
    from fixtures_models import tiny_model_of_type

    mistral = tiny_model_of_type("mistral", sliding_window=8)
    with pytest.raises(
        ValueError, match=r"example 'e1': the prompt and its options' tokens are \d+ tokens, more than the sliding"
    ):
        option_probs(mistral, [_proxy()], _conditions())
    with pytest.raises(
        ValueError, match=r"has \d+ tokens \(\d+ with its options' tokens\), more than the sliding attention window"
    ):
        attribute_proxy(mistral, _proxy(), AttributionConfig())


def test_unit_mask_and_block_inputs_for_units():
    """A unit of T = 3 (q, then two option tokens of which the second sees the first): two units after a
    prefix of 2 tokens; per-token tensors [1, 3, ...] tile to [1, 6, ...]."""
    pattern = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    mask = trace_ops.query_mask(2, 2, torch.float32, "cpu", pattern)
    visible = (mask[0, 0] == 0).int().tolist()
    assert visible == [
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 1, 0, 0],
        [1, 1, 0, 0, 0, 1, 1, 0],
        [1, 1, 0, 0, 0, 1, 1, 1],
    ]
    positions = torch.tensor([[2, 3, 4]])
    assert trace_ops.grow_block_arg(positions, 2, 2, pattern).tolist() == [[2, 3, 4, 2, 3, 4]]
    grown = trace_ops.grow_block_arg(torch.zeros(1, 1, 3, 5, dtype=torch.bool), 2, 2, pattern)
    assert grown.int()[0, 0].tolist() == visible
    assert math.isclose(float(mask.min()), torch.finfo(torch.float32).min)


@pytest.mark.slow
def test_remote_local_serialization_gives_same_numbers(tiny_llama):
    """nnsight's serialize-then-execute path (remote='local') runs the multi-token sessions unchanged."""
    import dataclasses

    shipped_model = dataclasses.replace(tiny_llama, remote="local")
    for path in ("staircase", "prefix", "full"):
        config = AttributionConfig(target="tn", path=path, steps=4)
        local, shipped = attribute_proxy(tiny_llama, _proxy(), config), attribute_proxy(shipped_model, _proxy(), config)
        np.testing.assert_array_equal(local.ig, shipped.ig)
        np.testing.assert_array_equal(local.option_prob, shipped.option_prob)
    conditions = _conditions()
    np.testing.assert_array_equal(
        option_probs(tiny_llama, [_proxy()], conditions).values, option_probs(shipped_model, [_proxy()], conditions).values
    )
