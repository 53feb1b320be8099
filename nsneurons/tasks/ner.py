"""Named entity typing: Few-NERD (`DFKI-SLT/few-nerd`, config `supervised`), coarse types.

One question per entity span; a span is a maximal run of the same non-zero coarse tag (Few-NERD
tags are IO, so two touching entities of one type read as one span, as in the dataset itself).
Distractors: three types sampled from the other seven coarse types (appendix C.9).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from .adapter import Conversion, Row, Skipped, TaskAdapter, convert_each, detokenize, example_id, row_field
from .base import Question, TaskDataError, TaskSpec

TASK = "ner"
# Few-NERD's coarse `ner_tags` ids: 0 is O, then these type words in order.
COARSE_TYPES = ("art", "building", "event", "location", "organization", "other", "person", "product")

SPEC = TaskSpec(
    name=TASK,
    role="You are an expert in named entity recognition.",
    instruction=(
        "Decide which type the named entity in the sentence belongs to: art, building, event, location, "
        "organization, other, person or product."
    ),
    labels=COARSE_TYPES,
)


def entity_spans(tags: Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, end, tag) of each maximal run of one non-zero tag; end is exclusive."""
    spans = []
    start = None
    for i, tag in enumerate([*tags, 0]):
        if start is not None and tag != tags[start]:
            spans.append((start, i, tags[start]))
            start = None
        if start is None and tag != 0:
            start = i
    return spans


def ner_stem(sentence: str, entity: str) -> str:
    return f'In the sentence "{sentence}", what type of entity is "{entity}"?'


def _tags(row: Row, where: str) -> tuple[list[str], list[int]]:
    tokens = list(row_field(row, "tokens", where, "list of words"))
    tags = list(row_field(row, "ner_tags", where, "coarse tag ids 0..8"))
    if len(tokens) != len(tags):
        raise TaskDataError(f"{where}: {len(tokens)} tokens but {len(tags)} ner_tags; expected one tag per token")
    for tag in tags:
        if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag <= len(COARSE_TYPES):
            raise TaskDataError(f"{where}: field 'ner_tags' has {tag!r}; expected coarse tag ids 0..{len(COARSE_TYPES)}")
    return tokens, tags


def questions_from_rows(rows: Iterable[Row], *, seed: int = 0, split: str = "test", source: str = "<rows>") -> Conversion:
    """One question per entity span of each sentence; sentences without entities are skipped."""

    def convert(row: Row, index: int, key: str, where: str) -> list[Question] | Skipped:
        tokens, tags = _tags(row, where)
        spans = entity_spans(tags)
        if not spans:
            return Skipped(where, "no entity")
        sentence = detokenize(tokens)
        questions = []
        for start, end, tag in spans:
            qid = example_id(split, f"{key}:{start}-{end}")
            correct = COARSE_TYPES[tag - 1]
            rng = random.Random(f"{seed}:{qid}:distractors")
            distractors = rng.sample([t for t in COARSE_TYPES if t != correct], 3)
            options = tuple(sorted([correct, *distractors]))  # alphabetical: proxies do the shuffling
            meta = {"source": source, "split": split, "row": index, "span": (start, end)}
            stem = ner_stem(sentence, detokenize(tokens[start:end]))
            questions.append(Question(qid, stem, options, options.index(correct), TASK, meta))
        return questions

    return convert_each(rows, convert, source=source)


ADAPTER = TaskAdapter(
    name=TASK,
    spec=SPEC,
    convert=questions_from_rows,
    hub_id="DFKI-SLT/few-nerd",
    hub_config="supervised",
    fixture="ner.jsonl",
    demo_split="train",
    scored_split="test",
    aliases=("few-nerd", "fewnerd"),
)
