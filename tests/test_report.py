"""Report tables and figures on small hand-built result Datasets whose cells are worked out below."""

import math

import numpy as np
import pytest
import xarray as xr

from nsneurons.metrics import METRIC_NAMES, Cell, ConditionResult, RelativeChange
from nsneurons.report import (
    average_cells,
    baseline_table,
    option_prob_table,
    signed_change_table,
    table1,
    table3,
    table6,
    write_report,
)

TASKS = ["ner", "sentiment", "chunk"]
METHODS = ["neuronllm", "tn"]
RATIOS = [0.0, 0.5, 1.0]
ORIGINAL = {"ner": (0.6, 0.5), "sentiment": (0.5, 0.5), "chunk": (0.0, 0.0)}  # (Acc, Com); chunk: 0 -> undefined

# (task, method, direction) -> {ratio: (acc_intervened, com_intervened)}
SWEEP = {
    # RAC |0.6-0.28|/0.6 = 53.3, RCC |0.5-0.18|/0.5 = 64.0 at ratio 0.5 beat 33.3/40.0 (1.0), 16.7/10.0 (0.0)
    ("ner", "neuronllm", "degrade"): {0.0: (0.5, 0.45), 0.5: (0.28, 0.18), 1.0: (0.4, 0.3)},
    # RAC best at 0.5 (+15 points = 25.0), RCC best at 0.0 (+10 points = 20.0); ratio 1.0 is Fail
    ("ner", "neuronllm", "enhance"): {0.0: (0.66, 0.6), 0.5: (0.75, 0.55), 1.0: (0.5, 0.4)},
    ("sentiment", "neuronllm", "degrade"): {0.0: (0.45, 0.45), 0.5: (0.4, 0.4), 1.0: (0.5, 0.5)},  # 20.0/20.0
    ("sentiment", "neuronllm", "enhance"): {0.0: (0.45, 0.45), 0.5: (0.4, 0.4), 1.0: (0.3, 0.3)},  # all Fail
    ("chunk", "neuronllm", "degrade"): {r: (0.0, 0.0) for r in RATIOS},  # undefined
    ("chunk", "neuronllm", "enhance"): {r: (0.1, 0.2) for r in RATIOS},  # right way, but undefined
    # Good-only method: ratio 1.0 only.
    ("ner", "tn", "degrade"): {1.0: (0.5, 0.4)},  # 16.7/20.0
    ("sentiment", "tn", "degrade"): {1.0: (0.6, 0.55)},  # Fail
    ("chunk", "tn", "degrade"): {1.0: (0.0, 0.0)},  # undefined
    ("ner", "tn", "enhance"): {1.0: (0.6, 0.5)},  # 0.0/0.0
    ("sentiment", "tn", "enhance"): {1.0: (0.4, 0.6)},  # Fail/20.0
    # chunk/tn/enhance: not evaluated -> "-"
}
# (task, direction, group) -> (acc_intervened, com_intervened), neuronllm only (tn has no bad neurons)
ABLATION = {
    ("ner", "degrade", "good"): (0.45, 0.4),  # 25.0/20.0
    ("sentiment", "degrade", "good"): (0.45, 0.5),  # 10.0/0.0
    ("chunk", "degrade", "good"): (0.0, 0.0),  # undefined
    ("ner", "degrade", "bad"): (0.54, 0.45),  # 10.0/10.0
    ("sentiment", "degrade", "bad"): (0.55, 0.6),  # Fail
    ("ner", "enhance", "good"): (0.63, 0.55),  # 5.0/10.0
    ("ner", "enhance", "bad"): (0.66, 0.5),  # 10.0/0.0
}


def _vector(task, direction, intervened):
    acc, com = ORIGINAL[task]
    values = ConditionResult(direction, acc, intervened[0], com, intervened[1]).as_dict()
    return [values[m] for m in METRIC_NAMES]


def make_results():
    sweep = np.full((3, 2, 2, 3, len(METRIC_NAMES)), np.nan)
    ablation = np.full((3, 2, 2, 2, len(METRIC_NAMES)), np.nan)
    dirs, groups = ["degrade", "enhance"], ["good", "bad"]
    for (task, method, d), by_ratio in SWEEP.items():
        for ratio, vals in by_ratio.items():
            sweep[TASKS.index(task), METHODS.index(method), dirs.index(d), RATIOS.index(ratio)] = _vector(task, d, vals)
    for (task, d, group), vals in ABLATION.items():
        ablation[TASKS.index(task), 0, dirs.index(d), groups.index(group)] = _vector(task, d, vals)
    for task in TASKS:  # tn: good-only ablation = its ratio-1.0 sweep entry
        for d in dirs:
            if (task, "tn", d) in SWEEP:
                ablation[TASKS.index(task), 1, dirs.index(d), 0] = _vector(task, d, SWEEP[task, "tn", d][1.0])
    coords = {
        "task": TASKS,
        "selector": METHODS,
        "direction": dirs,
        "ratio": RATIOS,
        "group": groups,
        "metric": list(METRIC_NAMES),
    }
    return xr.Dataset(
        {
            "sweep": (("task", "selector", "direction", "ratio", "metric"), sweep),
            "ablation": (("task", "selector", "direction", "group", "metric"), ablation),
        },
        coords=coords,
        attrs={"k": 2, "model": "tiny"},
    )


