"""Sparse switch tables (nsneurons.switch_tables): the helper worked by hand, and every intervention route
that carries them equal to the dense Condition.multipliers applied by plain-PyTorch hooks."""

import numpy as np
import pytest
import torch
from reference import reference_option_probs, reference_option_scores

from nsneurons.answers import answer_token_ids, proxy_option_ids
from nsneurons.intervention import BASELINE, Condition, option_probs
from nsneurons.switch_tables import rows_of, switch_tables, upload_bytes
from nsneurons.tasks.base import Proxy


def test_switch_tables_by_hand():
    a = Condition("a", silence=((2, 7), (0, 3)), excite=((2, 1),))
    b = Condition("b", silence=((2, 1),), excite=((2, 9), (2, 7)))  # (2, 7) silenced by a, excited by b
    c = Condition("c", silence=((0, 5),), excite=((0, 5),))  # excite wins, as in Condition.multipliers
    tables = switch_tables([a, BASELINE, b, c], n_layers=3, n_neurons=10)
    assert list(tables) == [0, 2]  # layer 1 untouched: absent
    columns, table = tables[0]
    assert columns.dtype == torch.long and columns.tolist() == [3, 5]
    assert table.tolist() == [[0, 1], [1, 1], [1, 1], [1, 2]]
    columns, table = tables[2]
    assert columns.tolist() == [1, 7, 9]
    assert table.tolist() == [[2, 0, 1], [1, 1, 1], [0, 2, 2], [1, 1, 1]]
    picked = rows_of(tables, torch.tensor([2, 2, 0]))
    assert picked[2][1].tolist() == [[0, 2, 2], [0, 2, 2], [2, 0, 1]] and picked[2][0] is columns
    # Scattered back into ones, the columns give the dense multipliers of every condition.
    for row, condition in enumerate([a, BASELINE, b, c]):
        dense = torch.ones(3, 10)
        for layer, (cols, tab) in tables.items():
            dense[layer, cols] = tab[row]
        assert torch.equal(dense, condition.multipliers(3, 10))
    assert switch_tables([BASELINE], 3, 10) == {}
    # 5 switched pairs (3 + 2 columns) for 4 rows: 5 x 8 bytes of columns + 5 x 4 x 4 of multipliers.
    assert upload_bytes(5, 4) == 40 + 80 == 120
    with pytest.raises(ValueError, match=r"condition 'x': neuron \(3, 0\) is outside 3 layers x 10 neurons"):
        switch_tables([Condition("x", excite=((3, 0),))], 3, 10)


def _conditions(n_neurons):
    """Silence and excite on several layers, overlapping between conditions."""
    half = n_neurons // 2
    return [
        BASELINE,
        Condition("silence", silence=((0, 3), (2, 7), (2, half))),
        Condition("excite", excite=((0, 3), (1, 5), (2, 7))),
        Condition("both", silence=tuple((1, n) for n in range(0, n_neurons, 3)), excite=tuple((2, n) for n in range(1, half, 5))),
        Condition("layer 0 all", excite=tuple((0, n) for n in range(n_neurons))),
    ]


def _hooks(model, condition):
    table = condition.multipliers(model.n_layers, model.n_neurons)
    return {model.down_proj(layer, model.hf_model): table[layer] for layer in range(model.n_layers)}


@pytest.mark.parametrize("position", ["answer", "all"])  # the shared prefix, and the left-padded batches
def test_single_token_routes_equal_dense_multipliers(tiny_llama, position):
    m = tiny_llama
    proxies = [
        Proxy(
            f"e{i}", 0, "Question: " + "a fine film " * (i + 1) + "\nA. yes\nB. no\nC. maybe\nD. never\nAnswer:", "wxyz", i, "s"
        )
        for i in range(3)
    ]
    conditions = _conditions(m.n_neurons)
    probs = option_probs(m, proxies, conditions, position=position, batch_size=4)
    for c, condition in enumerate(conditions):
        for i, proxy in enumerate(proxies):
            ids = m.tokenizer(proxy.prompt, return_tensors="pt").input_ids
            answers = list(answer_token_ids(m.tokenizer, proxy.prompt, proxy.options, "letters"))
            ref = reference_option_probs(m.hf_model, ids, answers, _hooks(m, condition), all_positions=position == "all")
            np.testing.assert_allclose(probs.values[c, i], ref[0].numpy(), atol=1e-6, rtol=0)
    assert np.abs(probs.values[1:] - probs.values[:1]).max() > 1e-3  # the switches move the probabilities


def test_multi_token_units_equal_dense_multipliers(tiny_llama):
    m = tiny_llama
    options = ("positive", "not sure", "not good at", "bad film")  # 1, 2, 4 and 2 tokens
    prompt = "Question: this movie was good\nOptions:\nA. positive\nB. not sure\nC. not good at\nD. bad film\nAnswer:"
    proxy = Proxy("e1", 0, prompt, options, 1, "sentiment", answer_format="words")
    conditions = _conditions(m.n_neurons)
    probs = option_probs(m, [proxy], conditions)
    ids = m.tokenizer(prompt, return_tensors="pt").input_ids
    for c, condition in enumerate(conditions):
        lp = reference_option_scores(m.hf_model, ids, proxy_option_ids(m.tokenizer, proxy), _hooks(m, condition))
        np.testing.assert_allclose(probs.values[c, 0], torch.softmax(lp, -1).numpy(), atol=1e-6, rtol=0)
    assert np.abs(probs.values[1:] - probs.values[:1]).max() > 1e-3
