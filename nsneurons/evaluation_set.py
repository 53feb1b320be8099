"""The evaluation set (appendix A.1): which candidate examples a model understands, the seeded
sample of understood and not-understood examples, or the set saved by an earlier run.

The paper screened once, with LLaMA 2-7B, and evaluated all three models on the same examples:
`evaluation.screen_model` screens with a reference model, `evaluation.examples_from` reuses the
examples an earlier run saved in its examples.zarr; by default the run's own model screens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import metrics, preflight
from .answers import check_answer_tokens
from .intervention import BASELINE, correct_table, option_probs
from .recipe import Recipe, RecipeError
from .runfolder import RunFolder
from .tasks.formats import apply_prompt_format
from .zarrio import open_checked


def screen(recipe: Recipe, model, proxies, *, progress: bool = True) -> dict[str, bool]:
    """Which candidate examples the unmodified model understands (Com of one example, appendix A.1)."""
    table = correct_table(
        option_probs(model, proxies, [BASELINE], batch_size=recipe.evaluation.batch_size, progress=progress)
    ).sel(condition="none")
    return {str(e): bool(table.sel(example=e).sum() >= 2) for e in table.example.values}


def read_evaluation_set(path, task: str) -> dict[str, bool]:
    """{example id: understood by the screening model} of `task` saved by an earlier run."""
    path = Path(path)
    saved = RunFolder(path).combined("examples")
    store = saved if saved.exists() else path
    if not store.exists():
        raise RecipeError(f"evaluation.examples_from: {path} is neither a run folder nor an examples.zarr")
    ds = open_checked(store)
    if "evaluation_example" not in ds or task not in ds["task"].values:
        raise RecipeError(f"evaluation.examples_from: {store} holds no evaluation examples of task {task!r}")
    ids, understood = ds["evaluation_example"].sel(task=task).values, ds["evaluation_understood"].sel(task=task).values
    return {str(i): bool(u) for i, u in zip(ids, understood) if str(i)}


def evaluation_set(recipe: Recipe, task, id_proxies, candidates, understood: dict[str, bool]) -> metrics.EvalSample:
    """The seeded evaluation sample, or the saved one of `evaluation.examples_from` (checked)."""
    if recipe.evaluation.examples_from:
        known = {p.example_id for p in candidates}
        missing = sorted(set(understood) - known)
        if missing:
            raise RecipeError(
                f"evaluation.examples_from: task {task.name!r}: examples {missing[:3]} are not evaluation "
                "candidates here (a different dataset, seed or identification_examples?)"
            )
        ids = sorted(i for i, u in understood.items() if u) + sorted(i for i, u in understood.items() if not u)
        n_u = sum(understood.values())
        return metrics.EvalSample(ids, n_u, len(ids) - n_u, (n_u, len(ids) - n_u))
    sample = metrics.sample_eval_set(
        understood,
        recipe.evaluation.understood,
        recipe.evaluation.not_understood,
        exclude=[p.example_id for p in id_proxies],
        seed=recipe.seed,
    )
    preflight.check_evaluation_set(task.name, sample)
    return sample


def reference_screens(
    recipe: Recipe, candidates: Callable[[object], list], *, progress: bool = True
) -> dict[str, dict[str, bool]]:
    """Per task, {example id: understood} from `evaluation.examples_from` or `evaluation.screen_model`;
    empty when this run's model screens its own candidates (the default). `candidates(task)` gives
    a task's evaluation-candidate proxies (chat: unwrapped, put in the screening model's own template here)."""
    ev = recipe.evaluation
    if ev.examples_from:
        return {task.name: read_evaluation_set(ev.examples_from, task.name) for task in recipe.tasks}
    if not ev.screen_model:
        return {}
    from .models import load_model

    print(f"screening the evaluation candidates with {ev.screen_model}")
    reference = load_model(ev.screen_model, device=recipe.device, dtype=recipe.dtype)
    screens = {}
    for task in recipe.tasks:
        proxies = apply_prompt_format(candidates(task), recipe.prompt_format, reference.tokenizer)
        check_answer_tokens(reference.tokenizer, proxies)
        screens[task.name] = screen(recipe, reference, proxies, progress=progress)
    return screens
