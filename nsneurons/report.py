"""report.md and figures, shaped like the NeuronLLM paper's Tables 1, 3, 4 and Figures 5, 10.

Every piece reads the stored Datasets (see `write_report`), so a notebook can rebuild one table or
figure from the pipeline's .nc files: `table1`, `signed_change_table`, `table3`, `baseline_table`,
`option_prob_table`, `plot_layer_distribution`, `plot_ratio_sweep`.

Decisions:
- Every cell follows the scoring rules of `nsneurons.cells` (one ratio per cell, averages over all
  tasks with Fail counted negative, bootstrap intervals); the tables are rendered by
  `nsneurons.tables`. `best_cells` / `average_cells` give the same rules for metric-only Datasets
  (the cross-task analyses, which keep no per-example values and so have no intervals).
- The sweep figure plots signed relative changes (RAC/RCC, negative when Fail) with 95% intervals.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

# Note: a dim is called "method", which is also a keyword of .sel(); select it with a dict.
from nsneurons import cells as scoring_rules
from nsneurons.selection import ENABLED_VARIANTS
from nsneurons.metrics import DIRECTIONS, METRIC_NAMES, Cell, ConditionResult, RelativeChange, format_cell
from nsneurons.tables import (  # noqa: F401  (re-exported: the report's tables live in nsneurons.tables)
    AVERAGING_RULE, CELL_NOTE, DAGGER, DIR_LABEL, draws_table, markdown, signed_change_table, table1, table2, table3, table6,
)
from nsneurons.uncertainty import bootstrap_indices, percentile_interval, resampled_means

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
    cut = results["sweep"].sel({"task": task, "method": method, "direction": direction})
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


def _fmt(cells: dict[str, Cell] | None, left_out: bool = False) -> str:
    return "-" if cells is None else format_cell(cells["rac"], cells["rcc"]) + (DAGGER if left_out else "")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return markdown(header, rows)


def _tasks_and_methods(results: xr.Dataset) -> tuple[list, list]:
    missing = set(METRIC_NAMES) - {str(m) for m in results["sweep"]["metric"].values}
    if missing:
        raise ValueError(f"results.sweep lacks metrics {sorted(missing)}")
    return list(results["task"].values), list(results["method"].values)


# ---- tables ----------------------------------------------------------------------------

def baseline_table(baseline: xr.Dataset | xr.DataArray) -> str:
    """Table 4: Acc and Com (%) of the unmodified model per task, with the evaluation-set sizes."""
    data = next(iter(baseline.data_vars.values())) if isinstance(baseline, xr.Dataset) else baseline
    tasks = list(data["task"].values)
    rows = []
    for metric, label, fmt in (("acc", "Acc (%)", "{:.1f}"), ("com", "Com (%)", "{:.1f}"),
                               ("n_examples", "n examples", "{:.0f}"), ("n_understood", "n understood", "{:.0f}")):
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
    """'degrade' / 'enhance' from a condition name like 'tn/degrader' or 'neuronllm/silence_good'."""
    name = condition.lower()
    if any(w in name for w in ("degrad", "silence")):
        return "degrade"
    if any(w in name for w in ("enhanc", "excite")):
        return "enhance"
    return None


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

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def layer_counts(neurons: xr.Dataset, n_layers: int) -> xr.DataArray:
    """Neurons per layer: (task, method, role, layer) counts of the selected neurons (-1 = none)."""
    layer = neurons["layer"].transpose("task", "method", "role", "rank").values
    counts = np.zeros(layer.shape[:3] + (n_layers,), dtype=int)
    for idx in np.ndindex(layer.shape[:3]):
        picked = layer[idx][layer[idx] >= 0]
        counts[idx] = np.bincount(picked.astype(int), minlength=n_layers)[:n_layers]
    coords = {d: neurons[d].values for d in ("task", "method", "role")}
    return xr.DataArray(counts, dims=("task", "method", "role", "layer"), coords={**coords, "layer": np.arange(n_layers)})


def plot_layer_distribution(neurons: xr.Dataset, n_layers: int, path: Path) -> Path:
    """Figure 5: per method (rows) and role (good, bad), neurons per layer, one line per task and
    the task average dashed black."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    counts = layer_counts(neurons, n_layers)
    methods = list(counts["method"].values)
    roles = [r for r in GROUPS if r in counts["role"].values]
    fig, axes = plt.subplots(len(methods), len(roles), figsize=(5 * len(roles), 2.4 * len(methods) + 0.6),
                             squeeze=False, sharex=True)
    x = np.arange(n_layers)
    for i, method in enumerate(methods):
        for j, role in enumerate(roles):
            ax = axes[i, j]
            c = counts.sel({"method": method, "role": role})
            if c.sum() == 0:
                ax.text(0.5, 0.5, f"no {role} neurons", ha="center", va="center", transform=ax.transAxes)
            else:
                for task in c["task"].values:
                    ax.plot(x, c.sel(task=task).values, marker=".", label=str(task))
                ax.plot(x, c.mean("task").values, "k--", label="average")
                ax.legend(fontsize=7)
            ax.set_title(f"{method}: {role} neurons", fontsize=10)
            ax.set_ylabel("neurons")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if i == len(methods) - 1:
                ax.set_xlabel("layer")
    fig.suptitle("Layer distribution of selected neurons")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _signed_relative(res: ConditionResult, half: str) -> float:
    cell = getattr(res, half)
    return math.nan if cell.change.undefined else (-1 if cell.fail else 1) * cell.change.percent


