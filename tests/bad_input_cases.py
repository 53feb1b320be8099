"""Shared by the malformed-input tests: what the CLI prints for an error, small data files, broken models."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from nsneurons import failures

BASE = {"name": "x", "model": "m", "tasks": ["sentiment"]}
INPUT, USAGE, RUNTIME = failures.EXIT_INPUT, failures.EXIT_USAGE, failures.EXIT_RUNTIME


def recipe_with(**changes) -> dict:
    """BASE with dotted keys set: recipe_with(**{"evaluation.understood": 3})."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return data


def one_error_line(err: BaseException, capsys) -> tuple[int, str]:
    """What the CLI prints for `err`: (exit code, the single stderr line), checked to be one `error:` line."""
    capsys.readouterr()
    code = failures.report(err)
    return code, only_line(capsys.readouterr().err)


def only_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def last_line(stderr: str) -> str:
    """For runs that got as far as progress bars: one `error:` line, the last, and no traceback."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], stderr
    return lines[-1]


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def generic_rows(n_test: int = 4, long_words: int = 0) -> list[dict]:
    rows = [
        {
            "split": "train",
            "id": f"t{i}",
            "question": f"Train question {i}?",
            "choices": ["yes", "no", "true", "false"],
            "answer": "A",
        }
        for i in range(2)
    ]
    for i in range(n_test):
        words = " ".join(["movie"] * long_words) if i == 1 and long_words else f"Question {i}"
        rows.append(
            {"split": "test", "id": f"q{i}", "question": words + "?", "choices": ["yes", "no", "true", "false"], "answer": "B"}
        )
    return rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from fixtures_models import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def broken_model(kind: str, model_dir: Path, tmp: Path) -> tuple[str, str]:
    """(model source, message) of one broken model."""
    import shutil

    folder = tmp / kind.replace(" ", "-")
    if kind.endswith("gguf"):
        folder.mkdir()
        content = {"random gguf": os.urandom(4096), "empty gguf": b"", "truncated gguf": b"GGUF\x03\x00\x00\x00\x05"}[kind]
        (folder / "m.gguf").write_bytes(content)
        return str(folder / "m.gguf"), rf"could not load model '{folder}/m.gguf': "
    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    if kind == "truncated header":
        weights.write_bytes(weights.read_bytes()[:1000])
        return str(folder), r"\(weights file model.safetensors damaged or truncated\?\): Error while deserializing header"
    if kind == "truncated data":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return str(folder), r"\(weights file model.safetensors damaged or truncated\?\): .*not fully covered"
    if kind == "no weights":
        weights.unlink()
        return str(folder), r"no file named model.safetensors"
    if kind == "no config":
        (folder / "config.json").unlink()
        return str(folder), r"has no config.json"
    if kind == "bad config":
        (folder / "config.json").write_text("{not json")
        return str(folder), r"config.json' is not a valid JSON file"
    if kind == "no such path":
        return str(tmp / "nowhere"), r"model '.*nowhere': no such file or folder"
    raise AssertionError(kind)
