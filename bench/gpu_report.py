"""The markdown summary of bench/gpu_check.py's JSON (standard library only: it runs before any
wheel is installed, and a stage that failed leaves holes it must survive)."""

from __future__ import annotations

# The acceptance bounds on the GPU (7B shape, bf16, prompt 300, m = 16, all 32 layers).
MAX_S_PER_QUESTION = 0.10
MAX_PEAK_GIB = 20.0
MIN_PRECISION_OVERLAP = 0.99
B_DEFAULT = "(b) nsneurons attribute_proxy (default: path=staircase)"
B_PREFIX = "(b2) nsneurons, path=prefix (every row from the embedding on)"


def _gib(b):
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def _verdict(ok: bool, shrink: bool) -> str:
    return "(shrink: not a measurement)" if shrink else ("**met**" if ok else "**not met**")


def section_stages(r: dict) -> list[str]:
    lines = ["| stage | status | seconds | note |", "|---|---|---|---|"]
    for name, s in r["stages"].items():
        note = s.get("reason") or s.get("result_error") or ""
        if name == "wheels" and "bytes" in s:
            note = f"{len(s['wheels'])} wheels, {s['bytes'] / 2**20:.1f} MiB"
        if name == "tests" and s.get("counts"):
            c = s["counts"]
            note = f"{c['passed']} passed, {c['failures'] + c['errors']} failed, {c['skipped']} skipped"
        lines.append(f"| {name} | {s.get('status')} | {s.get('seconds', '-')} | {note} |")
    return lines


def section_env(env: dict) -> list[str]:
    v = env.get("versions", {})
    devices = (
        ", ".join(
            f"{d['name']} ({d['memory_gib']} GiB, sm_{d['capability'][0]}{d['capability'][1]})" for d in env.get("devices", [])
        )
        or "none"
    )
    return [
        f"- python {env.get('python')} ({env.get('executable')}); torch CUDA {env.get('torch_cuda')}; "
        f"devices: {devices}; nvidia-smi: {env.get('nvidia_smi')}",
        "- versions that ran: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
    ]


def section_tests(s: dict) -> list[str]:
    c = s.get("counts") or {}
    lines = [
        f"{c.get('passed', '?')} passed, {c.get('failures', 0) + c.get('errors', 0)} failed, "
        f"{c.get('skipped', '?')} skipped" + (f"; failed: {', '.join(c['failed_names'])}" if c.get("failed_names") else "")
    ]
    lines += [f"- {m}" for m in s.get("measured", [])]
    return lines


def faster_path(b: dict, b2: dict) -> str:
    """Which IG path was faster: only where the medians and the fastest runs agree (on the H200 they
    disagreed, 5 % apart: run-to-run spread, not a reason to change the default)."""
    by_median = b["seconds_per_question"] <= b2["seconds_per_question"]
    by_min = b.get("min_seconds_per_question", b["seconds_per_question"]) <= b2.get(
        "min_seconds_per_question", b2["seconds_per_question"]
    )
    if by_median != by_min:
        return "a tie: the medians and the fastest runs disagree"
    return "faster here: staircase (the default)" if by_median else "faster here: path=prefix (rerun before changing the default)"


def section_ig(res: dict, shrink: bool) -> list[str]:
    rows = {row["name"]: row for row in res.get("rows", [])}
    lines = [
        f"{res.get('model')}; prompt {res.get('prompt_tokens')} tokens, m = {res.get('steps')}; "
        f"(a) timed on layers {res.get('paper_layers')} and extrapolated",
        "",
        res.get("table", ""),
        "",
        f"(a)/(b) = {res.get('ratio_a_over_b', float('nan')):.1f}x",
    ]
    lines += [f"- FAILED {f['name']}: {f['error']}" for f in res.get("failed_strategies", [])]
    if "precision_error" in res:
        lines.append(f"- FAILED precision section: {res['precision_error']}")
    b, b2 = rows.get(B_DEFAULT), rows.get(B_PREFIX)
    if b:
        fast = b["seconds_per_question"] <= MAX_S_PER_QUESTION
        small = (b["peak_memory_bytes"] or 0) <= MAX_PEAK_GIB * 2**30
        lines += [
            "",
            f"- (b), all {res.get('n_layers')} layers: {b['seconds_per_question']:.3f} s per proxy question "
            f"(bound {MAX_S_PER_QUESTION} s) {_verdict(fast, shrink)}; peak {_gib(b['peak_memory_bytes'])} "
            f"(bound {MAX_PEAK_GIB:.0f} GiB) {_verdict(small, shrink)}",
        ]
    if b and b2:
        lines.append(
            f"- staircase {b['seconds_per_question']:.3f} s vs path=prefix {b2['seconds_per_question']:.3f} s "
            f"(fastest runs {b.get('min_seconds_per_question', float('nan')):.3f} vs "
            f"{b2.get('min_seconds_per_question', float('nan')):.3f} s): {faster_path(b, b2)}"
        )
    p = res.get("precision")
    if p:
        lines += ["", f"Precision (reference {p['reference']}):", "", p["table"], ""]
        for row in p["rows"]:
            if row["name"].startswith("(b)") and row.get("top100_good_overlap") is not None:
                ok = min(row["top100_good_overlap"], row["top100_bad_overlap"]) >= MIN_PRECISION_OVERLAP
                lines.append(
                    f"- {row['name']}: top-100 good {row['top100_good_overlap']:.0%} / bad "
                    f"{row['top100_bad_overlap']:.0%} vs float32 (a), {row['seconds_per_question']:.3f} s per "
                    f"question: >= {MIN_PRECISION_OVERLAP:.0%} {_verdict(ok, shrink)}"
                )
        v = p["low_b_vs_float32_b"]
        lines.append(
            f"- {p['low_precision']} (b) vs float32 (b) on (a)'s layers: max rel. diff {v['max_rel_diff']:.2e}, "
            f"top-100 good {v['top100_good_overlap']:.0%}, bad {v['top100_bad_overlap']:.0%}"
        )
        for name, w in p.get("all_layers_vs_float32_b", {}).items():
            lines.append(
                f"- {name} vs float32 (b), all layers: max rel. diff {w['max_rel_diff']:.2e}, "
                f"top-100 good {w['top100_good_overlap']:.0%}, bad {w['top100_bad_overlap']:.0%}"
            )
    return lines


