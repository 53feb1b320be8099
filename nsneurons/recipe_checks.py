"""Recipe value checks: each names its key and what was expected; all run at load, before the model."""

from __future__ import annotations

import typing
from pathlib import Path

from . import budget


class RecipeError(ValueError):
    pass


class RecipeBudget:
    """The recipe type of a budget field (`Annotated[int | str, BUDGET]`, nsneurons.budget): its check and how it
    reads. Not a dataclass: the recipe reference takes a dataclass in a field's type for a section."""

    name = f"an int (a count) or a share with a percent sign, e.g. {budget.EXAMPLE}"

    def convert(self, value, where: str) -> int | str:
        check_budget(value, where)
        return value


BUDGET = RecipeBudget()


def check_budget(value, key: str) -> None:
    """A count (an int >= 1) or a share 'x%' in (0%, 100%], else an error naming `key`."""
    message = budget.problem(value)
    if message is not None:
        raise RecipeError(f"{key}: {message}")


def need(condition, key: str, message: str) -> None:
    if not condition:
        raise RecipeError(f"{key}: {message}")


def at_least(value, key: str, low: int = 1, optional: bool = False) -> None:
    """Counts: `value >= low` (None allowed where the field is optional)."""
    if value is None and optional:
        return
    need(value >= low, key, f"expected an int >= {low}, got {value}")


def unique_list(values, key: str, *, optional: bool = False) -> None:
    """Lists: not empty, no item twice (a repeat would run, or write, the same thing twice)."""
    if values is None and optional:
        return
    need(len(values) > 0, key, "expected a non-empty list")
    seen: dict[object, int] = {}
    for i, v in enumerate(values):
        need(v not in seen, f"{key}[{i}]", f"{v!r} is listed twice (also {key}[{seen.get(v)}])")
        seen[v] = i


def not_blank(value, key: str) -> None:
    """Optional strings: null or something; '' would silently mean the default (or the current folder)."""
    need(value is None or value.strip() != "", key, "expected a non-empty string or null, got ''")


def check_name(name: str) -> None:
    """The name is one folder under the output root: no separators, no '.' or '..', nothing absolute."""
    bad = (
        not name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
        or Path(name).is_absolute()
        or name != name.strip()
    )
    need(not bad, "name", f"expected a folder name (no '/', '\\', '.', '..' or surrounding spaces), got {name!r}")


def check_prompt_format(recipe) -> None:
    """cloze scores option texts (answer_format words) and needs demonstrations (not NA-ICA's zero-shot data)."""
    if recipe.prompt_format != "cloze":
        return
    need(
        recipe.answer_format == "words",
        "prompt_format",
        f"'cloze' lists no options, so it scores each option's text: it needs answer_format: words, got {recipe.answer_format!r}",
    )
    need(
        recipe.experiment != "naica",
        "prompt_format",
        "'cloze' does not apply to experiment naica (zero-shot domain QA without demonstrations); use qatt or chat",
    )


def check_tasks(tasks, experiment: str, tr: int) -> None:
    """Every task known, its adapter options known and typed, none listed twice: checked before any task runs."""
    from .tasks import get_task

    need(len(tasks) > 0 or experiment == "naica", "tasks", "expected at least one task")
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        key = f"tasks[{i}]"
        try:
            adapter = get_task(task.name)
        except ValueError as err:
            raise RecipeError(f"{key}.name: {err}") from None
        need(
            adapter.experiment == "neuronllm",
            f"{key}.name",
            f"{task.name!r} is NA-ICA's data, not a NeuronLLM task; run it with experiment: naica (naica.source)",
        )
        lowered = task.name.lower()
        need(
            lowered not in seen,
            f"{key}.name",
            f"task {task.name!r} is listed twice (also tasks[{seen.get(lowered)}]); its outputs would overwrite each other",
        )
        seen[lowered] = i
        need(
            task.max_questions is None or task.max_questions > tr,
            f"{key}.max_questions",
            f"expected an int > identification_examples ({tr}), so that evaluation candidates remain, got {task.max_questions}",
        )
        demo, scored = task.demo_split or adapter.demo_split, task.scored_split or adapter.scored_split
        need(
            demo != scored,
            f"{key}.demo_split",
            f"demo_split and scored_split are both {demo!r}; demonstrations must never be scored",
        )
        for field in ("source", "config", "scored_split", "demo_split"):
            not_blank(getattr(task, field), f"{key}.{field}")
        for option, value in task.options.items():
            check_option(adapter, option, value, f"{key}.options.{option}")


def check_option(adapter, option: str, value, key: str) -> None:
    """An adapter option: a keyword of the adapter's converter, of the type of its default."""
    import inspect

    params = {
        n: p
        for n, p in inspect.signature(adapter.convert).parameters.items()
        if p.kind is p.KEYWORD_ONLY and n not in ("seed", "split", "source")
    }
    known = ", ".join(params) or "none"
    need(option in params, key, f"unknown option for task {adapter.name!r} (its options: {known})")
    default = params[option].default
    if isinstance(default, bool):
        need(isinstance(value, bool), key, f"expected true or false, got {value!r}")
    elif isinstance(default, int):
        need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, f"expected an int >= 1, got {value!r}")
    elif isinstance(default, str):
        listed = "Sequence" in str(params[option].annotation)  # e.g. choices_column: one column or several
        ok = (isinstance(value, str) and value != "") or (
            listed and isinstance(value, list) and len(value) > 0 and all(isinstance(v, str) and v for v in value)
        )
        need(ok, key, f"expected a non-empty string{' or list of strings' if listed else ''}, got {value!r}")


