"""`nsneurons plan RECIPE`: what a run will do and cost, before it runs (docs/plan.md states the model).

Counts follow the runner: the evaluation-set screen (batches of full prompts), IG per target
(per identification example one session: the prompts' common prefix once, each prompt's own
tokens, then one forward + backward pass per chunk of `layers_per_pass` layers, staircase rows
m + 1 joining at their layer), every distinct intervention once (nsneurons.conditions) as query
rows after one shared prefix per evaluation proxy, NA-ICA's IG and editing, and `crosstask` when
asked. Work is counted in FLOPs from the model's config (no weights are loaded; nsneurons.plan_inputs
reads it and the prompts) by the stage counts of nsneurons.plan_stages; seconds come from FLOP rates
that are per-device defaults or measured by `--measure` (nsneurons.plan_measure).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from . import plan_stages, plan_work
from .budget import resolve, sweep_ks
from .plan_inputs import read_model_shape, stage_inputs, tokenizer_for
from .plan_work import ModelShape, Rates, Stage

__all__ = ["ModelShape", "Plan", "Rates", "Stage", "default_rates", "make_plan", "read_model_shape", "render", "summary_line"]


@dataclass(frozen=True)
class Plan:
    """A recipe's cost plan: one Stage per unit of work, with the shape and rates it was priced with."""

    recipe: str  # the recipe's name
    shape: ModelShape  # the model's sizes, from its config
    rates: Rates  # how FLOPs and bytes became seconds and memory
    stages: tuple[Stage, ...]  # in run order
    notes: tuple[str, ...] = field(default=())  # assumptions that matter for this recipe

    def totals(self) -> dict:
        seconds = sum(s.seconds for s in self.stages) + self.rates.fixed_seconds(self.shape)
        peak: dict[str, int] = {}
        for s in self.stages:
            for device, value in s.peak_bytes.items():
                peak[device] = max(peak.get(device, 0), value)
        return {
            "passes": sum(s.passes for s in self.stages),
            "backward_passes": sum(s.backward for s in self.stages),
            "rows": sum(s.rows for s in self.stages),
            "flops": sum(s.flops for s in self.stages),
            "seconds": seconds,
            "peak_bytes": peak,
            "download_bytes": sum(s.download_bytes for s in self.stages),
            "upload_bytes": sum(s.upload_bytes for s in self.stages),
        }

    def to_json(self) -> dict:
        return {
            "recipe": self.recipe,
            "model": asdict(self.shape),
            "rates": asdict(self.rates),
            "stages": [asdict(s) for s in self.stages],
            "totals": self.totals(),
            "notes": list(self.notes),
        }


def default_rates(recipe) -> Rates:
    """Per-device defaults (uncalibrated): plan_work.default_rates, docs/plan.md; a device_map's GPUs counted."""
    from dataclasses import replace

    from .placement import gpu_count

    rates = plan_work.default_rates(recipe.backend, recipe.device, recipe.dtype)
    if rates.device != "cuda" or recipe.device_map is None:
        return rates
    return replace(rates, gpus=gpu_count(recipe.device_map, recipe.max_memory))


def make_plan(
    recipe, shape: ModelShape, rates: Rates | None = None, *, crosstask: bool = False, prompt_tokens: int | None = None
) -> Plan:
    """Every stage of `nsneurons run RECIPE` (and `nsneurons crosstask` when asked), counted and priced.
    `prompt_tokens`: plan without reading the data, every prompt this long (for hub data out of reach)."""
    from .recipe import check_against_model

    rates = rates or default_rates(recipe)
    tokenizer = tokenizer_for(recipe) if prompt_tokens is None else None
    notes = [] if tokenizer is not None else ["no tokenizer could be loaded: prompt tokens estimated as 1.35 per word"]
    if prompt_tokens is not None:
        notes = [
            (
                f"data not read: every prompt assumed {prompt_tokens} tokens; candidates as evaluation.candidates "
                "(or 3 x the evaluation set)"
            )
        ]
    inputs = stage_inputs(recipe, tokenizer, prompt_tokens)
    if recipe.experiment == "naica":
        return Plan(recipe.name, shape, rates, tuple(naica_stages(recipe, shape, rates, inputs["NA-ICA"][1])), tuple(notes))
    check_against_model(recipe, shape.n_layers, shape.n_neurons)
    stages, evaluated = [], {}
    for task, (identification, candidates) in inputs.items():
        stages += task_stages(recipe, shape, rates, task, identification, candidates)
        evaluated[task] = (eval_prompts(recipe, candidates), eval_units(candidates))
    if crosstask:
        stages += crosstask_stages(recipe, shape, rates, evaluated)
    return Plan(recipe.name, shape, rates, tuple(stages), tuple(notes + recipe_notes(recipe)))


