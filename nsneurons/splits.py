"""A task's questions split into identification and evaluation-candidate proxies (disjoint, seeded)."""

from __future__ import annotations

import numpy as np

from .recipe import Recipe


def task_proxies(recipe: Recipe, task) -> tuple[list, list]:
    """(identification proxies, evaluation-candidate proxies) of one task, disjoint, seeded."""
    from .tasks import build_task_proxies, task_questions, task_spec

    demo_pool, questions = task_questions(
        task.name,
        task.source,
        recipe.seed,
        demo_split=task.demo_split,
        scored_split=task.scored_split,
        max_questions=task.max_questions,
        config=task.config,
        revision=task.revision,
        **task.options,
    )
    tr = recipe.identification_examples
    if len(questions) <= tr:
        raise ValueError(f"task {task.name!r}: {len(questions)} scored questions, need more than identification_examples={tr}")
    order = np.random.default_rng([recipe.seed, 7]).permutation(len(questions))
    identification = [questions[i] for i in sorted(order[:tr])]
    candidates = [questions[i] for i in sorted(order[tr:])]
    if recipe.evaluation.candidates is not None:
        candidates = candidates[: recipe.evaluation.candidates]
    spec = task_spec(task.name)
    make = lambda qs: build_task_proxies(qs, demo_pool, spec, recipe.seed, recipe.answer_format)  # noqa: E731
    return make(identification), make(candidates)
