"""Malformed inputs, one clear message each (issue 13): recipe values, YAML files, CLI values, and the real
command. Every case must be refused (none silently accepted) with exactly one `error:` line naming the key,
file or value, no traceback, and the documented exit code (nsneurons/failures.py). Data files, model files,
stores and runtime failures: test_bad_input_files.py.

Most cases fail at load in milliseconds and run in-process; a handful run the real command in a
subprocess to show the process itself prints one line and exits with the code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_cases import (
    INPUT,
    USAGE,
    broken_model,
    generic_rows,
    jsonl,
    last_line,
    model_dir,  # noqa: F401
    one_error_line,
    only_line,
    recipe_with,
)

from nsneurons import cli
from nsneurons.recipe import RecipeError, load_recipe, recipe_from_dict

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
    ({"tasks": ["sentiment", "domain_qa"]}, r"tasks\[1\].name: 'domain_qa' is NA-ICA's data, not a NeuronLLM task"),
    ({"tasks": ["sentiment", "ner", "Sentiment"]}, r"tasks\[2\].name: task 'Sentiment' is listed twice \(also tasks\[0\]\)"),
    (
        {"tasks": [{"name": "chunking", "options": {"max_tokns": 5}}]},
        r"tasks\[0\].options.max_tokns: unknown option for task 'chunking' \(its options: max_tokens\)",
    ),
    (
        {"tasks": ["sentiment", {"name": "ner", "options": {"max_tokens": 5}}]},
        r"tasks\[1\].options.max_tokens: unknown option for task 'ner' \(its options: none\)",
    ),
    (
        {"tasks": [{"name": "chunking", "options": {"max_tokens": "ten"}}]},
        r"tasks\[0\].options.max_tokens: expected an int >= 1, got 'ten'",
    ),
    (
        {"tasks": [{"name": "chunking", "options": {"max_tokens": 0}}]},
        r"tasks\[0\].options.max_tokens: expected an int >= 1, got 0",
    ),
    (
        {"tasks": [{"name": "generic", "options": {"choices_column": []}}]},
        r"tasks\[0\].options.choices_column: expected a non-empty string or list of strings, got \[\]",
    ),
    (
        {"tasks": [{"name": "generic", "options": {"question_column": 3}}]},
        r"tasks\[0\].options.question_column: expected a non-empty string, got 3",
    ),
    (
        {"tasks": [{"name": "sentiment", "max_questions": 0}]},
        r"tasks\[0\].max_questions: expected an int > identification_examples \(5\).* got 0",
    ),
    (
        {"tasks": [{"name": "sentiment", "max_questions": 5}]},
        r"tasks\[0\].max_questions: expected an int > identification_examples \(5\).* got 5",
    ),
    (
        {"tasks": [{"name": "sentiment", "demo_split": "test"}]},
        r"tasks\[0\].demo_split: demo_split and scored_split are both 'test'",
    ),
    ({"tasks": [{"name": "sentiment", "options": "x"}]}, r"tasks\[0\].options: expected a mapping, got 'x'"),
    ({"tasks": [{"name": "sentiment", "source": ""}]}, r"tasks\[0\].source: expected a non-empty string or null, got ''"),
    ({"tasks": [{"name": "sentiment", "scored_split": " "}]}, r"tasks\[0\].scored_split: expected a non-empty string or null"),
    ({"naica.source": ""}, r"naica.source: expected a non-empty string or null"),
    ({"revision": ""}, r"revision: expected a non-empty string or null"),
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
        recipe_from_dict(recipe_with(**changes))
    code, line = one_error_line(caught.value, capsys)
    assert code == INPUT
    assert re.search(message, line), line


def test_the_base_recipe_and_the_boundaries_are_accepted():
    """The cases above fail for the value they change, not for something else."""
    recipe_from_dict(recipe_with())
    recipe_from_dict(
        recipe_with(
            **{
                "naica.t": 0.0,
                "naica.u": 1.0,
                "evaluation.understood": 0,
                "evaluation.candidates": 1,
                "attribution.layers": [0, 2],
                "attribution.layers_per_pass": 1,
                "seed": 0,
                "tasks": [{"name": "chunking", "options": {"max_tokens": 8}, "max_questions": 6}, "ner"],
            }
        )
    )


# ---- YAML files ------------------------------------------------------------------------------

YAML_CASES = [
    ("name: x\nmodel: m\ntasks: [sentiment]\nname: y\n", r"r.yaml: key 'name' appears twice in one mapping \(lines 1 and 4\)"),
    (
        "name: x\nmodel: m\ntasks: [sentiment]\nevaluation:\n  understood: 3\n  understood: 4\n",
        r"r.yaml: key 'understood' appears twice in one mapping \(lines 5 and 6\)",
    ),
    (
        "name: x\nmodel: m\ntasks: [sentiment]\nevaluation: {understood: 3}\nevaluation: {not_understood: 2}\n",
        r"r.yaml: key 'evaluation' appears twice",
    ),
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
    code, line = one_error_line(caught.value, capsys)
    assert code == INPUT and re.search(message, line), line


def test_a_missing_recipe_file_is_named(tmp_path, capsys):
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "nowhere.yaml")
    assert re.search(r"cannot read recipe .*nowhere.yaml: No such file", one_error_line(caught.value, capsys)[1])


# ---- CLI values ------------------------------------------------------------------------------

CLI_CASES = [
    (
        ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--examples", "-1"],
        USAGE,
        r"argument --examples: expected an int >= 1, got '-1'",
    ),
    (
        ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--examples", "0"],
        USAGE,
        r"argument --examples: expected an int >= 1, got '0'",
    ),
    (
        ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--steps", "0"],
        USAGE,
        r"argument --steps: expected an int >= 1",
    ),
    (
        ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--layers-per-pass", "0"],
        USAGE,
        r"argument --layers-per-pass: expected an int >= 1",
    ),
    (
        ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--layers", "1,1"],
        USAGE,
        r"argument --layers: expected distinct layer numbers >= 0, got '1,1'",
    ),
    (
        ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--layers", "a,b"],
        USAGE,
        r"argument --layers: expected comma-separated ints",
    ),
    (
        ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--target", "magic"],
        USAGE,
        r"argument --target: invalid choice: 'magic'",
    ),
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
    line = only_line(capsys.readouterr().err)
    assert got == code and re.search(message, line), line


def test_a_layer_outside_the_model_is_refused_before_any_ig(model_dir, tmp_path, capsys):
    assert (
        cli.main(
            [
                "score",
                "--model",
                str(model_dir),
                "--device",
                "cpu",
                "--task",
                "sentiment",
                "--layers",
                "0,7",
                "--out",
                str(tmp_path / "s.zarr"),
            ]
        )
        == INPUT
    )
    line = last_line(capsys.readouterr().err)
    assert "layers must be a non-empty selection of 0..1, got [0, 7]" in line and not (tmp_path / "s.zarr").exists()


# ---- the real command in a subprocess: one line on stderr, the exit code, no traceback ----------


def _run_cli(*argv, cwd) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent.parent),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",
        "NSNEURONS_DEBUG": "",
    }
    return subprocess.run(
        [sys.executable, "-m", "nsneurons.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _subprocess_case(name, tmp_path, model_dir):
    """(argv, exit code, message) of one subprocess case."""

    def recipe(**changes):
        path = tmp_path / "r.yaml"  # one case per test: tmp_path is the test's own
        path.write_text(json.dumps({**recipe_with(**changes), "model": str(model_dir), "output": str(tmp_path / "out")}))
        return ["run", str(path)]

    cases = {
        "name ..": lambda: (recipe(name=".."), INPUT, r"r.yaml: name: expected a folder name .* got '\.\.'"),
        "unknown second task": lambda: (
            recipe(tasks=["sentiment", "sentimnet"]),
            INPUT,
            r"r.yaml: tasks\[1\].name: unknown task 'sentimnet'",
        ),
        "candidates -1": lambda: (
            recipe(**{"evaluation.candidates": -1}),
            INPUT,
            r"evaluation.candidates: expected an int >= 1, got -1",
        ),
        "missing recipe": lambda: (["run", str(tmp_path / "none.yaml")], INPUT, r"cannot read recipe .*none.yaml"),
        "examples -1": lambda: (
            ["score", "--model", "m", "--task", "sentiment", "--out", "o.zarr", "--examples", "-1"],
            USAGE,
            r"argument --examples: expected an int >= 1",
        ),
        "unknown task": lambda: (["qatt", "--task", "nonsense"], INPUT, r"unknown task 'nonsense'"),
        "truncated safetensors": lambda: (
            ["info", "--device", "cpu", "--model", broken_model("truncated header", model_dir, tmp_path)[0]],
            INPUT,
            r"weights file model.safetensors damaged or truncated",
        ),
        "random gguf": lambda: (
            ["info", "--model", broken_model("random gguf", model_dir, tmp_path)[0]],
            INPUT,
            r"m.gguf does not start with the GGUF magic",
        ),
        "second task's data missing": lambda: (
            recipe(tasks=["sentiment", {"name": "generic", "source": str(tmp_path / "none.jsonl")}]),
            INPUT,
            r"tasks\[1\] \(generic\): .*none.jsonl: file not found",
        ),
        "prompt too long": lambda: (
            [
                "eval",
                "--device",
                "cpu",
                "--model",
                str(model_dir),
                "--task",
                "generic",
                "--source",
                jsonl(tmp_path / "long.jsonl", generic_rows(4, 2000)),
            ],
            INPUT,
            r"example 'test-q1', proxy \d: the prompt is \d+ tokens .* more than the model's 512 positions",
        ),
    }
    return cases[name]()


SUBPROCESS_CASES = [
    "name ..",
    "unknown second task",
    "candidates -1",
    "missing recipe",
    "examples -1",
    "unknown task",
    "truncated safetensors",
    "random gguf",
    "second task's data missing",
    "prompt too long",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_the_command_prints_one_line_and_exits_with_the_code(name, tmp_path, model_dir):
    argv, code, message = _subprocess_case(name, tmp_path, model_dir)
    done = _run_cli(*argv, cwd=tmp_path)
    line = only_line(done.stderr)
    assert done.returncode == code and re.search(message, line), (done.returncode, done.stderr)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code, meaning in [("2", "usage error"), ("3", "bad input"), ("4", "runtime failure"), ("130", "interrupted")]:
        assert re.search(rf"^  {code}\s+{meaning}", out, re.M), out


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--debug", "qatt", "--task", "nonsense"], ""),
        (["qatt", "--task", "nonsense", "--debug"], ""),
        (["qatt", "--task", "nonsense"], "1"),
    ],
)
def test_debug_shows_the_traceback_then_the_line(argv, env, monkeypatch, capsys):
    monkeypatch.setenv("NSNEURONS_DEBUG", env)
    assert cli.main(argv) == INPUT
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.splitlines()[-1].startswith("error: unknown task 'nonsense'"), err