def check_neuronllm(recipe) -> None:
    a, s, e = recipe.attribution, recipe.selection, recipe.evaluation
    at_least(recipe.identification_examples, "identification_examples")
    at_least(a.steps, "attribution.steps")
    at_least(a.layers_per_pass, "attribution.layers_per_pass", optional=True)
    unique_list(a.layers, "attribution.layers", optional=True)
    for i, layer in enumerate(a.layers or ()):
        at_least(layer, f"attribution.layers[{i}]", 0)
    check_budget(s.k, "selection.k")
    for i, k in enumerate(s.k_sweep):
        check_budget(k, f"selection.k_sweep[{i}]")
    if s.k_sweep:  # empty: no sweep
        unique_list(s.k_sweep, "selection.k_sweep")
    at_least(s.z, "selection.z")
    need(0 < s.kn_threshold <= 1, "selection.kn_threshold", f"expected in (0, 1], got {s.kn_threshold}")
    unique_list(s.methods, "selection.methods")
    at_least(e.understood, "evaluation.understood", 0)
    at_least(e.not_understood, "evaluation.not_understood", 0)
    need(e.understood + e.not_understood > 0, "evaluation", "understood + not_understood is 0: the evaluation set would be empty")
    at_least(e.candidates, "evaluation.candidates", optional=True)
    unique_list(e.ratios, "evaluation.ratios")
    for i, r in enumerate(e.ratios):
        need(0.0 <= r <= 1.0, f"evaluation.ratios[{i}]", f"expected a ratio in [0, 1], got {r}")
    at_least(e.batch_size, "evaluation.batch_size")


def check_naica(n) -> None:
    # t and u as nsneurons.naica accepts them (kept_mask: 0 <= t < 1); u = 0 would make every neuron common.
    need(0 <= n.t < 1, "naica.t", f"expected in [0, 1), got {n.t}")
    need(0 < n.u <= 1, "naica.u", f"expected in (0, 1], got {n.u}")
    at_least(n.v, "naica.v")
    at_least(n.steps, "naica.steps")
    at_least(n.max_per_domain, "naica.max_per_domain", optional=True)
    unique_list(n.domains, "naica.domains", optional=True)
    not_blank(n.source, "naica.source")
    not_blank(n.config, "naica.config")
    need(0 <= n.held_out_fraction < 1, "naica.held_out_fraction", f"expected in [0, 1), got {n.held_out_fraction}")


def check_crosstask(c) -> None:
    unique_list(c.methods, "crosstask.methods", optional=True)
    unique_list(c.budget_methods, "crosstask.budget_methods", optional=True)
    unique_list(c.k_values, "crosstask.k_values")
    for i, k in enumerate(c.k_values):
        check_budget(k, f"crosstask.k_values[{i}]")
    need(0.0 <= c.ratio <= 1.0, "crosstask.ratio", f"expected a ratio in [0, 1], got {c.ratio}")


def unique_key_loader():
    """A yaml SafeLoader that refuses a key given twice in one mapping (plain yaml keeps the last, silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, typing.Hashable):
                    continue  # the SafeLoader refuses it with its own message
                if key in seen:
                    raise RecipeError(
                        f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                        f"{key_node.start_mark.line + 1}); the second would silently replace the first"
                    )
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def check_scoring(ev, sel) -> None:
    """The evaluation section's bootstrap, confidence and example sources, and RANDOM's draws."""
    need(ev.bootstrap >= 1000, "evaluation.bootstrap", f"expected >= 1000 resamples, got {ev.bootstrap}")
    need(0 < ev.confidence < 1, "evaluation.confidence", f"expected in (0, 1), got {ev.confidence}")
    need(
        not (ev.examples_from and ev.screen_model),
        "evaluation.examples_from",
        "set either examples_from or screen_model, not both",
    )
    not_blank(ev.examples_from, "evaluation.examples_from")
    not_blank(ev.screen_model, "evaluation.screen_model")
    need(sel.random_draws >= 1, "selection.random_draws", f"expected >= 1, got {sel.random_draws}")


def check_table8(recipe) -> None:
    """Table 8's reference size and per-task budgets (tasks of the recipe, each once, at least one neuron)."""
    t8, names = recipe.crosstask.table8, [t.name for t in recipe.tasks]
    need(t8.reference_neurons >= 1, "crosstask.table8.reference_neurons", f"expected >= 1, got {t8.reference_neurons}")
    if t8.budgets is None:
        return
    need(len(t8.budgets) >= 2, "crosstask.table8.budgets", f"expected at least two tasks, got {len(t8.budgets)}")
    for i, b in enumerate(t8.budgets):
        key = f"crosstask.table8.budgets[{i}]"
        need(b.task in names, f"{key}.task", f"{b.task!r} is not a task of this recipe (tasks: {', '.join(names)})")
        need(b.task not in [c.task for c in t8.budgets[:i]], f"{key}.task", f"{b.task!r} is listed twice")
        need(
            b.good >= 0 and b.bad >= 0 and b.good + b.bad >= 1,
            key,
            f"expected good, bad >= 0 and at least one neuron, got good={b.good}, bad={b.bad}",
        )
