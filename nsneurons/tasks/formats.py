"""Prompt formats: how a question is put to the model (`prompt_format`: qatt, chat or cloze).

- `qatt`: the paper's prompt (section 3.3): role and rules, one solved demonstration, the question
  with options A-D, "Answer:" (nsneurons.tasks.proxies).
- `chat`: that prompt without its final "Answer:" as the user turn of the model's own chat template
  (`tokenizer.apply_chat_template`), the assistant turn opened with "Answer:". Instruct models are
  trained on their template; a tokenizer without one is refused.
- `cloze`: no options are listed. Solved examples ("<stem label>: <stem>\\nAnswer: <option text>"),
  one per label for tasks with a fixed label set (sentiment, entity types), else `shots` of them,
  then the question and "Answer:"; the answer is each option's text (answer_format "words"). The
  three proxies differ by the order of the demonstrations and by their instruction sentence.

Every format's prompt ends with "Answer:", so the answer always starts the next token.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import replace

from ..vocab import PROMPT_FORMATS, PromptFormat
from .base import ANSWER_CUE, N_PROXIES, PROMPT_TEMPLATE_VERSION, Proxy, Question, TaskDataError, TaskSpec

log = logging.getLogger("nsneurons")

# What a scores store records as `prompt_template` for each format (qatt keeps its version).
TEMPLATE_VERSIONS: dict[str, str] = {
    "qatt": PROMPT_TEMPLATE_VERSION,
    "chat": f"{PROMPT_TEMPLATE_VERSION}+chat",
    "cloze": "cloze-v1",
}
DEFAULT_SHOTS = 4  # cloze demonstrations of a task without a label set (commonsense, generic)
# Cloze's three instruction sentences (proxy i uses sentence i); there are no options to shuffle.
CLOZE_RULES = (
    "Each question below is followed by its answer; answer the last question in the same way.",
    "Here are some solved examples. Give the answer to the final question in the same form as theirs.",
    "Study the worked examples, then answer the last question with the words the examples use.",
)


def check_prompt_format(prompt_format: str, answer_format: str, spec: TaskSpec | None = None) -> None:
    """Refuse an unknown format, cloze with letters, and cloze for a task whose options are long texts."""
    if prompt_format not in PROMPT_FORMATS:
        raise TaskDataError(f"prompt_format {prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}")
    if prompt_format != "cloze":
        return
    if answer_format != "words":
        raise TaskDataError(
            f"prompt_format 'cloze' lists no options, so there are no letters to answer with (answer_format "
            f"{answer_format!r}); use answer_format 'words': each option's text is scored"
        )
    if spec is not None and not spec.word_answers:
        raise TaskDataError(
            f"task {spec.name!r}: prompt_format 'cloze' scores each option's text, and this task's options are "
            "long texts; use prompt_format 'qatt' or 'chat'"
        )


# ---- chat ------------------------------------------------------------------------------------


def tokenizer_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def adds_bos(tokenizer) -> bool:
    """Whether tokenizing a text puts the BOS token in front of it by itself."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return len(with_special) > len(plain) and with_special[0] == bos


def chat_prompt(prompt: str, tokenizer) -> str:
    """A QATT prompt (ending with "Answer:") as the user turn of the tokenizer's chat template, the
    assistant turn opened with "Answer:". Without a template: a TaskDataError saying what to use."""
    if not getattr(tokenizer, "chat_template", None):
        raise TaskDataError(
            f"prompt_format 'chat': the tokenizer of {tokenizer_name(tokenizer)!r} has no chat template; "
            "use prompt_format 'qatt' or 'cloze'"
        )
    if not prompt.endswith(ANSWER_CUE):
        raise TaskDataError(f"prompt_format 'chat' wraps prompts ending with {ANSWER_CUE!r}; got one ending {prompt[-30:]!r}")
    question = prompt[: -len(ANSWER_CUE)].rstrip("\n")
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and adds_bos(tokenizer):  # tokenizing adds it again: keep one
        text = text[len(bos) :]
    return text + ANSWER_CUE


def as_chat(proxies: Sequence[Proxy], tokenizer) -> list[Proxy]:
    """QATT proxies rendered in the tokenizer's chat template (proxies already in it are kept as they are)."""
    if tokenizer is None:
        raise TaskDataError("prompt_format 'chat' renders prompts with the model's chat template: pass its tokenizer")
    out = []
    for p in proxies:
        if p.prompt_format == "cloze":
            raise TaskDataError(f"example {p.example_id!r}: a cloze prompt cannot be put in a chat template")
        out.append(p if p.prompt_format == "chat" else replace(p, prompt=chat_prompt(p.prompt, tokenizer), prompt_format="chat"))
    return out


