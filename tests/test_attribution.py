"""IG inside nnsight traces against an independent plain-PyTorch reference (float32)."""

import numpy as np
import pytest
import torch
from reference import reference_ig

from nsneurons import targets
from nsneurons.answers import answer_token_ids
from nsneurons.architectures import SITES
from nsneurons.attribution import AttributionConfig, attribute_proxy
from nsneurons.quadrature import alphas_for
from nsneurons.tasks.base import Proxy

PROMPT = (
    "You are an expert. Read the question and four options then answer with the letter of the correct option.\n"
    "Question: this movie was good\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"
)
OPTIONS = ("positive", "negative", "neutral", "not sure")


def _proxy(correct=1):
    return Proxy("e1", 0, PROMPT, OPTIONS, correct, "sentiment")


def _max_rel(a, b):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(params=["tiny_llama", "tiny_gpt2", "tiny_neox"])
def model(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
@pytest.mark.parametrize("path", ["staircase", "prefix", "full"])
def test_ig_equals_plain_pytorch_reference(model, target, path):
    proxy = _proxy()
    result = attribute_proxy(model, proxy, AttributionConfig(target=target, path=path))
    ids = model.tokenizer(PROMPT, return_tensors="pt").input_ids
    answer_ids = torch.tensor(answer_token_ids(model.tokenizer, PROMPT, OPTIONS, "letters"))
    for layer in range(model.n_layers):
        ref = reference_ig(
            model.hf_model, model.down_proj(layer, model.hf_model), ids, targets.TARGETS[target], answer_ids, proxy.correct
        )
        assert _max_rel(result.ig[layer], ref) <= 1e-5, (target, path, layer)
        assert float(ref.abs().max()) > 1e-6  # the comparison is not between two zero arrays


@pytest.mark.parametrize("target", ["ace", "qrnca"])
@pytest.mark.parametrize("path", ["staircase", "prefix", "full"])
def test_gausslegendre_ig_equals_plain_pytorch_reference(model, target, path):
    """Gauss-Legendre nodes and weights on every path, against the reference's own (numpy) rule."""
    proxy = _proxy()
    result = attribute_proxy(model, proxy, AttributionConfig(target=target, path=path, quadrature="gausslegendre", steps=8))
    ids = model.tokenizer(PROMPT, return_tensors="pt").input_ids
    answer_ids = torch.tensor(answer_token_ids(model.tokenizer, PROMPT, OPTIONS, "letters"))
    for layer in range(model.n_layers):
        ref = reference_ig(
            model.hf_model,
            model.down_proj(layer, model.hf_model),
            ids,
            targets.TARGETS[target],
            answer_ids,
            proxy.correct,
            steps=8,
            quadrature="gausslegendre",
        )
        assert _max_rel(result.ig[layer], ref) <= 1e-5, (target, path, layer)
        assert float(ref.abs().max()) > 1e-6
    np.testing.assert_allclose(result.ig_sum, result.ig.sum(1), rtol=1e-5)
    np.testing.assert_allclose(result.completeness_gap, result.ig_sum - result.ig_delta, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("path", ["staircase", "prefix"])
@pytest.mark.parametrize("target", ["ace", "qrnca"])
def test_prefix_multi_layer_pass_equals_one_layer_passes_and_full_prompt(tiny_llama, path, target):
    proxy = _proxy(correct=3)
    full = attribute_proxy(tiny_llama, proxy, AttributionConfig(path="full", target=target))
    for per_pass in (3, 2, 1):  # one pass; passes of 2 + 1 layers; one layer per pass
        fast = attribute_proxy(tiny_llama, proxy, AttributionConfig(path=path, target=target, layers_per_pass=per_pass))
        assert _max_rel(fast.ig, full.ig) <= 1e-5, per_pass
        np.testing.assert_allclose(fast.activation, full.activation, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fast.option_prob, full.option_prob, rtol=1e-5)
        assert fast.target_value == pytest.approx(full.target_value, rel=1e-5)
        np.testing.assert_allclose(fast.completeness_gap, full.completeness_gap, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", ["staircase", "prefix", "full"])
def test_a_subset_of_layers_equals_those_rows_of_all_layers(tiny_llama, path):
    proxy = _proxy(correct=2)
    every = attribute_proxy(tiny_llama, proxy, AttributionConfig(path=path))
    some = attribute_proxy(tiny_llama, proxy, AttributionConfig(path=path), layers=[2, 1])
    assert some.ig.shape == (2, tiny_llama.n_neurons)  # layers come back in ascending order
    assert _max_rel(some.ig, every.ig[1:]) <= 1e-5
    top = attribute_proxy(tiny_llama, proxy, AttributionConfig(path=path), layers=[2])
    assert _max_rel(top.ig, every.ig[2:]) <= 1e-5


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "tiny_neox"])
def test_ace_computes_only_the_four_answer_logits(request, fixture):
    from nsneurons.ig_paths import answer_head as _answer_head

    model = request.getfixturevalue(fixture)
    head = _answer_head(model, "ace")
    assert head is not None and head._module is model.hf_model.get_output_embeddings()
    assert _answer_head(model, "qrnca") is None and _answer_head(model, "tn") is None


def test_kv_cache_pitfall_guard_default_mask_would_be_wrong(tiny_llama):
    """The prefix path must pass its own mask: nnsight's default [B, 1] mask with a cache gives wrong IG silently."""
    proxy = _proxy()
    fast = attribute_proxy(tiny_llama, proxy, AttributionConfig(path="prefix"))
    full = attribute_proxy(tiny_llama, proxy, AttributionConfig(path="full"))
    assert _max_rel(fast.ig, full.ig) <= 1e-5


def test_completeness_and_option_probs_match_direct_forward(tiny_llama):
    proxy = _proxy()
    result = attribute_proxy(tiny_llama, proxy, AttributionConfig(target="ace", steps=64))
    ids = tiny_llama.tokenizer(PROMPT, return_tensors="pt").input_ids
    answer_ids = list(answer_token_ids(tiny_llama.tokenizer, PROMPT, OPTIONS, "letters"))
    with torch.no_grad():
        logits = tiny_llama.hf_model(ids).logits[0, -1]
    probs = torch.softmax(logits[answer_ids], -1)
    np.testing.assert_allclose(result.option_prob, probs.numpy(), rtol=1e-5)
    assert result.target_value == pytest.approx(float(probs[proxy.correct]), rel=1e-5)
    # With many steps the Riemann sum approaches F(x) - F(0): the gap is small relative to the IG mass.
    assert np.abs(result.completeness_gap).max() < 0.05 * np.abs(result.ig).sum(1).max() + 1e-4


def test_ig_of_a_neuron_matches_finite_differences(tiny_llama):
    """Eq. 1 derived from forward passes only: IG_i = a_i / m * sum_k dF/da_i at (alpha_k * a),
    the layer's whole answer-position vector scaled (as the papers do), dF/da_i by central differences."""
    layer, neuron, steps = 2, 5, 8
    proxy = _proxy()
    result = attribute_proxy(tiny_llama, proxy, AttributionConfig(target="ace", steps=steps))
    ids = tiny_llama.tokenizer(PROMPT, return_tensors="pt").input_ids
    answer_ids = list(answer_token_ids(tiny_llama.tokenizer, PROMPT, OPTIONS, "letters"))
    module = tiny_llama.down_proj(layer, tiny_llama.hf_model)
    seen = {}

    def f_at(alpha, nudge):
        def hook(mod, args):
            x = args[0].clone()
            seen["a"] = float(x[0, -1, neuron])
            x[:, -1] = x[:, -1] * alpha
            x[:, -1, neuron] += nudge
            return (x,)

        handle = module.register_forward_pre_hook(hook)
        with torch.no_grad():
            logits = tiny_llama.hf_model(ids).logits[0, -1].double()
        handle.remove()
        return float(torch.softmax(logits[answer_ids], -1)[proxy.correct])

    h = 1e-2
    slopes = [(f_at(k / steps, h) - f_at(k / steps, -h)) / (2 * h) for k in range(1, steps + 1)]
    derived = seen["a"] / steps * sum(slopes)
    assert abs(derived) > 1e-6
    assert result.ig[layer, neuron] == pytest.approx(derived, rel=1e-2)


def test_remote_local_serialization_gives_same_numbers(tiny_llama):
    """nnsight's remote='local' runs the serialize-then-execute path: the trace code is NDIF-compatible."""
    import dataclasses

    proxy = _proxy()
    for path in ("staircase", "prefix", "full"):
        local = attribute_proxy(tiny_llama, proxy, AttributionConfig(path=path))
        shipped = attribute_proxy(dataclasses.replace(tiny_llama, remote="local"), proxy, AttributionConfig(path=path))
        np.testing.assert_array_equal(local.ig, shipped.ig)
    # Several prompts in one session: the common prefix trace, then each prompt's own tokens.
    from nsneurons.attribution import attribute_proxies

    local = attribute_proxies(tiny_llama, _three_proxies(), AttributionConfig())
    shipped = attribute_proxies(dataclasses.replace(tiny_llama, remote="local"), _three_proxies(), AttributionConfig())
    for a, b in zip(local, shipped):
        np.testing.assert_array_equal(a.ig, b.ig)


def test_midpoint_quadrature_and_alphas():
    np.testing.assert_allclose(alphas_for(4, "right").numpy(), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(alphas_for(2, "midpoint").numpy(), [0, 0.25, 0.75, 1.0])


def test_midpoint_matches_reference(tiny_gpt2):
    proxy = _proxy()
    result = attribute_proxy(tiny_gpt2, proxy, AttributionConfig(target="qrnca", quadrature="midpoint", steps=8))
    ids = tiny_gpt2.tokenizer(PROMPT, return_tensors="pt").input_ids
    answer_ids = torch.tensor(answer_token_ids(tiny_gpt2.tokenizer, PROMPT, OPTIONS, "letters"))
    ref = reference_ig(
        tiny_gpt2.hf_model,
        tiny_gpt2.down_proj(1, tiny_gpt2.hf_model),
        ids,
        targets.qrnca,
        answer_ids,
        1,
        steps=8,
        quadrature="midpoint",
    )
    assert _max_rel(result.ig[1], ref) <= 1e-5


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        AttributionConfig(target="nope")
    with pytest.raises(ValueError, match="steps"):
        AttributionConfig(steps=0)


# Every architecture of the site table that transformers builds without remote code.
TABLE_TYPES = sorted(set(SITES) - {"baichuan"})


@pytest.mark.slow
@pytest.mark.parametrize("model_type", TABLE_TYPES)
def test_every_architecture_in_the_table_gives_the_same_ig_on_every_path(model_type):
    from fixtures_models import tiny_model_of_type

    model = tiny_model_of_type(model_type)
    proxy = _proxy(correct=2)
    full = attribute_proxy(model, proxy, AttributionConfig(path="full", steps=4))
    assert float(np.abs(full.ig).max()) > 1e-6
    for path in ("staircase", "prefix"):
        fast = attribute_proxy(model, proxy, AttributionConfig(path=path, steps=4))
        assert _max_rel(fast.ig, full.ig) <= 1e-5, path
        np.testing.assert_allclose(fast.option_prob, full.option_prob, rtol=1e-5, atol=1e-7)


def test_a_prompt_longer_than_a_sliding_window_is_refused_on_the_shared_prefix_paths():
    from fixtures_models import tiny_model_of_type

    from nsneurons.intervention import Condition, option_probs

    model = tiny_model_of_type("mistral", sliding_window=8)
    proxy = _proxy()
    n_tokens = len(model.tokenizer(PROMPT)["input_ids"])
    with pytest.raises(
        ValueError, match=rf"has {n_tokens} tokens, more than the sliding attention window of mistral \(8\).*use path 'full'"
    ):
        attribute_proxy(model, proxy, AttributionConfig(path="staircase", steps=2))
    assert attribute_proxy(model, proxy, AttributionConfig(path="full", steps=2)).ig.shape == (3, 128)
    # Interventions fall back from the shared prefix to full prompts: equal to a hook on the full model.
    from reference import reference_option_probs

    conditions = (Condition("none"), Condition("silence", silence=((1, 3), (2, 5))))
    probs = option_probs(model, [proxy], conditions)
    ids = model.tokenizer(PROMPT, return_tensors="pt").input_ids
    answer_ids = torch.tensor(answer_token_ids(model.tokenizer, PROMPT, OPTIONS, "letters"))
    table = conditions[1].multipliers(model.n_layers, model.n_neurons)
    ref = reference_option_probs(
        model.hf_model, ids, answer_ids, {model.down_proj(layer, model.hf_model): table[layer] for layer in (1, 2)}
    )
    np.testing.assert_allclose(probs.values[1, 0], ref[0].numpy(), rtol=1e-5)
    assert float(np.abs(probs.values[1, 0] - probs.values[0, 0]).max()) > 1e-6  # the switches did something


def _three_proxies():
    """An example's three proxies: the same stem, the options in three orders."""
    orders = [(0, 1, 2, 3), (2, 0, 3, 1), (3, 2, 1, 0)]
    proxies = []
    for k, order in enumerate(orders):
        options = tuple(OPTIONS[i] for i in order)
        lines = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", options))
        prompt = PROMPT.split("Options:")[0] + "Options:\n" + lines + "\nAnswer:"
        proxies.append(Proxy("e1", k, prompt, options, order.index(1), "sentiment"))
    return proxies


def test_common_prefix_length_by_hand():
    from nsneurons.ig_paths import common_prefix_len as _common_prefix_len

    t = torch.tensor
    assert _common_prefix_len([t([5, 6, 7, 8]), t([5, 6, 9]), t([5, 6, 7])]) == 2
    assert _common_prefix_len([t([5, 6, 7])]) == 3
    assert _common_prefix_len([t([1, 2]), t([3, 2])]) == 0
    assert _common_prefix_len([t([1, 2, 3]), t([1, 2, 3])]) == 3


@pytest.mark.parametrize("path", ["staircase", "prefix", "full"])
def test_proxies_sharing_a_prefix_equal_one_at_a_time(tiny_llama, path):
    from nsneurons.attribution import attribute_proxies
    from nsneurons.ig_paths import common_prefix_len as _common_prefix_len

    proxies = _three_proxies()
    ids = [tiny_llama.tokenizer(p.prompt, return_tensors="pt").input_ids[0, :-1] for p in proxies]
    common = _common_prefix_len(ids)
    assert 0 < common < min(len(i) for i in ids) - 5  # a shared stem, then each prompt's own options
    config = AttributionConfig(path=path, target="qrnca", layers_per_pass=2)
    together = attribute_proxies(tiny_llama, proxies, config)
    for proxy, result in zip(proxies, together):
        alone = attribute_proxy(tiny_llama, proxy, config)
        assert _max_rel(result.ig, alone.ig) <= 1e-5
        np.testing.assert_allclose(result.option_prob, alone.option_prob, rtol=1e-5)
        assert result.target_value == pytest.approx(alone.target_value, rel=1e-5)
    # And against the independent reference, for the last proxy's top layer.
    proxy = proxies[2]
    full_ids = tiny_llama.tokenizer(proxy.prompt, return_tensors="pt").input_ids
    answer_ids = torch.tensor(answer_token_ids(tiny_llama.tokenizer, proxy.prompt, proxy.options, "letters"))
    ref = reference_ig(
        tiny_llama.hf_model, tiny_llama.down_proj(2, tiny_llama.hf_model), full_ids, targets.qrnca, answer_ids, proxy.correct
    )
    assert _max_rel(together[2].ig[2], ref) <= 1e-5


def test_proxies_with_nothing_in_common_still_come_out_right(tiny_gpt2):
    from nsneurons.attribution import attribute_proxies

    first = _proxy()
    second = Proxy("e2", 0, "Read this. " + PROMPT, OPTIONS, 3, "sentiment")
    together = attribute_proxies(tiny_gpt2, [first, second], AttributionConfig())
    for proxy, result in zip((first, second), together):
        assert _max_rel(result.ig, attribute_proxy(tiny_gpt2, proxy, AttributionConfig()).ig) <= 1e-5


def test_an_output_layer_bias_is_kept_when_only_the_answer_logits_are_computed():
    """GPT-J's lm_head has a bias: the four answer logits must include its four entries."""
    from fixtures_models import tiny_model_of_type

    model = tiny_model_of_type("gptj")
    with torch.no_grad():
        model.hf_model.lm_head.bias.normal_(0.0, 2.0)
    proxy = _proxy()
    full = attribute_proxy(model, proxy, AttributionConfig(path="full", steps=4))
    for path in ("staircase", "prefix"):
        fast = attribute_proxy(model, proxy, AttributionConfig(path=path, steps=4))
        assert _max_rel(fast.ig, full.ig) <= 1e-5, path
        np.testing.assert_allclose(fast.option_prob, full.option_prob, rtol=1e-5)


@pytest.mark.parametrize("layers", [[], [-1], [3], [0, 5]])
def test_layers_outside_the_model_are_refused(tiny_llama, layers):
    with pytest.raises(ValueError, match=r"layers must be a non-empty selection of 0\.\.2"):
        attribute_proxy(tiny_llama, _proxy(), AttributionConfig(), layers=layers)


def test_a_mask_with_position_biases_is_refused_by_the_staircase():
    from nsneurons import trace_ops

    alibi_like = torch.tensor([[[[-0.5, -0.25, 0.0]]]])
    with pytest.raises(ValueError, match="ALiBi"):
        trace_ops.grow_block_arg(alibi_like, 4, prompt_len=2)
    plain = torch.tensor([[[[0.0, float("-inf"), 0.0]]]])
    assert trace_ops.grow_block_arg(plain, 4, prompt_len=2).shape == (1, 1, 4, 6)
