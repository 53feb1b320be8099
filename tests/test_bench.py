"""The benchmark's CI mode: it runs, prints the table with the expected columns, and nsneurons'
IG equals the paper-style plain-PyTorch IG. Timings are reported, never asserted."""

import importlib
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
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--mode", "ci", "--repeats", "1", "--precision", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_ci_mode_prints_the_table_with_the_expected_columns(ci_run):
    stdout, result = ci_run
    bench = _load_bench()
    header = "| " + " | ".join(bench.COLUMNS) + " |"
    assert header in stdout
    for col in (
        "strategy",
        "s / question",
        "speed-up vs (a)",
        "peak memory",
        "max rel. diff vs (a)",
        "top-100 good overlap",
        "top-100 bad overlap",
    ):
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


# ----------------------------------------------------------------------------- bench/gpu_check.py

GPU_CHECK = ROOT / "bench" / "gpu_check.py"


def _load(name):
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def shrink_run(tmp_path_factory):
    """The GPU check's whole flow on tiny models on the CPU (no wheels: this python's packages)."""
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run(
        [sys.executable, str(GPU_CHECK), "--shrink", "--out", str(out), "--wheels", str(out / "none")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1500,
    )
    assert (out / "gpu_check.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_gpu_check_shrink_runs_every_stage_and_writes_every_section(shrink_run):
    proc, out, result, md = shrink_run
    status = {name: s["status"] for name, s in result["stages"].items()}
    assert status == {"wheels": "skipped", "env": "ok", "tests": "ok", "ig_bench": "ok", "recipe": "ok"}, (
        status,
        proc.stdout[-3000:],
    )
    assert proc.returncode == 0
    # What comes back from the device machine: at most 8 files, no deeper folders.
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    for heading in (
        "## Stages",
        "## Environment",
        "## CUDA tests (device vs CPU)",
        "## IG benchmark",
        "Precision (reference",
        "staircase",
        "vs path=prefix",
        "## Paper-settings recipe, timed",
        "**Table 1:",
    ):
        assert heading in md, heading
    assert "(no result" not in md
    env = result["stages"]["env"]["result"]
    assert env["versions"]["torch"] and env["versions"]["nnsight"] and env["cuda_available"] is False


def test_gpu_check_shrink_numbers_hold(shrink_run):
    _, _, result, _ = shrink_run
    tests = result["stages"]["tests"]
    assert tests["counts"]["passed"] >= 13 and tests["counts"]["failures"] == tests["counts"]["errors"] == 0
    assert any(m.startswith("IG bfloat16 staircase ace") for m in tests["measured"])
    ig = result["stages"]["ig_bench"]["result"]
    rows = {r["name"]: r for r in ig["rows"]}
    # bf16 (b) against bf16 (a): the same numbers up to bf16 rounding order (measured <= 4e-4).
    for name in (
        "(b) nsneurons attribute_proxy (default: path=staircase)",
        "(b2) nsneurons, path=prefix (every row from the embedding on)",
    ):
        assert rows[name]["max_rel_diff_vs_a"] <= 2e-3, name
        assert rows[name]["top100_good_overlap"] >= 0.99 and rows[name]["top100_bad_overlap"] >= 0.99
    precision = {r["name"]: r for r in ig["precision"]["rows"]}
    assert precision["(b) nsneurons, float32"]["max_rel_diff_vs_a"] <= 1e-4
    assert precision["(b) nsneurons, float32"]["top100_good_overlap"] == 1.0
    assert "(b) nsneurons, bfloat16" in ig["precision"]["all_layers_vs_float32_b"]
    rec = result["stages"]["recipe"]["result"]
    # The paper's methods and ratios, each distinct intervention once (nsneurons.conditions): neuronllm,
    # tn_enabled, qrnca_enabled x 11 ratios x 2 directions (good-only / bad-only = ratio 1 / 0); tn, qrnca,
    # kn, act x 2, less tn and qrnca (= the enabled variants' ratio 1: the same K good neurons); RANDOM
    # 5 draws x 2; the baseline.
    assert rec["extrapolation"]["eval_conditions_measured"] == 3 * 11 * 2 + (4 - 2) * 2 + 5 * 2 + 1 == 81
    ig_calls = [c for c in rec["calls"] if c["kind"] == "ig"]
    assert sorted(c["target"] for c in ig_calls) == ["ace", "qrnca", "tn"]
    assert all(c["n_proxies"] == 2 * 3 for c in ig_calls)  # 2 identification examples x 3 proxies


def test_table1_extrapolation_by_hand():
    stages = _load("gpu_stages")
    from nsneurons.recipe import load_recipe

    paper = load_recipe(ROOT / "recipes" / "table1-llama2-7b.yaml")
    measured = stages.timing_recipe(paper, shrink=False, device="cpu", output="unused", task="sentiment")
    calls = [
        {"kind": "ig", "target": "ace", "n_proxies": 15, "seconds": 3.0},  # 0.2 s per proxy
        {"kind": "ig", "target": "qrnca", "n_proxies": 15, "seconds": 6.0},  # 0.4
        {"kind": "option_probs", "n_proxies": 90, "n_conditions": 1, "seconds": 9.0},  # 0.1
        {"kind": "option_probs", "n_proxies": 30, "n_conditions": 209, "seconds": 15.0},  # 0.5
        {"kind": "selection", "method": "neuronllm", "seconds": 2.0},
        {"kind": "report", "seconds": 4.0},
    ]
    x = stages.extrapolate(calls, measured, paper, total_s=40.0)
    assert x["proxies_per_example"] == 3.0  # 15 proxies for tr = 5
    t = x["table1"]["seconds_per_task"]
    assert t["ig"] == pytest.approx(5 * 3 * (0.2 + 0.4))  # 9
    assert t["screen"] == pytest.approx(600 * 3 * 0.1)  # 180
    assert t["evaluation"] == pytest.approx(100 * 3 * 0.5)  # 150
    assert t["selection"] == 2.0 and t["other"] == pytest.approx(40 - 35 - 4)  # units 35 s, report 4 s
    assert x["table1"]["seconds_total"] == pytest.approx(4 * (9 + 180 + 150 + 2 + 1) + 4)


def test_gpu_check_records_a_failed_and_a_timed_out_stage_and_goes_on(tmp_path, monkeypatch):
    check = _load("gpu_check")
    monkeypatch.setitem(check.TIMEOUTS, "env", (2, 2))
    ck = check.Checker(check.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]))
    slow = ck.run("env", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"])
    assert slow["status"] == "timed out" and slow["returncode"] is None and slow["seconds"] < 10
    failed = ck.run("env", [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert failed["status"] == "failed" and failed["returncode"] == 3
    ck.result["stages"] = {"env": failed, "ig_bench": slow}
    ck.save()
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| env | failed |" in md and "| ig_bench | timed out |" in md
    assert "(no result: stage timed out" in md  # the report survives a stage without a result
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text())["stages"]["env"]["returncode"] == 3


def test_staircase_vs_prefix_is_a_tie_where_medians_and_fastest_runs_disagree():
    report = _load("gpu_report")

    def row(median, fastest):
        return {"seconds_per_question": median, "min_seconds_per_question": fastest}

    # The H200's first run: prefix's median lower, staircase's fastest run lower.
    assert report.faster_path(row(0.149, 0.128), row(0.141, 0.131)).startswith("a tie")
    assert report.faster_path(row(0.10, 0.09), row(0.12, 0.11)) == "faster here: staircase (the default)"
    assert report.faster_path(row(0.12, 0.11), row(0.10, 0.09)).startswith("faster here: path=prefix")
