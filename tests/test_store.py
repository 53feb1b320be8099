"""Scores store: round trip, resume after interruption, provenance refusal, incomplete stores."""

import dataclasses

import numpy as np
import pytest
import xarray as xr

from nsneurons.attribution import AttributionConfig
from nsneurons.scoring import score_proxies
from nsneurons.store import IncompleteStoreError, ProvenanceMismatchError, ScoreStore, example_scores, open_scores
from nsneurons.tasks.base import Proxy

OPTIONS = ("positive", "negative", "neutral", "not sure")


def _proxies(n_examples=3):
    out = []
    for e in range(n_examples):
        for p in range(3):
            correct = (e + p) % 4
            text = f"Question: review number {e} was good\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"
            out.append(Proxy(f"ex{e}", p, text, OPTIONS, correct, "sentiment"))
    return out


CONFIG = AttributionConfig(target="ace", steps=4)


def _strip_volatile(ds):
    ds = ds.load()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "created"}
    return ds


def test_store_round_trip_and_es(tiny_llama, tmp_path):
    ds = score_proxies(tiny_llama, _proxies(2), CONFIG, tmp_path / "s.zarr", progress=False)
    assert dict(ds.sizes) == {"example": 2, "proxy": 3, "layer": 3, "neuron": 128, "option": 4}
    assert ds.attrs["target"] == "ace" and ds.attrs["steps"] == 4 and ds.attrs["model"] == "tiny-llama"
    assert list(ds.correct_letter.sel(example="ex1").values) == ["B", "C", "D"]
    again = open_scores(tmp_path / "s.zarr")
    xr.testing.assert_identical(ds.load(), again.load())
    es = example_scores(again)
    np.testing.assert_allclose(
        es.sel(example="ex0", layer=1).values, again.ig.sel(example="ex0", layer=1).values.sum(0), rtol=1e-6
    )
    assert np.abs(again.ig.values).max() > 0


def test_interrupted_run_resumes_to_identical_store(tiny_llama, tmp_path, monkeypatch):
    full = _strip_volatile(score_proxies(tiny_llama, _proxies(3), CONFIG, tmp_path / "full.zarr", progress=False))

    import nsneurons.scoring as scoring

    calls = {"n": 0}
    real = scoring.attribute_proxies  # called once per example, with its three proxies

    def dying(model, proxies, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # dies during the second example
            raise KeyboardInterrupt
        return real(model, proxies, *args, **kwargs)

    monkeypatch.setattr(scoring, "attribute_proxies", dying)
    with pytest.raises(KeyboardInterrupt):
        score_proxies(tiny_llama, _proxies(3), CONFIG, tmp_path / "part.zarr", progress=False)
    with pytest.raises(IncompleteStoreError, match="1 of 3 examples"):
        open_scores(tmp_path / "part.zarr")
    monkeypatch.setattr(scoring, "attribute_proxies", real)
    counted = {"n": 0}

    def counting(model, proxies, *args, **kwargs):
        counted["n"] += len(proxies)
        return real(model, proxies, *args, **kwargs)

    monkeypatch.setattr(scoring, "attribute_proxies", counting)
    resumed = _strip_volatile(score_proxies(tiny_llama, _proxies(3), CONFIG, tmp_path / "part.zarr", progress=False))
    assert counted["n"] == 6  # only the two unfinished examples were computed
    xr.testing.assert_identical(full, resumed)


def test_mismatched_provenance_is_refused(tiny_llama, tmp_path):
    score_proxies(tiny_llama, _proxies(1), CONFIG, tmp_path / "s.zarr", progress=False)
    with pytest.raises(ProvenanceMismatchError, match="steps: store has 4, this run has 8"):
        score_proxies(tiny_llama, _proxies(1), dataclasses.replace(CONFIG, steps=8), tmp_path / "s.zarr", progress=False)
    with pytest.raises(ProvenanceMismatchError, match="target"):
        score_proxies(tiny_llama, _proxies(1), dataclasses.replace(CONFIG, target="tn"), tmp_path / "s.zarr", progress=False)


def test_unreadable_store_path_is_a_clear_error(tmp_path):
    (tmp_path / "junk.zarr").write_text("not a store")
    with pytest.raises(ValueError, match="not a readable scores store"):
        ScoreStore.open_or_create(
            tmp_path / "junk.zarr", example_ids=["a"], correct_letters=[["A", "B", "C"]], layers=[0], n_neurons=2, provenance={}
        )


def test_a_store_begun_on_one_ig_path_resumes_on_another(tiny_llama, tmp_path, monkeypatch):
    """Every path computes the same numbers, so the path is not a reason to refuse a resume."""
    import nsneurons.scoring as scoring

    real = scoring.attribute_proxies

    def dies_on_the_second_example(model, proxies, *args, **kwargs):
        if proxies[0].example_id == "ex1":
            raise KeyboardInterrupt
        return real(model, proxies, *args, **kwargs)

    monkeypatch.setattr(scoring, "attribute_proxies", dies_on_the_second_example)
    with pytest.raises(KeyboardInterrupt):
        score_proxies(tiny_llama, _proxies(2), dataclasses.replace(CONFIG, path="prefix"), tmp_path / "s.zarr", progress=False)
    monkeypatch.setattr(scoring, "attribute_proxies", real)
    ds = score_proxies(
        tiny_llama, _proxies(2), dataclasses.replace(CONFIG, path="staircase"), tmp_path / "s.zarr", progress=False
    )
    assert ds.done.values.tolist() == [True, True] and ds.attrs["ig_path"] == "prefix"
    whole = score_proxies(tiny_llama, _proxies(2), CONFIG, tmp_path / "whole.zarr", progress=False)
    np.testing.assert_allclose(ds.ig.values, whole.ig.values, rtol=1e-5, atol=1e-7)


def test_a_bad_layer_selection_writes_no_store(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match=r"layers must be a non-empty selection of 0\.\.2, got \[7\]"):
        score_proxies(tiny_llama, _proxies(1), CONFIG, tmp_path / "s.zarr", layers=[7], progress=False)
    assert not (tmp_path / "s.zarr").exists()