# ---- cloze -----------------------------------------------------------------------------------


def _answer(question: Question) -> str:
    return question.options[question.answer]


def cloze_demonstrations(demo_pool: Sequence[Question], spec: TaskSpec, seed: int, shots: int | None = None) -> list[Question]:
    """The task's solved examples, chosen by the seed (not the pool's order): `shots` (default 1) per label
    for a task with a label set, in label order; else `shots` (default DEFAULT_SHOTS) in all."""
    if shots is not None and shots < 1:
        raise TaskDataError(f"shots: expected an int >= 1, got {shots}")
    ordered = sorted(demo_pool, key=lambda q: q.example_id)
    if not spec.labels:
        wanted = shots or DEFAULT_SHOTS
        demos = random.Random(f"{seed}:cloze-demonstrations").sample(ordered, min(wanted, len(ordered)))
    else:
        demos, missing = [], []
        for label in spec.labels:
            having = [q for q in ordered if _answer(q) == label]
            missing += [label] if not having else []
            demos += random.Random(f"{seed}:cloze-demonstrations:{label}").sample(having, min(shots or 1, len(having)))
        if missing and demos:
            log.warning("task %s: no demonstration for %s in the demonstration pool", spec.name, ", ".join(missing))
    if not demos:
        raise TaskDataError(f"task {spec.name!r}: the demonstration pool gave no solved example for a cloze prompt")
    return demos


def demonstration_orders(n: int, key: str) -> list[list[int]]:
    """The order of n demonstrations in each proxy: distinct orders where n allows (n! >= 3), seeded by `key`."""
    rng = random.Random(key)
    orders: list[list[int]] = []
    while len(orders) < N_PROXIES:
        order = rng.sample(range(n), n)
        if order not in orders or len(orders) >= math.factorial(n):
            orders.append(order)
    return orders


def cloze_prompt(stem: str, demos: Sequence[Question], spec: TaskSpec, number: int) -> str:
    """Proxy `number`'s prompt: role, instruction, sentence `number` of CLOZE_RULES, the solved examples
    in the order given, the question, "Answer:"."""
    solved = [f"{spec.stem_label}: {d.stem}\n{ANSWER_CUE} {_answer(d)}" for d in demos]
    header = f"{spec.role} {spec.instruction}\n{CLOZE_RULES[number]}"
    return "\n\n".join([header, *solved, f"{spec.stem_label}: {stem}\n{ANSWER_CUE}"])


def cloze_proxies(
    question: Question, orders: Sequence[Sequence[int]], demos: Sequence[Question], spec: TaskSpec, seed: int
) -> list[Proxy]:
    """The 3 cloze proxies of one question; `orders` are the option orders (the QATT proxies' own, so
    `options` and `correct` compare the same 4 texts), demonstrations reordered per proxy."""
    if any(d.example_id == question.example_id for d in demos):
        raise TaskDataError(f"example {question.example_id!r} is its own demonstration; draw demonstrations from another split")
    shown = demonstration_orders(len(demos), f"{seed}:{question.example_id}:cloze-order")
    return [
        Proxy(
            example_id=question.example_id,
            proxy=number,
            prompt=cloze_prompt(question.stem, [demos[i] for i in shown[number]], spec, number),
            options=tuple(question.options[i] for i in order),
            correct=list(order).index(question.answer),
            task=question.task,
            answer_format="words",
            prompt_format="cloze",
        )
        for number, order in enumerate(orders)
    ]


def apply_prompt_format(proxies: Sequence[Proxy], prompt_format: PromptFormat, tokenizer=None) -> list[Proxy]:
    """Proxies as the format asks, where that needs the tokenizer only (chat); qatt and cloze are rendered when built."""
    return as_chat(proxies, tokenizer) if prompt_format == "chat" else list(proxies)


__all__ = [
    "CLOZE_RULES",
    "DEFAULT_SHOTS",
    "TEMPLATE_VERSIONS",
    "adds_bos",
    "apply_prompt_format",
    "as_chat",
    "chat_prompt",
    "check_prompt_format",
    "cloze_demonstrations",
    "cloze_prompt",
    "cloze_proxies",
    "demonstration_orders",
]
