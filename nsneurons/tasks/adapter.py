"""What every task adapter shares: the adapter record, its output, and row helpers.

An adapter turns rows (dicts in its dataset's own schema, as `datasets` yields them) into
`Question`s. Rows it cannot use are reported as `Skipped` with a reason instead of raising,
because a real dataset always has a few (a sentence with no entity, a sentence too long to chunk);
a row that is malformed (missing field, unknown label) raises `TaskDataError`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..vocab import Experiment
from .base import N_OPTIONS, Question, TaskDataError, TaskSpec

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Skipped:
    """A row an adapter left out on purpose, and why."""

    row: str  # where the row came from: source, index and id
    reason: str


class Conversion(NamedTuple):
    questions: list[Question]
    skipped: list[Skipped]


@dataclass(frozen=True)
class TaskAdapter:
    """One registered task: how to turn its rows into questions and where its rows live."""

    name: str
    spec: TaskSpec
    # convert(rows, *, seed, split, source, **options) -> Conversion
    convert: Callable[..., Conversion]
    hub_id: str | None = None  # e.g. "SetFit/sst5"; None for the generic adapter
    hub_config: str | None = None  # e.g. "supervised" for Few-NERD
    fixture: str | None = None  # file name under nsneurons/tasks/data
    demo_split: str = "train"  # rows the one-shot demonstration is drawn from (never scored)
    scored_split: str = "test"  # rows that become scored questions
    aliases: tuple[str, ...] = field(default=())
    # "neuronllm": a task of a recipe's `tasks:` (one-shot QATT proxies); "naica": NA-ICA's domain QA data.
    experiment: Experiment = "neuronllm"


def row_field(row: Row, name: str, where: str, expected: str = "") -> Any:
    """`row[name]`, or a TaskDataError naming the row and the missing field."""
    if name not in row or row[name] is None:
        hint = f" ({expected})" if expected else ""
        present = ", ".join(sorted(map(str, row))) or "none"
        raise TaskDataError(f"{where}: missing field {name!r}{hint}; fields present: {present}")
    return row[name]


def row_key(row: Row, index: int) -> str:
    """The row's own id where it has one, else its position (ids repeat across splits, so callers prefix the split)."""
    value = row.get("id")
    return str(value) if value not in (None, "") else str(index)


def describe_row(source: str, index: int, key: str) -> str:
    return f"{source} row {index} (id {key!r})"


def keep_four(choices: Sequence[str], answer: int, rng: random.Random) -> tuple[tuple[str, ...], int]:
    """Drop wrong choices at random until four remain, keeping the original order.

    Why: the paper keeps the dataset's own distractors and 'randomly excludes' the extras
    (CommonsenseQA has five choices).
    """
    if len(choices) < N_OPTIONS:
        raise TaskDataError(f"expected at least {N_OPTIONS} choices, got {len(choices)}: {list(choices)!r}")
    wrong = [i for i in range(len(choices)) if i != answer]
    dropped = set(rng.sample(wrong, len(choices) - N_OPTIONS))
    kept = [i for i in range(len(choices)) if i not in dropped]
    return tuple(choices[i] for i in kept), kept.index(answer)


def convert_each(
    rows: Iterable[Row],
    row_to_questions: Callable[[Row, int, str, str], list[Question] | Skipped],
    *,
    source: str,
) -> Conversion:
    """Run a per-row converter over rows, collecting questions and skipped rows in order."""
    questions: list[Question] = []
    skipped: list[Skipped] = []
    for index, row in enumerate(rows):
        key = row_key(row, index)
        result = row_to_questions(row, index, key, describe_row(source, index, key))
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            questions.extend(result)
    return Conversion(questions, skipped)


def detokenize(tokens: Sequence[str]) -> str:
    """Join dataset tokens into readable text ("Paris , France ." -> "Paris, France.")."""
    no_space_before = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "'s", "'", "n't", "'re", "'ve", "'ll", "'d", "'m", "''"}
    no_space_after = {"(", "[", "{", "$", "``", "#"}
    text = ""
    for i, token in enumerate(tokens):
        if i and token not in no_space_before and tokens[i - 1] not in no_space_after:
            text += " "
        text += token
    return text.replace("``", '"').replace("''", '"')


def example_id(split: str, key: str) -> str:
    """Ids carry the split because datasets number rows per split (Few-NERD's "0" is in train and test)."""
    return f"{split}-{key}"
