"""`nsneurons export RUN_DIR`: the good and bad neurons of every method and task as one table a
reader can open anywhere (CSV, JSON or Parquet), with the run's provenance.

One row per selected neuron: (task, selector, role, rank) -> layer, neuron, score, plus the
provenance columns (model, recipe, K, nsneurons version). Ranks a method leaves empty (the bad
role of a good-only method) are not rows. JSON holds {"provenance": {...}, "neurons": [rows]}.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from .vocab import ExportFormat

Format = ExportFormat
FORMATS: tuple[str, ...] = get_args(ExportFormat)
_PROVENANCE = ("model", "recipe", "k", "n_layers", "n_neurons")


def neuron_table(run_dir):
    """The run's selected neurons as a pandas DataFrame (see the module doc)."""
    from .runfolder import RunFolder
    from .version import package_version
    from .zarrio import open_checked

    neurons = open_checked(RunFolder(run_dir).combined("neurons")).load()
    # Only the indexed dims become columns (a run written before 2026-11-30 also carries stray scalar coords).
    frame = neurons[["layer", "neuron", "score"]].reset_coords(drop=True).to_dataframe().reset_index()
    frame = frame[frame["layer"] >= 0].reset_index(drop=True)
    for key in ("task", "selector", "role"):
        frame[key] = frame[key].astype(str)
    provenance = {key: neurons.attrs.get(key) for key in _PROVENANCE} | {"nsneurons_version": package_version()}
    for key, value in provenance.items():
        frame[key] = value
    frame.attrs["provenance"] = provenance
    return frame


def export_run(run_dir, fmt: str = "csv", out=None) -> Path:
    """Write RUN_DIR/neurons.<fmt> (or `out`) whole: written beside, then renamed."""
    if fmt not in FORMATS:
        raise ValueError(f"export format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    frame = neuron_table(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / f"neurons.{fmt}"
    tmp = path.with_name(path.name + ".part")
    if fmt == "csv":
        frame.to_csv(tmp, index=False)
    elif fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    else:
        import json

        rows = frame.drop(columns=list(frame.attrs["provenance"])).to_dict(orient="records")
        tmp.write_text(json.dumps({"provenance": frame.attrs["provenance"], "neurons": rows}, indent=1, default=str))
    tmp.replace(path)
    return path
