"""Interventions inside traces against a plain-PyTorch hook reference; batched equals unbatched."""

import numpy as np
import pytest
import torch
from reference import reference_option_probs

from nsneurons.answers import answer_token_ids
from nsneurons.intervention import BASELINE, Condition, correct_table, degrader, enhancer, generate, option_probs
from nsneurons.tasks.base import Proxy

OPTIONS = ("positive", "negative", "neutral", "not sure")
GOOD, BAD = [(0, 3), (2, 7), (2, 100)], [(1, 5), (0, 64)]


def _proxies(n=5):
    return [
        Proxy(
            f"e{i}",
            0,
            "Question: " + "good movie " * (i + 1) + "\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:",
            OPTIONS,
            i % 4,
            "s",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("position", ["answer", "all"])
def test_option_probs_under_every_condition_equal_hook_reference(tiny_llama, position):
    m = tiny_llama
    conditions = [
        BASELINE,
        Condition("silence", silence=tuple(GOOD)),
        Condition("excite", excite=tuple(GOOD)),
        enhancer(GOOD, BAD),
        degrader(GOOD, BAD),
    ]
    proxies = _proxies()
    probs = option_probs(m, proxies, conditions, position=position, batch_size=4)  # prompts of different lengths share batches
    moved = 0.0
    for ci, condition in enumerate(conditions):
        table = condition.multipliers(m.n_layers, m.n_neurons)
        hooks = {m.down_proj(layer, m.hf_model): table[layer] for layer in range(m.n_layers)}
        for i, proxy in enumerate(proxies):
            ids = m.tokenizer(proxy.prompt, return_tensors="pt").input_ids
            answers = list(answer_token_ids(m.tokenizer, proxy.prompt, proxy.options, "letters"))
            ref = reference_option_probs(m.hf_model, ids, answers, hooks, all_positions=position == "all")[0].numpy()
            np.testing.assert_allclose(probs.values[ci, i], ref, atol=1e-5)
            moved = max(moved, float(abs(probs.values[ci, i] - probs.values[0, i]).max()))
    assert moved > 1e-4  # the interventions really change the probabilities


def test_condition_multipliers_and_errors():
    table = enhancer([(0, 1)], [(1, 2)]).multipliers(2, 4)
    assert table.tolist() == [[1, 2, 1, 1], [1, 1, 0, 1]]
    table = degrader([(0, 1)], [(1, 2)]).multipliers(2, 4)
    assert table.tolist() == [[1, 0, 1, 1], [1, 1, 2, 1]]
    with pytest.raises(ValueError, match=r"\(5, 0\) is outside 2 layers x 4 neurons"):
        Condition("x", silence=((5, 0),)).multipliers(2, 4)


def test_correct_table_shape(tiny_llama):
    probs = option_probs(tiny_llama, _proxies(3), [BASELINE])
    table = correct_table(probs)
    assert table.dims == ("condition", "example", "proxy") and table.shape == (1, 3, 1)
    assert (table.values[0, :, 0] == (probs.values[0].argmax(-1) == np.array([0, 1, 2]))).all()


def test_generate_applies_switches_at_every_step(tiny_llama):
    m = tiny_llama
    prompt = "Answer: the movie was"
    condition = Condition("excite-layers-0-2", excite=tuple((layer, n) for layer in (0, 2) for n in range(m.n_neurons)))
    text = generate(m, prompt, condition, max_new_tokens=4)
    handles = [m.down_proj(layer, m.hf_model).register_forward_pre_hook(lambda mod, args: (args[0] * 2,)) for layer in (0, 2)]
    try:
        ids = m.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = m.hf_model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=m.tokenizer.pad_token_id)
    finally:
        for handle in handles:
            handle.remove()
    assert text == m.tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    assert text != generate(m, prompt, BASELINE, max_new_tokens=4)


def test_answer_format_travels_with_the_proxies():
    from nsneurons.answers import check_answer_tokens

    proxies = _proxies(2)  # built without a format: letters
    # A format passed alongside must agree with the proxies' own; the check runs before the model is touched.
    with pytest.raises(ValueError, match=r"answer_format='words' disagrees with the proxies: task 's', example 'e0'"):
        option_probs(None, proxies, answer_format="words")
    with pytest.raises(ValueError, match="disagrees"):
        check_answer_tokens(None, proxies, "words")
