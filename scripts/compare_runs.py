"""Compare two run folders: every zarr store identical (xarray.testing.assert_identical, the
`created` timestamps aside) and report.md identical but for its timing lines.

    python scripts/compare_runs.py store/demo-before store/demo

Used to check that a refactoring left a run's outputs unchanged. Variables the new run adds are
listed, not failed (a new diagnostic is not a change of behaviour); a variable or store that went
missing, or any changed value or attribute, fails.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

import xarray as xr

TIMESTAMPS = ("created",)
TIMING = re.compile(r"\b(\d+(\.\d+)? ?(s|seconds|min)|\d{4}-\d\d-\d\dT[\d:+]+)\b")


def _stores(folder: Path) -> list[Path]:
    return sorted(
        p.relative_to(folder)
        for p in folder.rglob("*.zarr")
        if not any(q.suffix == ".zarr" for q in p.relative_to(folder).parents)
    )


def _without_timestamps(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in TIMESTAMPS}
    return ds


def compare_store(old: Path, new: Path) -> list[str]:
    a, b = (_without_timestamps(xr.open_zarr(p, consolidated=None).load()) for p in (old, new))
    added = sorted(set(b.data_vars) - set(a.data_vars))
    try:
        xr.testing.assert_identical(a, b.drop_vars(added))
    except AssertionError as err:
        return [f"{new}: differs: {str(err)[:1500]}"]
    return [f"{new}: identical" + (f" (adds {', '.join(added)})" if added else "")]


def compare_reports(old: Path, new: Path) -> list[str]:
    a, b = ([TIMING.sub("<t>", line) for line in p.read_text().splitlines()] for p in (old, new))
    diff = list(difflib.unified_diff(a, b, str(old), str(new), lineterm="", n=1))
    return [f"{new}: identical (timings aside)"] if not diff else [f"{new}: differs:", *diff[:80]]


def main(old: str, new: str) -> int:
    old_dir, new_dir = Path(old), Path(new)
    lines, ok = [], True
    for rel in _stores(old_dir):
        if not (new_dir / rel).exists():
            lines.append(f"{new_dir / rel}: missing")
            ok = False
            continue
        found = compare_store(old_dir / rel, new_dir / rel)
        ok &= found[0].endswith("identical") or "identical (adds" in found[0]
        lines += found
    for report in sorted(old_dir.glob("*.md")):
        found = compare_reports(report, new_dir / report.name)
        ok &= found[0].endswith("(timings aside)")
        lines += found
    print("\n".join(lines))
    print("SAME" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
