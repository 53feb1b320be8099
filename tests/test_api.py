"""The short public API (nsneurons/api.py) gives the stage modules' numbers, and the README's
Python section runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nsneurons as ns
from nsneurons import metrics, selection
from nsneurons.intervention import BASELINE, correct_table, degrader, option_probs
from nsneurons.store import example_scores
from tests.fixtures_models import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_proxies_are_three_per_question_and_skip_gives_disjoint_examples():
    first = ns.proxies("sentiment", n=2)
    rest = ns.proxies("sentiment", n=3, skip=2)
    assert len(first) == 6 and len(rest) == 9
    assert {p.example_id for p in first}.isdisjoint({p.example_id for p in rest})
    with pytest.raises(ValueError, match="no questions"):
        ns.proxies("sentiment", n=1, skip=10_000)


def test_the_loop_on_a_tiny_model_equals_the_stage_modules(tmp_path):
    model = tiny_model(layers=2)
    train = ns.proxies("sentiment", n=2)
    scores = ns.score(model, train, tmp_path / "s.zarr", steps=4)
    neurons = ns.select("neuronllm", scores, k=6)
    direct = selection.select("neuronllm", k=6, scores={"ace": example_scores(scores).load()})
    xr.testing.assert_identical(neurons, direct)
    # the old keyword form (ES arrays by target) still works
    xr.testing.assert_identical(ns.select("neuronllm", scores={"ace": example_scores(scores).load()}, k=6), direct)

    condition = ns.degrade(neurons, ratio=0.5, k=4)  # 2 good silenced, 2 bad excited
    good, bad = selection.ratio_split(neurons, 4, 0.5)
    assert len(good) == 2 and len(bad) == 2
    assert condition.silence == tuple(good) and condition.excite == tuple(bad)

    held_out = ns.proxies("sentiment", n=4, skip=2)
    result = ns.evaluate(model, held_out, condition)
    correct = correct_table(option_probs(model, held_out, [BASELINE, degrader(good, bad)]))
    acc = [metrics.accuracy(correct.isel(condition=i)) for i in range(2)]
    com = [metrics.comprehension(correct.isel(condition=i)) for i in range(2)]
    assert list(result.condition.values) == ["none", condition.name]
    np.testing.assert_allclose(result.acc.values, 100 * np.array(acc))
    np.testing.assert_allclose(result.com.values, 100 * np.array(com))
    expected_rac = abs(acc[0] - acc[1]) / acc[0] * 100 if acc[0] else np.nan
    np.testing.assert_allclose(result.rac.values, [0.0 if acc[0] else np.nan, expected_rac])
    np.testing.assert_allclose(result.acc_change.values, [0.0, (acc[1] - acc[0]) * 100])


def readme_python_section() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_section_shows_the_loop_in_a_dozen_lines():
    code = readme_python_section()
    lines = [line for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) <= 12, code
    for step in ("ns.proxies(", "ns.score(", "ns.select(", "ns.enhance(", "ns.degrade(", "ns.evaluate("):
        assert step in code


@pytest.mark.slow
@pytest.mark.demo
def test_readme_python_section_runs(tmp_path):
    """Runs the README's Python section as written, on the demo model (a minute or two on 2 cores)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", readme_python_section()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "none" in done.stdout and "rac" in done.stdout, done.stdout
