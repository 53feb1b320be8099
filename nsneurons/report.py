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

from nsneurons import budget, completeness, figures, report_ksweep
from nsneurons.distractors import report_section as distractor_section
from nsneurons.figures import layer_counts, plot_layer_distribution  # noqa: F401  (re-exported)
from nsneurons.report_cells import average_cells, best_cells, format_cells, sweep_results  # noqa: F401  (re-exported)
from nsneurons.report_figures import plot_ratio_sweep
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


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return markdown(header, rows)


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


def _table_sections(results: xr.Dataset, baseline: xr.Dataset, title: str, summary: dict) -> list[str]:
    """The report from its title to RANDOM's draws: the summary and Tables 4, 1, 2, 3 and 6."""
    k, model = budget.attrs_text(results.attrs) or results.attrs.get("k", "?"), results.attrs.get("model", "?")
    note = CELL_NOTE.format(
        best_by=_BEST_BY_TEXT.get(results.attrs.get("best_by", "mean"), "?"),
        level=float(results.attrs.get("level", 0.95)),
        resamples=results.attrs.get("resamples", "?"),
    )
    draws = draws_table(results)
    return [
        f"# {title}",
        f"Model: `{model}`; K = {k} per role.",
        _summary(summary),
        "## Baseline (Table 4)",
        f"The unmodified model on the evaluation set ({results.attrs.get('evaluation_set', '')}).",
        baseline_table(baseline),
        "## RAC/RCC (Table 1)",
        f"K = {k} per role. Deg = degrader, Enh = enhancer. Methods without bad neurons ({', '.join(m.upper() for m in BASELINE_METHODS)}) "
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
    ]


def write_report(
    out_dir: Path,
    *,
    results: xr.Dataset,
    neurons: xr.Dataset,
    baseline: xr.Dataset,
    examples: xr.Dataset | None,
    title: str,
    summary: dict,
    ksweep: xr.Dataset | None = None,
    distractors: xr.Dataset | None = None,
) -> Path:
    """Write out_dir/report.md and out_dir/figures/*.png; returns the report path."""
    folder = RunFolder(out_dir)
    out_dir, figure_dir = folder.root, folder.figures
    n_layers = int(neurons.attrs.get("n_layers") or int(np.nanmax(neurons["layer"].values)) + 1)
    layers_png = figures.save(plot_layer_distribution(neurons, n_layers), figure_dir / "layer_distribution.png")
    sweep_png = figures.save(plot_ratio_sweep(results), figure_dir / "ratio_sweep.png")
    parts = [
        *_table_sections(results, baseline, title, summary),
        *completeness.report_section(out_dir),  # layers whose IG fails its completeness check, if any
        "## Layer distribution (Figure 5)",
        f"![layer distribution]({layers_png.relative_to(out_dir).as_posix()})",
        "## Ratio sweep",
        "|RAC| (solid) and |RCC| (dashed) against the good:bad ratio with 95% bootstrap intervals of the magnitude; "
        "a red cross marks Fail (the change went the wrong way). Vector copy: ratio_sweep.svg.",
        f"![ratio sweep]({sweep_png.relative_to(out_dir).as_posix()})",
        *(report_ksweep.report_section(ksweep, out_dir, figure_dir) if ksweep is not None else []),
        *(distractor_section(distractors, results) if distractors is not None else []),
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
