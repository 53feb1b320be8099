"""Task registry and loading: packaged fixtures, local files and Hugging Face hub ids, one code path.

A source is
- None: the task's packaged fixture (nsneurons/tasks/data/<task>.jsonl), hand-written rows in the
  dataset's own schema with a "split" field ("train" = demonstration pool, "test"/"validation" = scored);
- a local .jsonl/.json/.csv file: read with `datasets.load_dataset("json"|"csv", data_files=...)`;
  rows are filtered by a "split" column if the file has one, otherwise the whole file is the split;
- a mapping {split: file}: one file per split, read the same way;
- a local folder or a hub id: `datasets.load_dataset(source, config, split=...)`.
`datasets` is imported only when rows are loaded (importing this package does no I/O).
"""
from __future__ import annotations

import logging
import os
import random
from collections import Counter
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Union

from . import chunking, commonsense, generic, ner, sentiment
from .adapter import Conversion, TaskAdapter
from .base import Question, TaskDataError, TaskSpec

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv"}
SPLIT_COLUMN = "split"
DEFAULT_DEMO_POOL_SIZE = 8

Source = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]], None]

_ADAPTERS = (ner.ADAPTER, chunking.ADAPTER, sentiment.ADAPTER, commonsense.ADAPTER, generic.ADAPTER)
# Read-only: task name or alias -> adapter.
TASKS: Mapping[str, TaskAdapter] = MappingProxyType(
    {**{a.name: a for a in _ADAPTERS}, **{alias: a for a in _ADAPTERS for alias in a.aliases}}
)


def task_names() -> list[str]:
    """The canonical task names (aliases left out)."""
    return [a.name for a in _ADAPTERS]


def get_task(name: str) -> TaskAdapter:
    try:
        return TASKS[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(task_names())
        aliases = ", ".join(sorted(k for k in TASKS if k not in task_names()))
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


def _datasets():
    import datasets  # heavy import, deferred until rows are read

    return datasets


def _check_file(path: Path) -> str:
    """The `datasets` builder for a local file, or a TaskDataError saying what is wrong with it."""
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise TaskDataError(f"{path}: unsupported file type {path.suffix!r}; expected .jsonl, .json or .csv")
    if not path.is_file():
        raise TaskDataError(f"{path}: file not found")
    return builder


def _read_files(data_files: str | dict[str, str], builder: str, split: str, label: str, cache_dir: str | None):
    try:
        return _datasets().load_dataset(builder, data_files=data_files, split=split, cache_dir=cache_dir)
    except Exception as error:  # datasets wraps parse errors in its own types; name the file instead
        cause = error.__cause__ or error
        raise TaskDataError(f"{label}: could not read it as {builder}: {cause}") from error


def _read_hub(source: str, config: str | None, split: str, cache_dir: str | None, revision: str | None = None):
    datasets = _datasets()
    try:
        try:
            return datasets.load_dataset(source, config, split=split, cache_dir=cache_dir, revision=revision)
        except Exception as error:
            if "scripts are no longer supported" not in str(error):
                raise
            if revision is not None:  # the parquet conversion is its own branch: a pinned commit cannot be honoured
                raise TaskDataError(f"{source}: a script-based dataset is read from the hub's parquet conversion, "
                                    f"which has no commit {revision!r}; drop the revision") from None
            # A script-based hub dataset (datasets >= 4 refuses scripts): the hub's automatic
            # parquet conversion holds the same rows, one folder per config.
            return datasets.load_dataset(
                source, revision="refs/convert/parquet", data_dir=config or "default", split=split, cache_dir=cache_dir
            )
    except Exception as error:
        raise TaskDataError(
            f"{source}: could not load split {split!r} (config {config!r}) from the hub or folder: {error}"
        ) from error


def load_rows(
    name: str,
    source: Source = None,
    *,
    split: str,
    config: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
) -> tuple[list[dict], str, bool]:
    """(rows, source label, split_marked): the raw rows of one split.

    `split_marked` is False only for a single file without a "split" column, whose rows are
    returned whatever split was asked for (the caller must then hold out demonstrations itself).
    """
    adapter = get_task(name)
    if source is None:
        if adapter.fixture is None:
            raise TaskDataError(f"task {adapter.name!r} has no packaged data; give a source")
        source = DATA_DIR / adapter.fixture
    if isinstance(source, Mapping):
        files = {str(s): Path(p) for s, p in source.items()}
        if split not in files:
            raise TaskDataError(f"no file for split {split!r}; files were given for splits {', '.join(files)}")
        builders = {_check_file(p) for p in files.values()}
        if len(builders) != 1:
            raise TaskDataError(f"files for one task must share a format; got {sorted(map(str, files.values()))}")
        label = str(files[split])
        table = _read_files({s: str(p) for s, p in files.items()}, builders.pop(), split, label, cache_dir)
        return [dict(r) for r in table], label, True
    path = Path(source)
    if path.suffix.lower() in FILE_BUILDERS or path.is_file():
        builder, label = _check_file(path), str(path)
        table = _read_files(str(path), builder, "train", label, cache_dir)  # one file loads as split "train"
        if SPLIT_COLUMN not in table.column_names:
            return [dict(r) for r in table], label, False
        rows = [dict(r) for r in table if r[SPLIT_COLUMN] == split]
        if not rows:
            present = sorted(set(table[SPLIT_COLUMN]))
            raise TaskDataError(
                f"{label}: no rows with {SPLIT_COLUMN} == {split!r}; splits present: {', '.join(map(str, present))}"
            )
        return rows, label, True
    if not path.is_dir() and "/" not in str(source):
        raise TaskDataError(f"{source}: not an existing file or folder, nor a hub id of the form owner/name")
    table = _read_hub(str(source), config if config is not None else adapter.hub_config, split, cache_dir, revision)
    return [dict(r) for r in table], f"{source}[{split}]", True


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
    scored_rows, label, split_marked = load_rows(name, source, split=scored_split, config=config, cache_dir=cache_dir,
                                                 revision=revision)
    pool_key = f"{seed}:{adapter.name}:demo-pool"
    if split_marked:
        demo_rows, demo_label, _ = load_rows(name, source, split=demo_split, config=config, cache_dir=cache_dir,
                                             revision=revision)
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
