"""Malformed inputs, one clear message each (issue 13): recipes, YAML files, data files, model folders,
stores and CLI values. Every case must be refused (none silently accepted) with exactly one `error:`
line naming the key, file or value, no traceback, and the documented exit code (nsneurons/failures.py).

Most cases fail at load in milliseconds and run in-process; a handful run the real command in a
subprocess to show the process itself prints one line and exits with the code.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nsneurons import cli, failures
from nsneurons.recipe import RecipeError, load_recipe, recipe_from_dict

BASE = {"name": "x", "model": "m", "tasks": ["sentiment"]}
INPUT, USAGE, RUNTIME = failures.EXIT_INPUT, failures.EXIT_USAGE, failures.EXIT_RUNTIME


def _recipe(**changes) -> dict:
    """BASE with dotted keys set: _recipe(**{"evaluation.understood": 3})."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return data


def _one_error_line(err: BaseException, capsys) -> tuple[int, str]:
    """What the CLI prints for `err`: (exit code, the single stderr line), checked to be one `error:` line."""
    capsys.readouterr()
    code = failures.report(err)
    return code, _only_line(capsys.readouterr().err)


def _only_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _last_line(stderr: str) -> str:
    """For runs that got as far as progress bars: one `error:` line, the last, and no traceback."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], stderr
    return lines[-1]


# ---- recipe values: (changes, the message it must match) --------------------------------------

RECIPE_CASES = [
    ({"name": ".."}, r"name: expected a folder name .* got '\.\.'"),
    ({"name": "."}, r"name: expected a folder name .* got '\.'"),
    ({"name": "/tmp/elsewhere"}, r"name: expected a folder name .* got '/tmp/elsewhere'"),
    ({"name": "a/b"}, r"name: .* got 'a/b'"),
    ({"name": "a\\b"}, r"name: .* got 'a\\\\b'"),
    ({"name": ""}, r"name: .* got ''"),
    ({"name": " x"}, r"name: .* got ' x'"),
    ({"name": 7}, r"name: expected a string, got 7"),
    ({"model": ""}, r"model: expected a hub id"),
    ({"output": " "}, r"output: expected a folder"),
    ({"seed": -1}, r"seed: expected an int >= 0, got -1"),
    ({"identification_examples": 0}, r"identification_examples: expected an int >= 1, got 0"),
    ({"identification_examples": 2.5}, r"identification_examples: expected an int, got 2.5"),
    ({"attribution.steps": 0}, r"attribution.steps: expected an int >= 1, got 0"),
    ({"attribution.steps": -3}, r"attribution.steps: expected an int >= 1, got -3"),
    ({"attribution.layers_per_pass": 0}, r"attribution.layers_per_pass: expected an int >= 1, got 0"),
    ({"attribution.layers": []}, r"attribution.layers: expected a non-empty list"),
    ({"attribution.layers": [0, 1, 1]}, r"attribution.layers\[2\]: 1 is listed twice \(also attribution.layers\[1\]\)"),
    ({"attribution.layers": [-1]}, r"attribution.layers\[0\]: expected an int >= 0, got -1"),
    ({"attribution.path": "fast"}, r"attribution.path: expected one of 'staircase', 'prefix', 'full', got 'fast'"),
    ({"selection.k": 0}, r"selection.k: expected an int >= 1, got 0"),
    ({"selection.k": True}, r"selection.k: expected an int, got True"),
    ({"selection.z": -5}, r"selection.z: expected an int >= 1, got -5"),
    ({"selection.kn_threshold": 0}, r"selection.kn_threshold: expected in \(0, 1\], got 0"),
    ({"selection.kn_threshold": 1.5}, r"selection.kn_threshold: expected in \(0, 1\], got 1.5"),
    ({"selection.methods": []}, r"selection.methods: expected a non-empty list"),
    ({"selection.methods": ["tn", "kn", "tn"]}, r"selection.methods\[2\]: 'tn' is listed twice \(also selection.methods\[0\]\)"),
    ({"evaluation.understood": -1}, r"evaluation.understood: expected an int >= 0, got -1"),
    ({"evaluation.not_understood": -2}, r"evaluation.not_understood: expected an int >= 0, got -2"),
    ({"evaluation.understood": 0, "evaluation.not_understood": 0}, r"evaluation: understood \+ not_understood is 0"),
    ({"evaluation.candidates": -1}, r"evaluation.candidates: expected an int >= 1, got -1"),
    ({"evaluation.candidates": 0}, r"evaluation.candidates: expected an int >= 1, got 0"),
    ({"evaluation.ratios": []}, r"evaluation.ratios: expected a non-empty list"),
    ({"evaluation.ratios": [0.5, 0.5]}, r"evaluation.ratios\[1\]: 0.5 is listed twice"),
    ({"evaluation.ratios": [-0.1]}, r"evaluation.ratios\[0\]: expected a ratio in \[0, 1\], got -0.1"),
    ({"evaluation.batch_size": 0}, r"evaluation.batch_size: expected an int >= 1, got 0"),
    ({"evaluation.position": "everywhere"}, r"evaluation.position: expected one of 'answer', 'all'"),
    ({"tasks": []}, r"tasks: expected at least one task"),
    ({"tasks": "sentiment"}, r"tasks: expected a list of a mapping, got 'sentiment'"),
    ({"tasks": [{"source": "x.jsonl"}]}, r"missing required key tasks\[0\].name"),
    ({"tasks": ["sentiment", "nonsense"]}, r"tasks\[1\].name: unknown task 'nonsense'; known tasks: ner, chunking, sentiment"),
    ({"tasks": ["sentiment", "ner", "Sentiment"]}, r"tasks\[2\].name: task 'Sentiment' is listed twice \(also tasks\[0\]\)"),
    ({"tasks": [{"name": "chunking", "options": {"max_tokns": 5}}]},
     r"tasks\[0\].options.max_tokns: unknown option for task 'chunking' \(its options: max_tokens\)"),
    ({"tasks": ["sentiment", {"name": "ner", "options": {"max_tokens": 5}}]},
     r"tasks\[1\].options.max_tokens: unknown option for task 'ner' \(its options: none\)"),
    ({"tasks": [{"name": "chunking", "options": {"max_tokens": "ten"}}]}, r"tasks\[0\].options.max_tokens: expected an int >= 1, got 'ten'"),
    ({"tasks": [{"name": "chunking", "options": {"max_tokens": 0}}]}, r"tasks\[0\].options.max_tokens: expected an int >= 1, got 0"),
    ({"tasks": [{"name": "generic", "options": {"choices_column": []}}]},
     r"tasks\[0\].options.choices_column: expected a non-empty string or list of strings, got \[\]"),
    ({"tasks": [{"name": "generic", "options": {"question_column": 3}}]}, r"tasks\[0\].options.question_column: expected a non-empty string, got 3"),
    ({"tasks": [{"name": "sentiment", "max_questions": 0}]}, r"tasks\[0\].max_questions: expected an int > identification_examples \(5\).* got 0"),
    ({"tasks": [{"name": "sentiment", "max_questions": 5}]}, r"tasks\[0\].max_questions: expected an int > identification_examples \(5\).* got 5"),
    ({"tasks": [{"name": "sentiment", "demo_split": "test"}]}, r"tasks\[0\].demo_split: demo_split and scored_split are both 'test'"),
    ({"tasks": [{"name": "sentiment", "options": "x"}]}, r"tasks\[0\].options: expected a mapping, got 'x'"),
    ({"naica.t": 1.0}, r"naica.t: expected in \[0, 1\), got 1.0"),
    ({"naica.t": -0.1}, r"naica.t: expected in \[0, 1\), got -0.1"),
    ({"naica.u": 0}, r"naica.u: expected in \(0, 1\], got 0"),
    ({"naica.v": 0}, r"naica.v: expected an int >= 1, got 0"),
    ({"naica.steps": 0}, r"naica.steps: expected an int >= 1, got 0"),
    ({"naica.max_per_domain": 0}, r"naica.max_per_domain: expected an int >= 1, got 0"),
    ({"naica.domains": []}, r"naica.domains: expected a non-empty list"),
    ({"naica.domains": ["biology", "biology"]}, r"naica.domains\[1\]: 'biology' is listed twice"),
    ({"naica.held_out_fraction": 1}, r"naica.held_out_fraction: expected in \[0, 1\), got 1"),
    ({"crosstask.k_values": []}, r"crosstask.k_values: expected a non-empty list"),
    ({"crosstask.k_values": [10, 10]}, r"crosstask.k_values\[1\]: 10 is listed twice"),
    ({"crosstask.k_values": [0]}, r"crosstask.k_values\[0\]: expected an int >= 1, got 0"),
    ({"crosstask.methods": ["tn", "tn"]}, r"crosstask.methods\[1\]: 'tn' is listed twice"),
    ({"crosstask.budget_methods": []}, r"crosstask.budget_methods: expected a non-empty list"),
    ({"crosstask.ratio": 2}, r"crosstask.ratio: expected a ratio in \[0, 1\], got 2"),
    ({"experiment": "foo"}, r"experiment: expected one of 'neuronllm', 'naica', got 'foo'"),
    ({"backend": "cloud"}, r"backend: expected one of 'local', 'remote', got 'cloud'"),
    ({"dtype": "float8"}, r"dtype: expected one of 'float32', 'bfloat16', 'float16', got 'float8'"),
    ({"selection_k": 5}, r"unknown key selection_k \(known keys: name, model"),
    ({"model": None}, r"model: expected a string, got None"),
]


@pytest.mark.parametrize("changes, message", RECIPE_CASES, ids=[str(c) for c, _ in RECIPE_CASES])
def test_bad_recipe_values_are_refused_with_the_key(changes, message, capsys):
    with pytest.raises(RecipeError) as caught:
        recipe_from_dict(_recipe(**changes))
    code, line = _one_error_line(caught.value, capsys)
    assert code == INPUT
    assert re.search(message, line), line


def test_the_base_recipe_and_the_boundaries_are_accepted():
    """The cases above fail for the value they change, not for something else."""
    recipe_from_dict(_recipe())
    recipe_from_dict(_recipe(**{"naica.t": 0.0, "naica.u": 1.0, "evaluation.understood": 0, "evaluation.candidates": 1,
                                "attribution.layers": [0, 2], "attribution.layers_per_pass": 1, "seed": 0,
                                "tasks": [{"name": "chunking", "options": {"max_tokens": 8}, "max_questions": 6}, "ner"]}))


# ---- YAML files ------------------------------------------------------------------------------

YAML_CASES = [
    ("name: x\nmodel: m\ntasks: [sentiment]\nname: y\n", r"r.yaml: key 'name' appears twice in one mapping \(lines 1 and 4\)"),
    ("name: x\nmodel: m\ntasks: [sentiment]\nevaluation:\n  understood: 3\n  understood: 4\n",
     r"r.yaml: key 'understood' appears twice in one mapping \(lines 5 and 6\)"),
    ("name: x\nmodel: m\ntasks: [sentiment]\nevaluation: {understood: 3}\nevaluation: {not_understood: 2}\n",
     r"r.yaml: key 'evaluation' appears twice"),
    ("name: x\nmodel: m\ntasks: [sentiment\n", r"r.yaml: not valid YAML"),
    ("- name: x\n- model: m\n", r"r.yaml: expected a mapping of recipe keys at the top level, got list"),
    ("", r"r.yaml: missing required key name"),
    ("name: x\nmodel: m\ntasks: [sentiment]\n1: 2\n", r"r.yaml: unknown key 1"),
    (b"name: x\nmodel: \xff\xfe\n", r"r.yaml: not a text file"),
]


@pytest.mark.parametrize("text, message", YAML_CASES, ids=[f"yaml{i}" for i in range(len(YAML_CASES))])
def test_bad_recipe_files_are_refused_with_the_file(text, message, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    code, line = _one_error_line(caught.value, capsys)
    assert code == INPUT and re.search(message, line), line


def test_a_missing_recipe_file_is_named(tmp_path, capsys):
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "nowhere.yaml")
    assert re.search(r"cannot read recipe .*nowhere.yaml: No such file", _one_error_line(caught.value, capsys)[1])


# ---- data files, read before the model loads --------------------------------------------------

def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _generic_rows(n_test: int = 4, long_words: int = 0) -> list[dict]:
    rows = [{"split": "train", "id": f"t{i}", "question": f"Train question {i}?", "choices": ["yes", "no", "true", "false"],
             "answer": "A"} for i in range(2)]
    for i in range(n_test):
        words = " ".join(["movie"] * long_words) if i == 1 and long_words else f"Question {i}"
        rows.append({"split": "test", "id": f"q{i}", "question": words + "?", "choices": ["yes", "no", "true", "false"], "answer": "B"})
    return rows


def _data_case(tmp_path, name):
    """(recipe dict, message) of one malformed-data case."""
    task = lambda source, **kw: {**BASE, "identification_examples": 2, "tasks": ["ner", {"name": kw.pop("name", "sentiment"), "source": source, **kw}]}  # noqa: E731
    if name == "missing file":
        return task(str(tmp_path / "none.jsonl"), name="generic"), r"tasks\[1\] \(generic\): .*none.jsonl: file not found"
    if name == "wrong suffix":
        (tmp_path / "rows.txt").write_text("x")
        return task(str(tmp_path / "rows.txt")), r"tasks\[1\] \(sentiment\): .*rows.txt: unsupported file type '.txt'"
    if name == "not json":
        (tmp_path / "bad.jsonl").write_text('{"split": "test", "text": \n')
        return task(str(tmp_path / "bad.jsonl")), r"tasks\[1\] \(sentiment\): .*bad.jsonl: could not read it as json"
    if name == "missing field":
        rows = [{"split": s, "text": "fine"} for s in ("train", "test", "test")]
        return task(_jsonl(tmp_path / "nolabel.jsonl", rows)), r"tasks\[1\] \(sentiment\): .*nolabel.jsonl row 0 .*missing field 'label'"
    if name == "bad label":
        rows = [{"split": s, "text": "fine", "label": 9} for s in ("train", "test", "test")]
        return task(_jsonl(tmp_path / "label.jsonl", rows)), r"tasks\[1\] \(sentiment\): .*field 'label' is 9; expected an SST-5 label 0..4"
    if name == "too few questions":
        return task(_jsonl(tmp_path / "few.jsonl", _generic_rows(2)), name="generic"), \
            r"tasks\[1\] \(generic\): task 'generic': 2 scored questions, need more than identification_examples=2"
    if name == "no such split":
        return task(_jsonl(tmp_path / "g.jsonl", _generic_rows()), name="generic", scored_split="validation"), \
            r"tasks\[1\] \(generic\): .*g.jsonl: no rows with split == 'validation'; splits present: test, train"
    if name == "bad answer_kind":
        return task(_jsonl(tmp_path / "g.jsonl", _generic_rows()), name="generic", options={"answer_kind": "roman"}), \
            r"tasks\[1\] \(generic\): answer_kind 'roman': expected one of auto, index, letter, text"
    if name == "naica source":
        return {**BASE, "experiment": "naica", "tasks": [], "naica": {"source": str(tmp_path / "qa.csv")}}, r"naica.source: .*qa.csv"
    raise AssertionError(name)


DATA_CASES = ["missing file", "wrong suffix", "not json", "missing field", "bad label", "too few questions", "no such split",
              "bad answer_kind", "naica source"]


@pytest.mark.parametrize("name", DATA_CASES)
def test_bad_data_is_refused_before_the_model_loads(name, tmp_path, capsys):
    """preflight.recipe_prompts reads every task, the second one too, before run_recipe loads the model."""
    from nsneurons import preflight

    data, message = _data_case(tmp_path, name)
    with pytest.raises(ValueError) as caught:
        preflight.recipe_prompts(recipe_from_dict(data))
    code, line = _one_error_line(caught.value, capsys)
    assert code == INPUT and re.search(message, line), line


# ---- prompts against the model's positions, before any IG --------------------------------------

@pytest.fixture(scope="module")
def tiny_llama_512():
    from fixtures_models import tiny_model

    model = tiny_model("llama", layers=2)
    assert model.hf_model.config.max_position_embeddings == 512
    return model


@pytest.mark.parametrize("words", [600, 50_000])
def test_a_prompt_longer_than_the_models_positions_is_refused(words, tmp_path, tiny_llama_512, capsys):
    import time

    from nsneurons import preflight

    data = {**BASE, "identification_examples": 1, "tasks": [{"name": "generic", "source": _jsonl(tmp_path / "long.jsonl", _generic_rows(4, words))}]}
    recipe = recipe_from_dict(data)
    started = time.perf_counter()
    prompts = preflight.recipe_prompts(recipe)
    with pytest.raises(ValueError) as caught:
        preflight.check_prompts(tiny_llama_512, recipe, prompts)
    assert time.perf_counter() - started < 30  # counted, not run: a 50,000-word prompt is refused in seconds
    code, line = _one_error_line(caught.value, capsys)
    assert code == INPUT
    assert re.search(rf"task 'generic', example 'test-q1', proxy \d: the prompt is \d+ tokens \(\d+ words\), more than "
                     rf"the model's 512 positions \(config max_position_embeddings\)", line), line
    tokens, n_words = (int(n) for n in re.search(r"is (\d+) tokens \((\d+) words\)", line).groups())
    assert tokens > words and n_words > words  # the long question plus the template and the demonstration


def test_gpt2_positions_are_read_from_n_positions():
    from transformers import GPT2Config

    from nsneurons.preflight import max_positions

    assert max_positions(GPT2Config(n_positions=64))[0] == 64


def test_an_empty_evaluation_set_is_refused_before_any_ig(capsys):
    from nsneurons import metrics, preflight

    # Every candidate understood, but only not-understood examples asked for: nothing to evaluate.
    sample = metrics.sample_eval_set({"a": True, "b": True}, 0, 3)
    with pytest.raises(ValueError) as caught:
        preflight.check_evaluation_set("sentiment", sample)
    code, line = _one_error_line(caught.value, capsys)
    assert code == INPUT and "task 'sentiment': the evaluation set is empty (evaluation set: 0/0 understood and 0/3" in line


# ---- model files -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from fixtures_models import llama_style_tokenizer, tiny_hf_model

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = llama_style_tokenizer()
    tiny_hf_model("llama", layers=2, vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _broken_model(kind: str, model_dir: Path, tmp: Path) -> tuple[str, str]:
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


MODEL_CASES = ["random gguf", "empty gguf", "truncated gguf", "truncated header", "truncated data", "no weights", "no config",
               "bad config", "no such path"]


@pytest.mark.parametrize("kind", MODEL_CASES)
def test_broken_model_files_are_one_clear_error(kind, model_dir, tmp_path, capsys):
    from nsneurons.models import ModelLoadError, load_model

    source, message = _broken_model(kind, model_dir, tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        load_model(source, device="cpu")
    code, line = _one_error_line(caught.value, capsys)
    assert code == INPUT and re.search(message, line), line


# ---- stores and runtime failures -------------------------------------------------------------

def test_a_damaged_zstd_chunk_names_the_store_and_variable(tmp_path, capsys):
    import numpy as np
    import xarray as xr

    store = tmp_path / "scores.zarr"
    xr.Dataset({"ig": (("a", "b"), np.arange(2500.0).reshape(50, 50))}).to_zarr(store, mode="w", consolidated=False)
    chunk = next(p for p in (store / "ig").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(RuntimeError, match="Zstd decompression error") as caught:
        xr.open_zarr(store, consolidated=False).ig.values
    code, line = _one_error_line(caught.value, capsys)
    assert code == INPUT and f"error: {store}, variable ig: a chunk is damaged (Zstd decompression error" in line, line


@pytest.mark.parametrize("make, message", [
    (lambda: __import__("torch").cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore"),
     r"out of memory \(OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB more\); lower evaluation.batch_size or attribution.layers_per_pass"),
    (lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"),
     r"out of memory \(RuntimeError: .*\); lower evaluation.batch_size"),
    (lambda: __import__("nsneurons.remote", fromlist=["x"]).NsneuronsRemoteError(
        "Traceback ...\nValueError: boom", context="example 'q1' proxy 0"),
     r"^error: example 'q1' proxy 0: NDIF error: ValueError: boom \(--debug shows the server's message\)$"),
    (lambda: ConnectionRefusedError(111, "Connection refused"), r"could not connect \(NDIF or the hub\): ConnectionRefusedError"),
])
def test_runtime_failures_are_one_line_with_exit_code_4(make, message, capsys):
    code, line = _one_error_line(make(), capsys)
    assert code == RUNTIME and re.search(message, line), line


def test_an_unexpected_error_is_one_line_pointing_at_debug(capsys):
    code, line = _one_error_line(TypeError("unsupported operand"), capsys)
    assert code == failures.EXIT_BUG and "unexpected TypeError: unsupported operand (a bug; rerun with --debug" in line


def test_remote_unreachable_through_the_cli(model_dir, tmp_path, monkeypatch, capsys):
    """`score --remote` with no server: the retries run out, then one line and exit 4 (no traceback)."""
    from nsneurons import remote

    monkeypatch.setitem(remote.with_retries.__kwdefaults__, "sleep", lambda seconds: None)
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:9")  # the discard port: nothing listens there
    code = cli.main(["score", "--model", str(model_dir), "--remote", "--task", "sentiment", "--examples", "1", "--steps", "2",
                     "--out", str(tmp_path / "s.zarr")])
    line = _last_line(capsys.readouterr().err)
    assert code == RUNTIME and "NDIF unreachable or busy after 4 tries: ConnectionRefusedError" in line, line


def test_cuda_out_of_memory_through_the_cli(model_dir, tmp_path, monkeypatch, capsys):
    import torch

    import nsneurons.scoring as scoring

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")

    monkeypatch.setattr(scoring, "attribute_proxies", out_of_memory)
    code = cli.main(["score", "--model", str(model_dir), "--device", "cpu", "--task", "sentiment", "--examples", "1",
                     "--out", str(tmp_path / "s.zarr")])
    line = _last_line(capsys.readouterr().err)
    assert code == RUNTIME and "out of memory" in line and "--layers-per-pass" in line, line


# ---- CLI values ------------------------------------------------------------------------------

CLI_CASES = [
    (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--examples", "-1"], USAGE, r"argument --examples: expected an int >= 1, got '-1'"),
    (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--examples", "0"], USAGE, r"argument --examples: expected an int >= 1, got '0'"),
    (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--steps", "0"], USAGE, r"argument --steps: expected an int >= 1"),
    (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--layers-per-pass", "0"], USAGE, r"argument --layers-per-pass: expected an int >= 1"),
    (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--layers", "1,1"], USAGE, r"argument --layers: expected distinct layer numbers >= 0, got '1,1'"),
    (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--layers", "a,b"], USAGE, r"argument --layers: expected comma-separated ints"),
    (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--target", "magic"], USAGE, r"argument --target: invalid choice: 'magic'"),
    (["score", "--model", "m", "--task", "sentiment"], USAGE, r"the following arguments are required: --out"),
    (["eval", "--model", "m", "--task", "sentiment", "--batch-size", "0"], USAGE, r"argument --batch-size: expected an int >= 1"),
    (["qatt", "--task", "sentiment", "--n", "-1"], USAGE, r"argument --n: expected an int >= 1, got '-1'"),
    (["qatt", "--task", "sentiment", "--seed", "-1"], USAGE, r"argument --seed: expected an int >= 0, got '-1'"),
    (["qatt", "--task", "sentiment", "--n", "ten"], USAGE, r"argument --n: expected an int >= 1, got 'ten'"),
    (["frobnicate"], USAGE, r"argument command: invalid choice: 'frobnicate'"),
    (["qatt", "--task", "nonsense"], INPUT, r"unknown task 'nonsense'; known tasks"),
    (["qatt", "--task", "sentiment", "--source", "/nowhere/rows.jsonl"], INPUT, r"/nowhere/rows.jsonl: file not found"),
]


@pytest.mark.parametrize("argv, code, message", CLI_CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _, _ in CLI_CASES])
def test_bad_cli_values_are_one_line(argv, code, message, capsys):
    try:
        got = cli.main(argv)
    except SystemExit as exit_:  # argparse exits itself
        got = exit_.code
    line = _only_line(capsys.readouterr().err)
    assert got == code and re.search(message, line), line


def test_a_layer_outside_the_model_is_refused_before_any_ig(model_dir, tmp_path, capsys):
    assert cli.main(["score", "--model", str(model_dir), "--device", "cpu", "--task", "sentiment", "--layers", "0,7",
                     "--out", str(tmp_path / "s.zarr")]) == INPUT
    line = _last_line(capsys.readouterr().err)
    assert "layers must be a non-empty selection of 0..1, got [0, 7]" in line and not (tmp_path / "s.zarr").exists()


# ---- the real command in a subprocess: one line on stderr, the exit code, no traceback ----------

def _run_cli(*argv, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
           "TQDM_DISABLE": "1", "NSNEURONS_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "nsneurons.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _subprocess_case(name, tmp_path, model_dir):
    """(argv, exit code, message) of one subprocess case."""
    def recipe(**changes):
        path = tmp_path / "r.yaml"  # one case per test: tmp_path is the test's own
        path.write_text(json.dumps({**_recipe(**changes), "model": str(model_dir), "output": str(tmp_path / "out")}))
        return ["run", str(path)]

    cases = {
        "name ..": lambda: (recipe(name=".."), INPUT, r"r.yaml: name: expected a folder name .* got '\.\.'"),
        "unknown second task": lambda: (recipe(tasks=["sentiment", "sentimnet"]), INPUT, r"r.yaml: tasks\[1\].name: unknown task 'sentimnet'"),
        "candidates -1": lambda: (recipe(**{"evaluation.candidates": -1}), INPUT, r"evaluation.candidates: expected an int >= 1, got -1"),
        "missing recipe": lambda: (["run", str(tmp_path / "none.yaml")], INPUT, r"cannot read recipe .*none.yaml"),
        "examples -1": lambda: (["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--examples", "-1"], USAGE,
                                r"argument --examples: expected an int >= 1"),
        "unknown task": lambda: (["qatt", "--task", "nonsense"], INPUT, r"unknown task 'nonsense'"),
        "truncated safetensors": lambda: (["info", "--device", "cpu", "--model", _broken_model("truncated header", model_dir, tmp_path)[0]],
                                          INPUT, r"weights file model.safetensors damaged or truncated"),
        "random gguf": lambda: (["info", "--model", _broken_model("random gguf", model_dir, tmp_path)[0]], INPUT, r"m.gguf does not start with the GGUF magic"),
        "second task's data missing": lambda: (recipe(tasks=["sentiment", {"name": "generic", "source": str(tmp_path / "none.jsonl")}]),
                                               INPUT, r"tasks\[1\] \(generic\): .*none.jsonl: file not found"),
        "prompt too long": lambda: (["eval", "--device", "cpu", "--model", str(model_dir), "--task", "generic", "--source",
                                     _jsonl(tmp_path / "long.jsonl", _generic_rows(4, 2000))], INPUT,
                                    r"example 'test-q1', proxy \d: the prompt is \d+ tokens .* more than the model's 512 positions"),
    }
    return cases[name]()


SUBPROCESS_CASES = ["name ..", "unknown second task", "candidates -1", "missing recipe", "examples -1", "unknown task",
                    "truncated safetensors", "random gguf", "second task's data missing", "prompt too long"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_the_command_prints_one_line_and_exits_with_the_code(name, tmp_path, model_dir):
    argv, code, message = _subprocess_case(name, tmp_path, model_dir)
    done = _run_cli(*argv, cwd=tmp_path)
    line = _only_line(done.stderr)
    assert done.returncode == code and re.search(message, line), (done.returncode, done.stderr)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code, meaning in [("2", "usage error"), ("3", "bad input"), ("4", "runtime failure"), ("130", "interrupted")]:
        assert re.search(rf"^  {code}\s+{meaning}", out, re.M), out
