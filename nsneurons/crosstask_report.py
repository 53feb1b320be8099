"""crosstask.md and figures/crosstask_*.png of `nsneurons crosstask`, from the Datasets of crosstask.zarr
(nsneurons.runners.crosstask computes them; nsneurons.crosstask_figures draws the figures)."""

from __future__ import annotations

import math
from pathlib import Path

import xarray as xr

from . import crosstask_budgets, figures, report
from .crosstask_figures import plot_budget, plot_common_layers, plot_cross_task, plot_layer_change
from .metrics import DIRECTIONS, METRIC_NAMES
from .runfolder import RunFolder, open_crosstask, write_text_atomically
from .selection import ROLES
from .tables import markdown


def _cross_table(matrix, method, direction, rows_dim, cell, header) -> str:
    cut = matrix["effect"].sel(selector=method, direction=direction)
    cols_dim = "source_task" if rows_dim == "eval_task" else "eval_task"
    rows = [
        [
            header[1].format(r),
            *(
                cell(
                    {
                        m: float(v)
                        for m, v in zip(METRIC_NAMES, cut.sel({rows_dim: r, cols_dim: c}).sel(metric=list(METRIC_NAMES)).values)
                    }
                )
                for c in cut[cols_dim].values
            ),
        ]
        for r in cut[rows_dim].values
    ]
    return markdown([header[0], *(header[2].format(c) for c in cut[cols_dim].values)], rows)


def matrix_table(matrix: xr.Dataset, method: str, direction: str) -> str:
    """Figure 2/4 as numbers: rows eval task, columns source task's specific neurons; signed Acc/Com change (points)."""
    return _cross_table(
        matrix,
        method,
        direction,
        "eval_task",
        lambda v: "-" if not math.isfinite(v["acc_change"]) else f"{v['acc_change']:+.1f}/{v['com_change']:+.1f}",
        ("eval task \\ neurons of", "{}", "{}"),
    )


def budget_table(budget: xr.Dataset, task: str | None = None) -> str:
    """Table 7: rows methods, columns K x Deg/Enh, best-over-ratio RAC/RCC (task None: average over tasks)."""
    sweep, tasks = budget["sweep"], [str(t) for t in budget["task"].values]
    header = ["method"] + [f"K={int(kk)} {report.DIR_LABEL[d]}" for kk in sweep["k"].values for d in DIRECTIONS]
    rows = []
    for m in sweep["selector"].values:
        row = [str(m)]
        for kk in sweep["k"].values:
            results = xr.Dataset({"sweep": sweep.sel(k=kk)})
            for d in DIRECTIONS:
                cells = [report.best_cells(results, t, m, d) for t in ([task] if task else tasks)]
                row.append(report.format_cells(cells[0]) if task else report.format_cells(*report.average_cells(cells)))
        rows.append(row)
    return markdown(header, rows)


def _save_figures(ds: dict[str, xr.Dataset], folder: RunFolder) -> dict[str, str]:
    """Draw figures/crosstask_*.png; returns {figure key: its path relative to the run folder}."""
    common, matrix, layers, budget = ds["common"], ds["matrix"], ds["layers"], ds["budget"]
    specific = ds["specific"].transpose("task", "selector", "role", "rank")
    drawn = {
        ("matrix", "matrix"): plot_cross_task(matrix),
        ("common", "common_layers"): plot_common_layers(layers),
        ("change", "layer_change"): plot_layer_change(layers),
        ("budget", "budget"): plot_budget(budget),
        ("specific", "layer_distribution_specific"): figures.plot_layer_distribution(
            specific,
            int(layers.sizes["layer"]),
            title="Layer distribution of task-specific neurons\n" + figures.describe(common.attrs),
        ),
    }
    pngs = {key: figures.save(f, folder.figures / f"crosstask_{name}.png") for (key, name), f in drawn.items()}
    return {key: p.relative_to(folder.root).as_posix() for key, p in pngs.items()}


def _common_counts(ds: dict[str, xr.Dataset], methods: list[str]) -> list[list[str]]:
    """Per method: common good/bad neurons, and those removed from the tasks' top-K sets (summed over tasks)."""
    common = ds["common"]
    return [
        [
            m,
            *(str(int(common["n_common"].sel(selector=m, role=r))) for r in ROLES),
            *(str(int(ds["specific"]["n_removed"].sel(selector=m, role=r).sum())) for r in ROLES),
        ]
        for m in methods
    ]


def write_crosstask_report(out, datasets: dict[str, xr.Dataset] | None = None) -> Path:
    """figures/crosstask_*.png and crosstask.md from the stored Datasets; links it from report.md."""
    out = Path(out)
    ds = datasets or {name: d.load() for name, d in open_crosstask(out).items()}
    folder = RunFolder(out)
    common, matrix, budget = ds["common"], ds["matrix"], ds["budget"]
    link = _save_figures(ds, folder)
    methods = [str(m) for m in matrix["selector"].values]
    counts = _common_counts(ds, methods)
    parts = [
        f"# Cross-task analyses: {common.attrs.get('recipe', '')}",
        f"Model `{common.attrs.get('model')}`; K = {common.attrs.get('k')}; cross-task ratio {matrix.attrs.get('ratio')}.",
        "## Common neurons (C.1)",
        "Common good (bad) neurons: selected as good (bad) for more than one task. "
        "Removed = common neurons among the tasks' top-K sets (summed over tasks), refilled from the next-ranked.",
        markdown(["method", "common good", "common bad", "removed good", "removed bad"], counts),
        "### Intervening up to K common neurons on every task (Table 5)",
        "RAC/RCC at one good:bad ratio per cell (the largest mean of RAC and RCC, docs/scoring.md); - = no common "
        "neuron. The cross-task tables carry no intervals yet (the run's Tables 1-6 do).",
        report.table1(xr.Dataset({"sweep": common["effect"]})),
        "## Cross-task matrix (Figures 2 and 4)",
        "Task-specific neurons of one task (columns) intervened, evaluated on every task (rows); "
        "signed Acc/Com change in points (intervened - original).",
        f"![cross-task]({link['matrix']})",
    ]
    for m in methods:
        for d in DIRECTIONS:
            parts += [f"**{m}, {report.DIR_LABEL[d]}**", matrix_table(matrix, m, d)]
    parts += crosstask_budgets.report_section(ds["table8"])
    parts += [
        "## Layer distributions (C.6, Figures 5-7)",
        "Run's sets: report.md (layer_distribution.png). Task-specific sets:",
        f"![specific]({link['specific']})",
        "Common neurons (Figure 6):",
        f"![common]({link['common']})",
        "Change after removing common neurons and refilling (Figure 7; red = more, blue = fewer):",
        f"![change]({link['change']})",
        "## Budget sensitivity (Table 7)",
        f"Neurons re-selected from the stored scores at each K (requested {budget.attrs.get('k_values')}, "
        f"clamped to {budget.attrs.get('k_max')}), RAC/RCC at one ratio per cell (the largest mean of RAC and RCC), "
        "on the task's own evaluation set.",
    ]
    for t in budget["task"].values:
        parts += [f"**{t}**", budget_table(budget, str(t))]
    parts += ["**Average over tasks**", budget_table(budget), report.AVERAGING_RULE, f"![budget]({link['budget']})"]
    path = folder.crosstask_report
    write_text_atomically(path, "\n\n".join(parts) + "\n")
    main = folder.report
    if main.exists() and "crosstask.md" not in main.read_text():
        with main.open("a") as f:
            f.write("\n## Cross-task analyses\n\nSee [crosstask.md](crosstask.md).\n")
    return path
