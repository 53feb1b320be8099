"""Scoring rules worked out by hand: one ratio per cell, averages over every task, RANDOM's draws,
bootstrap intervals (nsneurons.cells, nsneurons.uncertainty, nsneurons.conditions)."""

import numpy as np
import pytest
import xarray as xr

from nsneurons import conditions
from nsneurons.cells import choose_ratio, quantities, score_cells
from nsneurons.metrics import METRIC_NAMES, ConditionResult
from nsneurons.selection import select
from nsneurons.uncertainty import bootstrap_indices, percentile_interval, resampled_means


def _results(rac_by_task: dict[str, float], direction="degrade", per_example=None):
    """One method, ratio 1.0, original Acc = Com = 1.0 and intervened 1 - x/100: RAC = RCC = x
    (a negative x is a change the wrong way, i.e. Fail)."""
    tasks = list(rac_by_task)
    sweep = np.full((len(tasks), 1, 2, 1, len(METRIC_NAMES)), np.nan)
    for i, x in enumerate(rac_by_task.values()):
        after = 1 - x / 100 if direction == "degrade" else 1 + x / 100
        values = ConditionResult(direction, 1.0, after, 1.0, after).as_dict()
        sweep[i, 0, 0 if direction == "degrade" else 1, 0] = [values[m] for m in METRIC_NAMES]
    ds = xr.Dataset(
        {"sweep": (("task", "selector", "direction", "ratio", "metric"), sweep)},
        coords={
            "task": tasks,
            "selector": ["tn"],
            "direction": ["degrade", "enhance"],
            "ratio": [1.0],
            "metric": list(METRIC_NAMES),
        },
    )
    return ds if per_example is None else ds.merge(per_example)


def test_average_is_over_all_four_tasks_as_the_paper():
    # Table 1, TN Deg on LLaMA 2-7B: (47.8 + 17.2 + 63.9 + 9.5) / 4 = 34.6.
    cells = score_cells(_results({"ner": 47.8, "chunking": 17.2, "sentiment": 63.9, "commonsense": 9.5}))
    avg = cells["average"].sel(selector="tn", direction="degrade", ci="estimate")
    assert float(avg.sel(quantity="rac")) == pytest.approx(34.6)
    assert float(avg.sel(quantity="rcc")) == pytest.approx(34.6)


def test_a_failed_task_enters_the_average_with_its_negative_value():
    cells = score_cells(_results({"ner": 47.8, "chunking": 17.2, "sentiment": 63.9, "commonsense": -9.5}))
    avg = cells["average"].sel(selector="tn", direction="degrade", ci="estimate", quantity="rac")
    assert float(avg) == pytest.approx((47.8 + 17.2 + 63.9 - 9.5) / 4)  # 29.85, not 43.0 (failed task dropped)
    assert bool(cells["average_complete"].sel(selector="tn", direction="degrade", quantity="rac"))


def test_one_ratio_rule_and_per_metric_maxima_pick_different_ratios():
    # RAC 30 / RCC 0 at r=0, RAC 20 / RCC 20 at r=0.5, RAC 0 / RCC 25 at r=1 (directed).
    q = {"rac": np.array([30.0, 20.0, 0.0]), "rcc": np.array([0.0, 20.0, 25.0]), "acc_dir": np.zeros(3), "com_dir": np.zeros(3)}
    ratios = [0.0, 0.5, 1.0]
    assert choose_ratio(ratios, q, "mean") == {"rac": 0.5, "rcc": 0.5}  # means 15, 20, 12.5
    assert choose_ratio(ratios, q, "rac") == {"rac": 0.0, "rcc": 0.0}
    assert choose_ratio(ratios, q, "rcc") == {"rac": 1.0, "rcc": 1.0}
    assert choose_ratio(ratios, q, "per_metric") == {"rac": 0.0, "rcc": 1.0}
    tied = {**q, "rac": np.array([10.0, 10.0, 10.0]), "rcc": np.array([10.0, 10.0, 10.0])}
    assert choose_ratio(ratios, tied, "mean") == {"rac": 0.0, "rcc": 0.0}  # ties: the lowest ratio
    with pytest.raises(ValueError, match="best_by"):
        choose_ratio(ratios, q, "best")