def task_stages(recipe, shape: ModelShape, rates: Rates, task: str, identification, candidates) -> list[Stage]:
    """One task of the run: screen, IG per target, the interventions (pipeline.run_task)."""
    ev, a = recipe.evaluation, recipe.attribution
    stages = [] if recipe.tasks[0].name != task else [plan_stages.load_stage(recipe, shape, rates)]
    lengths = [n for g in candidates for n in g.lengths]
    if not ev.examples_from:
        screen = plan_stages.screen_stage(f"{task}: screen", recipe, shape, rates, lengths)
        stages.append(screen if not ev.screen_model else replace(screen, name=f"{task}: screen ({ev.screen_model})"))
    for target in plan_stages.ig_targets(recipe):
        stages.append(
            plan_stages.ig_stage(
                f"{task}: IG {target}",
                "ig",
                recipe,
                shape,
                rates,
                identification,
                target=target,
                steps=a.steps,
                layers=a.layers,
                layers_per_pass=a.layers_per_pass,
            )
        )
    counts = plan_stages.condition_counts(recipe, shape.n_layers * shape.n_neurons)
    k, units, prompts = (
        resolve(recipe.selection.k, shape.n_layers * shape.n_neurons),
        eval_units(candidates),
        eval_prompts(recipe, candidates),
    )
    stages.append(
        plan_stages.intervention_stage(f"{task}: interventions", recipe, shape, rates, prompts, counts, k=k, units=units)
    )
    if recipe.selection.k_sweep:  # after the tables, from the stored scores (nsneurons.ksweep)
        swept = plan_stages.k_sweep_counts(recipe, shape.n_layers, shape.n_neurons)
        k = max(sweep_ks(recipe, shape.n_layers, shape.n_neurons))
        stages.append(plan_stages.intervention_stage(f"{task}: K sweep", recipe, shape, rates, prompts, swept, k=k, units=units))
    return stages


def naica_stages(recipe, shape: ModelShape, rates: Rates, groups) -> list[Stage]:
    """Experiment naica: IG (target qrnca) per query, then editing with 5 conditions per query."""
    n = recipe.naica
    stages = [
        plan_stages.load_stage(recipe, shape, rates),
        plan_stages.ig_stage("NA-ICA: IG qrnca", "naica-ig", recipe, shape, rates, groups, target="qrnca", steps=n.steps),
    ]
    t = plan_work.Tally()
    for g in groups:  # boost and suppress switch the same v key neurons, the two controls as many random ones
        plan_stages.shared_prefix_calls(t, shape, list(g.lengths), 5, plan_work.DTYPE_BYTES[recipe.dtype], 2 * n.v, g.unit_tokens)
    stages.append(
        plan_work.forward_stage(
            "NA-ICA: editing",
            "naica-edit",
            shape,
            rates,
            t,
            f"{len(groups)} queries x 5 conditions (none, boost, suppress, 2 random controls)",
        )
    )
    return stages


