"""Malformed inputs, one clear message each (issue 13), continued: data files (read before the model
loads), prompts longer than the model's positions, broken model files, damaged stores and runtime failures.
"""

from __future__ import annotations

import re

import pytest
from bad_input_cases import (
    BASE,
    INPUT,
    RUNTIME,
    broken_model,
    generic_rows,
    jsonl,
    last_line,
    model_dir,  # noqa: F401
    one_error_line,
)

from nsneurons import cli, failures
from nsneurons.recipe import recipe_from_dict

# ---- data files, read before the model loads --------------------------------------------------


def _data_case(tmp_path, name):
    """(recipe dict, message) of one malformed-data case."""
    task = lambda source, **kw: {
        **BASE,
        "identification_examples": 2,
        "tasks": ["ner", {"name": kw.pop("name", "sentiment"), "source": source, **kw}],
    }  # noqa: E731
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
        return task(
            jsonl(tmp_path / "nolabel.jsonl", rows)
        ), r"tasks\[1\] \(sentiment\): .*nolabel.jsonl row 0 .*missing field 'label'"
    if name == "bad label":
        rows = [{"split": s, "text": "fine", "label": 9} for s in ("train", "test", "test")]
        return task(
            jsonl(tmp_path / "label.jsonl", rows)
        ), r"tasks\[1\] \(sentiment\): .*field 'label' is 9; expected an SST-5 label 0..4"
    if name == "too few questions":
        return task(
            jsonl(tmp_path / "few.jsonl", generic_rows(2)), name="generic"
        ), r"tasks\[1\] \(generic\): task 'generic': 2 scored questions, need more than identification_examples=2"
    if name == "no such split":
        return task(
            jsonl(tmp_path / "g.jsonl", generic_rows()), name="generic", scored_split="validation"
        ), r"tasks\[1\] \(generic\): .*g.jsonl: no rows with split == 'validation'; splits present: test, train"
    if name == "bad answer_kind":
        return task(
            jsonl(tmp_path / "g.jsonl", generic_rows()), name="generic", options={"answer_kind": "roman"}
        ), r"tasks\[1\] \(generic\): answer_kind 'roman': expected one of auto, index, letter, text"
    if name == "naica source":
        return {
            **BASE,
            "experiment": "naica",
            "tasks": [],
            "naica": {"source": str(tmp_path / "qa.csv")},
        }, r"naica.source: .*qa.csv"
    raise AssertionError(name)


DATA_CASES = [
    "missing file",
    "wrong suffix",
    "not json",
    "missing field",
    "bad label",
    "too few questions",
    "no such split",
    "bad answer_kind",
    "naica source",
]


@pytest.mark.parametrize("name", DATA_CASES)
def test_bad_data_is_refused_before_the_model_loads(name, tmp_path, capsys):
    """preflight.recipe_prompts reads every task, the second one too, before run_recipe loads the model."""
    from nsneurons import preflight

    data, message = _data_case(tmp_path, name)
    with pytest.raises(ValueError) as caught:
        preflight.recipe_prompts(recipe_from_dict(data))
    code, line = one_error_line(caught.value, capsys)
    assert code == INPUT and re.search(message, line), line


# ---- prompts against the model's positions, before any IG --------------------------------------


@pytest.fixture(scope="module")
def tiny_models():
    """Both with 512 positions: LLaMA (rotary, would run on silently) and GPT-2 (learned, would fail in the trace)."""
    from fixtures_models import tiny_model

    return {kind: tiny_model(kind, layers=2) for kind in ("llama", "gpt2")}


@pytest.mark.parametrize("kind, words", [("llama", 600), ("llama", 50_000), ("gpt2", 600)])
def test_a_prompt_longer_than_the_models_positions_is_refused(kind, words, tmp_path, tiny_models, capsys):
    import time

    from nsneurons import preflight

    data = {
        **BASE,
        "identification_examples": 1,
        "tasks": [{"name": "generic", "source": jsonl(tmp_path / "long.jsonl", generic_rows(4, words))}],
    }
    recipe = recipe_from_dict(data)
    started = time.perf_counter()
    prompts = preflight.recipe_prompts(recipe)
    with pytest.raises(ValueError) as caught:
        preflight.check_prompts(tiny_models[kind], recipe, prompts)
    assert time.perf_counter() - started < 30  # counted, not run: a 50,000-word prompt is refused in seconds
    code, line = one_error_line(caught.value, capsys)
    assert code == INPUT
    assert re.search(
        r"task 'generic', example 'test-q1', proxy \d: the prompt is \d+ tokens \(\d+ words\), more than "
        r"the model's 512 positions \(config max_position_embeddings\)",
        line,
    ), line
    tokens, n_words = (int(n) for n in re.search(r"is (\d+) tokens \((\d+) words\)", line).groups())
    assert tokens > words and n_words > words  # the long question plus the template and the demonstration


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_packaged_prompts_fit(kind, tiny_models):
    """The check refuses only what does not fit: the fixture tasks' prompts pass it (chunking's long option
    lists take more than 512 of the test tokenizer's small pieces)."""
    from nsneurons import preflight

    recipe = recipe_from_dict({**BASE, "tasks": ["sentiment", "ner", "commonsense", "generic"], "identification_examples": 2})
    prompts = preflight.recipe_prompts(recipe)
    preflight.check_prompts(tiny_models[kind], recipe, prompts)
    assert 200 < len(prompts) and 50 < preflight.longest_prompt(tiny_models[kind].tokenizer, prompts)[0] < 512


