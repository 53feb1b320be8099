"""report.md and figures, shaped like the NeuronLLM paper's Tables 1, 3, 4 and Figures 5, 10.

Every piece reads the stored Datasets (see `write_report`), so a notebook can rebuild one table or
figure from the pipeline's .nc files: `table1`, `signed_change_table`, `table3`, `baseline_table`,
`option_prob_table`, `plot_layer_distribution`, `plot_ratio_sweep`.

Decisions:
- Every cell follows the scoring rules of `nsneurons.cells` (one ratio per cell, averages over all
  tasks with Fail counted negative, bootstrap intervals); the tables are rendered by
  `nsneurons.tables`. `best_cells` / `average_cells` give the same rules for metric-only Datasets
  (the cross-task analyses, which keep no per-example values and so have no intervals).
- The sweep figure plots |RAC| and |RCC| with 95% intervals, Fail marked by a red cross (nsneurons.figures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from nsneurons import cells as scoring_rules
from nsneurons import completeness, figures
from nsneurons.figures import layer_counts, plot_layer_distribution  # noqa: F401  (re-exported)
from nsneurons.metrics import DIRECTIONS, METRIC_NAMES, Cell, ConditionResult, RelativeChange, format_cell
from nsneurons.runfolder import RunFolder, write_text_atomically
from nsneurons.selection import BASELINE_METHODS, ENABLED_VARIANTS
from nsneurons.tables import (  # noqa: F401  (re-exported: the report's tables live in nsneurons.tables)
    AVERAGING_RULE,
    CELL_NOTE,
    DAGGER,
    DIR_LABEL,
    draws_table,
    markdown,
    signed_change_table,
    table1,
    table2,
    table3,
    table6,
)
from nsneurons.vocab import parse_condition_name

GROUPS = ("good", "bad")
LETTERS = ("A", "B", "C", "D")
_FIELDS = ("acc_original", "acc_intervened", "com_original", "com_intervened")


# ---- cells ---------------------------------------------------------------------------------


def _result(metrics: xr.DataArray, direction: str) -> ConditionResult | None:
    """ConditionResult from one metric vector, None when it was not evaluated (NaN)."""
    values = [float(metrics.sel(metric=name)) for name in _FIELDS]
    return ConditionResult(direction, *values) if all(math.isfinite(v) for v in values) else None


def sweep_results(results: xr.Dataset, task, method, direction) -> dict[float, ConditionResult]:
    """{ratio: ConditionResult} of the evaluated ratios of one (task, method, direction)."""
    cut = results["sweep"].sel(task=task, selector=method, direction=direction)
    found = {float(r): _result(cut.sel(ratio=r), direction) for r in cut["ratio"].values}
    return {ratio: res for ratio, res in found.items() if res is not None}


def _as_cell(x: float, ratio: float | None) -> Cell:
    if not math.isfinite(x):
        return Cell(RelativeChange(None), fail=False, ratio=ratio)
    return Cell(RelativeChange(abs(x)), fail=x < 0, ratio=ratio)


def best_cells(results: xr.Dataset, task, method, direction, best_by: str = "mean") -> dict[str, Cell] | None:
    """{"rac", "rcc"} cells at the one ratio `nsneurons.cells.choose_ratio` picks (None: not evaluated)."""
    found = sweep_results(results, task, method, direction)
    if not found:
        return None
    ratios = sorted(found)
    q = scoring_rules.quantities(*(np.array([getattr(found[r], f) for r in ratios]) for f in _FIELDS), direction)
    chosen = scoring_rules.choose_ratio(ratios, q, best_by)
    return {h: _as_cell(float(q[h][ratios.index(chosen[h])]), chosen[h]) for h in ("rac", "rcc")}


def average_cells(cells: Sequence[dict[str, Cell] | None]) -> tuple[dict[str, Cell] | None, bool]:
    """Mean over every evaluated task of the directed changes (Fail counts negative, AVERAGING_RULE);
    returns ({"rac", "rcc"} cells, whether an undefined task was left out)."""
    cells = [c for c in cells if c is not None]
    if not cells:
        return None, False
    out, left_out = {}, False
    for half in ("rac", "rcc"):
        values = [(-1 if c[half].fail else 1) * c[half].change.percent for c in cells if not c[half].change.undefined]
        left_out |= len(values) < len(cells)
        out[half] = _as_cell(float(np.mean(values)) if values else math.nan, None)
    return out, left_out


def format_cells(cells: dict[str, Cell] | None, left_out: bool = False) -> str:
    """One table cell: RAC/RCC of `best_cells` (- when none; a dagger when a task was left out of an average)."""
    return "-" if cells is None else format_cell(cells["rac"], cells["rcc"]) + (DAGGER if left_out else "")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return markdown(header, rows)


def _tasks_and_methods(results: xr.Dataset) -> tuple[list, list]:
    missing = set(METRIC_NAMES) - {str(m) for m in results["sweep"]["metric"].values}
    if missing:
        raise ValueError(f"results.sweep lacks metrics {sorted(missing)}")
    return list(results["task"].values), list(results["selector"].values)


# ---- tables ----------------------------------------------------------------------------


def baseline_table(baseline: xr.Dataset | xr.DataArray) -> str:
    """Table 4: Acc and Com (%) of the unmodified model per task, with the evaluation-set sizes."""
    data = next(iter(baseline.data_vars.values())) if isinstance(baseline, xr.Dataset) else baseline
    tasks = list(data["task"].values)
    rows = []
    for metric, label, fmt in (
        ("acc", "Acc (%)", "{:.1f}"),
        ("com", "Com (%)", "{:.1f}"),
        ("n_examples", "n examples", "{:.0f}"),
        ("n_understood", "n understood", "{:.0f}"),
    ):
        if metric not in data["metric"].values:
            continue
        scale = 100.0 if metric in ("acc", "com") else 1.0
        vals = [float(data.sel(task=t, metric=metric)) * scale for t in tasks]
        rows.append([label, *("-" if not math.isfinite(v) else fmt.format(v) for v in vals)])
    return _markdown(["metric", *tasks], rows)


def _prob(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    if p >= 0.01 or p == 0:
        return f"{p:.3g}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # 7.3e-5 as in Figure 10


def condition_direction(condition: str) -> str | None:
    """'degrade' / 'enhance': the direction field of a stored condition name ('neuronllm/degrade/0.5',
    'tn/enhancer'), read by the one parser of condition names; None for 'none' or another shape."""
    key = parse_condition_name(condition)
    return None if key is None else key.direction


def option_prob_table(examples: xr.Dataset, task=None) -> str:
    """Figure 10: per task, rows conditions, columns A-D (correct marked), the chosen option's
    probability in bold, FAIL/SUCCESS after it, and the cross-entropy -ln P(correct)."""
    prob = examples["prob"]
    tasks = [task] if task is not None else list(prob["task"].values)
    blocks = []
    for t in tasks:
        correct = str(examples["correct_letter"].sel(task=t).values)
        options = [str(o) for o in prob["option"].values]
        header = ["condition", *(f"{o} ✓" if o == correct else o for o in options), "cross entropy"]
        rows = []
        for cond in prob["condition"].values:
            p = np.asarray(prob.sel(task=t, condition=cond).values, dtype=float)
            if not np.isfinite(p).any():
                continue
            win = int(np.nanargmax(p))
            right = options[win] == correct
            direction = condition_direction(str(cond))
            mark = "" if direction is None else (" SUCCESS" if right == (direction == "enhance") else " FAIL")
            cells = [f"**{_prob(x)}**{mark}" if i == win else _prob(x) for i, x in enumerate(p)]
            pc = p[options.index(correct)]
            rows.append([str(cond), *cells, f"{-math.log(pc):.3g}" if pc > 0 else "inf"])
        prompt = str(examples["prompt"].sel(task=t).values) if "prompt" in examples.coords or "prompt" in examples else ""
        quoted = "\n".join("> " + line for line in prompt.strip().splitlines()) if prompt.strip() else ""
        blocks.append(f"**{t}** (correct: {correct})\n\n{quoted}\n\n{_markdown(header, rows)}")
    return "\n\n".join(blocks)


# ---- figures -------------------------------------------------------------------------------


def _signed_relative(res: ConditionResult, half: str) -> float:
    cell = getattr(res, half)
    return math.nan if cell.change.undefined else (-1 if cell.fail else 1) * cell.change.percent


def _interval(results: xr.Dataset, task, method, direction, ratio, half) -> tuple[float, float]:
    """(lo, hi) of the directed change from `sweep_ci`; NaN when the run has no intervals."""
    if "sweep_ci" not in results:
        return math.nan, math.nan
    ci = results["sweep_ci"].sel(task=task, selector=method, direction=direction, half=half, ratio=ratio)
    return float(ci.sel(ci="lo")), float(ci.sel(ci="hi"))


def _draw_sweep(ax, results, task, d, swept, colors) -> bool:
    """One panel: |RAC| (solid) and |RCC| (dashed) per swept selector with intervals, Fail as red crosses."""
    drawn = False
    for k, method in enumerate(swept):
        found = sweep_results(results, task, method, d)
        ratios = sorted(found)
        for half, style, marker in (("rac", "-", "o"), ("rcc", "--", "s")):
            points = [
                figures.magnitude(_signed_relative(found[r], half), *_interval(results, task, method, d, r, half)) for r in ratios
            ]
            ys = [p[0] for p in points]
            drawn |= any(math.isfinite(y) for y in ys)
            ax.errorbar(
                ratios,
                ys,
                yerr=np.array([[p[1] for p in points], [p[2] for p in points]]),
                fmt=style,
                marker=marker,
                color=colors[k % len(colors)],
                capsize=2,
                elinewidth=0.8,
                label=f"{method} {half.upper()}",
            )
            fails = [(r, p[0]) for r, p in zip(ratios, points) if p[3]]
            if fails:
                ax.scatter(*zip(*fails), label=figures.FAIL_LABEL, **figures.FAIL_STYLE)
    return drawn


def plot_ratio_sweep(results: xr.Dataset, path=None, *, fig=None):
    """Per task (rows) and direction (columns): |RAC| (solid) and |RCC| (dashed) against the good:bad
    ratio for the selectors evaluated at more than one ratio, with 95% bootstrap intervals; Fail
    points (the wrong direction) are marked with a red cross; one y scale. Returns the Figure."""
    tasks, methods = _tasks_and_methods(results)
    swept = [m for m in methods if any(len(sweep_results(results, t, m, d)) > 1 for t in tasks for d in DIRECTIONS)]
    fig = figures.new_figure(fig, size=(9.5, 2.4 * len(tasks) + 1.0))
    if not swept:
        fig.text(0.5, 0.5, "no selector was evaluated at more than one good:bad ratio", ha="center", va="center")
        return figures.finish(fig, path)
    axes = fig.subplots(len(tasks), 2, squeeze=False, sharex=True, sharey=True)
    colors = [f"C{i}" for i in range(10)]
    n = figures.n_examples(results)
    for i, task in enumerate(tasks):
        for j, d in enumerate(DIRECTIONS):
            ax = axes[i, j]
            if not _draw_sweep(ax, results, task, d, swept, colors):
                ax.text(0.5, 0.5, "undefined (original Acc/Com = 0)", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(
                f"{task} (n = {n[str(task)]}): {DIR_LABEL[d]}" if str(task) in n else f"{task}: {DIR_LABEL[d]}", fontsize=9
            )
            ax.set_xlim(-0.05, 1.05)
            ax.set_ylim(bottom=0)
        axes[i, 0].set_ylabel("|RAC|, |RCC| (%)")
    for ax in axes[-1]:
        ax.set_xlabel("good:bad ratio (good = round(ratio·K))")
    figures.legend_outside(fig, axes)
    fig.suptitle(
        "Good:bad ratio sweep\n" + figures.describe(results.attrs, "n = evaluation examples of the task" if n else None),
        fontsize=10,
    )
    return figures.finish(fig, path)


def _table1_methods(results: xr.Dataset) -> list[str]:
    """Table 1's rows: NeuronLLM and the baselines; the enabled variants have Table 2."""
    return [str(m) for m in results["selector"].values if str(m) not in ENABLED_VARIANTS]