def crosstask_counts(recipe, shape: ModelShape) -> int:
    """Conditions per evaluated task of `nsneurons crosstask` (an upper bound: empty sets are skipped)."""
    from .budget import resolve
    from .crosstask_budgets import PAPER_BUDGETS
    from .selection import METHODS

    s = recipe.crosstask
    methods, budget = crosstask_methods(recipe)
    ratios = len(set(recipe.evaluation.ratios) | {1.0})
    n_ratio = {m: ratios if METHODS[m].with_bad else 1 for m in {*methods, *budget}}
    kmax = (len(recipe.attribution.layers or range(shape.n_layers)) * shape.n_neurons) // 2
    ks = len({min(resolve(k, shape.n_layers * shape.n_neurons), kmax) for k in s.k_values})
    tasks = len(recipe.tasks)
    n = sum(2 * n_ratio[m] + 2 * tasks for m in methods) + sum(2 * ks * n_ratio[m] for m in budget)
    has_t8 = s.table8.budgets is not None or {b.task for b in PAPER_BUDGETS} <= {t.name for t in recipe.tasks}
    return n + (len(methods) if has_t8 else 0) * (len(s.table8.budgets or PAPER_BUDGETS))


def crosstask_methods(recipe) -> tuple[list[str], list[str]]:
    """The methods of the cross-task analyses and of the budget sweep (Table 7), as nsneurons.crosstask picks them."""
    s, run = recipe.crosstask, list(recipe.selection.methods)
    methods = list(s.methods or (["neuronllm"] if "neuronllm" in run else run[:1]))
    budget = list(s.budget_methods or [m for m in ("neuronllm", "tn", "qrnca") if m in run] or run[:1])
    return methods, budget


def crosstask_switched(recipe, total: int, n_conditions: int) -> int:
    """An upper bound on the neurons a call of n cross-task conditions switches: n times the most one condition
    switches, and at most what all of them can reach: per method, Table 8's good + bad budgets and, K each
    split good:bad, the common, task-specific and per-source-task sets (2 K apiece: both roles' first K of a
    ranking); per budget method, the first good and bad neurons up to Table 7's largest budget."""
    from .crosstask_budgets import PAPER_BUDGETS, scaled_count

    t8 = recipe.crosstask.table8
    scale = (lambda c: scaled_count(c, total, t8.reference_neurons)) if t8.scale else (lambda c: c)
    table8 = [scale(b.good) + scale(b.bad) for b in (t8.budgets or PAPER_BUDGETS)]
    k = resolve(recipe.selection.k, total)
    k7 = max(resolve(b, total) for b in recipe.crosstask.k_values)
    methods, budget = crosstask_methods(recipe)
    reach = len(methods) * (sum(table8) + (len(recipe.tasks) + 2) * 2 * k) + len(budget) * 2 * k7
    return min(n_conditions * max(k, k7, *table8), reach, total)


def crosstask_stages(recipe, shape: ModelShape, rates: Rates, evaluated: dict) -> list[Stage]:
    """`nsneurons crosstask` after the run: the model again, then per task calls of <= 64 conditions (+ none once)."""
    stages = [replace(plan_stages.load_stage(recipe, shape, rates), name="crosstask: load model")]
    n, step = crosstask_counts(recipe, shape), plan_work.CONDITIONS_PER_CALL
    per_call = [min(step, n - i) + (1 if i == 0 else 0) for i in range(0, n, step)]
    total = shape.n_layers * shape.n_neurons
    for task, (prompts, units) in evaluated.items():  # {task: (its evaluation prompts' token counts, T)}
        t = plan_work.Tally()
        for c in per_call:
            switched = crosstask_switched(recipe, total, c)
            plan_stages.shared_prefix_calls(t, shape, prompts, c, plan_work.DTYPE_BYTES[recipe.dtype], switched, units)
        detail = f"<= {n} conditions in {len(per_call)} call(s) of <= {step} (+ none) x {len(prompts)} proxies"
        detail += f"; <= {crosstask_switched(recipe, total, max(per_call)):,} switched neurons uploaded per trace"
        stages.append(plan_work.forward_stage(f"{task}: crosstask", "crosstask", shape, rates, t, detail))
    return stages


def eval_prompts(recipe, candidates) -> list[int]:
    """Token counts of the evaluation proxies: the full set asked for, at the candidates' mean length."""
    ev = recipe.evaluation
    lengths = [n for g in candidates for n in g.lengths]
    n_eval = min(ev.understood + ev.not_understood, len(candidates))
    return [round(sum(lengths) / len(lengths))] * (n_eval * len(candidates[0].lengths))


