"""The package's words, typed once: every choice a recipe, a config or a function accepts.

Why one module: the recipe (loaded before torch is imported), the library's configs and the
registries must agree on the same names. Each `Literal` here is the one spelling of its choice;
the registries beside the code (`selection.METHODS`, `targets.TARGETS`) are the lists of what
exists, and tests assert that each Literal and its registry hold the same names. This module
imports nothing but `typing`, so anything (the recipe, the CLI's argument parser) can read it.

Condition names ("neuronllm/degrade/0.5") are built by `condition_name` from a typed
`ConditionKey` and read back by `parse_condition_name`, here and nowhere else.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

# Selection methods: keys of nsneurons.selection.METHODS (same order).
MethodName = Literal["neuronllm", "tn", "qrnca", "tn_enabled", "qrnca_enabled", "kn", "act", "random"]
# Target functions F of Eq. 1: keys of nsneurons.targets.TARGETS (same order).
TargetName = Literal["ace", "qrnca", "tn"]
Direction = Literal["degrade", "enhance"]  # degrader: silence good, excite bad; enhancer: the reverse
Role = Literal["good", "bad"]  # the two halves of a neuron set
AnswerFormat = Literal["letters", "words"]  # answer tokens: option letters (the paper) or option words
# How a question is put to the model: the paper's QATT prompt, QATT inside the model's chat template,
# or cloze (no options listed, solved examples, each option's text scored): nsneurons.tasks.formats.
PromptFormat = Literal["qatt", "chat", "cloze"]
Position = Literal["answer", "all"]  # where neurons are switched: the answer position or every position
Quadrature = Literal["right", "midpoint", "gausslegendre"]  # IG nodes: alpha_k = k/m (the paper), (k - 1/2)/m, or Gauss-Legendre
IGPath = Literal["staircase", "prefix", "full"]  # how IG rows are laid out (nsneurons.attribution)
BestBy = Literal["mean", "rac", "rcc", "per_metric"]  # the rule choosing a table cell's ratio (nsneurons.cells)
Device = Literal["cpu", "cuda", "auto"]  # where a local model runs
DType = Literal["float32", "bfloat16", "float16"]  # model weights and compute dtype
ExportFormat = Literal["csv", "json", "parquet"]  # `nsneurons export` file formats
Backend = Literal["local", "remote"]  # this machine or NDIF
Experiment = Literal["neuronllm", "naica"]  # NeuronLLM and its baselines, or NA-ICA / QRNCA
ConditionKind = Literal["sweep", "ablation"]  # a good:bad ratio of the budget, or one role alone

DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
ROLES: tuple[Role, ...] = get_args(Role)
ANSWER_FORMATS: tuple[AnswerFormat, ...] = get_args(AnswerFormat)
PROMPT_FORMATS: tuple[PromptFormat, ...] = get_args(PromptFormat)
BEST_BY: tuple[BestBy, ...] = get_args(BestBy)
# The words intervention.degrader / enhancer name a condition by default ("tn/degrader" in older runs).
_DIRECTION_WORDS: dict[str, Direction] = {
    "degrade": "degrade",
    "degrader": "degrade",
    "enhance": "enhance",
    "enhancer": "enhance",
}


def choices(literal) -> tuple[str, ...]:
    """The names a Literal allows, in order (e.g. for argparse `choices=`)."""
    return tuple(get_args(literal))


class ConditionKey(NamedTuple):
    """What one intervention answers: a method's neurons switched one way at one ratio (or one role)."""

    kind: ConditionKind
    method: str
    direction: Direction
    where: float | str  # the good:bad ratio (sweep) or the role "good" / "bad" (ablation)
    draw: int = 0  # which draw of a method drawn several times (RANDOM)


def condition_name(key: ConditionKey) -> str:
    """The stored name of a condition: "method[#draw]/direction/where", e.g. "random#2/enhance/1"."""
    tag = key.method if key.draw == 0 else f"{key.method}#{key.draw}"
    where = f"{key.where:g}" if key.kind == "sweep" else key.where
    return f"{tag}/{key.direction}/{where}"


def parse_condition_name(name: str) -> ConditionKey | None:
    """The key a stored condition name was built from (None for "none" or a name of another shape).

    Names written by `intervention.degrader` / `enhancer` ("tn/degrader") parse as sweeps at ratio 1."""
    parts = name.split("/")
    if len(parts) not in (2, 3) or parts[1] not in _DIRECTION_WORDS:
        return None
    method, _, draw = parts[0].partition("#")
    where: float | str = parts[2] if len(parts) == 3 else "1"
    kind: ConditionKind = "ablation" if where in ROLES else "sweep"
    try:
        where = where if kind == "ablation" else float(where)
        return ConditionKey(kind, method, _DIRECTION_WORDS[parts[1]], where, int(draw or 0))
    except ValueError:
        return None