def test_quantities_by_hand():
    q = quantities(0.6, 0.28, 0.5, 0.18, "degrade")
    assert q["rac"] == pytest.approx(53.333333, abs=1e-5) and q["rcc"] == pytest.approx(64.0)
    assert q["acc_change"] == pytest.approx(-32.0) and q["com_change"] == pytest.approx(-32.0)
    assert quantities(0.5, 0.6, 0.5, 0.5, "degrade")["rac"] == pytest.approx(-20.0)  # the wrong way: Fail
    assert np.isnan(quantities(0.0, 0.1, 0.5, 0.5, "enhance")["rac"])  # undefined


def test_bootstrap_of_identical_examples_has_zero_width():
    values = np.full(8, 0.5)
    lo, hi = percentile_interval(resampled_means(values, bootstrap_indices(8, 1000, 0)))
    assert lo == hi == 0.5


def test_bootstrap_two_value_case_gives_the_binomial_quantiles():
    # Ten examples, five right: a resampled mean is Binomial(10, 1/2) / 10, whose 2.5% and 97.5%
    # quantiles are 0.2 and 0.8 (P(X <= 1) = 11/1024 < 0.025 < P(X <= 2) = 56/1024).
    values = np.array([0.0, 1.0] * 5)
    lo, hi = percentile_interval(resampled_means(values, bootstrap_indices(10, 20000, 1)))
    assert (float(lo), float(hi)) == (0.2, 0.8)
    again = percentile_interval(resampled_means(values, bootstrap_indices(10, 20000, 1)))
    assert (float(again[0]), float(again[1])) == (0.2, 0.8)  # seeded


def _per_example(original_acc, intervened_acc):
    n = len(original_acc)
    orig = xr.DataArray(
        [[original_acc, original_acc]],
        dims=("task", "measure", "eval_index"),
        coords={"task": ["ner"], "measure": ["acc", "com"], "eval_index": np.arange(n)},
    ).squeeze()
    cond = np.full((1, 1, 2, 1, 2, n), np.nan)
    cond[0, 0, 0, 0] = [intervened_acc, intervened_acc]
    return xr.Dataset(
        {
            "original_example": orig.expand_dims(task=["ner"]),
            "sweep_example": (("task", "selector", "direction", "ratio", "measure", "eval_index"), cond),
        }
    )


def test_cell_interval_from_per_example_values():
    # Every example: Acc 1 -> 0.5 (RAC 50): every resample gives 50, a zero-width interval.
    same = _results({"ner": 50.0}, per_example=_per_example([1.0] * 6, [0.5] * 6))
    block = score_cells(same)["cell"].sel(task="ner", selector="tn", direction="degrade", quantity="rac")
    assert [float(block.sel(ci=c)) for c in ("estimate", "lo", "hi")] == pytest.approx([50.0, 50.0, 50.0])
    # Half the examples lose everything, half nothing: RAC = 50 with a wide interval around it.
    mixed = _results({"ner": 50.0}, per_example=_per_example([1.0] * 10, [0.0, 1.0] * 5))
    block = score_cells(mixed)["cell"].sel(task="ner", selector="tn", direction="degrade", quantity="rac")
    assert float(block.sel(ci="lo")) == pytest.approx(20.0) and float(block.sel(ci="hi")) == pytest.approx(80.0)


def test_random_is_good_only_one_draw_per_seed_never_swept():
    draws = [select("random", k=3, n_layers=2, n_neurons=8, seed=s) for s in range(5)]
    assert len({tuple(map(tuple, d.layer.values * 8 + d.neuron.values)) for d in draws}) == 5  # five distinct draws
    planned, answers = conditions.plan({"random": draws}, k=3, ratios=[0.0, 0.5, 1.0], ablation=True)
    sweep = [key for key in answers if key.kind == "sweep"]
    assert {key.where for key in sweep} == {1.0} and {key.draw for key in sweep} == set(range(5))
    assert all(not c.excite or not c.silence for c in planned)  # good neurons only: one kind of switch
    # The good-only ablation is the ratio-1.0 sweep: the same condition, run once.
    assert (
        answers[conditions.Key("ablation", "random", "degrade", "good", 2)]
        == answers[conditions.Key("sweep", "random", "degrade", 1.0, 2)]
    )
    assert len(planned) == 5 * 2


