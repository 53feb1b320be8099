"""Section 4.2 metrics on tiny correctness tables worked out by hand in the comments."""

import math

import numpy as np
import pytest
import xarray as xr

from nsneurons.metrics import (
    METRIC_NAMES,
    Cell,
    ConditionResult,
    RelativeChange,
    accuracy,
    comprehension,
    evaluate_condition,
    fail,
    format_cell,
    relative_change,
    sample_eval_set,
    signed_change,
)

T, F = True, False
# e0: 3/3 and e1: 2/3 understood; e2: 1/3, e3: 0/3 not. Acc = 6/12 = 0.5, Com = 2/4 = 0.5.
ORIGINAL = np.array([[T, T, T], [T, T, F], [T, F, F], [F, F, F]])
# e0: 1/3, e1: 1/3, e2, e3: 0/3. Acc = 2/12 = 1/6, Com = 0.
INTERVENED = np.array([[T, F, F], [T, F, F], [F, F, F], [F, F, F]])


def test_accuracy_and_comprehension():
    assert accuracy(ORIGINAL) == 0.5 and comprehension(ORIGINAL) == 0.5
    assert accuracy(INTERVENED) == pytest.approx(1 / 6) and comprehension(INTERVENED) == 0.0
    # A DataArray is read by dim name, whatever its axis order.
    labelled = xr.DataArray(ORIGINAL.T, dims=("proxy", "example"))
    assert comprehension(labelled) == 0.5
    with pytest.raises(ValueError):
        accuracy(np.zeros((0, 3), dtype=bool))


def test_relative_and_signed_change():
    # RAC = |0.5 - 1/6| / 0.5 * 100 = 66.67; RCC = |0.5 - 0| / 0.5 * 100 = 100.
    assert relative_change(0.5, 1 / 6).percent == pytest.approx(200 / 3)
    assert str(relative_change(0.5, 1 / 6)) == "66.7"
    assert str(relative_change(0.5, 0.0)) == "100.0"
    assert signed_change(0.5, 1 / 6) == pytest.approx(-100 / 3)  # points
    assert relative_change(0.5, 0.5).percent == 0.0


def test_undefined_when_original_is_zero():
    change = relative_change(0.0, 0.25)
    assert change.undefined and change.percent is None and str(change) == "undefined"
    # Degrading from 0 cannot go lower: no change is undefined, not Fail; going up is Fail.
    flat = ConditionResult("degrade", 0.0, 0.0, 0.0, 0.0)
    assert str(flat.rac) == "undefined" and not flat.rac_fail
    assert format_cell(flat.rac, flat.rcc) == "undefined"
    assert format_cell(ConditionResult("degrade", 0.0, 0.1, 0.0, 0.0).rac, flat.rcc) == "Fail/undefined"
    # Enhancing from 0 is the right direction but has no relative size.
    up = ConditionResult("enhance", 0.0, 0.25, 0.0, 0.5)
    assert not up.rac_fail and str(up.rac) == "undefined"
    assert math.isnan(up.as_dict()["rac"]) and up.as_dict()["acc_change"] == 25.0


def test_fail_is_strict_and_directional():
    assert fail(0.5, 0.4, "enhance") and not fail(0.5, 0.4, "degrade")
    assert fail(0.5, 0.6, "degrade") and not fail(0.5, 0.6, "enhance")
    assert not fail(0.5, 0.5, "degrade") and not fail(0.5, 0.5, "enhance")  # no change: 0.0
    with pytest.raises(ValueError, match="direction"):
        fail(0.5, 0.4, "down")


def test_evaluate_condition_and_cells():
    degraded = evaluate_condition(ORIGINAL, INTERVENED, "degrade")
    assert format_cell(degraded.rac, degraded.rcc) == "66.7/100.0"
    enhanced = evaluate_condition(ORIGINAL, INTERVENED, "enhance")  # went down: both Fail
    assert format_cell(enhanced.rac, enhanced.rcc) == "Fail"
    row = degraded.to_dataarray()
    assert row["metric"].values.tolist() == list(METRIC_NAMES)
    assert row.sel(metric="rcc").item() == 100.0 and row.sel(metric="rac_fail").item() == 0.0
    assert row.sel(metric="com_change").item() == -50.0
    assert enhanced.as_dict()["rac_fail"] == 1.0


def test_format_cell_mixed():
    assert format_cell(Cell(RelativeChange(53.33), False), Cell(RelativeChange(64.0), False)) == "53.3/64.0"
    assert format_cell(Cell(RelativeChange(None), True), Cell(RelativeChange(64.0), False)) == "Fail/64.0"


def test_sample_eval_set_is_seeded_and_excludes():
    # 6 understood (u0..u5), 4 not (n0..n3); u0 and n0 are identification examples.
    understood = {f"u{i}": True for i in range(6)} | {f"n{i}": False for i in range(4)}
    sample = sample_eval_set(understood, n_understood=3, n_not=2, exclude=["u0", "n0"], seed=1)
    assert sample.n_understood == 3 and sample.n_not_understood == 2 and not sample.short
    assert all(i.startswith("u") for i in sample.ids[:3]) and all(i.startswith("n") for i in sample.ids[3:])
    assert "u0" not in sample.ids and "n0" not in sample.ids
    # Insertion order of the dict does not matter; the seed does.
    shuffled = dict(reversed(list(understood.items())))
    assert sample_eval_set(shuffled, 3, 2, exclude=["u0", "n0"], seed=1).ids == sample.ids


def test_sample_eval_set_takes_all_when_short():
    # Only 3 not-understood remain after excluding n0: take them all, warn, report 3/50.
    understood = {f"u{i}": True for i in range(60)} | {f"n{i}": False for i in range(4)}
    with pytest.warns(UserWarning, match="3/50 not-understood"):
        sample = sample_eval_set(understood, exclude=["n0"], seed=0)
    assert sample.short and sample.n_understood == 50 and sample.n_not_understood == 3
    assert sorted(sample.ids[50:]) == ["n1", "n2", "n3"] and len(set(sample.ids)) == 53
