"""Sentiment: SST-5 (`SetFit/sst5`: text, label 0..4, label_text) collapsed to SST-3.

Appendix A.1 / C.9: three classes (positive, neutral, negative) and a fixed fourth option
"not sure", which is always a distractor; no distractor generation is needed.
"""

from __future__ import annotations

from collections.abc import Iterable

from .adapter import Conversion, Row, TaskAdapter, convert_each, example_id, row_field
from .base import Question, TaskDataError, TaskSpec

TASK = "sentiment"
OPTIONS = ("positive", "negative", "neutral", "not sure")
# SST-5 label -> SST-3 class word: {0, 1} negative, 2 neutral, {3, 4} positive.
SST5_TO_SST3 = {0: "negative", 1: "negative", 2: "neutral", 3: "positive", 4: "positive"}

SPEC = TaskSpec(
    name=TASK,
    role="You are an expert in sentiment analysis of movie reviews.",
    instruction="Decide whether the sentiment of the review is positive, negative or neutral.",
    labels=OPTIONS[:3],  # "not sure" is never the answer
)


def sentiment_stem(text: str) -> str:
    return f'What is the sentiment of this movie review? "{text.strip()}"'


def _label(row: Row, where: str) -> int:
    label = row_field(row, "label", where, "SST-5 label 0..4")
    if isinstance(label, bool) or not isinstance(label, int) or label not in SST5_TO_SST3:
        raise TaskDataError(f"{where}: field 'label' is {label!r}; expected an SST-5 label 0..4")
    return label


def questions_from_rows(rows: Iterable[Row], *, seed: int = 0, split: str = "test", source: str = "<rows>") -> Conversion:
    """One question per review. `seed` is unused (nothing random here) but kept for a uniform signature."""

    def convert(row: Row, index: int, key: str, where: str) -> list[Question]:
        text = row_field(row, "text", where, "the review text")
        answer = OPTIONS.index(SST5_TO_SST3[_label(row, where)])
        meta = {"source": source, "split": split, "row": index, "sst5_label": row["label"]}
        return [Question(example_id(split, key), sentiment_stem(str(text)), OPTIONS, answer, TASK, meta)]

    return convert_each(rows, convert, source=source)


ADAPTER = TaskAdapter(
    name=TASK,
    spec=SPEC,
    convert=questions_from_rows,
    hub_id="SetFit/sst5",
    fixture="sentiment.jsonl",
    demo_split="train",
    scored_split="test",
    aliases=("sst3", "sst5", "sst"),
)