def eval_units(candidates) -> int:
    """T of the evaluation proxies' options (1: single-token options)."""
    return max(g.unit_tokens for g in candidates)


def recipe_notes(recipe) -> list[str]:
    notes = [
        "interventions: each distinct switch set counted once (nsneurons.conditions); RANDOM draws assumed distinct",
        "evaluation set assumed full (understood + not_understood per task); the screen decides the real size",
    ]
    if recipe.evaluation.screen_model:
        notes.append(f"the screen runs {recipe.evaluation.screen_model}; priced here with this model's shape")
    return notes


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def _time(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _peak(peaks: dict) -> str:
    return ", ".join(f"{d} {_size(b)}" for d, b in peaks.items())


def render(plan: Plan) -> str:
    """The plan as a readable table: one line per stage, then totals and the assumptions."""
    remote = plan.rates.backend == "remote"
    head = ["stage", "passes (fwd+bwd)", "rows", "TFLOP", "peak memory", *(["NDIF down / up"] if remote else []), "time"]
    rows = []
    for s in plan.stages:
        rows.append(
            [
                s.name,
                f"{s.passes:,} ({s.backward:,})",
                f"{s.rows:,}",
                f"{s.flops / 1e12:.3g}",
                _peak(s.peak_bytes),
                *([f"{_size(s.download_bytes)} / {_size(s.upload_bytes)}"] if remote else []),
                _time(s.seconds),
            ]
        )
    t = plan.totals()
    fixed = _time(plan.rates.fixed_seconds(plan.shape))
    rows.append(
        [
            f"total (+ fixed {fixed})",
            f"{t['passes']:,} ({t['backward_passes']:,})",
            f"{t['rows']:,}",
            f"{t['flops'] / 1e12:.3g}",
            _peak(t["peak_bytes"]),
            *([f"{_size(t['download_bytes'])} / {_size(t['upload_bytes'])}"] if remote else []),
            _time(t["seconds"]),
        ]
    )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    sh = plan.shape
    out = [
        (
            f"plan for recipe {plan.recipe!r}: {sh.source}: {sh.model_type}, {sh.n_layers} layers x {sh.n_neurons} neurons, "
            f"hidden {sh.hidden}, vocab {sh.vocab}, {sh.n_params / 1e6:,.1f}M parameters"
        ),
        f"rates: {plan.rates.describe()}",
        "",
        line(head),
        line(["-" * w for w in widths]),
    ]
    out += [line(r) for r in rows]
    out += ["", *(f"detail: {s.name}: {s.detail}" for s in plan.stages if s.detail)]
    out += [f"note: {n}" for n in (*plan.notes, *plan.rates.notes)]
    return "\n".join(out)


def plan_command(
    recipe_path, overrides=(), *, remote=False, measure=False, crosstask=False, as_json=False, prompt_tokens=None
) -> str:
    """What `nsneurons plan` prints: the table (or JSON) of a recipe file, calibrated with --measure."""
    from .recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)  # a bad recipe is refused here, naming the key
    if remote:
        recipe = replace(recipe, backend="remote")
    shape = read_model_shape(recipe.model, recipe.revision, recipe.trust_remote_code)
    rates = default_rates(recipe)
    if measure:
        from .plan_measure import measure_rates

        rates = measure_rates(recipe, shape, rates)
    plan = make_plan(recipe, shape, rates, crosstask=crosstask, prompt_tokens=prompt_tokens)
    return json.dumps(plan.to_json(), indent=1) if as_json else render(plan)


def summary_line(recipe, model_shape: ModelShape) -> str:
    """One line for the start of `nsneurons run`: passes, peak memory, download and time (uncalibrated)."""
    plan = make_plan(recipe, model_shape)
    t = plan.totals()
    down = f", NDIF download {_size(t['download_bytes'])}" if recipe.backend == "remote" else ""
    how = "calibrated" if plan.rates.calibrated else "uncalibrated"
    return (
        f"plan: {t['passes']:,} passes ({t['backward_passes']:,} with backward), peak {_peak(t['peak_bytes'])}{down}, "
        f"about {_time(t['seconds'])} ({how}; `nsneurons plan` details)"
    )
