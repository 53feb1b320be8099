#!/usr/bin/env python
"""One call on the GPU machine: install the carried wheels, check nsneurons on CUDA, time it.

Stages, each a subprocess with its own timeout inside one overall budget; a stage that fails or
runs out of time is recorded and the next one runs (one scarce GPU call must give as much as it can):

  wheels    pip install --no-index --no-deps the wheels in .gpu-wheels/ into a target folder (no network)
  env       the versions that ran (python, torch, CUDA, GPU, transformers, nnsight, zarr, ...)
  tests     pytest -m cuda tests/test_cuda.py: IG, interventions and a tiny recipe on CUDA in float32
            and bfloat16 against the CPU (and across two GPUs where there are two)
  ig_bench  bench/ig_bench.py --mode gpu: (a) paper-style vs (b) nsneurons on the LLaMA-2-7B shape
            (random init, bfloat16, prompt 300, m = 16), staircase vs path=prefix, the precision section
  recipe    one paper-settings recipe on the 7B shape with a fixture task, timed per stage, and its
            extrapolation to the paper's Table 1 (bench/gpu_stages.py)

Writes OUT/gpu_check.json (rewritten after every stage), OUT/gpu_check.md and OUT/gpu_check.log
(every stage's output); scratch (the recipe's stores) goes to a temporary folder. `--shrink` runs
the same stages on tiny models on the CPU (CUDA tests with the CPU as the device): CI runs it.
This file imports nothing beyond the standard library: it runs before the wheels are installed.

Usage: python bench/gpu_check.py --out DIR [--shrink] [--only ig_bench,recipe] [--budget-s 450]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("wheels", "env", "tests", "ig_bench", "recipe")
# Seconds per stage at most (GPU; --shrink). Sized from bench/RESULTS.md and
# ../shared/notes/performance.md: (a) on 16 of 32 layers ~4 s in bf16 and ~35 s in float32 on an
# H100, the rest of ig_bench ~1 min with the model builds; the recipe's IG is 3 targets x 15
# proxies at ~0.1-0.3 s. The overall budget (--budget-s) cuts whichever stage runs when it ends.
TIMEOUTS = {"wheels": (90, 120), "env": (60, 120), "tests": (150, 400), "ig_bench": (240, 400), "recipe": (180, 400)}
# ig_bench's settings: (a) on every other layer (extrapolated x2; the comparisons use those 16 layers).
IG_BENCH_ARGS = {
    False: ["--repeats", "5", "--repeats-paper", "1", "--paper-layers", "every:2"],
    True: ["--shrink", "--repeats", "1", "--repeats-paper", "1", "--paper-layers", "3", "--prompt-tokens", "48"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and gpu_check.log")
    p.add_argument("--shrink", action="store_true", help="tiny models on the CPU: a dry run of every stage")
    p.add_argument("--only", help="comma list of stages to run (default: all; wheels always): " + ",".join(STAGES))
    p.add_argument("--budget-s", type=float, help="wall-clock budget for all stages (GPU 450 s; --shrink 1500 s)")
    p.add_argument("--wheels", default=str(ROOT / ".gpu-wheels"), help="folder of carried wheels (.gpu-wheels)")
    p.add_argument("--work", help="scratch folder (default: a new temporary folder)")
    args = p.parse_args(argv)
    args.stages = [s for s in (args.only.split(",") if args.only else STAGES)]
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        p.error(f"--only: unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
    if "wheels" not in args.stages:  # each call's scratch is new: later stages need the wheels installed again
        args.stages.insert(0, "wheels")
    if args.budget_s is None:
        args.budget_s = 1500.0 if args.shrink else 450.0
    return args


class Checker:
    """Runs the stages, keeps the log and the JSON up to date after each."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check."))
        self.work.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "gpu_check.log"
        self.log_path.write_text("")
        self.t0 = time.monotonic()
        self.last_stdout = ""
        # The GPU machine reaches no network: nothing may wait on the hub (task files are local).
        self.env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            MPLBACKEND="Agg",
        )
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self.result = {
            "started": _now(),
            "shrink": args.shrink,
            "budget_s": args.budget_s,
            "stages": {},
            "command": " ".join(["python bench/gpu_check.py"] + sys.argv[1:]),
        }

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def say(self, text: str) -> None:
        print(text, flush=True)
        with self.log_path.open("a") as f:
            f.write(text + "\n")

    def run(self, name: str, cmd: list[str], env: dict | None = None) -> dict:
        """Run one stage's command under min(its timeout, the budget left); record its outcome."""
        limit = min(TIMEOUTS[name][self.args.shrink], max(self.left(), 0))
        record = {"command": " ".join(cmd), "timeout_s": round(limit, 1)}
        if limit < 1:
            record.update(status="skipped", reason="the overall budget was spent")
            return record
        self.say(f"== {name} ({_now()}, up to {limit:.0f} s): {' '.join(cmd)}")
        start = time.monotonic()
        with self.log_path.open("a") as log:
            try:
                proc = subprocess.run(
                    cmd, cwd=ROOT, env=env or self.env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=limit
                )
                stdout, rc = proc.stdout, proc.returncode
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired as err:
                stdout = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
                rc, status = None, "timed out"
            log.write(stdout)
        self.last_stdout = stdout
        record.update(status=status, returncode=rc, seconds=round(time.monotonic() - start, 1), stdout_tail=stdout[-4000:])
        self.say(f"== {name}: {status} in {record['seconds']} s")
        return record

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.result["finished"] = _now()
        (self.out / "gpu_check.json").write_text(json.dumps(self.result, indent=2, default=str))
        from gpu_report import markdown  # stdlib-only, beside this file

        (self.out / "gpu_check.md").write_text(markdown(self.result))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def stage_wheels(ck: Checker) -> dict:
    wheels = sorted(Path(ck.args.wheels).glob("*.whl"))
    if not wheels:
        return {"status": "skipped", "reason": f"no wheels in {ck.args.wheels} (this python's own packages are used)"}
    site = ck.work / "site"
    rec = ck.run(
        "wheels",
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(site),
        ]
        + [str(w) for w in wheels],
    )
    rec["wheels"] = [w.name for w in wheels]
    rec["bytes"] = sum(w.stat().st_size for w in wheels)
    if rec["status"] == "ok":  # every later stage imports from there first
        ck.env["PYTHONPATH"] = os.pathsep.join([str(site), ck.env["PYTHONPATH"]])
    return rec


