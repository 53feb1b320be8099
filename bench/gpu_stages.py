#!/usr/bin/env python
"""The stages of bench/gpu_check.py that import torch and nsneurons.

  env     the versions that ran and the device: python gpu_stages.py env --json env.json
  recipe  one paper-settings recipe (recipes/table1-llama2-7b.yaml) on a random-init LLaMA-2-7B
          shape in bfloat16 on CUDA with one fixture task, fewer candidates and evaluation examples
          (the paper's m, tr, z, K, methods, 11 ratios and ablation kept, so each unit of work is
          the paper's), timed per stage, then the time of Table 1 on this GPU extrapolated from the
          measured per-unit times: python gpu_stages.py recipe --json recipe.json --work DIR [--shrink]

Random weights: the recipe's numbers are a timing, not a finding (the tokenizer is the tests'
offline one, so prompts are not LLaMA's token counts either: the mean is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as metadata
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

PACKAGES = (
    "torch",
    "transformers",
    "nnsight",
    "accelerate",
    "numpy",
    "xarray",
    "zarr",
    "numcodecs",
    "datasets",
    "pyarrow",
    "pandas",
    "gguf",
    "pydantic",
    "greenlet",
    "huggingface-hub",
    "tokenizers",
    "safetensors",
    "matplotlib",
    "pytest",
    "triton",
)
PAPER_RECIPE = ROOT / "recipes" / "table1-llama2-7b.yaml"


def env_info() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "versions": {},
        "imported_from": {},
    }
    for name in PACKAGES:
        try:
            info["versions"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["versions"][name] = None
    for name in ("torch", "transformers", "nnsight", "zarr", "nsneurons"):
        try:
            info["imported_from"][name] = str(Path(__import__(name).__file__).parent)
        except ImportError as err:
            info["imported_from"][name] = f"import failed: {err}"
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    info["device_count"] = torch.cuda.device_count()
    info["devices"] = [
        {
            "name": torch.cuda.get_device_name(i),
            "capability": list(torch.cuda.get_device_capability(i)),
            "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
        }
        for i in range(torch.cuda.device_count())
    ]
    info["tf32_matmul_default"] = torch.backends.cuda.matmul.allow_tf32
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        info["nvidia_smi"] = f"not available: {err}"
    return info


# ----------------------------------------------------------------------------- recipe timing


@contextlib.contextmanager
def timed_stages(calls: list, tokenizer):
    """Time the pipeline's units of work as run_recipe calls them: IG (score_proxies), option
    probabilities (the screen: 1 condition; the evaluation: every condition), selection, report."""
    import nsneurons.evaluation_set as evaluation_set
    import nsneurons.report as report
    import nsneurons.runners.neuronllm as pipeline
    import nsneurons.selection as selection

    def wrap(module, name, kind, describe):
        original = getattr(module, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = original(*args, **kwargs)
            _sync()
            calls.append({"kind": kind, "seconds": time.perf_counter() - start, **describe(args, kwargs)})
            return out

        return module, name, original, timed

    def probs(args, kwargs):
        return {"n_proxies": len(args[1]), "n_conditions": len(args[2])}

    def tokens(proxies):
        return [len(tokenizer(p.prompt)["input_ids"]) for p in proxies]

    patches = [
        wrap(
            pipeline,
            "score_proxies",
            "ig",
            lambda a, k: {"target": a[2].target, "n_proxies": len(a[1]), "prompt_tokens": tokens(a[1])},
        ),
        wrap(pipeline, "option_probs", "option_probs", probs),
        wrap(evaluation_set, "option_probs", "option_probs", probs),  # the screen calls it from its own module
        wrap(selection, "select", "selection", lambda a, k: {"method": a[0]}),
        wrap(report, "write_report", "report", lambda a, k: {}),
    ]
    for module, name, _, timed in patches:
        setattr(module, name, timed)
    try:
        yield calls
    finally:
        for module, name, original, _ in patches:
            setattr(module, name, original)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timing_recipe(paper, *, shrink: bool, device: str, output: str, task: str):
    """The paper's recipe on one fixture task with fewer candidates and evaluation examples."""
    from nsneurons.recipe import recipe_from_dict

    data = paper.to_dict()
    data.update(
        name="gpu-check-recipe",
        model="in-memory random-init model",
        device=device,
        output=output,
        tasks=[{"name": task}],
        dtype="float32" if shrink else "bfloat16",
        description="bench/gpu_check.py timing",
    )
    # 30 candidates screened for 5 + 5 evaluation examples; the conditions per example stay the paper's.
    data["evaluation"] = dict(
        data["evaluation"], candidates=12 if shrink else 30, understood=2 if shrink else 5, not_understood=2 if shrink else 5
    )
    if shrink:  # two identification examples: the flow, in seconds
        data["identification_examples"] = 2
    return recipe_from_dict(data)