_BEST_BY_TEXT = {
    "mean": "the ratio with the largest mean of RAC and RCC",
    "rac": "the ratio with the largest RAC",
    "rcc": "the ratio with the largest RCC",
    "per_metric": "per-metric maxima, RAC and RCC each at its own best ratio (r=RAC ratio/RCC ratio)",
}


# ---- report --------------------------------------------------------------------------------


def _summary(summary: Mapping) -> str:
    return _markdown(["key", "value"], [[str(k), str(v).replace("|", "\\|")] for k, v in summary.items()]) if summary else ""


def write_report(
    out_dir: Path,
    *,
    results: xr.Dataset,
    neurons: xr.Dataset,
    baseline: xr.Dataset,
    examples: xr.Dataset | None,
    title: str,
    summary: dict,
) -> Path:
    """Write out_dir/report.md and out_dir/figures/*.png; returns the report path."""
    folder = RunFolder(out_dir)
    out_dir, figure_dir = folder.root, folder.figures
    n_layers = int(neurons.attrs.get("n_layers") or int(np.nanmax(neurons["layer"].values)) + 1)
    layers_png = figures.save(plot_layer_distribution(neurons, n_layers), figure_dir / "layer_distribution.png")
    sweep_png = figures.save(plot_ratio_sweep(results), figure_dir / "ratio_sweep.png")
    k, model = results.attrs.get("k", "?"), results.attrs.get("model", "?")
    note = CELL_NOTE.format(
        best_by=_BEST_BY_TEXT.get(results.attrs.get("best_by", "mean"), "?"),
        level=float(results.attrs.get("level", 0.95)),
        resamples=results.attrs.get("resamples", "?"),
    )
    draws = draws_table(results)
    parts = [
        f"# {title}",
        f"Model: `{model}`; K = {k} neurons per role.",
        _summary(summary),
        "## Baseline (Table 4)",
        f"The unmodified model on the evaluation set ({results.attrs.get('evaluation_set', '')}).",
        baseline_table(baseline),
        "## RAC/RCC (Table 1)",
        f"Deg = degrader, Enh = enhancer. Methods without bad neurons ({', '.join(m.upper() for m in BASELINE_METHODS)}) "
        "switch their K good neurons only (r = 1); RANDOM is the mean over its draws. " + note,
        table1(results, _table1_methods(results)),
        AVERAGING_RULE,
        "The last row is NeuronLLM minus the best baseline of each column (RAC/RCC, paired bootstrap "
        "interval; * = the interval excludes 0, i.e. the difference is distinguishable from resampling noise).",
        "## Enabled variants (Table 2)",
        "TN and QRNCA as published (good neurons only) next to their NeuronLLM-enabled variants (good and bad "
        "neurons, ratio chosen as in Table 1).",
        table2(results),
        "## Signed changes",
        "Acc/Com change (intervened - original, percentage points) at each cell's chosen ratio, with intervals. "
        "Degrading should be negative, enhancing positive. Average: mean over every task.",
        signed_change_table(results),
        "## Ablation: good, bad, both (Table 3)",
        "Good / Bad: the K neurons of one role alone; Both: the joint intervention at the chosen ratio. "
        "Averaged over tasks by the rule above.",
        table3(results),
        "## Ablation per task (Table 6)",
        table6(results),
        *(
            [
                "## RANDOM's draws",
                "Directed RAC/RCC of each draw (below 0 = the wrong way): mean ± sd "
                "[min, max]. Table 1 shows the mean; no draw is picked as best.",
                draws,
            ]
            if draws
            else []
        ),
        *completeness.report_section(out_dir),  # layers whose IG fails its completeness check, if any
        "## Layer distribution (Figure 5)",
        f"![layer distribution]({layers_png.relative_to(out_dir).as_posix()})",
        "## Ratio sweep",
        "|RAC| (solid) and |RCC| (dashed) against the good:bad ratio with 95% bootstrap intervals of the magnitude; "
        "a red cross marks Fail (the change went the wrong way). Vector copy: ratio_sweep.svg.",
        f"![ratio sweep]({sweep_png.relative_to(out_dir).as_posix()})",
    ]
    if examples is not None:
        parts += [
            "## Option probabilities (Figure 10)",
            "Softmax over the four options of one evaluation proxy. ✓ marks the correct option; the "
            "chosen (most probable) option is bold, followed by SUCCESS or FAIL for an intervention "
            "(enhance succeeds when the correct option wins, degrade when a wrong one wins).",
            option_prob_table(examples),
        ]
    report = folder.report
    write_text_atomically(report, "\n\n".join(p for p in parts if p) + "\n")
    return report