def _error_bars(results: xr.Dataset, task, method, direction, ratios, half, ys):
    """(2, n) distances to the 95% interval from `sweep_ci`, or None when the run has no intervals."""
    if "sweep_ci" not in results:
        return None
    ci = results["sweep_ci"].sel({"task": task, "method": method, "direction": direction, "half": half})
    lo = np.array([float(ci.sel(ratio=r, ci="lo")) for r in ratios])
    hi = np.array([float(ci.sel(ratio=r, ci="hi")) for r in ratios])
    y = np.asarray(ys, dtype=float)
    return None if not np.isfinite(lo).any() else np.nan_to_num(np.stack([y - lo, hi - y]))


def plot_ratio_sweep(results: xr.Dataset, path: Path) -> Path:
    """Per task (rows) and direction (columns): RAC (solid) and RCC (dashed) vs good:bad ratio for
    the methods evaluated at more than one ratio, with 95% bootstrap intervals; negative values are Fail."""
    plt = _pyplot()
    tasks, methods = _tasks_and_methods(results)
    swept = [m for m in methods if any(len(sweep_results(results, t, m, d)) > 1 for t in tasks for d in DIRECTIONS)]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 2.8 * len(tasks) + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, task in enumerate(tasks):
        for j, d in enumerate(DIRECTIONS):
            ax, drawn = axes[i, j], False
            for k, method in enumerate(swept):
                found = sweep_results(results, task, method, d)
                ratios = sorted(found)
                for half, style, marker in (("rac", "-", "o"), ("rcc", "--", "s")):
                    ys = [_signed_relative(found[r], half) for r in ratios]
                    drawn |= any(math.isfinite(y) for y in ys)
                    err = _error_bars(results, task, method, d, ratios, half, ys)
                    ax.errorbar(ratios, ys, yerr=err, fmt=style, marker=marker, color=colors[k % len(colors)],
                                capsize=2, elinewidth=0.8, label=f"{method} {half.upper()}")
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlim(-0.05, 1.05)
            if swept and not drawn:
                ax.text(0.5, 0.5, "undefined or not evaluated\n(original Acc/Com = 0)", ha="center", va="center",
                        transform=ax.transAxes)
            ax.set_title(f"{task}: {d}", fontsize=10)
            ax.set_xlabel("good:bad ratio (good = round(ratio*K))")
            ax.set_ylabel("RAC / RCC (%), <0 = Fail")
            if swept:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no method with a ratio sweep", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Good:bad ratio sweep")
    fig.tight_layout()
    return _save(fig, path)


def _table1_methods(results: xr.Dataset) -> list[str]:
    """Table 1's rows: NeuronLLM and the baselines; the enabled variants have Table 2."""
    return [str(m) for m in results["method"].values if str(m) not in ENABLED_VARIANTS]


