"""Every zarr output of a tiny `nsneurons run` + `nsneurons crosstask` opens with plain `xr.open_zarr`
without a warning (consolidated metadata, variable-length strings), is labelled for plotting, and the
selection method is a `selector` dim that `.sel(selector=...)` selects. Old stores (dim `method`, no
consolidated metadata, fixed-width strings) still open through nsneurons."""

import warnings

import numpy as np
import pytest
import xarray as xr
from test_crosstask import tiny_crosstask_run

from nsneurons import crosstask, zarrio
from nsneurons.runfolder import open_outputs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tiny_crosstask_run(tmp_path_factory)[0]


def _fixed_width(ds: xr.Dataset) -> list[str]:
    return [name for name, v in ds.variables.items() if v.dtype.kind in "US"]


def test_every_output_opens_without_a_warning(out):
    # The scores stores are written by the same writer as `nsneurons score` (scoring.score_proxies).
    stores = [
        "results.zarr",
        "neurons.zarr",
        "baseline.zarr",
        "examples.zarr",
        "tasks/sentiment.zarr",
        "tasks/ner.zarr",
        *(p.relative_to(out).as_posix() for p in sorted((out / "scores").glob("*.zarr"))),
    ]
    assert "scores/sentiment-ace.zarr" in stores
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in stores:
            ds = xr.open_zarr(out / name).load()
            assert not _fixed_width(ds), name
            assert "method" not in ds.dims, name
        for group in crosstask.GROUPS:
            ds = xr.open_zarr(out / "crosstask.zarr", group=group).load()
            assert not _fixed_width(ds) and "method" not in ds.dims, group


def test_selector_dim_selects_with_plain_sel(out):
    results, neurons = xr.open_zarr(out / "results.zarr"), xr.open_zarr(out / "neurons.zarr")
    assert list(results["selector"].values) == ["neuronllm", "tn", "act"]
    tn = results["sweep"].sel(selector="tn")
    assert tn.dims == ("task", "direction", "ratio", "metric")
    np.testing.assert_array_equal(tn.values, results["sweep"].isel(selector=1).values)
    # TN selects K = 5 good neurons per task and no bad ones (-1 pads).
    layer = neurons["layer"].sel(selector="tn")
    assert ((layer.sel(role="good") >= 0).sum("rank").values == [5, 5]).all()
    assert (layer.sel(role="bad") == -1).all()
    matrix = xr.open_zarr(out / "crosstask.zarr", group="matrix")
    assert matrix["effect"].sel(selector="tn").dims == ("source_task", "eval_task", "direction", "metric")


def test_main_variables_carry_long_name_and_units(out):
    results, neurons = xr.open_zarr(out / "results.zarr"), xr.open_zarr(out / "neurons.zarr")
    scores = xr.open_zarr(out / "scores" / "sentiment-ace.zarr")
    for da in (results["cell"], results["sweep"], results["sweep_ci"], neurons["score"], scores["ig"]):
        assert da.attrs["long_name"] and da.attrs["units"], da.name
    assert scores["ig"].attrs["long_name"] == "integrated gradient (Eq. 1)"
    assert results["cell"].attrs["units"] == "% (RAC, RCC) or points (acc_change, com_change)"


def test_a_store_written_before_the_rename_still_opens(tmp_path, out):
    # An old-format store: dim `method`, fixed-width strings, no consolidated metadata.
    old = open_outputs(out)["neurons"].load().rename(selector="method")
    fixed = {d: np.array([str(v) for v in old[d].values]) for d in ("method", "task", "role")}  # `<U`, as written then
    old = old.assign_coords(fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's own warning about `<U` strings, which old stores have
        old.to_zarr(tmp_path / "neurons.zarr", consolidated=False)
    back = zarrio.open_checked(tmp_path / "neurons.zarr")
    assert "selector" in back.dims and "method" not in back.dims
    np.testing.assert_array_equal(back["layer"].sel(selector="tn").values, old["layer"].sel({"method": "tn"}).values)


def test_nsneurons_score_output_opens_without_a_warning(tmp_path, tmp_path_factory):
    from nsneurons import cli

    recipe = tiny_crosstask_run(tmp_path_factory)[1]
    store = tmp_path / "s.zarr"
    assert (
        cli.main(
            [
                "score",
                "--model",
                recipe.model,
                "--device",
                "cpu",
                "--task",
                "sentiment",
                "--examples",
                "1",
                "--steps",
                "2",
                "--out",
                str(store),
            ]
        )
        == 0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(store).load()
    assert not _fixed_width(ds) and ds.sizes["example"] == 1 and bool(ds["done"].all())
    assert ds["ig"].attrs["units"] == "target units"
