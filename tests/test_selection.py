"""Selection methods on tiny arrays whose answers are worked out by hand in the comments."""

import numpy as np
import pytest
import xarray as xr

from nsneurons.selection import (
    METHODS,
    additive_reordering,
    additive_scores,
    good_count,
    kn_counts,
    method_needs,
    ratio_split,
    select,
    to_pairs,
)


def example_scores(rows, layers=1):
    """ES (example, layer, neuron) from per-example lists of layers*neurons values."""
    values = np.asarray(rows, dtype=float)
    values = values.reshape(len(rows), layers, values.shape[1] // layers)
    return xr.DataArray(
        values,
        dims=("example", "layer", "neuron"),
        coords={"example": [f"e{i}" for i in range(len(rows))], "layer": np.arange(layers), "neuron": np.arange(values.shape[2])},
    )


# ES_0 = [5, 3, 3, 0, -2, -5]: G_0 = {0, 1} (n1 and n2 tie at 3; lower index n1 wins), B_0 = {5, 4}
# ES_1 = [4, -5, 3, 0, -3, 1]: G_1 = {0, 2}, B_1 = {1, 4}
# n1 is in G_0 and B_1 -> ambiguous -> 0.
# n0 = 5 + 4 = 9; n2 = 3 (ES_0[2] = 3 not counted: n2 not in G_0 or B_0); n3 in no set -> 0;
# n4 = -2 + -3 = -5; n5 = -5 (ES_1[5] = 1 not counted: n5 not in G_1 or B_1).
ES = example_scores([[5, 3, 3, 0, -2, -5], [4, -5, 3, 0, -3, 1]])


def test_additive_scores_by_hand():
    assert additive_scores(ES, z=2).values.tolist() == [[9, 0, 3, 0, -5, -5]]


def test_additive_reordering_good_bad_and_ties():
    chosen = additive_reordering(ES, z=2, k=2, with_bad=True)
    # Total order: n0 (9), n2 (3), n1 (0), n3 (0), n4 (-5), n5 (-5); ties by lower flat index.
    # good = first 2; bad = last 2 read from the end: n5 then n4 (the tie at -5 reversed).
    assert to_pairs(chosen, "good", 2) == [(0, 0), (0, 2)]
    assert to_pairs(chosen, "bad", 2) == [(0, 5), (0, 4)]
    assert chosen.score.sel(role="good").values.tolist() == [9, 3]
    assert chosen.score.sel(role="bad").values.tolist() == [-5, -5]


def test_k_beyond_positive_scores_pads_with_zero_but_stays_disjoint():
    # k=3: good takes n1 (first of the 0-ties n1, n3), bad takes n3 (the last 0-tie): disjoint.
    chosen = additive_reordering(ES, z=2, k=3, with_bad=True)
    assert chosen.neuron.values.tolist() == [[0, 2, 1], [5, 4, 3]]
    assert chosen.attrs["n_positive"] == 2 and chosen.attrs["n_negative"] == 2


def test_z_is_clamped_to_half_the_neurons():
    # z=5000 -> z_used = 6 // 2 = 3. G_0 = {0, 1, 2}, B_0 = {5, 4, 3}; G_1 = {0, 2, 5}, B_1 = {1, 4, 3}.
    # Ambiguous: n1 (G_0, B_1) and n5 (G_1, B_0). n2 = 3 + 3 = 6; n3 = 0 + 0; n4 = -5.
    scores = additive_scores(ES, z=5000)
    assert scores.attrs["z_used"] == 3
    assert scores.values.tolist() == [[9, 0, 6, 0, -5, 0]]


def test_layers_map_back_through_the_flat_index():
    # 2 layers x 2 neurons, one example, z=1: G = {(1, 0)} with 7, B = {(0, 1)} with -4.
    es = example_scores([[1, -4, 7, 2]], layers=2)
    chosen = select("neuronllm", k=1, scores={"ace": es}, z=1)
    assert to_pairs(chosen, "good", 1) == [(1, 0)]
    assert to_pairs(chosen, "bad", 1) == [(0, 1)]


def test_good_only_methods_leave_bad_empty():
    for method in ("tn", "qrnca"):
        chosen = select(method, k=2, scores={method: ES}, z=2)
        assert to_pairs(chosen, "good", 2) == [(0, 0), (0, 2)]
        assert (chosen.layer.sel(role="bad") == -1).all() and chosen.score.sel(role="bad").isnull().all()
        assert to_pairs(chosen, "bad", 2) == []
    enabled = select("tn_enabled", k=2, scores={"tn": ES}, z=2)
    assert to_pairs(enabled, "bad", 2) == [(0, 5), (0, 4)]


def test_kn_counts_with_tie_broken_by_summed_score():
    # t=0.5. e0 = [10, 5, 1, 6, 0]: max 10, keep >= 5 -> {n0, n1, n3} (n1 exactly at 5 is kept)
    #        e1 = [2, 4, 0, 8, -1]: max 8, keep >= 4 -> {n1, n3}
    #        e2 all negative: max <= 0 -> keeps nothing
    # counts: n0=1, n1=2, n2=0, n3=2, n4=0; sums: n1 = 5+4 = 9, n3 = 6+8 = 14
    # -> n3 before n1 (higher sum beats lower index), then n0.
    es = example_scores([[10, 5, 1, 6, 0], [2, 4, 0, 8, -1], [-1, -2, -3, -4, -5]])
    count, kept_sum = kn_counts(es, t=0.5)
    assert count.values.tolist() == [[1, 2, 0, 2, 0]]
    assert kept_sum.values.tolist() == [[10, 9, 0, 14, 0]]
    chosen = select("kn", k=3, scores={"qrnca": es}, t=0.5)
    assert to_pairs(chosen, "good", 3) == [(0, 3), (0, 1), (0, 0)]
    assert chosen.score.sel(role="good").values.tolist() == [2, 2, 1]
    assert to_pairs(chosen, "bad", 3) == []
    assert chosen.attrs["t"] == 0.5


def test_act_ranks_by_mean_activation():
    # Means over (example, proxy): (0,0) = 1, (0,1) = 3, (1,0) = -1, (1,1) = 3.
    # Example e0 is mean - 1, e1 is mean + 1, every proxy equal. Tie at 3: (0,1) has the lower flat index.
    means = np.array([[1.0, 3.0], [-1.0, 3.0]])
    values = np.stack([np.stack([means + offset] * 3) for offset in (-1.0, 1.0)])
    activations = xr.DataArray(values, dims=("example", "proxy", "layer", "neuron"), coords={"layer": [0, 1], "neuron": [0, 1]})
    chosen = select("act", k=2, activations=activations)
    assert to_pairs(chosen, "good", 2) == [(0, 1), (1, 1)]
    assert chosen.score.sel(role="good").values.tolist() == [3, 3]


def test_random_is_seeded_good_only_and_in_range():
    # Section 4.1: "100 good neurons for the other methods": RANDOM draws good neurons only.
    first = select("random", k=10, n_layers=3, n_neurons=10, seed=7)
    again = select("random", k=10, n_layers=3, n_neurons=10, seed=7)
    other = select("random", k=10, n_layers=3, n_neurons=10, seed=8)
    assert first.equals(again) and not first.equals(other)
    good = set(to_pairs(first, "good", 10))
    assert len(good) == 10 and to_pairs(first, "bad", 10) == []
    assert all(0 <= layer < 3 and 0 <= neuron < 10 for layer, neuron in good)


def test_k_too_large_and_unknown_method():
    with pytest.raises(ValueError, match=r"k=7 exceeds the 6"):
        select("tn", k=7, scores={"tn": ES})
    with pytest.raises(ValueError, match=r"k=4 good plus k bad neurons need 8 distinct neurons; only 6"):
        select("neuronllm", k=4, scores={"ace": ES})
    with pytest.raises(ValueError, match="known: act, kn, neuronllm"):
        select("nope", k=1)
    with pytest.raises(ValueError, match="target 'ace'"):
        select("neuronllm", k=1, scores={"tn": ES})


def test_methods_declare_what_they_need():
    assert {name: method_needs(name) for name in METHODS} == {
        "neuronllm": "ace",
        "tn": "tn",
        "qrnca": "qrnca",
        "tn_enabled": "tn",
        "qrnca_enabled": "qrnca",
        "kn": "qrnca",
        "act": "activation",
        "random": None,
    }


def test_neuron_set_schema():
    chosen = select("neuronllm", k=2, scores={"ace": ES}, z=2)
    assert chosen.role.values.tolist() == ["good", "bad"] and chosen["rank"].values.tolist() == [0, 1]
    assert chosen.layer.dtype == np.int64 and chosen.score.dtype == np.float64
    assert chosen.attrs["method"] == "neuronllm" and chosen.attrs["k"] == 2 and chosen.attrs["z"] == 2


def test_good_count_rounds_halves_up():
    # k=100, r=0.25 -> 25; k=10, r=0.25 -> 2.5 -> floor(3.0) = 3 (Python round would give 2);
    # k=10, r=0.35 -> 3.4999999999999996 in binary, counted as 3.5 -> 4.
    assert good_count(100, 0.25) == 25
    assert good_count(10, 0.25) == 3
    assert good_count(10, 0.35) == 4
    assert [good_count(100, r / 10) for r in range(11)] == list(range(0, 101, 10))
    with pytest.raises(ValueError):
        good_count(10, 1.5)


def test_ratio_split():
    rng = np.random.default_rng(0)
    es = xr.DataArray(
        rng.normal(size=(2, 4, 100)),
        dims=("example", "layer", "neuron"),
        coords={"layer": np.arange(4), "neuron": np.arange(100)},
    )
    chosen = select("neuronllm", k=100, scores={"ace": es}, z=50)
    good, bad = ratio_split(chosen, 100, 0.25)
    assert (len(good), len(bad)) == (25, 75)
    assert good == to_pairs(chosen, "good", 25) and bad == to_pairs(chosen, "bad", 75)
    good, bad = ratio_split(chosen, 10, 0.25)
    assert (len(good), len(bad)) == (3, 7)
    with pytest.raises(ValueError, match="k=101"):
        ratio_split(chosen, 101, 0.5)
