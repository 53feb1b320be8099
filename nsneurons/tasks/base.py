"""Task-agnostic QATT types: a task's example becomes a 4-option question, then 3 proxies.

Data flows one way: a task adapter turns dataset rows into `Question`s (its own stem and four
options, correct one known); `make_proxies` renders each question three times with shuffled
options (distinct correct letters) behind one one-shot demonstration, as section 3.3 of the
NeuronLLM paper describes (role and rules, question stem, options A-D, demonstration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..vocab import AnswerFormat, PromptFormat

LETTERS = ("A", "B", "C", "D")
N_OPTIONS = 4
N_PROXIES = 3
PROMPT_TEMPLATE_VERSION = "qatt-v1"
ANSWER_CUE = "Answer:"  # every prompt ends with it, so the next token is the answer


class TaskDataError(ValueError):
    """Bad task input: names the file, field or value, and what was expected."""


@dataclass(frozen=True)
class Question:
    """One example of a task as a 4-option multiple-choice question (before shuffling).

    `options[answer]` is the correct option; the others are distractors.
    """

    example_id: str
    stem: str
    options: tuple[str, ...]  # N_OPTIONS texts (checked in __post_init__)
    answer: int
    task: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if len(self.options) != N_OPTIONS:
            raise TaskDataError(
                f"example {self.example_id!r}: expected {N_OPTIONS} options, got {len(self.options)}: {self.options!r}"
            )
        if not 0 <= self.answer < N_OPTIONS:
            raise TaskDataError(f"example {self.example_id!r}: answer index {self.answer} is not in 0..3")
        if len(set(self.options)) != N_OPTIONS:
            raise TaskDataError(f"example {self.example_id!r}: options are not distinct: {self.options!r}")


@dataclass(frozen=True)
class Proxy:
    """One proxy question: a rendered prompt whose options are one shuffle of a Question's."""

    example_id: str
    proxy: int  # 0, 1, 2
    prompt: str  # full text, ends with "Answer:"
    options: tuple[str, ...]  # the N_OPTIONS option texts in A..D order
    correct: int  # index of the correct option in `options`
    task: str
    answer_format: AnswerFormat = "letters"  # what the prompt asks for; the answer tokens follow it (nsneurons.answers)
    prompt_format: PromptFormat = "qatt"  # how the prompt was rendered (nsneurons.tasks.formats)

    @property
    def correct_letter(self) -> str:
        return LETTERS[self.correct]


@dataclass(frozen=True)
class TaskSpec:
    """What a prompt says besides the question itself (section 3.3: role and rules)."""

    name: str
    role: str  # e.g. "You are an expert in sentiment analysis."
    instruction: str  # what to decide, e.g. "Choose the sentiment of the review."
    stem_label: str = "Question"  # label in front of the stem
    # False where option texts are long (chunking segmentations) and scoring their words makes no sense.
    word_answers: bool = True
    # The fixed label set the correct option is drawn from (sentiment classes, entity types), or () where
    # each question brings its own options; cloze prompts show one solved example per label.
    labels: tuple[str, ...] = ()


def rules_text(answer_format: AnswerFormat) -> str:
    if answer_format == "letters":
        return "Read the question and the four options, then answer with the letter (A, B, C or D) of the single correct option."
    return "Read the question and the four options, then answer with the text of the single correct option."


def render_block(stem: str, options: Sequence[str], stem_label: str) -> str:
    lines = [f"{stem_label}: {stem}", "Options:"]
    lines += [f"{letter}. {text}" for letter, text in zip(LETTERS, options)]
    return "\n".join(lines)


def answer_text(options: Sequence[str], correct: int, answer_format: AnswerFormat) -> str:
    return LETTERS[correct] if answer_format == "letters" else options[correct]
