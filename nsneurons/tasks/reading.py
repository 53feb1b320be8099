"""Reading a task's rows: packaged fixtures, local files and Hugging Face hub ids, one code path.

A source is
- None: the task's packaged fixture (nsneurons/tasks/data/<task>.jsonl), hand-written rows in the
  dataset's own schema with a "split" field ("train" = demonstration pool, "test"/"validation" = scored);
- a local .jsonl/.json/.csv file: read with `datasets.load_dataset("json"|"csv", data_files=...)`;
  rows are filtered by a "split" column if the file has one, otherwise the whole file is the split;
- a mapping {split: file}: one file per split, read the same way;
- a local folder or a hub id: `datasets.load_dataset(source, config, split=...)`.
`datasets` is imported only when rows are read (importing this package does no I/O). Every adapter
reads through `read_rows`, NA-ICA's domain QA included; the registry (nsneurons.tasks.loading) names them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .adapter import TaskAdapter
from .base import TaskDataError

DATA_DIR = Path(__file__).parent / "data"
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv"}
SPLIT_COLUMN = "split"

Source = str | os.PathLike | Mapping[str, str | os.PathLike] | None


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
                raise TaskDataError(
                    f"{source}: a script-based dataset is read from the hub's parquet conversion, "
                    f"which has no commit {revision!r}; drop the revision"
                ) from None
            # A script-based hub dataset (datasets >= 4 refuses scripts): the hub's automatic
            # parquet conversion holds the same rows, one folder per config.
            return datasets.load_dataset(
                source, revision="refs/convert/parquet", data_dir=config or "default", split=split, cache_dir=cache_dir
            )
    except Exception as error:
        raise TaskDataError(
            f"{source}: could not load split {split!r} (config {config!r}) from the hub or folder: {error}"
        ) from error


def read_rows(
    adapter: TaskAdapter,
    source: Source = None,
    *,
    split: str,
    config: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
) -> tuple[list[dict], str, bool]:
    """(rows, source label, split_marked): the raw rows of one split of an adapter's data.

    `split_marked` is False only for a single file without a "split" column, whose rows are
    returned whatever split was asked for (the caller must then hold out demonstrations itself).
    """
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