def make_neurons():
    layer = np.array([[[[1, 2], [3, 3]], [[0, 1], [-1, -1]]]] * 3)  # (task, method, role, rank)
    return xr.Dataset(
        {
            "layer": (("task", "selector", "role", "rank"), layer),
            "neuron": (("task", "selector", "role", "rank"), layer * 0 + 5),
            "score": (("task", "selector", "role", "rank"), np.where(layer >= 0, 1.0, np.nan)),
        },
        coords={"task": TASKS, "selector": METHODS, "role": ["good", "bad"], "rank": [0, 1]},
        attrs={"n_layers": 4, "n_neurons": 8},
    )


def make_baseline():
    values = [[0.6, 0.5, 100, 50], [0.5, 0.5, 100, 50], [0.0, 0.0, 10, 0]]
    return xr.Dataset(
        {"baseline": (("task", "metric"), np.array(values, dtype=float))},
        coords={"task": TASKS, "metric": ["acc", "com", "n_examples", "n_understood"]},
    )


def make_examples():
    probs = [[0.18, 0.59, 0.23, 1e-3], [0.98, 0.015, 4e-4, 7.3e-5], [0.2, 0.5, 0.2, 0.1], [0.9, 0.05, 0.03, 0.02]]
    return xr.Dataset(
        {"prob": (("task", "condition", "option"), np.array([probs]))},
        coords={
            "task": ["ner"],
            "condition": ["none", "neuronllm/enhancer", "neuronllm/degrader", "tn/degrader"],
            "option": list("ABCD"),
            "correct_letter": ("task", ["A"]),
            "prompt": ("task", ["Entity of 'Hirwaun'?"]),
        },
    )


def _rows(markdown):
    return {
        line.split(" | ")[0].lstrip("| "): [c.strip() for c in line.strip("| ").split(" | ")]
        for line in markdown.splitlines()[2:]
    }


def test_table1_cells_one_ratio_fail_undefined_and_average():
    table = table1(make_results())
    assert table.splitlines()[0] == (
        "| method | ner Deg | ner Enh | sentiment Deg | sentiment Enh | chunk Deg | chunk Enh | Average Deg | Average Enh |"
    )
    rows = _rows(table)
    # ner Enh: ratio 0.5 has the largest mean of RAC and RCC ((25 + 10) / 2 = 17.5 > (10 + 20) / 2 = 15), so
    # both are reported there: 25.0/10.0 (per-metric maxima would print 25.0/20.0, mixing ratios 0.5 and 0).
    # Averages: every task, a Fail with its negative value, undefined chunk left out (dagger):
    # Deg (53.3 + 20) / 2 = 36.7, (64 + 20) / 2 = 42.0; Enh (25 - 10) / 2 = 7.5, (10 - 10) / 2 = 0.0.
    assert rows["neuronllm"] == [
        "neuronllm",
        "53.3/64.0 (r=0.5)",
        "25.0/10.0 (r=0.5)",
        "20.0/20.0 (r=0.5)",
        "Fail (r=0)",
        "undefined (r=0)",
        "undefined (r=0)",
        "36.7/42.0†",
        "7.5/0.0†",
    ]
    # tn Deg: (16.7 - 20) / 2 < 0 -> Fail, (20 - 10) / 2 = 5.0; Enh: (0 - 20) / 2 -> Fail, (0 + 20) / 2 = 10.0.
    assert rows["tn"] == [
        "tn",
        "16.7/20.0 (r=1)",
        "0.0/0.0 (r=1)",
        "Fail (r=1)",
        "Fail/20.0 (r=1)",
        "undefined (r=1)",
        "-",
        "Fail/5.0†",
        "Fail/10.0†",
    ]


def test_per_metric_maxima_are_a_labelled_option():
    from nsneurons.cells import score_cells

    cells = score_cells(make_results(), best_by="per_metric")
    chosen = cells["chosen_ratio"].sel(task="ner", selector="neuronllm", direction="enhance")
    assert chosen.sel(half="rac") == 0.5 and chosen.sel(half="rcc") == 0.0
    est = cells["cell"].sel(task="ner", selector="neuronllm", direction="enhance", ci="estimate")
    assert est.sel(quantity="rac") == pytest.approx(25.0) and est.sel(quantity="rcc") == pytest.approx(20.0)
    assert "25.0/20.0 (r=0.5/0)" in table1(xr.merge([make_results(), cells]))


