"""The recipe's reference, generated from nsneurons/recipe.py itself: every key, its type, default and comment.

Why from the source: the one-line comment beside each field is the documentation (the habit of
the codebase), so docs and `--help` read those comments instead of a second copy that drifts.
A field's comment is the comment on its line, else the comment lines right above it. The source
is read when a reference is asked for, never at import.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
import typing

from . import recipe


def field_comments(cls) -> dict[str, str]:
    """{field name: its comment} of a dataclass declared with one comment per field ('' where none),
    its dataclass bases' fields included (a recipe section may extend a library config)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass.__module__.startswith("nsneurons"):
            out.update(_declared_comments(klass))
    return out


def _declared_comments(cls) -> dict[str, str]:
    """{field name: its comment} of the fields a class statement itself declares."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    out = {}
    declared = typing.cast(ast.ClassDef, ast.parse(source).body[0])  # getsource(cls): the class statement alone
    for node in declared.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        last = node.end_lineno or node.lineno
        trailing = [comments[n] for n in range(node.lineno, last + 1) if n in comments]
        above: list[str] = []
        n = node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        out[node.target.id] = " ".join(trailing or above)
    return out


def _section(tp):
    """The dataclass a field's type holds (itself, a list of it, or optional), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = _section(arg) if arg is not Ellipsis else None
        if found is not None:
            return found
    return None


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    return f"`{json.dumps(value)}`"


def _rows(cls, prefix: str, sections: list) -> list[list[str]]:
    hints, comments = typing.get_type_hints(cls, include_extras=True), field_comments(cls)  # extras: budgets
    rows = []
    for f in dataclasses.fields(cls):
        inner = _section(hints[f.name])
        listed = inner is not None and not dataclasses.is_dataclass(hints[f.name])
        key = f"{prefix}{f.name}{'[]' if listed else ''}"
        if inner is not None:
            sections.append((inner, key + "."))
        kind = "list of mappings" if listed else recipe.type_name(hints[f.name])
        rows.append([f"`{key}`", kind.replace("|", "\\|"), _default(f), comments[f.name]])
    return rows


def recipe_markdown() -> str:
    """The recipe reference as markdown: one table per section (top level, attribution, ...)."""
    parts, sections = [], [(recipe.Recipe, "")]
    while sections:
        cls, prefix = sections.pop(0)
        rows = _rows(cls, prefix, sections)
        title = prefix.rstrip(".") or "top level"
        doc = cls.__doc__ or ""
        doc = "" if doc.startswith(cls.__name__ + "(") else doc  # dataclass writes "Name(fields...)" where none was given
        table = ["| key | type | default | meaning |", "|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows)]
        parts.append("\n".join([f"## {title}", *([inspect.cleandoc(doc), ""] if doc else []), *table]))
    return "\n\n".join(parts) + "\n"
