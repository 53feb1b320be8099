"""`nsneurons plan --measure`: calibrate the plan's rates with one short measured pass.

Loads the model, times one IG proxy at the top few layers and one intervention call (one
evaluation-like proxy under as many random conditions as the recipe runs), and turns each into a
FLOP rate with the same counting as the plan. On CPU the passes run on ONE torch thread and are
timed in CPU seconds (time.process_time): other jobs on a shared machine stretch the wall clock,
and spin-waiting threads inflate multi-threaded CPU time, but one thread's CPU seconds stay close
to a quiet machine's. The quiet rate is that x the threads a run uses x PARALLEL_EFFICIENCY.
Memory: the process's resident set before the model (base), and the IG pass's peak above it,
compared with the modelled activation memory (a scale applied to every stage).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

from . import plan_stages, plan_work
from .plan_work import ModelShape, Rates, Tally

PARALLEL_EFFICIENCY = 0.7  # 2 threads do 1.4 threads' work on small matmuls (docs/plan.md)
MEASURED_LAYERS = 6  # IG at the top this many layers (the staircase's rows there are the run's per layer)
SCREEN_PROMPTS = 4  # prompts in the measured screen batch


@dataclass(frozen=True)
class Timed:
    cpu: float  # process CPU seconds
    wall: float  # wall seconds
    peak: int  # peak bytes during the call above the resident set at its start (GPU: peak allocated)


def _status(key: str) -> int:
    """VmRSS / VmHWM of this process in bytes (Linux), 0 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs), so a call's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def timed(fn, device: str) -> tuple[object, Timed]:
    import torch

    _reset_peak()
    start = _status("VmRSS")
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else max(0, _status("VmHWM") - start)
    return out, Timed(cpu, wall, peak)


def _first_proxies(recipe) -> tuple[list, list]:
    """(an identification example's proxies, evaluation candidates) of the recipe's first task (or NA-ICA queries)."""
    from .preflight import naica_inputs, task_inputs

    if recipe.experiment == "naica":
        proxies = naica_inputs(recipe)
        return [p for p in proxies if p.example_id == proxies[0].example_id], proxies[3:]
    identification, candidates = next(iter(task_inputs(recipe).values()))
    return [p for p in identification if p.example_id == identification[0].example_id], candidates