def section_recipe(res: dict) -> list[str]:
    s, x = res["settings"], res["extrapolation"]
    t = x["table1"]
    per_task = t["seconds_per_task"]
    lines = [
        f"{res['model']}; task {res['task']} (fixture), {s['identification_examples']} identification examples, "
        f"m = {s['steps']}, path {s['path']}, K = {s['k']}, z = {s['z']}, {len(s['methods'])} methods, "
        f"{len(s['ratios'])} ratios, ablation {s['ablation']}, {s['candidates']} candidates for "
        f"{s['understood']} + {s['not_understood']} evaluation examples, {s['dtype']} on {s['device']}; "
        f"prompts {res['prompt_tokens']['mean']:.0f} tokens on average (the tests' tokenizer)"
        if res["prompt_tokens"]
        else "",
        f"- end to end: {res['recipe_s']:.1f} s (model built in {res['build_s']:.1f} s and "
        f"warmed up in {res.get('warm_up_s', float('nan')):.1f} s, not counted); peak GPU memory "
        f"{_gib(res['peak_gpu_memory_bytes'])}",
        "- per unit: IG "
        + ", ".join(f"{k} {v:.3f} s" for k, v in x["seconds_per_proxy_ig"].items())
        + f" per proxy; screen {x['seconds_per_screen_proxy']:.4f} s per proxy; evaluation "
        + (f"{x['seconds_per_eval_proxy']:.3f}" if x["seconds_per_eval_proxy"] is not None else "n/a")
        + f" s per proxy under {x['eval_conditions_measured']} conditions; selection {x['selection_s_per_task']:.1f} s "
        f"per task; report {x['report_s']:.1f} s",
        "",
        f"Extrapolated to Table 1 ({t['tasks']} tasks, {t['identification_examples']} identification examples, "
        f"{t['candidates']} candidates screened, {t['evaluation_examples']} evaluation examples, {t['ratios']} ratios, "
        f"{len(t['methods'])} methods, ablation), on this device:",
        "",
        "| part | seconds per task |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in per_task.items()]
    lines += [
        "",
        f"**Table 1: {t['seconds_total']:.0f} s = {t['hours_total']:.2f} h** "
        "(model loading from disk not included; random weights)",
    ]
    return lines


def markdown(r: dict) -> str:
    shrink = r.get("shrink", False)
    st = r["stages"]
    lines = [
        "# nsneurons GPU check" + (" (--shrink: tiny models on the CPU, a dry run)" if shrink else ""),
        "",
        f"- command: `{r.get('command')}`; started {r.get('started')}, finished {r.get('finished')}, "
        f"{r.get('elapsed_s')} s of a {r.get('budget_s'):.0f} s budget",
        "",
        "## Stages",
        "",
    ]
    lines += section_stages(r)
    sections = [
        ("env", "Environment", lambda s: section_env(s["result"])),
        ("tests", "CUDA tests (device vs CPU)", section_tests),
        ("ig_bench", "IG benchmark", lambda s: section_ig(s["result"], shrink)),
        ("recipe", "Paper-settings recipe, timed", lambda s: section_recipe(s["result"])),
    ]
    for key, title, render in sections:
        s = st.get(key)
        if s is None:
            continue
        lines += ["", f"## {title}", ""]
        try:
            if key != "tests" and "result" not in s:
                raise KeyError("no result")
            lines += render(s)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            lines.append(f"(no result: stage {s.get('status')}; {type(err).__name__}: {err}; see gpu_check.log)")
    return "\n".join(lines) + "\n"
