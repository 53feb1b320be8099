"""Three proxy prompts per question (section 3.3): same question, options shuffled, distinct correct letters.

Prompt layout (one string, ends with "Answer:" so the next token is the answer):

    <role> <instruction>
    <rules>

    <demonstration block>
    Answer: <demonstration answer>

    <question block>
    Answer:

Everything before the question block depends only on the task, the demonstration, the seed and
the answer format, so all proxies of a task share it (attribution can cache it): see `prompt_prefix`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ..vocab import ANSWER_FORMATS, PromptFormat
from .base import (
    ANSWER_CUE,
    N_OPTIONS,
    N_PROXIES,
    AnswerFormat,
    Proxy,
    Question,
    TaskDataError,
    TaskSpec,
    answer_text,
    render_block,
    rules_text,
)
from .formats import apply_prompt_format, check_prompt_format, cloze_demonstrations, cloze_proxies


def _check_answer_format(spec: TaskSpec, answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise TaskDataError(f"answer_format {answer_format!r}: expected one of {', '.join(ANSWER_FORMATS)}")
    if answer_format == "words" and not spec.word_answers:
        raise TaskDataError(f"task {spec.name!r}: answer_format 'words' does not fit its long option texts; use 'letters'")


def _order_with_correct_at(answer: int, position: int, rng: random.Random) -> list[int]:
    """A permutation of option indices putting the correct option at `position`, distractors shuffled."""
    distractors = [i for i in range(N_OPTIONS) if i != answer]
    rng.shuffle(distractors)
    return distractors[:position] + [answer] + distractors[position:]


def proxy_orders(question: Question, seed: int, salt: str = "") -> list[list[int]]:
    """The option order of each proxy; the correct option lands on 3 different letters.

    Seeded by (seed, example_id) alone, so a question's proxies do not depend on which other
    questions are loaded or in what order; `salt` gives another family of prompts its own orders.
    """
    rng = random.Random(f"{seed}:{question.example_id}{salt}")
    positions = rng.sample(range(N_OPTIONS), N_PROXIES)
    return [_order_with_correct_at(question.answer, position, rng) for position in positions]


def _demonstration_text(demo: Question, spec: TaskSpec, seed: int, answer_format: AnswerFormat) -> str:
    # The demonstration's options are shuffled too (its own seed), so its answer is not always
    # the adapter's first option; it is the same for every proxy of the task.
    order = list(range(N_OPTIONS))
    random.Random(f"{seed}:demonstration:{demo.example_id}").shuffle(order)
    options = [demo.options[i] for i in order]
    correct = order.index(demo.answer)
    block = render_block(demo.stem, options, spec.stem_label)
    return f"{block}\n{ANSWER_CUE} {answer_text(options, correct, answer_format)}"


def prompt_prefix(demo: Question, spec: TaskSpec, *, seed: int, answer_format: AnswerFormat = "letters") -> str:
    """Role, rules and the one-shot demonstration: the part every proxy of the task shares."""
    _check_answer_format(spec, answer_format)
    header = f"{spec.role} {spec.instruction}\n{rules_text(answer_format)}"
    return f"{header}\n\n{_demonstration_text(demo, spec, seed, answer_format)}\n\n"


def make_proxies(
    question: Question,
    demo: Question,
    spec: TaskSpec,
    *,
    seed: int,
    answer_format: AnswerFormat = "letters",
) -> list[Proxy]:
    """The 3 proxies of one question, behind one demonstration (which must not be the question itself)."""
    if demo.example_id == question.example_id:
        raise TaskDataError(f"example {question.example_id!r} is its own demonstration; draw demonstrations from another split")
    prefix = prompt_prefix(demo, spec, seed=seed, answer_format=answer_format)
    return render_proxies(
        question, spec, lambda number, block: f"{prefix}{block}\n{ANSWER_CUE}", seed=seed, answer_format=answer_format
    )


def render_proxies(
    question: Question,
    spec: TaskSpec,
    prompt: Callable[[int, str], str],
    *,
    seed: int,
    answer_format: AnswerFormat,
    salt: str = "",
) -> list[Proxy]:
    """The 3 proxies of one question: proxy i shows the options in `proxy_orders`' order i, and its
    prompt is `prompt(i, question block)`; every prompt family (one-shot QATT, NA-ICA's templates) uses it."""
    _check_answer_format(spec, answer_format)
    proxies = []
    for number, order in enumerate(proxy_orders(question, seed, salt)):
        options = tuple(question.options[i] for i in order)
        block = render_block(question.stem, options, spec.stem_label)
        proxies.append(
            Proxy(
                example_id=question.example_id,
                proxy=number,
                prompt=prompt(number, block),
                options=options,
                correct=order.index(question.answer),
                task=question.task,
                answer_format=answer_format,
            )
        )
    return proxies


def pick_demonstration(demo_pool: Sequence[Question], seed: int) -> Question:
    """One demonstration for the whole task, chosen by the seed (independent of the pool's order)."""
    if not demo_pool:
        raise TaskDataError("the demonstration pool is empty: the demonstration split gave no questions")
    ordered = sorted(demo_pool, key=lambda q: q.example_id)
    return random.Random(f"{seed}:demonstration").choice(ordered)


def build_task_proxies(
    questions: Sequence[Question],
    demo_pool: Sequence[Question],
    spec: TaskSpec,
    seed: int,
    answer_format: AnswerFormat = "letters",
    *,
    prompt_format: PromptFormat = "qatt",
    tokenizer=None,
    shots: int | None = None,
) -> list[Proxy]:
    """All proxies of a task, 3 per question in question order, in a prompt format (nsneurons.tasks.formats):
    qatt and chat share one demonstration; cloze shows solved examples (`shots`); chat needs the tokenizer."""
    check_prompt_format(prompt_format, answer_format, spec)
    scored_ids = {q.example_id for q in questions}
    leaked = sorted(scored_ids.intersection(q.example_id for q in demo_pool))
    if leaked:
        shown = ", ".join(map(repr, leaked[:5])) + (" ..." if len(leaked) > 5 else "")
        raise TaskDataError(
            f"{len(leaked)} demonstration example(s) are also scored questions: {shown}; "
            "the demonstration pool must come from a split that is never scored"
        )
    if prompt_format == "cloze":
        demos = cloze_demonstrations(demo_pool, spec, seed, shots)
        return [p for q in questions for p in cloze_proxies(q, proxy_orders(q, seed), demos, spec, seed)]
    demo = pick_demonstration(demo_pool, seed)
    proxies = [p for q in questions for p in make_proxies(q, demo, spec, seed=seed, answer_format=answer_format)]
    return apply_prompt_format(proxies, prompt_format, tokenizer)


__all__ = [
    "ANSWER_CUE",
    "build_task_proxies",
    "make_proxies",
    "pick_demonstration",
    "prompt_prefix",
    "proxy_orders",
    "render_proxies",
]
