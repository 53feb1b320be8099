"""docs/design.md matches the code: every module it lists exists, every name in a module's
"main functions" column is defined there, and every module of the package is listed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def module_rows() -> list[tuple[list[str], list[str]]]:
    """(module paths, names) of each row of the module table."""
    rows = []
    for line in DESIGN.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`nsneurons/"):
            continue
        paths = re.findall(r"`(nsneurons/[\w/]*(?:\.py)?)`", cells[0])
        names = [n for n in re.findall(r"`([A-Za-z_][\w.]*)(?:\(|`)", cells[2])]
        rows.append((paths, names))
    return rows


def defined_names(path: Path) -> set[str]:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    names: set[str] = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.ImportFrom):
                names |= {a.asname or a.name for a in node.names}
    return names


def test_every_listed_module_and_name_exists():
    rows = module_rows()
    assert len(rows) > 20
    missing = []
    for paths, names in rows:
        for p in paths:
            if not (ROOT / p).exists():
                missing.append(f"module {p}")
        known = set().union(*(defined_names(ROOT / p) for p in paths if (ROOT / p).exists()))
        missing += [f"{n} (in {', '.join(paths)})" for n in names if n.split(".")[0] not in known]
    assert not missing, "docs/design.md names what the code does not have: " + "; ".join(missing)


def test_every_module_is_listed():
    listed = {p.rstrip("/") for paths, _ in module_rows() for p in paths}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "nsneurons").glob("*.py") if p.name != "__init__.py"}
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "nsneurons").glob("*/__init__.py")}
    unlisted = sorted(m for m in modules | packages if m not in listed)
    assert not unlisted, f"docs/design.md does not list: {', '.join(unlisted)}"