def test_gpt2_positions_are_read_from_n_positions():
    from transformers import GPT2Config

    from nsneurons.preflight import max_positions

    assert max_positions(GPT2Config(n_positions=64))[0] == 64


def test_an_empty_evaluation_set_is_refused_before_any_ig(capsys):
    from nsneurons import metrics, preflight

    # Every candidate understood, but only not-understood examples asked for: nothing to evaluate.
    with pytest.warns(UserWarning, match="fewer available than requested"):
        sample = metrics.sample_eval_set({"a": True, "b": True}, 0, 3)
    with pytest.raises(ValueError) as caught:
        preflight.check_evaluation_set("sentiment", sample)
    code, line = one_error_line(caught.value, capsys)
    assert code == INPUT and "task 'sentiment': the evaluation set is empty (evaluation set: 0/0 understood and 0/3" in line


MODEL_CASES = [
    "random gguf",
    "empty gguf",
    "truncated gguf",
    "truncated header",
    "truncated data",
    "no weights",
    "no config",
    "bad config",
    "no such path",
]


@pytest.mark.parametrize("kind", MODEL_CASES)
def test_broken_model_files_are_one_clear_error(kind, model_dir, tmp_path, capsys):
    from nsneurons.models import ModelLoadError, load_model

    source, message = broken_model(kind, model_dir, tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        load_model(source, device="cpu")
    code, line = one_error_line(caught.value, capsys)
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
        xr.open_zarr(store, consolidated=False).ig.values  # noqa: B018 - reading is what fails
    code, line = one_error_line(caught.value, capsys)
    assert code == INPUT and f"error: {store}, variable ig: a chunk is damaged (Zstd decompression error" in line, line


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: __import__("torch").cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore"),
            r"out of memory \(OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB more\); lower evaluation.batch_size or attribution.layers_per_pass",
        ),
        (
            lambda: RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"
            ),
            r"out of memory \(RuntimeError: .*\); lower evaluation.batch_size",
        ),
        (
            lambda: __import__("nsneurons.remote", fromlist=["x"]).NsneuronsRemoteError(
                "Traceback ...\nValueError: boom", context="example 'q1' proxy 0"
            ),
            r"^error: example 'q1' proxy 0: NDIF error: ValueError: boom \(--debug shows the server's message\)$",
        ),
        (
            lambda: ConnectionRefusedError(111, "Connection refused"),
            r"could not connect \(NDIF or the hub\): ConnectionRefusedError",
        ),
    ],
)
def test_runtime_failures_are_one_line_with_exit_code_4(make, message, capsys):
    code, line = one_error_line(make(), capsys)
    assert code == RUNTIME and re.search(message, line), line


def test_an_unexpected_error_is_one_line_pointing_at_debug(capsys):
    code, line = one_error_line(TypeError("unsupported operand"), capsys)
    assert code == failures.EXIT_BUG and "unexpected TypeError: unsupported operand (a bug; rerun with --debug" in line


def test_remote_unreachable_through_the_cli(model_dir, tmp_path, monkeypatch, capsys):
    """`score --remote` with no server: the retries run out, then one line and exit 4 (no traceback)."""
    from nsneurons import remote

    monkeypatch.setitem(remote.with_retries.__kwdefaults__, "sleep", lambda seconds: None)
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:9")  # the discard port: nothing listens there
    code = cli.main(
        [
            "score",
            "--model",
            str(model_dir),
            "--remote",
            "--task",
            "sentiment",
            "--examples",
            "1",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "s.zarr"),
        ]
    )
    line = last_line(capsys.readouterr().err)
    assert code == RUNTIME and "NDIF unreachable or busy after 4 tries: ConnectionRefusedError" in line, line


def test_cuda_out_of_memory_through_the_cli(model_dir, tmp_path, monkeypatch, capsys):
    import torch

    import nsneurons.scoring as scoring

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")

    monkeypatch.setattr(scoring, "attribute_proxies", out_of_memory)
    code = cli.main(
        [
            "score",
            "--model",
            str(model_dir),
            "--device",
            "cpu",
            "--task",
            "sentiment",
            "--examples",
            "1",
            "--out",
            str(tmp_path / "s.zarr"),
        ]
    )
    line = last_line(capsys.readouterr().err)
    assert code == RUNTIME and "out of memory" in line and "--layers-per-pass" in line, line
