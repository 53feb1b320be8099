"""A task's questions split into identification and evaluation-candidate proxies (disjoint, seeded)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .recipe import Recipe


def unwrapped(recipe: Recipe) -> Recipe:
    """The recipe with chat prompts left as QATT, for reading the data before a tokenizer is there;
    whoever has the tokenizer puts them in its template (tasks.formats.apply_prompt_format)."""
    return dataclasses.replace(recipe, prompt_format="qatt") if recipe.prompt_format == "chat" else recipe


def task_proxies(recipe: Recipe, task, tokenizer=None) -> tuple[list, list]:
    """(identification proxies, evaluation-candidate proxies) of one task, disjoint, seeded, in the
    recipe's prompt format (chat needs the model's tokenizer)."""
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

    def make(qs):
        return build_task_proxies(
            qs, demo_pool, spec, recipe.seed, recipe.answer_format, prompt_format=recipe.prompt_format, tokenizer=tokenizer
        )

    return make(identification), make(candidates)