def extrapolate(calls: list, measured, paper, total_s: float) -> dict:
    """Table 1's time on this device from the measured per-unit times (one task measured)."""
    ig = [c for c in calls if c["kind"] == "ig"]
    screen = [c for c in calls if c["kind"] == "option_probs" and c["n_conditions"] == 1]
    evals = [c for c in calls if c["kind"] == "option_probs" and c["n_conditions"] > 1]
    per_proxy = {c["target"]: c["seconds"] / c["n_proxies"] for c in ig}
    proxies_per_example = ig[0]["n_proxies"] / measured.identification_examples
    s_screen = sum(c["seconds"] for c in screen) / max(1, sum(c["n_proxies"] for c in screen))
    n_eval = sum(c["n_proxies"] for c in evals)
    s_eval = sum(c["seconds"] for c in evals) / n_eval if n_eval else None
    selection_s = sum(c["seconds"] for c in calls if c["kind"] == "selection")
    report_s = sum(c["seconds"] for c in calls if c["kind"] == "report")
    measured_units = sum(c["seconds"] for c in calls if c["kind"] != "report")
    other_s = max(0.0, total_s - measured_units - report_s)  # task set-up, stores, metrics
    ev = paper.evaluation
    per_task = {
        "ig": paper.identification_examples * proxies_per_example * sum(per_proxy.values()),
        "screen": (ev.candidates or 0) * proxies_per_example * s_screen,
        "evaluation": (ev.understood + ev.not_understood) * proxies_per_example * (s_eval or 0.0),
        "selection": selection_s,
        "other": other_s,
    }
    n_tasks = len(paper.tasks)
    total = n_tasks * sum(per_task.values()) + report_s
    return {
        "seconds_per_proxy_ig": per_proxy,
        "proxies_per_example": proxies_per_example,
        "seconds_per_screen_proxy": s_screen,
        "seconds_per_eval_proxy": s_eval,
        "eval_conditions_measured": evals[0]["n_conditions"] if evals else None,
        "selection_s_per_task": selection_s,
        "report_s": report_s,
        "other_s_per_task": other_s,
        "table1": {
            "tasks": n_tasks,
            "identification_examples": paper.identification_examples,
            "candidates": ev.candidates,
            "evaluation_examples": ev.understood + ev.not_understood,
            "ratios": len(ev.ratios),
            "methods": list(paper.selection.methods),
            "seconds_per_task": per_task,
            "seconds_total": total,
            "hours_total": total / 3600,
        },
    }


def warm_up(recipe, model) -> float:
    """One untimed IG call and one evaluation call on the task's first proxy, so that the timed
    recipe does not pay CUDA's one-time costs (context, cuBLAS handles, the allocator's first
    blocks) inside its first unit. (What IG `ace` still paid after this warm-up on the H200, 1.2 s
    per proxy against 0.2 s, was cuDNN's plan per new prompt length: results/gpu_h200_new_lengths.md.)"""
    from nsneurons.attribution import AttributionConfig, attribute_proxy
    from nsneurons.intervention import BASELINE, option_probs
    from nsneurons.splits import task_proxies

    start = time.perf_counter()
    id_proxies, _ = task_proxies(recipe, recipe.tasks[0], model.tokenizer)
    attribute_proxy(model, id_proxies[0], AttributionConfig(target="ace", **recipe.attribution.ig_settings()))
    option_probs(model, id_proxies[:1], [BASELINE], progress=False)
    _sync()
    return time.perf_counter() - start


def recipe_stage(args) -> dict:
    import torch
    from fixtures_models import llama_style_tokenizer
    from ig_bench import LLAMA2_7B, LLAMA2_SHRUNK, random_llama

    from nsneurons.models import wrap
    from nsneurons.recipe import load_recipe
    from nsneurons.runners.neuronllm import run_recipe

    device = "cpu" if args.shrink else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("recipe: torch sees no CUDA device (--shrink runs this stage on the CPU)")
    paper = load_recipe(PAPER_RECIPE)
    recipe = timing_recipe(paper, shrink=args.shrink, device=device, output=args.work, task=args.task)
    start = time.perf_counter()
    tok = llama_style_tokenizer()
    shape = LLAMA2_SHRUNK if args.shrink else LLAMA2_7B
    hf = random_llama(shape, torch.float32 if args.shrink else torch.bfloat16, device, seed=0)
    model = wrap(hf, tok, source="random-init " + ("shrunk LLaMA-2 shape" if args.shrink else "LLaMA-2-7B shape"))
    build_s = time.perf_counter() - start
    warm_s = warm_up(recipe, model)
    calls: list = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with timed_stages(calls, tok):
        run_recipe(recipe, model=model, progress=False)
    total_s = time.perf_counter() - start
    tokens = [t for c in calls if c["kind"] == "ig" for t in c.pop("prompt_tokens")]
    return {
        "model": model.describe(),
        "build_s": build_s,
        "warm_up_s": warm_s,
        "recipe_s": total_s,
        "task": args.task,
        "settings": {
            "identification_examples": recipe.identification_examples,
            "steps": recipe.attribution.steps,
            "path": recipe.attribution.path,
            "k": recipe.selection.k,
            "z": recipe.selection.z,
            "methods": list(recipe.selection.methods),
            "ratios": list(recipe.evaluation.ratios),
            "candidates": recipe.evaluation.candidates,
            "understood": recipe.evaluation.understood,
            "not_understood": recipe.evaluation.not_understood,
            "ablation": recipe.evaluation.ablation,
            "dtype": recipe.dtype,
            "device": device,
        },
        "prompt_tokens": {"mean": sum(tokens) / len(tokens), "min": min(tokens), "max": max(tokens)} if tokens else None,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "calls": calls,
        "extrapolation": extrapolate(calls, recipe, paper, total_s),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["env", "recipe"])
    p.add_argument("--json", required=True, help="write the stage's result here")
    p.add_argument("--work", default="gpu-check-work", help="recipe: output folder for its stores")
    p.add_argument("--task", default="sentiment", help="recipe: the fixture task to run")
    p.add_argument("--shrink", action="store_true", help="recipe: a tiny model on the CPU, float32")
    args = p.parse_args(argv)
    result = env_info() if args.stage == "env" else recipe_stage(args)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "calls"}, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