def test_collect_averages_draws_per_example():
    correct = xr.DataArray(
        np.array(
            [
                [[1, 1, 1], [1, 1, 0]],  # none: e0 3/3, e1 2/3
                [[0, 0, 0], [1, 1, 0]],  # draw 0: e0 0/3
                [[1, 1, 1], [0, 0, 0]],
            ]
        ),  # draw 1: e1 0/3
        dims=("condition", "example", "proxy"),
        coords={"condition": ["none", "random/degrade/1", "random#1/degrade/1"], "example": ["e0", "e1"]},
    )
    answers = {
        conditions.Key("sweep", "random", "degrade", 1.0, 0): "random/degrade/1",
        conditions.Key("sweep", "random", "degrade", 1.0, 1): "random#1/degrade/1",
    }
    out = conditions.collect(correct, answers, ["e0", "e1"], ["random"], [1.0])
    acc = out["sweep_example"].sel(selector="random", direction="degrade", ratio=1.0, measure="acc")
    assert acc.values.tolist() == pytest.approx([0.5, 1 / 3])  # e0: (0 + 1) / 2, e1: (2/3 + 0) / 2
    draws = out["draw_quantity"].sel(selector="random", direction="degrade", quantity="rac").values
    # Original Acc 5/6; draw 0 Acc 2/6 (RAC 60), draw 1 Acc 3/6 (RAC 40).
    assert draws.tolist() == pytest.approx([60.0, 40.0])


def _q(direction, *acc_com):
    """quantities over ratios from (acc, com) pairs, original Acc = Com = 0.5."""
    acc, com = (np.array(x) for x in zip(*acc_com))
    return quantities(0.5, acc, 0.5, com, direction)


def test_per_metric_maxima_with_a_fail_entry():
    # Degrade from Acc 0.5, Com 0.5. r=0: Acc 0.6 (RAC Fail), Com 0.25 (RCC 50); r=0.5: Acc 0.4 (RAC 20),
    # Com 0.5 (RCC 0); r=1: Acc 0.45 (RAC 10), Com 0 (RCC 100). Per metric: RAC at 0.5 (the Fail at 0 loses),
    # RCC at 1. One ratio by the mean: (-20 + 50) / 2 = 15, (20 + 0) / 2 = 10, (10 + 100) / 2 = 55 -> 1.
    q = _q("degrade", (0.6, 0.25), (0.4, 0.5), (0.45, 0.0))
    assert choose_ratio([0.0, 0.5, 1.0], q, "per_metric") == {"rac": 0.5, "rcc": 1.0}
    assert choose_ratio([0.0, 0.5, 1.0], q, "mean") == {"rac": 1.0, "rcc": 1.0}


def test_ties_and_all_fail_choose_the_lowest_or_least_bad_ratio():
    assert choose_ratio([0.3, 0.7], _q("degrade", (0.4, 0.25), (0.4, 0.25)), "mean") == {"rac": 0.3, "rcc": 0.3}
    # Enhancing, but every ratio lowers Acc and Com: all Fail, the least bad ratio is reported (r=0).
    worse = _q("enhance", (0.4, 0.25), (0.3, 0.0))
    assert choose_ratio([0.0, 1.0], worse, "mean") == {"rac": 0.0, "rcc": 0.0}
    assert worse["rac"][0] == pytest.approx(-20.0) and worse["rcc"][0] == pytest.approx(-50.0)


def test_planned_conditions_carry_the_key_their_name_was_built_from():
    ns = select("random", k=2, n_layers=2, n_neurons=8, seed=0)
    planned, answers = conditions.plan({"random": [ns]}, k=2, ratios=[1.0], ablation=True)
    # One good-only draw at ratio 1: degrade and enhance, the ablations being the same switches.
    assert [c.name for c in planned] == ["random/degrade/1", "random/enhance/1"]
    assert [c.key for c in planned] == [conditions.Key("sweep", "random", d, 1.0) for d in ("degrade", "enhance")]
    assert all(answers[c.key] == c.name for c in planned)
