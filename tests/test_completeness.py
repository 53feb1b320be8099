"""The completeness check per layer: ig_sum and ig_delta in the scores store, the relative gap, the report's table."""

import numpy as np
import pytest
import torch
import xarray as xr
from test_store import _proxies

from nsneurons import completeness, targets
from nsneurons.answers import answer_token_ids
from nsneurons.attribution import AttributionConfig
from nsneurons.scoring import score_proxies
from nsneurons.store import open_scores
from nsneurons.zarrio import write_atomically


def _store(sums, deltas, **attrs):
    """A store-like Dataset over (example 2, proxy 3, layer 2) from [layer][example * 3 + proxy] lists."""
    dims = ("example", "proxy", "layer")
    shape = lambda values: np.asarray(values, np.float32).reshape(2, 2, 3).transpose(1, 2, 0)  # noqa: E731
    return xr.Dataset(
        {"ig_sum": (dims, shape(sums)), "ig_delta": (dims, shape(deltas))},
        coords={"example": ["a", "b"], "proxy": [0, 1, 2], "layer": [0, 5]},
        attrs=attrs,
    )


def test_relative_gap_median_and_flagged_layers_by_hand():
    # Layer 0: delta 1, sums 1.2 1.3 1.1 1.5 1.0 2.0 -> gaps .2 .3 .1 .5 0 1, median (.2 + .3) / 2 = 25%.
    # Layer 5: delta -2, sums -2.02 (gap 1%) six times.
    ds = _store([[1.2, 1.3, 1.1, 1.5, 1.0, 2.0], [-2.02] * 6], [[1.0] * 6, [-2.0] * 6], steps=16, quadrature="right")
    np.testing.assert_allclose(completeness.relative_gap(ds).sel(layer=0).values.ravel(), [0.2, 0.3, 0.1, 0.5, 0, 1], atol=1e-6)
    np.testing.assert_allclose(completeness.median_gap(ds).values, [0.25, 0.01], rtol=1e-4)
    table = completeness.flagged_table({"sentiment-ace": ds}, 0.1)
    assert table.splitlines()[2] == "| sentiment-ace | 0 | 25.0% | 16 | right |"
    assert len(table.splitlines()) == 3  # header, rule, one flagged layer
    assert completeness.flagged_table({"sentiment-ace": ds}, 0.3) == ""


def test_a_zero_delta_gives_gap_zero_or_infinite():
    ds = _store([[0.0] * 6, [0.5] * 6], [[0.0] * 6, [0.0] * 6])
    np.testing.assert_array_equal(completeness.median_gap(ds).values, [0.0, np.inf])


def _f_zeroed(model, proxy, layer):
    """F (ace) with the layer's neurons zeroed at the last position, plain PyTorch (a forward pre-hook)."""
    ids = model.tokenizer(proxy.prompt, return_tensors="pt").input_ids
    answer_ids = torch.tensor(answer_token_ids(model.tokenizer, proxy.prompt, proxy.options, "letters"))

    def zero_last(module, args):
        x = args[0].clone()
        x[:, -1] = 0
        return (x,) + tuple(args[1:])

    handle = model.down_proj(layer, model.hf_model).register_forward_pre_hook(zero_last)
    try:
        with torch.no_grad():
            logits = model.hf_model(ids).logits[:, -1]
    finally:
        handle.remove()
    return float(targets.ace(logits, answer_ids, proxy.correct)[0])


def test_store_keeps_both_sides_and_the_report_flags_by_threshold(tiny_llama, tmp_path):
    proxies = _proxies(2)
    ds = score_proxies(
        tiny_llama, proxies, AttributionConfig(target="ace", steps=4), tmp_path / "scores" / "sentiment-ace.zarr", progress=False
    ).load()
    assert ds["ig_sum"].dims == ("example", "proxy", "layer") and ds["ig_delta"].attrs["units"] == "target units"
    np.testing.assert_allclose(ds.ig_sum.values, ds.ig.sum("neuron").values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ds.completeness_gap.values, (ds.ig_sum - ds.ig_delta).values, rtol=1e-5, atol=1e-7)
    for proxy in proxies[:3:2]:
        for layer in (0, 2):
            cell = dict(example=proxy.example_id, proxy=proxy.proxy, layer=layer)
            expected = float(ds.target_value.sel(example=proxy.example_id, proxy=proxy.proxy)) - _f_zeroed(
                tiny_llama, proxy, layer
            )
            assert float(ds.ig_delta.sel(cell)) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    gaps = completeness.median_gap(ds)
    assert (gaps > 0).all()
    section = completeness.report_section(tmp_path, threshold=0.0)  # every layer is above 0
    assert section[0] == "## IG completeness" and len(section[2].splitlines()) == 2 + 3
    assert completeness.report_section(tmp_path, threshold=float(gaps.max()) + 1) == []
    (tmp_path / "recipe.yaml").write_text(f"attribution: {{gap_threshold: {float(gaps.max()) + 1}}}\n")
    assert completeness.report_section(tmp_path) == []


def test_a_store_made_before_the_completeness_variables_still_resumes(tiny_llama, tmp_path):
    path = tmp_path / "old.zarr"
    config = AttributionConfig(target="ace", steps=2)
    first = score_proxies(tiny_llama, _proxies(1), config, path, progress=False).load()
    old = first.drop_vars(["ig_sum", "ig_delta"])
    old["done"][:] = False
    write_atomically(path, old)  # an older layout, nothing done yet
    resumed = score_proxies(tiny_llama, _proxies(1), config, path, progress=False)
    assert "ig_sum" not in resumed and bool(resumed.done.all())
    np.testing.assert_array_equal(resumed.ig.values, first.ig.values)
    assert completeness.report_section(tmp_path) == []
    assert open_scores(path).completeness_gap.shape == (1, 3, 3)
