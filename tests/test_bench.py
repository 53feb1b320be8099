"""The benchmark's CI mode: it runs, prints the table with the expected columns, and nsneurons'
IG equals the paper-style plain-PyTorch IG. Timings are reported, never asserted."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "ig_bench.py"

pytestmark = pytest.mark.slow


def _load_bench():
    spec = importlib.util.spec_from_file_location("ig_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ig_bench"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| (") and line.endswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ci.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--mode", "ci", "--repeats", "1", "--precision", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_ci_mode_prints_the_table_with_the_expected_columns(ci_run):
    stdout, result = ci_run
    bench = _load_bench()
    header = "| " + " | ".join(bench.COLUMNS) + " |"
    assert header in stdout
    for col in ("strategy", "s / question", "speed-up vs (a)", "peak memory", "max rel. diff vs (a)",
                "top-100 good overlap", "top-100 bad overlap"):
        assert any(c.startswith(col) for c in bench.COLUMNS), col
    rows = _table_rows(stdout)
    names = [name for name in rows if name.startswith(("(a) paper-style plain", "(b) nsneurons attribute_proxy"))]
    assert len(names) == 2, list(rows)
    for cells in rows.values():
        assert len(cells) == len(bench.COLUMNS)
        assert re.match(r"^\d+\.\d+", cells[1])  # seconds, a number (its value is not checked)
    assert re.search(r"\(a\)/\(b\) = \d+(\.\d+)?x", stdout)
    assert result["columns"] == bench.COLUMNS
    assert result["mode"] == "ci" and result["steps"] == 16


def test_nsneurons_equals_paper_style_within_1e_4(ci_run):
    _, result = ci_run
    by_name = {r["name"]: r for r in result["rows"]}
    b = by_name["(b) nsneurons attribute_proxy (default: path=staircase)"]
    assert b["max_rel_diff_vs_a"] <= 1e-4
    assert b["top100_good_overlap"] == 1.0 and b["top100_bad_overlap"] == 1.0
    # Every faster form (nnsight variants and plain-PyTorch limits) computes the same numbers.
    for row in result["rows"]:
        assert row["max_rel_diff_vs_a"] <= 1e-4, row["name"]
    # The precision section ran: float32 (b) against float32 (a) on the bf16-rounded weights.
    p = result["precision"]
    f32 = {r["name"]: r for r in p["rows"]}["(b) nsneurons, float32"]
    assert f32["max_rel_diff_vs_a"] <= 1e-4


def test_metrics_by_hand():
    import numpy as np

    bench = _load_bench()
    ref = np.arange(300, dtype=np.float32).reshape(3, 100)
    assert bench.max_rel_diff(ref, ref) == 0.0
    shifted = ref.copy()
    shifted[0, 0] += 2.99  # 2.99 / 299
    assert bench.max_rel_diff(shifted, ref) == pytest.approx(0.01, rel=1e-3)
    good, bad = bench.top_overlap(ref, ref)
    assert (good, bad) == (1.0, 1.0)
    swapped = ref.copy()
    swapped[2, 99], swapped[0, 0] = swapped[0, 0], swapped[2, 99]  # highest and lowest trade places
    good, bad = bench.top_overlap(swapped, ref)
    assert good == 0.99 and bad == 0.99