_BEST_BY_TEXT = {
    "mean": "the ratio with the largest mean of RAC and RCC",
    "rac": "the ratio with the largest RAC", "rcc": "the ratio with the largest RCC",
    "per_metric": "per-metric maxima, RAC and RCC each at its own best ratio (r=RAC ratio/RCC ratio)",
}


# ---- report --------------------------------------------------------------------------------

def _summary(summary: Mapping) -> str:
    return _markdown(["key", "value"], [[str(k), str(v).replace("|", "\\|")] for k, v in summary.items()]) if summary else ""


def write_report(out_dir: Path, *, results: xr.Dataset, neurons: xr.Dataset, baseline: xr.Dataset,
                 examples: xr.Dataset | None, title: str, summary: dict) -> Path:
    """Write out_dir/report.md and out_dir/figures/*.png; returns the report path."""
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    n_layers = int(neurons.attrs.get("n_layers") or int(np.nanmax(neurons["layer"].values)) + 1)
    layers_png = plot_layer_distribution(neurons, n_layers, figures / "layer_distribution.png")
    sweep_png = plot_ratio_sweep(results, figures / "ratio_sweep.png")
    k, model = results.attrs.get("k", "?"), results.attrs.get("model", "?")
    note = CELL_NOTE.format(best_by=_BEST_BY_TEXT.get(results.attrs.get("best_by", "mean"), "?"),
                            level=float(results.attrs.get("level", 0.95)), resamples=results.attrs.get("resamples", "?"))
    draws = draws_table(results)
    parts = [
        f"# {title}", f"Model: `{model}`; K = {k} neurons per role.", _summary(summary),
        "## Baseline (Table 4)", f"The unmodified model on the evaluation set ({results.attrs.get('evaluation_set', '')}).",
        baseline_table(baseline),
        "## RAC/RCC (Table 1)",
        "Deg = degrader, Enh = enhancer. Methods without bad neurons (TN, QRNCA, KN, ACT, RANDOM) switch "
        "their K good neurons only (r = 1); RANDOM is the mean over its draws. " + note,
        table1(results, _table1_methods(results)), AVERAGING_RULE,
        "The last row is NeuronLLM minus the best baseline of each column (RAC/RCC, paired bootstrap "
        "interval; * = the interval excludes 0, i.e. the difference is distinguishable from resampling noise).",
        "## Enabled variants (Table 2)",
        "TN and QRNCA as published (good neurons only) next to their NeuronLLM-enabled variants (good and bad "
        "neurons, ratio chosen as in Table 1).", table2(results),
        "## Signed changes",
        "Acc/Com change (intervened - original, percentage points) at each cell's chosen ratio, with intervals. "
        "Degrading should be negative, enhancing positive. Average: mean over every task.",
        signed_change_table(results),
        "## Ablation: good, bad, both (Table 3)",
        "Good / Bad: the K neurons of one role alone; Both: the joint intervention at the chosen ratio. "
        "Averaged over tasks by the rule above.", table3(results),
        "## Ablation per task (Table 6)", table6(results),
        *(["## RANDOM's draws", "Directed RAC/RCC of each draw (below 0 = the wrong way): mean ± sd "
           "[min, max]. Table 1 shows the mean; no draw is picked as best.", draws] if draws else []),
        "## Layer distribution (Figure 5)",
        f"![layer distribution]({layers_png.relative_to(out_dir).as_posix()})",
        "## Ratio sweep",
        "Signed RAC (solid) and RCC (dashed) against the good:bad ratio with 95% bootstrap intervals; below 0 = Fail.",
        f"![ratio sweep]({sweep_png.relative_to(out_dir).as_posix()})",
    ]
    if examples is not None:
        parts += ["## Option probabilities (Figure 10)",
                  "Softmax over the four options of one evaluation proxy. ✓ marks the correct option; the "
                  "chosen (most probable) option is bold, followed by SUCCESS or FAIL for an intervention "
                  "(enhance succeeds when the correct option wins, degrade when a wrong one wins).",
                  option_prob_table(examples)]
    report = out_dir / "report.md"
    report.write_text("\n\n".join(p for p in parts if p) + "\n")
    return report
