"""Commonsense reasoning: CommonsenseQA (`tau/commonsense_qa`).

Rows: id, question, question_concept, choices {label: [A..E], text: [...]}, answerKey.
The dataset's own choices are the options; one of the four wrong ones is dropped at random
(seeded) to leave four (appendix A.1). Test answers are not public, so the validation split
is the scored split.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from .adapter import Conversion, Row, TaskAdapter, convert_each, example_id, keep_four, row_field
from .base import Question, TaskDataError, TaskSpec

TASK = "commonsense"

SPEC = TaskSpec(
    name=TASK,
    role="You are an expert in commonsense reasoning.",
    instruction="Answer the question with the option that best fits everyday knowledge about the world.",
)


def _choices(row: Row, where: str) -> tuple[list[str], list[str]]:
    choices = row_field(row, "choices", where, "{'label': [...], 'text': [...]}")
    if not isinstance(choices, dict) or "label" not in choices or "text" not in choices:
        raise TaskDataError(f"{where}: field 'choices' is {choices!r}; expected {{'label': [...], 'text': [...]}}")
    labels, texts = list(choices["label"]), [str(t) for t in choices["text"]]
    if len(labels) != len(texts):
        raise TaskDataError(f"{where}: field 'choices' has {len(labels)} labels but {len(texts)} texts")
    return labels, texts


def questions_from_rows(rows: Iterable[Row], *, seed: int = 0, split: str = "validation", source: str = "<rows>") -> Conversion:
    """One question per row; five-choice rows lose one wrong choice (seeded by seed and example id)."""

    def convert(row: Row, index: int, key: str, where: str) -> list[Question]:
        stem = str(row_field(row, "question", where, "question text")).strip()
        labels, texts = _choices(row, where)
        answer_key = row_field(row, "answerKey", where, "the label of the correct choice")
        if answer_key not in labels:
            raise TaskDataError(
                f"{where}: answerKey {answer_key!r} is not among the choice labels {labels!r}"
                + (" (CommonsenseQA's test split has no public answers; use validation)" if answer_key == "" else "")
            )
        if len(texts) < 4:
            raise TaskDataError(f"{where}: field 'choices' has {len(texts)} choices; expected 4 or 5")
        qid = example_id(split, key)
        options, answer = keep_four(texts, labels.index(answer_key), random.Random(f"{seed}:{qid}:drop"))
        meta = {"source": source, "split": split, "row": index, "concept": row.get("question_concept")}
        return [Question(qid, stem, options, answer, TASK, meta)]

    return convert_each(rows, convert, source=source)


ADAPTER = TaskAdapter(
    name=TASK,
    spec=SPEC,
    convert=questions_from_rows,
    hub_id="tau/commonsense_qa",
    fixture="commonsense.jsonl",
    demo_split="train",
    scored_split="validation",
    aliases=("commonsense_qa", "commonsenseqa", "csqa"),
)
