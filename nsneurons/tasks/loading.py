"""Task registry and loading: each adapter's rows (read by nsneurons.tasks.reading) become questions.

Sources are those of `reading.read_rows`: None (the packaged fixture), a local file, a mapping
{split: file}, a local folder or a hub id.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..vocab import Experiment
from . import chunking, commonsense, domain_qa, generic, ner, sentiment
from .adapter import Conversion, TaskAdapter
from .base import Question, TaskDataError, TaskSpec
from .reading import DATA_DIR, FILE_BUILDERS, SPLIT_COLUMN, Source, read_rows  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

DEFAULT_DEMO_POOL_SIZE = 8

# NeuronLLM's tasks, then NA-ICA's domain QA (its own zero-shot proxies; not a task of `tasks:`).
_ADAPTERS = (ner.ADAPTER, chunking.ADAPTER, sentiment.ADAPTER, commonsense.ADAPTER, generic.ADAPTER, domain_qa.ADAPTER)
# Read-only: task name or alias -> adapter.
TASKS: Mapping[str, TaskAdapter] = MappingProxyType(
    {**{a.name: a for a in _ADAPTERS}, **{alias: a for a in _ADAPTERS for alias in a.aliases}}
)


def task_names(experiment: Experiment = "neuronllm") -> list[str]:
    """The canonical names (aliases left out) of the tasks of an experiment (NeuronLLM's by default)."""
    return [a.name for a in _ADAPTERS if a.experiment == experiment]


def get_task(name: str) -> TaskAdapter:
    try:
        return TASKS[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(task_names())
        aliases = ", ".join(sorted(k for k, a in TASKS.items() if k != a.name))
        raise TaskDataError(f"unknown task {name!r}; known tasks: {known} (aliases: {aliases})") from None


def task_spec(name: str, **overrides: Any) -> TaskSpec:
    """The task's TaskSpec; the generic task takes role=, instruction=, stem_label= overrides."""
    adapter = get_task(name)
    if adapter.name == generic.TASK:
        return generic.generic_spec(**overrides)
    if overrides:
        raise TaskDataError(f"task {adapter.name!r} takes no spec overrides (got {sorted(overrides)})")
    return adapter.spec


# ---- reading rows ----------------------------------------------------------------------------


def load_rows(
    name: str,
    source: Source = None,
    *,
    split: str,
    config: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
) -> tuple[list[dict], str, bool]:
    """(rows, source label, split_marked) of one split of a registered task (see `reading.read_rows`)."""
    return read_rows(get_task(name), source, split=split, config=config, cache_dir=cache_dir, revision=revision)


# ---- rows to questions -----------------------------------------------------------------------


def _convert(adapter: TaskAdapter, rows: list[dict], *, seed: int, split: str, label: str, options: dict) -> list[Question]:
    conversion: Conversion = adapter.convert(rows, seed=seed, split=split, source=label, **options)
    if conversion.skipped:
        reasons = Counter(s.reason for s in conversion.skipped)
        log.info("%s: skipped %d row(s): %s", label, len(conversion.skipped), dict(reasons))
    return conversion.questions


def _sample(items: list, size: int | None, key: str) -> list:
    """`size` items chosen by `key`, kept in their original order (all of them if size is None or larger)."""
    if size is None or len(items) <= size:
        return list(items)
    picked = sorted(random.Random(key).sample(range(len(items)), size))
    return [items[i] for i in picked]


def load_task(
    name: str,
    source: Source = None,
    *,
    split: str,
    seed: int,
    config: str | None = None,
    max_questions: int | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    **options: Any,
) -> list[Question]:
    """The questions of one split. `options` go to the adapter (e.g. max_tokens=, question_column=)."""
    adapter = get_task(name)
    rows, label, _ = load_rows(name, source, split=split, config=config, cache_dir=cache_dir, revision=revision)
    questions = _convert(adapter, rows, seed=seed, split=split, label=label, options=options)
    return _sample(questions, max_questions, f"{seed}:{adapter.name}:{split}:questions")


def task_questions(
    name: str,
    source: Source = None,
    seed: int = 0,
    *,
    demo_split: str | None = None,
    scored_split: str | None = None,
    demo_pool_size: int | None = DEFAULT_DEMO_POOL_SIZE,
    max_questions: int | None = None,
    config: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    **options: Any,
) -> tuple[list[Question], list[Question]]:
    """(demo_pool, questions): demonstration candidates and the scored questions, never overlapping.

    Demonstrations come from `demo_split` (default: the task's, "train"); for a single file
    without a "split" column, `demo_pool_size` rows of it are held out (seeded) instead.
    At most `demo_pool_size` demonstration rows are converted (the hub's train splits are large).
    """
    adapter = get_task(name)
    demo_split = demo_split or adapter.demo_split
    scored_split = scored_split or adapter.scored_split
    if demo_split == scored_split:
        raise TaskDataError(f"demo_split and scored_split are both {demo_split!r}; demonstrations must never be scored")
    scored_rows, label, split_marked = load_rows(
        name, source, split=scored_split, config=config, cache_dir=cache_dir, revision=revision
    )
    pool_key = f"{seed}:{adapter.name}:demo-pool"
    if split_marked:
        demo_rows, demo_label, _ = load_rows(
            name, source, split=demo_split, config=config, cache_dir=cache_dir, revision=revision
        )
        demo_rows = _sample(demo_rows, demo_pool_size, pool_key)
    else:
        held_out = set(_sample(list(range(len(scored_rows))), demo_pool_size or DEFAULT_DEMO_POOL_SIZE, pool_key))
        if len(held_out) >= len(scored_rows):
            raise TaskDataError(f"{label}: {len(scored_rows)} rows are too few to hold out {len(held_out)} demonstrations")
        demo_rows = [r for i, r in enumerate(scored_rows) if i in held_out]
        scored_rows = [r for i, r in enumerate(scored_rows) if i not in held_out]
        demo_label = f"{label} (held-out demonstrations)"
    demo_pool = _convert(adapter, demo_rows, seed=seed, split=demo_split, label=demo_label, options=options)
    questions = _convert(adapter, scored_rows, seed=seed, split=scored_split, label=label, options=options)
    questions = _sample(questions, max_questions, f"{seed}:{adapter.name}:{scored_split}:questions")
    overlap = {q.example_id for q in demo_pool} & {q.example_id for q in questions}
    if overlap:
        raise TaskDataError(f"{label}: demonstration and scored questions share ids {sorted(overlap)[:5]}")
    return demo_pool, questions
