"""Any multiple-choice source whose columns the caller names (JSONL, CSV or a `datasets` id).

- question: one text column.
- choices: one list column (or a CommonsenseQA-style {label, text} dict), or several columns,
  one choice each (the natural layout of a CSV).
- answer: an index (0-based int or digit string), a letter (A, B, ...) or the answer's text;
  `answer_kind="auto"` tries text, then letter, then index, in that order.
More than four choices: wrong ones are dropped at random (seeded); fewer than four is an error.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from .adapter import Conversion, Row, TaskAdapter, convert_each, example_id, keep_four, row_field
from .base import N_OPTIONS, Question, TaskDataError, TaskSpec

TASK = "generic"
ANSWER_KINDS = ("auto", "index", "letter", "text")

SPEC = TaskSpec(
    name=TASK,
    role="You are an expert at answering multiple-choice questions.",
    instruction="Choose the correct answer to the question.",
)


def generic_spec(role: str | None = None, instruction: str | None = None, stem_label: str | None = None) -> TaskSpec:
    """The generic task's spec with the caller's own role/instruction where given."""
    changes: dict[str, Any] = {k: v for k, v in dict(role=role, instruction=instruction, stem_label=stem_label).items() if v}
    return replace(SPEC, **changes)


def _choice_texts(row: Row, columns: str | Sequence[str], where: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a row's choices; labels default to A, B, C, ..."""
    if isinstance(columns, str):
        value = row_field(row, columns, where, "list of choices")
        if isinstance(value, dict) and "text" in value:
            texts = [str(t) for t in value["text"]]
            labels = [str(x) for x in value.get("label") or string.ascii_uppercase[: len(texts)]]
            return texts, labels
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TaskDataError(f"{where}: field {columns!r} is {value!r}; expected a list of choices")
        texts = [str(t) for t in value]
    else:
        texts = [str(row_field(row, column, where, "one choice")) for column in columns]
    return texts, list(string.ascii_uppercase[: len(texts)])


def _answer_index(value: Any, texts: list[str], labels: list[str], kind: str, where: str, column: str) -> int:
    def fail() -> TaskDataError:
        return TaskDataError(
            f"{where}: field {column!r} is {value!r}, which is not among the choices {texts!r} "
            f"(read as {'text, letter or index' if kind == 'auto' else kind})"
        )

    if kind not in ANSWER_KINDS:
        raise TaskDataError(f"answer_kind {kind!r}: expected one of {', '.join(ANSWER_KINDS)}")
    if kind in ("auto", "text") and isinstance(value, str) and value in texts:
        return texts.index(value)
    if kind in ("auto", "letter") and isinstance(value, str) and value.strip() in labels:
        return labels.index(value.strip())
    if kind in ("auto", "index") and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            index = int(value)
            if 0 <= index < len(texts):
                return index
    raise fail()


def questions_from_rows(
    rows: Iterable[Row],
    *,
    seed: int = 0,
    split: str = "test",
    source: str = "<rows>",
    question_column: str = "question",
    choices_column: str | Sequence[str] = "choices",
    answer_column: str = "answer",
    id_column: str = "id",
    answer_kind: str = "auto",
) -> Conversion:
    """One question per row, with exactly four options after dropping extra wrong choices."""

    def convert(row: Row, index: int, key: str, where: str) -> list[Question]:
        if row.get(id_column) not in (None, ""):
            key = str(row[id_column])
        stem = str(row_field(row, question_column, where, "question text")).strip()
        texts, labels = _choice_texts(row, choices_column, where)
        if len(texts) < N_OPTIONS:
            raise TaskDataError(
                f"{where}: field {choices_column!r} gives {len(texts)} choices {texts!r}; expected at least {N_OPTIONS}"
            )
        raw_answer = row_field(row, answer_column, where, "the correct answer")
        answer = _answer_index(raw_answer, texts, labels, answer_kind, where, answer_column)
        qid = example_id(split, key)
        options, answer = keep_four(texts, answer, random.Random(f"{seed}:{qid}:drop"))
        meta = {"source": source, "split": split, "row": index}
        return [Question(qid, stem, options, answer, TASK, meta)]

    return convert_each(rows, convert, source=source)


ADAPTER = TaskAdapter(
    name=TASK,
    spec=SPEC,
    convert=questions_from_rows,
    hub_id=None,  # the caller names the source
    fixture="generic.jsonl",
    demo_split="train",
    scored_split="test",
    aliases=("mcq",),
)
