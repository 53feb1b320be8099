"""Multiple-choice domain QA for NA-ICA / QRNCA (seed 002): domains are the clusters.

A registered task adapter (`get_task("domain_qa")`, experiment "naica"): its rows are read like
every task's (nsneurons.tasks.reading) and its proxies rendered by the shared
`proxies.render_proxies`; only its row schema and its prompt templates are its own.

Rows: {"id", "domain", "question", "choices": [>= 4 texts], "answer": text | letter | 0-based index}
(column names are arguments). More than four choices: wrong ones are dropped at random (seeded).
Sources: None (the packaged fixture nsneurons/tasks/data/domain_qa.jsonl, 6 domains x 7
questions), a local .jsonl/.json/.csv file, a folder or a hub id (its "test" split by default).

Each question becomes 3 proxies, zero-shot like the seed's data: proxy i uses instruction
template i (three different wordings) and its own option order, with the correct option on three
different letters; the orders depend only on (seed, question id). The domain is never named in
the prompt, so neuron-based domain prediction cannot read it off the text.
Prompt formats: qatt (these templates) and chat (them inside the model's chat template); cloze is
refused: the questions are zero-shot, with no demonstration split to take solved examples from.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..vocab import PromptFormat
from .adapter import Conversion, Row, TaskAdapter, convert_each
from .base import ANSWER_CUE, LETTERS, N_OPTIONS, AnswerFormat, Proxy, Question, TaskDataError, TaskSpec, rules_text
from .formats import apply_prompt_format, check_prompt_format
from .proxies import proxy_orders as shared_proxy_orders
from .proxies import render_proxies
from .reading import DATA_DIR, read_rows

TASK = "domain_qa"
DATA_FILE = DATA_DIR / "domain_qa.jsonl"
TEMPLATE_VERSION = "domain-qa-v1"
ORDER_SALT = ":domain-qa"  # its option orders are its own, apart from the QATT proxies of the same ids
# Only the stem label and word_answers are read: the templates below replace role, rules and demonstration.
SPEC = TaskSpec(name=TASK, role="You are an expert.", instruction="Answer the following multiple-choice question.")

# Three instruction templates (proxy i uses template i); {rules} is rules_text(answer_format).
TEMPLATES = (
    "You are an expert. Answer the following multiple-choice question.\n{rules}\n\n{block}\n" + ANSWER_CUE,
    "Below is a multiple-choice question. Only one of the options is correct; pick it.\n{rules}\n\n{block}\n" + ANSWER_CUE,
    "Here is a quiz question with four options. Give the correct option and nothing else.\n{rules}\n\n{block}\n" + ANSWER_CUE,
)


def _answer_index(value: Any, choices: list[str], where: str) -> int:
    if isinstance(value, str) and value in choices:
        return choices.index(value)
    letters = string.ascii_uppercase[: len(choices)]
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip() in letters:
        return letters.index(value.strip())
    if not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        if 0 <= int(value) < len(choices):
            return int(value)
    raise TaskDataError(f"{where}: answer {value!r} is not a choice text, letter or index of {choices!r}")


def row_to_question(
    row: Mapping[str, Any],
    index: int,
    *,
    seed: int,
    label: str,
    question_column: str = "question",
    choices_column: str = "choices",
    answer_column: str = "answer",
    domain_column: str = "domain",
    id_column: str = "id",
) -> Question:
    where = f"{label} row {index}"
    for name in (question_column, choices_column, answer_column, domain_column):
        if row.get(name) is None:
            raise TaskDataError(f"{where}: missing field {name!r}; fields present: {', '.join(sorted(map(str, row)))}")
    choices = [str(c).strip() for c in row[choices_column]]
    if len(choices) < N_OPTIONS:
        raise TaskDataError(f"{where}: {len(choices)} choices {choices!r}; expected at least {N_OPTIONS}")
    answer = _answer_index(row[answer_column], choices, where)
    qid = str(row[id_column]) if row.get(id_column) not in (None, "") else f"{row[domain_column]}-{index}"
    wrong = [i for i in range(len(choices)) if i != answer]
    dropped = set(random.Random(f"{seed}:{qid}:drop").sample(wrong, len(choices) - N_OPTIONS))
    kept = [i for i in range(len(choices)) if i not in dropped]
    domain = str(row[domain_column])
    return Question(
        qid,
        str(row[question_column]).strip(),
        tuple(choices[i] for i in kept),
        kept.index(answer),
        TASK,
        {"domain": domain, "source": label, "row": index},
    )


def questions_from_rows(
    rows: Iterable[Row],
    *,
    seed: int = 0,
    split: str = "test",
    source: str = "<rows>",
    question_column: str = "question",
    choices_column: str = "choices",
    answer_column: str = "answer",
    domain_column: str = "domain",
    id_column: str = "id",
) -> Conversion:
    """The adapter's converter: one question per row (`split` is unused: ids are the rows' own)."""
    columns = dict(
        question_column=question_column,
        choices_column=choices_column,
        answer_column=answer_column,
        domain_column=domain_column,
        id_column=id_column,
    )

    def convert(row: Row, index: int, key: str, where: str) -> list[Question]:
        return [row_to_question(row, index, seed=seed, label=source, **columns)]

    return convert_each(rows, convert, source=source)


def load_domain_qa(
    source=None,
    *,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    max_per_domain: int | None = None,
    split: str | None = None,
    config: str | None = None,
    cache_dir: str | None = None,
    **columns: str,
) -> dict[str, list[Question]]:
    """{domain: questions} in first-appearance order of the domains (file order within a domain).

    `domains` keeps only those (in that order); `max_per_domain` keeps a seeded sample of each
    (in file order). `columns`: question_column=, choices_column=, answer_column=, domain_column=, id_column=.
    """
    rows, label, _ = read_rows(ADAPTER, source, split=split or ADAPTER.scored_split, config=config, cache_dir=cache_dir)
    by_domain: dict[str, list[Question]] = {}
    for question in questions_from_rows(rows, seed=seed, source=label, **columns).questions:
        by_domain.setdefault(question.meta["domain"], []).append(question)
    ids = [q.example_id for qs in by_domain.values() for q in qs]
    if len(set(ids)) != len(ids):
        raise TaskDataError(f"{label}: question ids repeat: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    if domains is not None:
        unknown = [d for d in domains if d not in by_domain]
        if unknown:
            raise TaskDataError(f"{label}: no questions for domains {unknown}; domains present: {', '.join(by_domain)}")
        by_domain = {d: by_domain[d] for d in domains}
    if max_per_domain is not None:
        for domain, questions in by_domain.items():
            if len(questions) > max_per_domain:
                picked = sorted(random.Random(f"{seed}:{domain}:sample").sample(range(len(questions)), max_per_domain))
                by_domain[domain] = [questions[i] for i in picked]
    return by_domain


def proxy_orders(question: Question, seed: int) -> list[list[int]]:
    """Option order of each proxy: the correct option on 3 distinct letters, distractors shuffled."""
    return shared_proxy_orders(question, seed, ORDER_SALT)


def make_domain_proxies(
    question: Question,
    *,
    seed: int = 0,
    answer_format: AnswerFormat = "letters",
    prompt_format: PromptFormat = "qatt",
    tokenizer=None,
) -> list[Proxy]:
    """The 3 proxies of one question: template i for proxy i, shuffled options, distinct correct letters
    (prompt_format "chat": inside the tokenizer's chat template; "cloze" is refused, see the module doc)."""
    check_domain_format(prompt_format, answer_format)
    rules = rules_text(answer_format)
    proxies = render_proxies(
        question,
        SPEC,
        lambda number, block: TEMPLATES[number].format(rules=rules, block=block),
        seed=seed,
        answer_format=answer_format,
        salt=ORDER_SALT,
    )
    return apply_prompt_format(proxies, prompt_format, tokenizer)


def check_domain_format(prompt_format: str, answer_format: str = "letters") -> None:
    """NA-ICA's prompts come as qatt or chat; cloze is refused with a reason."""
    check_prompt_format(prompt_format, "words" if prompt_format == "cloze" else answer_format)
    if prompt_format == "cloze":
        raise TaskDataError(
            "prompt_format 'cloze' does not apply to NA-ICA's domain QA: its questions are zero-shot, with no "
            "demonstration split to take solved examples from; use prompt_format 'qatt' or 'chat'"
        )


def domain_proxies(
    questions_by_domain: Mapping[str, Sequence[Question]],
    *,
    seed: int = 0,
    answer_format: AnswerFormat = "letters",
    prompt_format: PromptFormat = "qatt",
    tokenizer=None,
) -> dict[str, list[Proxy]]:
    """{question id: its 3 proxies}, in domain then question order."""
    check_domain_format(prompt_format, answer_format)
    return {
        q.example_id: make_domain_proxies(
            q, seed=seed, answer_format=answer_format, prompt_format=prompt_format, tokenizer=tokenizer
        )
        for qs in questions_by_domain.values()
        for q in qs
    }


def domain_of(questions_by_domain: Mapping[str, Sequence[Question]]) -> dict[str, str]:
    """{question id: domain}."""
    return {q.example_id: domain for domain, qs in questions_by_domain.items() for q in qs}


ADAPTER = TaskAdapter(
    name=TASK,
    spec=SPEC,
    convert=questions_from_rows,
    fixture=DATA_FILE.name,
    scored_split="test",
    experiment="naica",
)

__all__ = [
    "ADAPTER",
    "LETTERS",
    "SPEC",
    "TASK",
    "TEMPLATES",
    "TEMPLATE_VERSION",
    "check_domain_format",
    "domain_of",
    "domain_proxies",
    "load_domain_qa",
    "make_domain_proxies",
    "proxy_orders",
    "questions_from_rows",
    "row_to_question",
]