def stage_json(ck: Checker, name: str, cmd: list[str], json_path: Path, env: dict | None = None) -> dict:
    rec = ck.run(name, cmd, env)
    if json_path.is_file():
        try:
            rec["result"] = json.loads(json_path.read_text())
        except json.JSONDecodeError as err:
            rec["result_error"] = f"{json_path.name}: {err}"
    return rec


def stage_tests(ck: Checker) -> dict:
    env = dict(ck.env)
    if ck.args.shrink:
        env["NSNEURONS_TEST_DEVICE"] = "cpu"  # the CPU stands in for the device: the same comparisons
    junit = ck.work / "cuda_tests.xml"
    rec = ck.run(
        "tests",
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_cuda.py",
            "-m",
            "cuda",
            "-q",
            "-s",
            "-rA",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
        ],
        env,
    )
    rec["counts"] = _junit_counts(junit)
    # The tests print what they measured ("IG bfloat16 staircase ace: max rel diff ...").
    rec["measured"] = [
        re.sub(r"^[.sFE]+", "", line.strip())
        for line in ck.last_stdout.splitlines()
        if re.match(r"^[.sFE]*(IG|option probs|tiny recipe) ", line.strip())
    ]
    return rec


def _junit_counts(path: Path) -> dict | None:
    if not path.is_file():
        return None
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_names"] = [
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def main(argv=None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    ck = Checker(args)
    py = sys.executable
    ck.say(f"gpu_check: stages {','.join(args.stages)}; budget {args.budget_s:.0f} s; out {ck.out}; scratch {ck.work}")
    for name in args.stages:
        if name == "wheels":
            rec = stage_wheels(ck)
        elif name == "env":
            rec = stage_json(
                ck, "env", [py, "bench/gpu_stages.py", "env", "--json", str(ck.work / "env.json")], ck.work / "env.json"
            )
        elif name == "tests":
            rec = stage_tests(ck)
        elif name == "ig_bench":
            path = ck.work / "ig_bench.json"
            rec = stage_json(
                ck, "ig_bench", [py, "bench/ig_bench.py", "--mode", "gpu", "--json", str(path)] + IG_BENCH_ARGS[args.shrink], path
            )
        else:
            path = ck.work / "recipe.json"
            rec = stage_json(
                ck,
                "recipe",
                [py, "bench/gpu_stages.py", "recipe", "--json", str(path), "--work", str(ck.work / "recipe")]
                + (["--shrink"] if args.shrink else []),
                path,
            )
        ck.result["stages"][name] = rec
        ck.save()
    ck.say((ck.out / "gpu_check.md").read_text())
    return ck.result


if __name__ == "__main__":
    result = main()
    sys.exit(0 if all(s.get("status") in ("ok", "skipped") for s in result["stages"].values()) else 1)
