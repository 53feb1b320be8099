"""report.md and figures, shaped like the NeuronLLM paper's Tables 1, 3, 4 and Figures 5, 10.

Every piece reads the stored Datasets (see `write_report`), so a notebook can rebuild one table or
figure from the pipeline's .nc files: `table1`, `signed_change_table`, `table3`, `baseline_table`,
`option_prob_table`, `plot_layer_distribution`, `plot_ratio_sweep`.

Decisions:
- A (task, method, direction) cell is `best_over_ratios` over the ratios whose metrics are all finite
  (NaN = not evaluated), printed with `format_cell`; "-" when nothing was evaluated.
- Averages over tasks (AVERAGING_RULE): RAC and RCC separately, the mean over tasks whose value is
  neither Fail nor undefined; a dagger marks an average that left a task out; Fail when every task
  failed, undefined when no task has a value and none failed. The signed-change table averages all
  evaluated tasks, so a Fail pulls its average the wrong way there.
- The sweep figure plots signed relative changes (RAC/RCC, negative when Fail).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

# Note: a dim is called "method", which is also a keyword of .sel(); select it with a dict.
from nsneurons.metrics import (
    DIRECTIONS, METRIC_NAMES, Cell, ConditionResult, RelativeChange, best_over_ratios, directed_change,
    format_cell,
)

DIR_LABEL = {"degrade": "Deg", "enhance": "Enh"}
GROUPS = ("good", "bad")
LETTERS = ("A", "B", "C", "D")
DAGGER = "†"
AVERAGING_RULE = (
    "Average: RAC and RCC are averaged separately over the tasks whose best-over-ratio value is neither "
    f"Fail nor undefined; {DAGGER} marks an average that left out at least one Fail/undefined task. "
    "It is Fail only when every task failed, and undefined when no task has a value. "
    "Fail = the change went against the intended direction; undefined = the original Acc/Com is 0."
)
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


def best_cells(results: xr.Dataset, task, method, direction) -> dict[str, Cell] | None:
    found = sweep_results(results, task, method, direction)
    return best_over_ratios(found) if found else None


def average_cells(cells: Sequence[dict[str, Cell] | None]) -> tuple[dict[str, Cell] | None, bool]:
    """Average per AVERAGING_RULE; returns ({"rac", "rcc"} cells, whether a task was left out)."""
    cells = [c for c in cells if c is not None]
    if not cells:
        return None, False
    out, left_out = {}, False
    for half in ("rac", "rcc"):
        values = [c[half].change.percent for c in cells if not c[half].fail and not c[half].change.undefined]
        left_out |= len(values) < len(cells)
        if values:
            out[half] = Cell(RelativeChange(float(np.mean(values))), fail=False)
        else:
            out[half] = Cell(RelativeChange(None), fail=any(c[half].fail for c in cells))
    return out, left_out and any(not (c.fail or c.change.undefined) for c in out.values())


def _fmt(cells: dict[str, Cell] | None, left_out: bool = False) -> str:
    return "-" if cells is None else format_cell(cells["rac"], cells["rcc"]) + (DAGGER if left_out else "")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _tasks_and_methods(results: xr.Dataset) -> tuple[list, list]:
    missing = set(METRIC_NAMES) - {str(m) for m in results["sweep"]["metric"].values}
    if missing:
        raise ValueError(f"results.sweep lacks metrics {sorted(missing)}")
    return list(results["task"].values), list(results["method"].values)


# ---- tables --------------------------------------------------------------------------------

def table1(results: xr.Dataset) -> str:
    """Table 1: rows methods, columns task x Deg/Enh + Average; cells best-over-ratio "RAC/RCC"."""
    tasks, methods = _tasks_and_methods(results)
    header = ["method"] + [f"{t} {DIR_LABEL[d]}" for t in [*tasks, "Average"] for d in DIRECTIONS]
    rows = []
    for method in methods:
        per_dir = {d: [best_cells(results, t, method, d) for t in tasks] for d in DIRECTIONS}
        row = [method]
        for i in range(len(tasks)):
            row += [_fmt(per_dir[d][i]) for d in DIRECTIONS]
        row += [_fmt(*average_cells(per_dir[d])) for d in DIRECTIONS]
        rows.append(row)
    return _markdown(header, rows)


def _chosen(found: Mapping[float, ConditionResult], cell: Cell, before: str, after: str) -> float:
    """The ratio best_over_ratios chose; when all failed, the least-bad ratio (same ranking)."""
    if cell.ratio is not None:
        return cell.ratio
    ranked = [(directed_change(getattr(r, before), getattr(r, after), r.direction), -ratio, ratio)
              for ratio, r in found.items()]
    return max(ranked)[2]


def signed_changes(results: xr.Dataset, task, method, direction) -> dict | None:
    """Signed Acc/Com change (points) at the ratio chosen for RAC / RCC, with those ratios."""
    found = sweep_results(results, task, method, direction)
    if not found:
        return None
    best = best_over_ratios(found)
    ra = _chosen(found, best["rac"], "acc_original", "acc_intervened")
    rc = _chosen(found, best["rcc"], "com_original", "com_intervened")
    return {"acc_change": found[ra].acc_change, "com_change": found[rc].com_change, "acc_ratio": ra, "com_ratio": rc}


def signed_change_table(results: xr.Dataset) -> str:
    """Signed changes (new - original, points) at the chosen ratio, so the direction is visible."""
    tasks, methods = _tasks_and_methods(results)
    header = ["method"] + [f"{t} {DIR_LABEL[d]}" for t in [*tasks, "Average"] for d in DIRECTIONS]
    rows = []
    for method in methods:
        per_dir = {d: [signed_changes(results, t, method, d) for t in tasks] for d in DIRECTIONS}
        row = [method]
        for i in range(len(tasks)):
            for d in DIRECTIONS:
                s = per_dir[d][i]
                if s is None:
                    row.append("-")
                    continue
                r = f"{s['acc_ratio']:g}" if s["acc_ratio"] == s["com_ratio"] else f"{s['acc_ratio']:g}/{s['com_ratio']:g}"
                row.append(f"{s['acc_change']:+.1f}/{s['com_change']:+.1f} (r={r})")
        for d in DIRECTIONS:
            found = [s for s in per_dir[d] if s is not None]
            row.append("-" if not found else "{:+.1f}/{:+.1f}".format(
                np.mean([s["acc_change"] for s in found]), np.mean([s["com_change"] for s in found])))
        rows.append(row)
    return _markdown(header, rows)


def _group_cells(results: xr.Dataset, task, method, direction, group) -> dict[str, Cell] | None:
    res = _result(results["ablation"].sel({"task": task, "method": method, "direction": direction, "group": group}), direction)
    return None if res is None else {"rac": res.rac, "rcc": res.rcc}


def table3(results: xr.Dataset) -> str:
    """Table 3: per method with bad neurons and direction, Good / Bad / Both averaged over tasks
    (Good, Bad: K neurons of one role; Both: the best-over-ratio joint intervention)."""
    tasks, methods = _tasks_and_methods(results)
    rows = []
    for method in methods:
        if "ablation" not in results or not np.isfinite(results["ablation"].sel({"method": method, "group": "bad"}).values).any():
            continue  # no bad neurons: nothing to ablate
        for d in DIRECTIONS:
            good = [_group_cells(results, t, method, d, "good") for t in tasks]
            bad = [_group_cells(results, t, method, d, "bad") for t in tasks]
            both = [best_cells(results, t, method, d) for t in tasks]
            rows.append([method, DIR_LABEL[d], *(_fmt(*average_cells(c)) for c in (good, bad, both))])
    if not rows:
        return "_No method with bad neurons: no ablation._"
    return _markdown(["method", "intervention", "Good", "Bad", "Both"], rows)


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


def plot_ratio_sweep(results: xr.Dataset, path: Path) -> Path:
    """Per task (rows) and direction (columns): RAC (solid) and RCC (dashed) vs good:bad ratio for
    the methods evaluated at more than one ratio; negative values are Fail."""
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
                    ax.plot(ratios, ys, style, marker=marker, color=colors[k % len(colors)],
                            label=f"{method} {half.upper()}")
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
    parts = [
        f"# {title}", f"Model: `{model}`; K = {k} neurons per role.", _summary(summary),
        "## Baseline (Table 4)", "The unmodified model on the evaluation set.", baseline_table(baseline),
        "## RAC/RCC (Table 1)",
        "Best over good:bad ratios per task and direction (Deg = degrader, Enh = enhancer), "
        "RAC and RCC chosen separately. Larger is better; - = not evaluated.", table1(results), AVERAGING_RULE,
        "## Signed changes",
        "Acc/Com change (intervened - original, percentage points) at the ratio chosen for RAC / RCC "
        "(r = that ratio, acc/com when they differ). Degrading should be negative, enhancing positive. "
        "Average: mean over all evaluated tasks, Fail included.", signed_change_table(results),
        "## Ablation: good, bad, both (Table 3)",
        "Good / Bad: the K neurons of one role alone; Both: the joint intervention, best over ratios. "
        "Averaged over tasks by the rule above.", table3(results),
        "## Layer distribution (Figure 5)",
        f"![layer distribution]({layers_png.relative_to(out_dir).as_posix()})",
        "## Ratio sweep",
        "Signed RAC (solid) and RCC (dashed) against the good:bad ratio; below 0 = Fail.",
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