def test_signed_changes_show_direction_and_chosen_ratio():
    rows = _rows(signed_change_table(make_results()))
    assert rows["neuronllm"][1] == "-32.0/-32.0 (r=0.5)"
    assert rows["neuronllm"][2] == "+15.0/+5.0 (r=0.5)"  # one ratio for both
    assert rows["neuronllm"][4] == "-5.0/-5.0 (r=0)"  # all Fail: the least-bad ratio
    assert rows["tn"][6] == "-"
    assert rows["neuronllm"][7] == f"{(-32 - 10 + 0) / 3:+.1f}/{(-32 - 10 + 0) / 3:+.1f}"


def test_table3_good_bad_both():
    rows = table3(make_results()).splitlines()
    assert rows[0] == "| method | intervention | Good | Bad | Both |"
    # Bad, Deg: ner +10/+10, sentiment -10/-20 (Fail) -> (10 - 10) / 2 = 0.0, (10 - 20) / 2 < 0 -> Fail.
    assert rows[2] == "| neuronllm | Deg | 17.5/10.0† | 0.0/Fail† | 36.7/42.0† |"
    assert rows[3] == "| neuronllm | Enh | 5.0/10.0† | 10.0/0.0† | 7.5/0.0† |"
    assert len(rows) == 4  # tn has no bad neurons: no ablation rows


def test_table6_per_task():
    lines = table6(make_results()).splitlines()
    assert lines[0].startswith("| method | intervention | ner Good | ner Bad | ner Both |")
    deg, enh = ([c.strip() for c in line.strip("| ").split(" | ")] for line in lines[2:4])
    assert deg[:5] == ["neuronllm", "Deg", "25.0/20.0", "10.0/10.0", "53.3/64.0 (r=0.5)"]
    assert enh[2:5] == ["5.0/10.0", "10.0/0.0", "25.0/10.0 (r=0.5)"]


def test_average_counts_fail_negative_and_leaves_undefined_out():
    ok = lambda x: {"rac": Cell(RelativeChange(x), False), "rcc": Cell(RelativeChange(x), False)}  # noqa: E731
    fail = lambda x: {"rac": Cell(RelativeChange(x), True), "rcc": Cell(RelativeChange(x), True)}  # noqa: E731
    undefined = {"rac": Cell(RelativeChange(None), False), "rcc": Cell(RelativeChange(None), False)}
    assert str(average_cells([fail(10.0), ok(4.0)])[0]["rac"]) == "Fail"  # (-10 + 4) / 2 < 0
    assert str(average_cells([fail(4.0), ok(10.0)])[0]["rac"]) == "3.0"  # (-4 + 10) / 2
    cells, left_out = average_cells([undefined, ok(10.0)])
    assert str(cells["rcc"]) == "10.0" and left_out
    assert str(average_cells([undefined, undefined])[0]["rcc"]) == "undefined"
    assert average_cells([None]) == (None, False)


def test_baseline_table():
    rows = _rows(baseline_table(make_baseline()))
    assert rows["Acc (%)"] == ["Acc (%)", "60.0", "50.0", "0.0"]
    assert rows["n understood"] == ["n understood", "50", "50", "0"]


def test_option_prob_table_marks_correct_chosen_and_outcome():
    text = option_prob_table(make_examples())
    assert "| condition | A ✓ | B | C | D | cross entropy |" in text
    rows = _rows(text[text.index("| condition") :])
    assert rows["none"][1:] == ["0.18", "**0.59**", "0.23", "1.0e-3", f"{-math.log(0.18):.3g}"]
    assert rows["neuronllm/enhancer"][1:5] == ["**0.98** SUCCESS", "0.015", "4.0e-4", "7.3e-5"]
    assert rows["neuronllm/degrader"][2] == "**0.5** SUCCESS"
    assert rows["tn/degrader"][1] == "**0.9** FAIL"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    path = write_report(
        out,
        results=make_results(),
        neurons=make_neurons(),
        baseline=make_baseline(),
        examples=make_examples(),
        title="Tiny run",
        summary={"tasks": "ner, sentiment, chunk"},
    )
    return out, path


def test_figures_are_nonempty_pngs(report):
    out, _ = report
    for name in ("layer_distribution.png", "ratio_sweep.png"):
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_write_report(report):
    out, path = report
    text = path.read_text()
    assert path == out / "report.md"
    assert text.startswith("# Tiny run")
    for needle in (
        "53.3/64.0",
        "| neuronllm | Deg | 17.5/10.0†",
        "Acc (%)",
        "**0.9** FAIL",
        "Average: the mean over every task",
        "Table 6",
        "Table 2",
        "![layer distribution](figures/layer_distribution.png)",
        "![ratio sweep](figures/ratio_sweep.png)",
    ):
        assert needle in text


def test_write_report_without_examples(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    import nsneurons.report as report_module

    for name in ("plot_layer_distribution", "plot_ratio_sweep"):  # figures are covered above; keep this fast
        monkeypatch.setattr(report_module, name, lambda *args: Figure(figsize=(1, 1)))
    path = write_report(
        tmp_path / "out",
        results=make_results(),
        neurons=make_neurons(),
        baseline=make_baseline(),
        examples=None,
        title="t",
        summary={},
    )
    text = path.read_text()
    assert "Option probabilities" not in text and "| ner Deg |" in text
