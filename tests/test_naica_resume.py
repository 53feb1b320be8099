"""NA-ICA through the scores store: an interrupted run resumes without attributing the finished queries
again and ends identical to an uninterrupted one; other IG settings on the same folder are refused."""

import pytest
import xarray as xr
from test_naica import _planted_model

from nsneurons.runners.naica import run_naica


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_finished_queries(tmp_path, monkeypatch):
    from nsneurons import faults, scoring
    from nsneurons.store import ProvenanceMismatchError

    model, questions, _ = _planted_model()
    settings = dict(t=0.2, v=5, u=0.5, steps=2, seed=0, answer_format="words", held_out_fraction=0.5)
    attributed, real = [], scoring.attribute_group_with_retries

    def counting(model, proxies, config, layers=None):
        attributed.append(proxies[0].example_id)
        return real(model, proxies, config, layers)

    monkeypatch.setattr(scoring, "attribute_group_with_retries", counting)
    whole = run_naica(model, questions, out_dir=tmp_path / "whole", **settings)
    order = ["alpha-0", "alpha-1", "beta-0", "beta-1", "gamma-0", "gamma-1"]  # domain, then question order
    assert attributed == order
    store = tmp_path / "cut" / "scores" / "naica-qrnca.zarr"
    # Ctrl-C right after the second query is marked done.
    monkeypatch.setenv("NSNEURONS_FAULT_AT", "store.example-done:naica-qrnca.zarr#2")
    monkeypatch.setenv("NSNEURONS_FAULT_ACTION", "interrupt")
    faults.reset()
    attributed.clear()
    with pytest.raises(KeyboardInterrupt):
        run_naica(model, questions, out_dir=tmp_path / "cut", **settings)
    assert attributed == order[:2]
    assert xr.open_zarr(store)["done"].values.tolist() == [True, True, False, False, False, False]
    assert not (tmp_path / "cut" / "naica.zarr").exists() and not (tmp_path / "cut" / "report.md").exists()
    monkeypatch.delenv("NSNEURONS_FAULT_AT")
    attributed.clear()
    resumed = run_naica(model, questions, out_dir=tmp_path / "cut", **settings)
    assert attributed == order[2:]  # only the unfinished queries
    assert list(resumed) == list(whole)
    for name in whole:
        xr.testing.assert_identical(resumed[name], whole[name])
    stores = [xr.open_zarr(tmp_path / run / "scores" / "naica-qrnca.zarr").load() for run in ("whole", "cut")]
    for ds in stores:
        ds.attrs.pop("created")
    xr.testing.assert_identical(*stores)
    assert stores[0]["ig"].dims == ("query", "prompt", "layer", "neuron") and stores[0].attrs["target"] == "qrnca"
    assert (tmp_path / "cut" / "report.md").read_text() == (tmp_path / "whole" / "report.md").read_text()
    # Other IG settings on the same folder: refused, like NeuronLLM's scores stores.
    with pytest.raises(ProvenanceMismatchError, match="steps: store has 2, this run has 3"):
        run_naica(model, questions, out_dir=tmp_path / "cut", **{**settings, "steps": 3})