def _conditions(recipe, model, n: int):
    """n random conditions of K good + K bad neurons (seeded), like a sweep's switch sets."""
    import numpy as np

    from .budget import resolved_k
    from .intervention import BASELINE, enhancer

    k = resolved_k(recipe, model.n_layers, model.n_neurons) if recipe.experiment != "naica" else recipe.naica.v
    rng = np.random.default_rng(recipe.seed)
    out = [BASELINE]
    for i in range(n - 1):
        flat = rng.choice(model.n_layers * model.n_neurons, size=2 * k, replace=False)
        pairs = [(int(f // model.n_neurons), int(f % model.n_neurons)) for f in flat]
        out.append(enhancer(pairs[:k], pairs[k:], f"random-{i}"))
    return out


def _ig_measure(recipe, model, shape: ModelShape, proxy, device: str):
    """Time one IG proxy at the top layers; returns (Timed, modelled Tally)."""
    from .answers import proxy_option_ids
    from .attribution import AttributionConfig, attribute_proxies

    a = recipe.attribution
    target = (
        "qrnca" if recipe.experiment == "naica" else ([t for t in plan_stages.ig_targets(recipe) if t != "ace"] or ["ace"])[0]
    )
    steps = recipe.naica.steps if recipe.experiment == "naica" else a.steps
    layers = list(range(max(0, shape.n_layers - MEASURED_LAYERS), shape.n_layers))
    config = AttributionConfig(target=target, steps=steps, quadrature=a.quadrature, path=a.path, layers_per_pass=len(layers))
    attribute_proxies(
        model, [proxy], AttributionConfig(target=target, steps=2), layers[-1:]
    )  # warm-up: first-call costs (kernels, nnsight) are not the run's per-proxy cost
    _, took = timed(lambda: attribute_proxies(model, [proxy], config, layers), device)
    tally = Tally()
    ids = model.tokenizer(proxy.prompt)["input_ids"]
    options = [tuple(len(o) for o in proxy_option_ids(model.tokenizer, proxy))]
    plan_stages.ig_group(
        tally,
        shape,
        plan_work.group_of([ids], options),
        [layers],
        steps=steps,
        midpoint=a.quadrature == "midpoint",
        path=a.path,
        answer_only=target == "ace",
        act=plan_work.DTYPE_BYTES[recipe.dtype],
    )
    return took, tally


def _intervention_measure(recipe, model, shape: ModelShape, proxy, device: str):
    """Time one proxy under as many conditions as a task's sweep (option_probs, shared prefix)."""
    from .answers import proxy_option_ids
    from .attribution import unit_tokens
    from .intervention import option_probs

    if recipe.experiment == "naica":
        n = 5
    else:
        n = 1 + sum(plan_stages.condition_counts(recipe, shape.n_layers * shape.n_neurons).values())
    conds = _conditions(recipe, model, n)
    ev = recipe.evaluation
    call = lambda: option_probs(model, [proxy], conds, position=ev.position, batch_size=ev.batch_size)
    call()  # warm-up
    _, took = timed(call, device)
    tally = Tally()
    length = len(model.tokenizer(proxy.prompt)["input_ids"])
    units = unit_tokens(proxy_option_ids(model.tokenizer, proxy))
    if (ev.position == "answer" and n > 1) or units > 1:
        plan_stages.shared_prefix_calls(tally, shape, [length], n, plan_work.DTYPE_BYTES[recipe.dtype], units=units)
    else:
        plan_stages.batched_calls(tally, shape, [length], n, ev.batch_size, plan_work.DTYPE_BYTES[recipe.dtype])
    return took, tally, n


def _screen_measure(recipe, model, shape: ModelShape, proxies, device: str):
    """Time one batch of full prompts under the unmodified model (evaluation_set.screen's call)."""
    from .intervention import BASELINE, option_probs

    batch = proxies[: min(len(proxies), recipe.evaluation.batch_size, SCREEN_PROMPTS)]
    call = lambda: option_probs(model, batch, [BASELINE], batch_size=len(batch))
    call()  # warm-up
    _, took = timed(call, device)
    lengths = [len(ids) for ids in model.tokenizer([p.prompt for p in batch])["input_ids"]]
    stage = plan_stages.screen_stage(
        "measure",
        replace(recipe, evaluation=replace(recipe.evaluation, batch_size=len(batch))),
        shape,
        plan_work.default_rates("local", "cpu", recipe.dtype),
        lengths,
    )
    tally = Tally(passes=stage.passes, flops=stage.flops, traces=stage.passes)
    return took, tally, len(batch)


def _rate(tally: Tally, took: Timed, rates: Rates, scale: float) -> float:
    """FLOP/s from one measured call: its seconds less the per-trace overhead (at least half of it kept)."""
    seconds = took.cpu if rates.device == "cpu" else took.wall
    seconds = max(seconds - tally.traces * rates.trace_seconds, 0.5 * seconds)
    return tally.flops / seconds * scale


def measure_rates(recipe, shape: ModelShape, rates: Rates) -> Rates:
    """`rates` with IG and forward FLOP/s, base memory and the activation-memory scale measured on this machine."""
    import matplotlib.figure  # noqa: F401 - the report draws figures: part of a run's resident base
    import torch

    from . import attribution, intervention  # noqa: F401 - imported before the base is read, as a run has them
    from .models import load_model

    group, candidates = _first_proxies(recipe)  # the data modules (datasets, xarray) are in a run's base too
    base = _status("VmRSS")
    model, load = timed(
        lambda: load_model(
            recipe.model,
            device=recipe.device,
            dtype=recipe.dtype,
            revision=recipe.revision,
            remote=recipe.backend == "remote",
            trust_remote_code=recipe.trust_remote_code,
            **({"device_map": recipe.device_map, "max_memory": recipe.max_memory} if recipe.device_map is not None else {}),
        ),
        rates.device,
    )
    threads = torch.get_num_threads()
    if rates.device == "cpu":
        torch.set_num_threads(1)  # one thread's CPU seconds: robust to other jobs (module doc)
    try:
        ig = _ig_measure(recipe, model, shape, group[0], rates.device)
        iv = _intervention_measure(recipe, model, shape, candidates[0], rates.device)
        sc = _screen_measure(recipe, model, shape, candidates, rates.device)
    finally:
        torch.set_num_threads(threads)
    parallel = threads * PARALLEL_EFFICIENCY if rates.device == "cpu" else 1.0
    resident = ig[0].peak if rates.device == "cpu" else ig[0].peak - shape.weight_bytes(recipe.dtype)
    scale = min(4.0, max(0.25, resident / ig[1].transient)) if resident > 0 and ig[1].transient else 1.0
    weights_gb = shape.weight_bytes(recipe.dtype) / 1e9
    load_s = load.cpu / parallel if rates.device == "cpu" else load.wall
    load_peak = load.peak / 1e9 / weights_gb if rates.device == "cpu" and load.peak else rates.load_peak_factor
    return replace(
        rates,
        ig_flops=_rate(ig[1], ig[0], rates, parallel),
        fwd_flops=_rate(iv[1], iv[0], rates, parallel),
        batch_flops=_rate(sc[1], sc[0], rates, parallel),
        base_bytes=base or rates.base_bytes,
        transient_scale=scale,
        calibrated=True,
        load_seconds_per_gb=max(0.0, load_s - 2.0) / max(weights_gb, 1e-9),
        load_peak_factor=load_peak,
        notes=_notes(rates.device, threads, parallel, ig, iv, sc, load, base),
    )


def _notes(device: str, threads: int, parallel: float, ig, iv, sc, load: Timed, base: int) -> tuple[str, ...]:
    """What was measured, raw (CPU and wall seconds, the machine's load), for the plan's notes."""
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    how = (
        f"timed on 1 thread in CPU seconds, scaled x {parallel:.2f} for {threads} threads on a quiet machine"
        if device == "cpu"
        else "timed in wall seconds"
    )
    (ig_t, ig_w), (iv_t, iv_w, n), (sc_t, sc_w, n_screen) = ig, iv, sc
    return (
        f"measured at load average {load_avg:.1f} on {os.cpu_count()} CPUs, torch {threads} thread(s); {how}",
        (
            f"IG proxy at the top {MEASURED_LAYERS} layers: {ig_t.cpu:.2f} s CPU, {ig_t.wall:.2f} s wall, "
            f"{ig_w.flops / 1e9:.1f} GFLOP; peak +{ig_t.peak / 1e9:.2f} GB vs {ig_w.transient / 1e9:.2f} GB modelled"
        ),
        (f"screen batch ({n_screen} prompts): {sc_t.cpu:.2f} s CPU, {sc_t.wall:.2f} s wall, {sc_w.flops / 1e9:.1f} GFLOP"),
        (
            f"intervention call (1 proxy x {n} conditions): {iv_t.cpu:.2f} s CPU, {iv_t.wall:.2f} s wall, "
            f"{iv_w.flops / 1e9:.1f} GFLOP"
        ),
        f"model load: {load.cpu:.1f} s CPU, {load.wall:.1f} s wall; resident before the model {base / 1e9:.2f} GB",
    )
