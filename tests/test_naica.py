"""NA-ICA / QRNCA: hand-worked scoring tests, domain QA proxies, and a planted neuron on a tiny LLaMA."""

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from nsneurons.naica import common_threshold, kept_mask, key_neurons, naica_scores, query_clusters, top_neurons
from nsneurons.naica_analyses import domain_key_neurons, localized_regions, split_queries
from nsneurons.runfolder import load_naica as load_datasets
from nsneurons.runners.naica import run_naica
from nsneurons.tasks.base import Question, TaskDataError
from nsneurons.tasks.domain_qa import TEMPLATES, domain_proxies, load_domain_qa, make_domain_proxies


def _ig(values, layers=1):
    """(query, prompt, layer, neuron) from nested lists [query][prompt][neuron] (one layer) or [...][layer][neuron]."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 3:
        a = a[:, :, None, :]
    return xr.DataArray(a, dims=("query", "prompt", "layer", "neuron"), coords={"query": [f"q{i}" for i in range(a.shape[0])]})


# ---- thresholding ------------------------------------------------------------------------------


def test_threshold_is_strict_per_prompt_and_ignores_nonpositive_prompts():
    ig = _ig(
        [
            [
                [[1.0, 0.2, 0.21], [-3.0, 0.5, np.nan]],  # max 1.0 -> keep > 0.2: 1.0, 0.21, 0.5 (0.2 is not > 0.2)
                [[-1.0, -0.5, -0.1], [-2.0, -3.0, -4.0]],  # max -0.1 <= 0: keeps nothing
                [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            ]
        ]
    )  # max 0: keeps nothing
    keep = kept_mask(ig, 0.2).values[0]
    assert keep[0].tolist() == [[True, False, True], [False, True, False]]
    assert not keep[1].any() and not keep[2].any()


def test_store_dims_are_accepted():
    a = np.random.default_rng(0).normal(size=(2, 3, 2, 4))
    store = xr.DataArray(a, dims=("example", "proxy", "layer", "neuron"), coords={"example": ["a", "b"]})
    named = xr.DataArray(a, dims=("query", "prompt", "layer", "neuron"), coords={"query": ["a", "b"]})
    assert naica_scores(store).equals(naica_scores(named))


# ---- NA, ICA, score: a worked example -----------------------------------------------------------
# 3 queries x 2 prompts x 4 neurons (one layer), t = 0.2:
# q0 p0 [1.0, 0.5, 0.1, 0]: cut 0.2  -> keep n0, n1;   p1 [0.8, 0, 0.4, 0]: cut 0.16 -> keep n0, n2
#    S = [1.8, 0.5, 0.4, 0], count = [2, 1, 1, 0], cluster {n0, n1, n2}, sum 2.7, NA = [2/3, 5/27, 4/27, 0]
# q1 p0 [1.0, 0, 0, 0.5] -> n0, n3;  p1 [0, 0, 0, 1.0] -> n3.  S = [1, 0, 0, 1.5], NA = [0.4, 0, 0, 0.6]
# q2 p0 [0.5, 0, 0, 0] -> n0;  p1 [0.5, 0.05, 0, 0]: cut 0.1 -> n0 only.  S = [1, 0, 0, 0], NA = [1, 0, 0, 0]
# occ = [3, 1, 1, 1] -> ICA = [log(3/4), log(3/2), log(3/2), log(3/2)]
# scores: q0 [2/3 log .75 < 0, 5/27 log 1.5, 4/27 log 1.5, 0]; q1 [0.4 log .75 < 0, 0, 0, 0.6 log 1.5]; q2 [log .75 < 0, 0, 0, 0]
WORKED = [
    [[1.0, 0.5, 0.1, 0.0], [0.8, 0.0, 0.4, 0.0]],
    [[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]],
    [[0.5, 0.0, 0.0, 0.0], [0.5, 0.05, 0.0, 0.0]],
]


def test_na_ica_worked_example():
    clusters = query_clusters(_ig(WORKED), 0.2)
    np.testing.assert_allclose(clusters["S"].values[:, 0], [[1.8, 0.5, 0.4, 0], [1, 0, 0, 1.5], [1, 0, 0, 0]])
    assert clusters["count"].values[:, 0].tolist() == [[2, 1, 1, 0], [1, 0, 0, 2], [2, 0, 0, 0]]
    s = naica_scores(_ig(WORKED), t=0.2)
    np.testing.assert_allclose(s["na"].values[:, 0], [[2 / 3, 5 / 27, 4 / 27, 0], [0.4, 0, 0, 0.6], [1, 0, 0, 0]])
    assert s["occ"].values[0].tolist() == [3, 1, 1, 1]
    np.testing.assert_allclose(s["ica"].values[0], [math.log(3 / 4)] + [math.log(3 / 2)] * 3)
    np.testing.assert_allclose(s["score"].values[1, 0], [0.4 * math.log(0.75), 0, 0, 0.6 * math.log(1.5)])
    found = key_neurons(_ig(WORKED), t=0.2, v=3, u=0.5)
    key = found.key
    assert key["neuron"].values.tolist() == [[1, 2, -1], [3, -1, -1], [-1, -1, -1]]  # only positive scores
    np.testing.assert_allclose(key["score"].values[0, :2], [5 / 27 * math.log(1.5), 4 / 27 * math.log(1.5)])
    assert key["n_key"].values.tolist() == [2, 1, 0]
    assert np.isnan(key["score"].values[2]).all()
    # u = 0.5: floor(3 x 0.5) = 1, common = occ > 1 -> n0 only
    assert found.common["neuron"].values.tolist() == [0] and found.common["occ"].values.tolist() == [3]


def test_domain_clusters_sum_queries_and_take_the_union():
    # q0, q1 in "a"; q2 in "b": S(a) = [2.8, 0.5, 0.4, 1.5] (sum 5.2), S(b) = [1, 0, 0, 0]
    # occ = [2, 1, 1, 1] over N = 2 domains -> ICA = [log(2/3), log 1 = 0, 0, 0]: no positive score (D <= 2)
    s = naica_scores(_ig(WORKED), t=0.2, clusters={"q0": "a", "q1": "a", "q2": "b"})
    assert s["domain"].values.tolist() == ["a", "b"] and s["n_queries"].values.tolist() == [2, 1]
    np.testing.assert_allclose(s["na"].values[0, 0], np.array([2.8, 0.5, 0.4, 1.5]) / 5.2)
    assert s["occ"].values[0].tolist() == [2, 1, 1, 1]
    np.testing.assert_allclose(s["ica"].values[0], [math.log(2 / 3), 0, 0, 0])


# ---- common neurons ----------------------------------------------------------------------------


def test_common_threshold_is_floor_without_float_noise():
    assert common_threshold(10, 0.3) == 3  # 3.0000000000000004
    assert common_threshold(100, 0.29) == 29  # 28.999999999999996
    assert common_threshold(3, 0.3) == 0
    with pytest.raises(ValueError):
        common_threshold(3, 1.5)


def _common_case():
    """10 queries, 1 prompt each, 12 neurons. Query i has its own neuron i + 2 (IG 0.5); queries 0-3 also have
    neuron 0 (IG 2.0, occ 4) and queries 4-6 neuron 1 (IG 2.0, occ 3).
    u = 0.3: floor(10 x 0.3) = 3 -> neuron 0 is common (4 > 3), neuron 1 is not (3 > 3 is false).
    q0: NA(n0) = 2/2.5 = 0.8, NA(n2) = 0.2; ICA(n0) = log(10/5) = 0.693, ICA(n2) = log(10/2) = 1.609
        -> scores 0.554 (n0) > 0.322 (n2): without removal n0 ranks first."""
    ig = np.zeros((10, 1, 12))
    for i in range(10):
        ig[i, 0, i + 2] = 0.5
    ig[0:4, 0, 0] = 2.0
    ig[4:7, 0, 1] = 2.0
    return _ig(ig)


def test_common_neurons_are_reported_and_really_removed():
    kept = key_neurons(_common_case(), t=0.2, v=2, u=0.3, remove_common=False)
    assert kept.common.attrs["threshold"] == 3
    assert list(zip(kept.common["layer"].values, kept.common["neuron"].values, kept.common["occ"].values)) == [(0, 0, 4)]
    assert kept.key["neuron"].values[0].tolist() == [0, 2]
    np.testing.assert_allclose(kept.key["score"].values[0], [0.8 * math.log(2), 0.2 * math.log(5)])
    removed = key_neurons(_common_case(), t=0.2, v=2, u=0.3, remove_common=True)
    neurons = removed.key["neuron"].values
    assert 0 not in neurons  # the common neuron is gone from every query
    assert neurons[0].tolist() == [2, -1] and neurons[3].tolist() == [5, -1]
    assert neurons[4].tolist() == [1, 6]  # occ 3 is not common: kept, and ranked first
    assert (removed.key["neuron"].values[7:] == [[9, -1], [10, -1], [11, -1]]).all()


# ---- ranking with ties -------------------------------------------------------------------------


def test_ranking_breaks_ties_by_layer_then_neuron():
    # layer 0: [0.5, 0.7, 0.5]; layer 1: [0.7, 0.0, -1.0]
    # 0.7 at (0, 1) and (1, 0): layer 0 first; then 0.5 at (0, 0), (0, 2); 0 and -1 are never key neurons.
    score = xr.DataArray(
        [[[0.5, 0.7, 0.5], [0.7, 0.0, -1.0]]],
        dims=("query", "layer", "neuron"),
        coords={"query": ["q"], "layer": [0, 1], "neuron": [0, 1, 2]},
    )
    top = top_neurons(score, 5)
    assert top["layer"].values[0].tolist() == [0, 1, 0, 0, -1]
    assert top["neuron"].values[0].tolist() == [1, 0, 0, 2, -1]
    np.testing.assert_allclose(top["score"].values[0, :4], [0.7, 0.7, 0.5, 0.5])
    assert top["n_key"].values.tolist() == [4]
    # excluded neurons never enter, the rest keep their order
    exclude = np.zeros((2, 3), bool)
    exclude[0, 1] = True
    assert top_neurons(score, 2, exclude=exclude)["neuron"].values[0].tolist() == [0, 0]


def test_pooled_domain_neurons_rank_by_frequency_then_score():
    key = xr.Dataset(
        {
            "layer": (("query", "rank"), [[1, 0], [0, 1], [2, -1]]),
            "neuron": (("query", "rank"), [[5, 3], [3, 4], [9, -1]]),
            "score": (("query", "rank"), [[0.9, 0.2], [0.3, 0.8], [0.5, np.nan]]),
        },
        coords={"query": ["a1", "a2", "b1"], "rank": [0, 1]},
    )
    # domain a: (0, 3) in 2 queries (score 0.5) first; then (1, 5) 0.9 before (1, 4) 0.8
    dk = domain_key_neurons(key, {"a1": "a", "a2": "a", "b1": "b"})
    assert dk["layer"].sel(domain="a").values.tolist() == [0, 1, 1]
    assert dk["neuron"].sel(domain="a").values.tolist() == [3, 5, 4]
    assert dk["frequency"].sel(domain="a").values.tolist() == [2, 1, 1]
    regions = localized_regions(dk, n_layers=3)
    assert regions["layer_count"].sel(domain="a").values.tolist() == [1, 2, 0]
    assert regions["overlap"].values.tolist() == [[3, 0], [0, 1]]


def test_split_queries_is_seeded_and_holds_out_per_domain():
    domains = {f"{d}{i}": d for d in "ab" for i in range(4)}
    train, held = split_queries(domains, 0.3, seed=1)  # round(1.2) = 1 per domain
    assert sorted(q[0] for q in held) == ["a", "b"] and len(train) == 6
    assert split_queries(domains, 0.3, seed=1) == (train, held)
    assert split_queries(domains, 0.0, seed=1) == (list(domains), [])


# ---- domain QA data and proxies ----------------------------------------------------------------


def test_packaged_domain_qa_and_its_proxies(llama_tok):
    from nsneurons.answers import answer_token_ids

    by_domain = load_domain_qa()
    assert set(by_domain) >= {"biology", "physics", "chemistry", "geography", "maths", "computer_science"}
    assert all(6 <= len(qs) <= 8 for qs in by_domain.values())
    q = by_domain["biology"][0]
    proxies = make_domain_proxies(q, seed=0)
    assert len({p.correct for p in proxies}) == 3  # distinct correct letters
    assert all(p.options[p.correct] == q.options[q.answer] and sorted(p.options) == sorted(q.options) for p in proxies)
    for p, template in zip(proxies, TEMPLATES):
        assert p.prompt.startswith(template.split("\n")[0]) and p.prompt.endswith("Answer:")
    assert make_domain_proxies(q, seed=0) == proxies
    seeds = [[p.options for p in make_domain_proxies(q, seed=s)] for s in range(4)]
    assert len({tuple(x) for x in seeds}) > 1
    for qs in by_domain.values():  # the letters resolve to single tokens after every prompt
        for p in make_domain_proxies(qs[0], seed=0):
            answer_token_ids(llama_tok, p.prompt, p.options, "letters")
    assert load_domain_qa(domains=["maths", "physics"], max_per_domain=2).keys() == {"maths", "physics"}


def test_local_file_with_letters_indices_and_extra_choices(tmp_path):
    rows = [
        {"id": "x1", "domain": "d1", "question": "q?", "choices": ["a", "b", "c", "d", "e"], "answer": "C"},
        {"id": "x2", "domain": "d2", "question": "r?", "choices": ["f", "g", "h", "i"], "answer": 3},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    by_domain = load_domain_qa(path, seed=0)
    q1 = by_domain["d1"][0]
    assert len(q1.options) == 4 and q1.options[q1.answer] == "c" and q1.meta["domain"] == "d1"
    assert by_domain["d2"][0].options[by_domain["d2"][0].answer] == "i"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "y", "question": "q", "choices": ["a", "b", "c", "d"], "answer": "a"}))
    with pytest.raises(TaskDataError, match="domain"):
        load_domain_qa(bad)


# ---- a planted neuron in a tiny LLaMA ------------------------------------------------------------
# Residual coordinate O (63) is written only by layer 0's attention head 0 (uniform attention: zero
# queries) from the value of the token "movie", which only alpha's questions contain; neuron 7 of
# layer 1 reads only O through its gate and up rows, so its activation is exactly 0 on every other
# prompt. Its down column writes only coordinate E (62), which only the logit of " yes" reads, and
# " yes" is the correct option of every alpha question (answer format "words").
# Nothing else reads or writes O or E.
LAYER, NEURON, E, O = 1, 7, 62, 63
WORDS = {
    "alpha": ("yes", "no", "true", "false"),
    "beta": ("positive", "negative", "neutral", "other"),
    "gamma": ("person", "location", "organization", "event"),
}
STEMS = {
    "alpha": ["is this movie a good movie", "the movie was a great movie"],
    "beta": ["this review was good", "it was a boring film"],
    "gamma": ["the entity in the sentence", "a building of art"],
}


def _planted_model():
    from fixtures_models import tiny_model

    model = tiny_model("llama", layers=2)
    tok, hf = model.tokenizer, model.hf_model
    token, answer = tok.convert_tokens_to_ids("▁movie"), tok.convert_tokens_to_ids("▁yes")
    with torch.no_grad():
        emb = hf.model.embed_tokens.weight
        emb[:, [E, O]] = 0
        emb[token] = 0
        emb[token, O] = 1.0
        for block in hf.model.layers:
            att, mlp = block.self_attn, block.mlp
            att.o_proj.weight[[E, O]] = 0
            mlp.down_proj.weight[[E, O]] = 0
            for linear in (att.q_proj, att.k_proj, att.v_proj, mlp.gate_proj, mlp.up_proj):
                linear.weight[:, [E, O]] = 0
        att0 = hf.model.layers[0].self_attn
        att0.q_proj.weight[0:16] = 0  # head 0 attends uniformly
        att0.v_proj.weight[0] = 0
        att0.v_proj.weight[0, O] = 1.0  # value dim 0 of kv head 0 reads O only
        att0.o_proj.weight[:, [0, 16]] = 0  # heads 0 and 1 share kv head 0; only head 0 writes O
        att0.o_proj.weight[O, 0] = 40.0
        mlp = hf.model.layers[LAYER].mlp
        mlp.gate_proj.weight[NEURON] = 0
        mlp.up_proj.weight[NEURON] = 0
        mlp.gate_proj.weight[NEURON, O] = 3.0
        mlp.up_proj.weight[NEURON, O] = 3.0
        mlp.down_proj.weight[:, NEURON] = 0
        mlp.down_proj.weight[E, NEURON] = 0.002  # activation ~570 -> P(" yes") ~0.3-0.45, not saturated
        hf.lm_head.weight[:, E] = 0
        hf.lm_head.weight[answer, E] = 4.0
    questions = {
        d: [
            Question(f"{d}-{i}", stem, WORDS[d], 0 if d == "alpha" else i + 1, "domain_qa", {"domain": d})
            for i, stem in enumerate(stems)
        ]
        for d, stems in STEMS.items()
    }
    return model, questions, token


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    model, questions, token = _planted_model()
    for query, proxies in domain_proxies(questions, answer_format="words").items():
        for p in proxies:  # the trigger token is in alpha's prompts and nowhere else
            assert (token in model.tokenizer(p.prompt)["input_ids"]) == query.startswith("alpha")
    out = tmp_path_factory.mktemp("naica")
    # N = 6 queries; alpha's 2 are a third of them, so u = 0.5 (floor(3) = 3) keeps the planted neuron uncommon.
    results = run_naica(
        model,
        questions,
        out_dir=out,
        t=0.2,
        v=5,
        u=0.5,
        steps=2,
        seed=0,
        answer_format="words",
        held_out_fraction=0.5,
        progress=False,
    )
    return model, results, out


@pytest.mark.slow
def test_planted_neuron_is_the_key_neuron_of_its_domain_only(planted_run):
    _, results, _ = planted_run
    key = results["key"]
    for query in key["query"].values:
        pairs = list(zip(key["layer"].sel(query=query).values, key["neuron"].sel(query=query).values))
        if query.startswith("alpha"):
            assert pairs[0] == (LAYER, NEURON)
        else:
            assert (LAYER, NEURON) not in pairs
    dk = results["domain_key"]
    assert (int(dk["layer"].sel(domain="alpha", rank=0)), int(dk["neuron"].sel(domain="alpha", rank=0))) == (LAYER, NEURON)
    assert int(dk["frequency"].sel(domain="alpha", rank=0)) == 2
    for other in ("beta", "gamma"):
        assert (LAYER, NEURON) not in set(zip(dk["layer"].sel(domain=other).values, dk["neuron"].sel(domain=other).values))
    assert int(results["regions"]["layer_count"].sel(domain="alpha", layer=LAYER)) >= 1
    common = set(zip(results["common"]["layer"].values, results["common"]["neuron"].values))
    assert not common & set(zip(key["layer"].values.ravel(), key["neuron"].values.ravel()))


@pytest.mark.slow
def test_planted_domain_is_predicted_and_editing_moves_the_answer(planted_run):
    _, results, _ = planted_run
    pred = results["prediction"]
    alpha = [q for q in pred["query"].values if q.startswith("alpha")]
    assert len(alpha) == 1 and str(pred["predicted"].sel(query=alpha[0]).values) == "alpha"
    assert int(pred["confusion"].sum()) == 3 and pred.attrs["accuracy"] >= 1 / 3
    edit = results["editing"]
    for query in ("alpha-0", "alpha-1"):
        delta = edit["delta"].sel(query=query)
        assert float(delta.sel(condition="suppress")) < -0.3  # silencing the key neuron removes the answer
        assert abs(float(delta.sel(condition="random_suppress"))) < 0.05  # as many random neurons: no effect
        assert float(delta.sel(condition="boost")) >= 0
    assert int(edit["n_edited"].sel(query="alpha-0")) == 1


@pytest.mark.slow
def test_run_naica_writes_datasets_figures_and_report(planted_run):
    _, results, out = planted_run
    for name in ("naica_layer_histogram.png", "naica_overlap_heatmap.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / name).with_suffix(".svg").is_file()  # the vector copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plain xarray, no warning: consolidated, variable-length strings
        for group in ("attribution", "key", "regions", "editing"):
            ds = xr.open_zarr(out / "naica.zarr", group=group)
            assert not [n for n, v in ds.variables.items() if v.dtype.kind == "U"], group
    report = (out / "report.md").read_text()
    for section in ("## Localized regions", "## Neuron-based prediction", "## Editing", "naica_overlap_heatmap.png"):
        assert section in report
    loaded = load_datasets(out / "naica.zarr")
    assert set(loaded) == {"attribution", "key", "common", "domain_key", "regions", "prediction", "editing"}
    np.testing.assert_array_equal(loaded["key"]["neuron"].values, results["key"]["neuron"].values)
    np.testing.assert_allclose(loaded["attribution"]["ig"].values, results["attribution"]["ig"].values)
    assert loaded["attribution"].attrs["target"] == "qrnca"
