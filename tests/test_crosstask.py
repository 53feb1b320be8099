"""Cross-task analyses: common / task-specific neurons worked out by hand, re-selection at other budgets
equals selecting at that budget, Table 8's budgets (scaling, task-specific choice) and cells, and an
end-to-end run on a tiny random model."""

import dataclasses

import numpy as np
import pytest
import xarray as xr

from nsneurons import crosstask_budgets as t8
from nsneurons import selection
from nsneurons.crosstask import common_neurons, load_crosstask_recipe, pairs_of, task_specific
from nsneurons.crosstask_report import matrix_table
from nsneurons.metrics import METRIC_NAMES, ConditionResult
from nsneurons.runners.crosstask import run_crosstask


def _sets(by_task):
    """{task: (good pairs, bad pairs)} -> neuron sets with dims (task, role, rank)."""
    layer = np.array([[[p[0] for p in role] for role in roles] for roles in by_task.values()])
    neuron = np.array([[[p[1] for p in role] for role in roles] for roles in by_task.values()])
    dims = ("task", "role", "rank")
    return xr.Dataset(
        {"layer": (dims, layer), "neuron": (dims, neuron)},
        coords={"task": list(by_task), "role": ["good", "bad"], "rank": np.arange(layer.shape[2])},
    )


SETS = _sets(
    {
        "a": ([(0, 1), (1, 2), (2, 3)], [(0, 5), (1, 5), (2, 5)]),
        "b": ([(1, 2), (0, 1), (3, 3)], [(0, 5), (3, 0), (3, 1)]),
        "c": ([(1, 2), (4, 4), (0, 0)], [(2, 5), (3, 0), (4, 0)]),
    }
)


def _row(ds, role):
    part = ds.sel(role=role)
    return [(int(l), int(n)) for l, n in zip(part.layer.values, part.neuron.values)]


def test_common_neurons_by_hand():
    common = common_neurons(SETS)
    # good: (1,2) is in a (rank 1), b (0), c (0): 3 tasks; (0,1) in a (0), b (1): 2 tasks. Others once.
    assert _row(common, "good") == [(1, 2), (0, 1), (-1, -1)]
    assert common.n_tasks.sel(role="good").values.tolist() == [3, 2, 0]
    # bad: (0,5) a0 b0 -> mean rank 0; (2,5) a2 c0 and (3,0) b1 c1 both mean 1 -> (layer, neuron) order.
    assert _row(common, "bad") == [(0, 5), (2, 5), (3, 0)]
    assert (common.attrs["n_good"], common.attrs["n_bad"]) == (2, 3)
    cut = common_neurons(SETS, 2)  # up to K = 2 per role; the counts still say how many exist
    assert _row(cut, "bad") == [(0, 5), (2, 5)] and cut.attrs["n_bad"] == 3
    assert pairs_of(common) == {(1, 2), (0, 1), (0, 5), (2, 5), (3, 0)}
    # One task: nothing is common.
    single = common_neurons(SETS.sel(task=["a"]))
    assert single.attrs == {"n_good": 0, "n_bad": 0} and (single.layer.values == -1).all()


RANKING = xr.Dataset(
    {
        "layer": (("role", "rank"), [[0, 0, 1, 1, 2, 2], [3, 3, 0, 2, 1, 1]]),
        "neuron": (("role", "rank"), [[0, 1, 2, 3, 0, 1], [3, 2, 5, 2, 1, 0]]),
        "score": (("role", "rank"), [[6.0, 5, 4, 3, 2, 1], [-6.0, -5, -4, -3, -2, -1]]),
    },
    coords={"role": ["good", "bad"], "rank": np.arange(6)},
)


def test_task_specific_removes_and_refills():
    spec = task_specific(RANKING, {(0, 1), (1, 2), (0, 5)}, 3)
    # good top 3 = (0,0) (0,1) (1,2): two are common -> keep (0,0), refill with (1,3), (2,0).
    assert _row(spec, "good") == [(0, 0), (1, 3), (2, 0)]
    assert spec.score.sel(role="good").values.tolist() == [6.0, 3.0, 2.0]
    # bad top 3 = (3,3) (3,2) (0,5): (0,5) is common -> refill with the 4th, (2,2).
    assert _row(spec, "bad") == [(3, 3), (3, 2), (2, 2)]
    assert (spec.attrs["n_removed_good"], spec.attrs["n_removed_bad"]) == (2, 1)
    # The ranking runs out: 6 good minus 2 excluded = 4, the 5th slot is padding.
    assert _row(task_specific(RANKING, {(0, 1), (1, 2)}, 5), "good")[-1] == (-1, -1)
    # A good-only ranking keeps an empty bad row.
    good_only = RANKING.copy(deep=True)
    good_only["layer"].loc[{"role": "bad"}] = -1
    assert (task_specific(good_only, set(), 3).layer.sel(role="bad").values == -1).all()


@pytest.mark.parametrize("method", ["neuronllm", "tn", "kn", "random"])
def test_first_k_of_a_long_ranking_is_selection_at_k(method):
    # The budget sweep re-selects by slicing one long ranking: equal to running the method at each K.
    rng = np.random.default_rng(3)
    es = xr.DataArray(
        rng.normal(size=(4, 3, 8)),
        dims=("example", "layer", "neuron"),
        coords={"example": list("abcd"), "layer": np.arange(3), "neuron": np.arange(8)},
    )
    es[:, 0, :2] = 0.0  # ties
    scores = {"ace": es, "tn": es, "qrnca": es}
    full = selection.select(method, k=12, scores=scores, z=5)
    for k in (1, 3, 7):
        small = selection.select(method, k=k, scores=scores, z=5)
        for v in ("layer", "neuron"):
            np.testing.assert_array_equal(full[v].values[:, :k], small[v].values)


def _matrix():
    # Table 8 shape: sentiment / commonsense neurons enhanced, evaluated on both tasks.
    values = {
        ("sentiment", "sentiment"): (0.5, 0.6, 0.5, 0.65),  # +20.0% / +30.0%
        ("sentiment", "commonsense"): (0.5, 0.45, 0.5, 0.4),  # -10.0% / -20.0%
        ("commonsense", "sentiment"): (0.5, 0.4, 0.5, 0.5),  # -20.0% / +0.0%
        ("commonsense", "commonsense"): (0.0, 0.1, 0.5, 0.55),
    }  # undefined / +10.0%
    tasks = ["sentiment", "commonsense"]
    effect = np.full((1, 2, 2, 2, len(METRIC_NAMES)), np.nan)
    for (src, ev), (ao, ai, co, ci) in values.items():
        d = ConditionResult("enhance", ao, ai, co, ci).as_dict()
        effect[0, tasks.index(src), tasks.index(ev), 1] = [d[m] for m in METRIC_NAMES]
    return xr.Dataset(
        {"effect": (("selector", "source_task", "eval_task", "direction", "metric"), effect)},
        coords={
            "selector": ["neuronllm"],
            "source_task": tasks,
            "eval_task": tasks,
            "direction": ["degrade", "enhance"],
            "metric": list(METRIC_NAMES),
        },
    )


def test_table8_and_matrix_tables():
    # Table 8: rows source task, columns evaluated task; signed relative Acc/Com change (points in brackets).
    ds = _matrix().sel(direction=["enhance"])
    table = t8.table8(ds, "neuronllm")
    assert "| intervened neurons | sentiment task | commonsense task |" in table
    assert "| sentiment neurons | +20.0%/+30.0% (+10.0/+15.0) | -10.0%/-20.0% (-5.0/-10.0) |" in table
    assert "| commonsense neurons | -20.0%/+0.0% (-10.0/+0.0) | undefined/+10.0% (+10.0/+5.0) |" in table
    enh = matrix_table(_matrix(), "neuronllm", "enhance")  # rows eval task, points
    assert "| commonsense | -5.0/-10.0 | +10.0/+5.0 |" in enh
    assert "| sentiment | - | - |" in matrix_table(_matrix(), "neuronllm", "degrade")


# ---- Table 8 at the paper's budgets -------------------------------------------------------------


def test_budget_scaling_by_hand():
    # The paper's budgets on LLaMA 2-7B (352,256 neurons) scaled to the demo model's 46,080:
    # 100 x 46080 / 352256 = 13.08 -> 13; 400 -> 52.33 -> 52; 720 -> 94.19 -> 94; 480 -> 62.79 -> 63.
    assert [t8.scaled_count(c, 46_080) for c in (100, 400, 720, 480)] == [13, 52, 94, 63]
    assert [t8.scaled_count(c, 352_256) for c in (100, 400, 720, 480)] == [100, 400, 720, 480]  # the paper's model
    # Halves go up (Python's round would give 2 for 2.5): 5 x 1 / 2 = 2.5 -> 3; 3 x 1 / 2 = 1.5 -> 2.
    assert (t8.scaled_count(5, 1, 2), t8.scaled_count(3, 1, 2)) == (3, 2)
    # At least 1: 100 x 256 / 352256 = 0.07 -> 1; and 0 stays 0 (a good-only budget).
    assert (t8.scaled_count(100, 256), t8.scaled_count(0, 46_080)) == (1, 0)


def test_resolve_budgets():
    from nsneurons.recipe import Table8, Table8Budget

    paper = t8.resolve_budgets(Table8(), ["ner", "chunking", "sentiment", "commonsense"], 46_080, limit=60)
    assert paper["source_task"].values.tolist() == ["sentiment", "commonsense"]  # Table 8's row order
    assert paper["given"].values.tolist() == [[720, 480], [100, 400]]
    assert paper["scaled"].values.tolist() == [[94, 63], [13, 52]]
    assert paper["used"].values.tolist() == [[60, 60], [13, 52]]  # capped at the ranking's 60 per role
    assert paper.attrs["origin"] == "paper" and paper.attrs["n_model"] == 46_080
    # Not the paper's pair and no budgets: skipped.
    assert t8.resolve_budgets(Table8(), ["sentiment", "ner"], 46_080, 60) is None
    skipped = t8.report_section(xr.Dataset(attrs={"skipped": t8.skip_reason(["sentiment", "ner"])}))
    assert skipped[0] == "## Task-dependent functionality (Table 8)" and "sets no `crosstask.table8.budgets`" in skipped[1]
    # Budgets per task name, counted for 512 neurons, on a 256-neuron model: halves -> 2, 3 / 1, 2 (1.5 up).
    mine = Table8(budgets=(Table8Budget("ner", 4, 6), Table8Budget("sentiment", 2, 3)), reference_neurons=512)
    got = t8.resolve_budgets(mine, ["sentiment", "ner"], 256, 100)
    assert got["source_task"].values.tolist() == ["ner", "sentiment"] and got.attrs["origin"] == "recipe"
    assert got["used"].values.tolist() == [[2, 3], [1, 2]]
    unscaled = t8.resolve_budgets(dataclasses.replace(mine, scale=False), ["sentiment", "ner"], 256, 100)
    assert unscaled["used"].values.tolist() == [[4, 6], [2, 3]]


def _ranking(good, bad):
    return xr.Dataset(
        {
            "layer": (("role", "rank"), [[p[0] for p in good], [p[0] for p in bad]]),
            "neuron": (("role", "rank"), [[p[1] for p in good], [p[1] for p in bad]]),
        },
        coords={"role": ["good", "bad"], "rank": np.arange(len(good))},
    )


def test_table8_task_specific_choice_by_hand():
    from nsneurons.recipe import Table8, Table8Budget

    s_rank = _ranking([(0, 0), (0, 1), (1, 2), (1, 3), (2, 0), (2, 1)], [(3, 3), (3, 2), (0, 5), (2, 2), (1, 1), (1, 0)])
    c_rank = _ranking([(4, 4), (0, 1), (0, 0), (2, 0), (1, 2), (1, 3)], [(3, 2), (0, 5), (1, 1), (3, 3), (2, 2), (1, 0)])
    # The run's top-K sets (K = 2): common good = {(0,1)}, common bad = {(3,2)}. (0,5) is in c's top-2 bad
    # but only 3rd for s, so it is not common (common = in more than one task's top-K set, C.1).
    run = xr.concat([r.isel(rank=slice(0, 2)) for r in (s_rank, c_rank)], dim=xr.DataArray(["s", "c"], dims="task"))
    common = pairs_of(common_neurons(run))
    assert common == {(0, 1), (3, 2)}
    budgets = t8.resolve_budgets(
        Table8(budgets=(Table8Budget("s", 3, 2), Table8Budget("c", 1, 3)), scale=False), ["s", "c"], 40, 6
    )
    rankings = {"s": s_rank, "c": c_rank}
    chosen = t8.chosen_sets(budgets, ["neuronllm"], lambda t, m, n: task_specific(rankings[t], common, n))
    s, c = chosen.sel(selector="neuronllm", source_task="s"), chosen.sel(selector="neuronllm", source_task="c")
    # s: good minus (0,1) -> (0,0) (1,2) (1,3); bad minus (3,2) -> (3,3) (0,5), then a pad (budget 2 of width 3).
    assert _row(s, "good") == [(0, 0), (1, 2), (1, 3)] and _row(s, "bad") == [(3, 3), (0, 5), (-1, -1)]
    # c: good (4,4) is first anyway; bad minus (3,2) -> (0,5) (1,1) (3,3).
    assert _row(c, "good") == [(4, 4), (-1, -1), (-1, -1)] and _row(c, "bad") == [(0, 5), (1, 1), (3, 3)]
    # Common neurons skipped within each role's budget: s good top 3 has (0,1), s bad top 2 has (3,2);
    # c good top 1 = (4,4) has none (its top 3 would have one); c bad top 3 has (3,2).
    assert s["n_removed"].values.tolist() == [1, 1] and c["n_removed"].values.tolist() == [0, 1]
    # One enhancer per source task: excite good (x2), silence bad (x0).
    conditions, keys = [], []
    t8.add_conditions(conditions, keys, chosen, "c")
    assert [k[1]["source_task"] for k in keys] == ["s", "c"] and all(k[1]["eval_task"] == "c" for k in keys)
    assert conditions[0].excite == ((0, 0), (1, 2), (1, 3)) and conditions[0].silence == ((3, 3), (0, 5))
    assert conditions[1].excite == ((4, 4),) and conditions[1].silence == ((0, 5), (1, 1), (3, 3))
    # The budget table: given, scaled, capped, used; (0,5) and (3,3) are chosen for both tasks -> 2 shared.
    table = t8.budget_table(chosen.merge(budgets).assign_attrs(budgets.attrs))
    assert "| s | 3 + 2 | 3 + 2 | 3 + 2 | 3 + 2 | 1 + 1 | 2 |" in table
    assert "| c | 1 + 3 | 1 + 3 | 1 + 3 | 1 + 3 | 0 + 1 | 2 |" in table


def test_table8_budgets_checked_at_load(tmp_path):
    from nsneurons.recipe import RecipeError, Table8Budget, load_recipe

    path = tmp_path / "r.yaml"
    head = "name: x\nmodel: m\ntasks: [sentiment, ner]\ncrosstask:\n  table8:\n"
    path.write_text(head + "    budgets: [{task: sentiment, good: 720, bad: 480}, {task: ner, good: 100, bad: 400}]\n")
    assert load_recipe(path).crosstask.table8.budgets == (Table8Budget("sentiment", 720, 480), Table8Budget("ner", 100, 400))
    bad = {
        "budgets: [{task: sentiment, good: 1, bad: 1}, {task: commonsense, good: 1, bad: 1}]": "crosstask.table8.budgets\\[1\\].task: 'commonsense' is not a task of this recipe \\(tasks: sentiment, ner\\)",
        "budgets: [{task: sentiment, good: 1, bad: 1}]": "crosstask.table8.budgets: expected at least two tasks",
        "budgets: [{task: ner, good: 1, bad: 1}, {task: ner, good: 2, bad: 1}]": "budgets\\[1\\].task: 'ner' is listed twice",
        "budgets: [{task: ner, good: -1, bad: 1}, {task: sentiment, good: 1, bad: 1}]": "budgets\\[0\\]: expected good, bad >= 0",
        "budgets: [{task: ner, good: 0, bad: 0}, {task: sentiment, good: 1, bad: 1}]": "at least one neuron",
        "budgets: [{task: ner, good: 1}, {task: sentiment, good: 1, bad: 1}]": "missing required key crosstask.table8.budgets\\[0\\].bad",
        "reference_neurons: 0": "crosstask.table8.reference_neurons: expected >= 1",
    }
    for text, message in bad.items():
        path.write_text(head + "    " + text + "\n")
        with pytest.raises(RecipeError, match="r.yaml: .*" + message):
            load_recipe(path)


def test_shipped_crosstask_recipes_load(tmp_path):
    from pathlib import Path

    from nsneurons.crosstask import CrossTaskSettings
    from nsneurons.recipe import RecipeError, Table8, load_recipe

    root = Path(__file__).parent.parent / "recipes"
    demo = load_recipe(root / "cross-task-demo.yaml")
    assert demo.model == "demo" and len(demo.tasks) >= 2
    paper, settings = load_crosstask_recipe(root / "cross-task-paper.yaml")
    assert paper.model == "meta-llama/Llama-2-7b-hf" and [t.name for t in paper.tasks] == [
        "ner",
        "chunking",
        "sentiment",
        "commonsense",
    ]
    assert settings == CrossTaskSettings(
        methods=("neuronllm",), budget_methods=("neuronllm", "tn", "qrnca"), table8=Table8(budgets=t8.PAPER_BUDGETS)
    )
    assert settings.k_values == (10, 25, 50, 100, 150, 200, 250, 500)
    # Table 8: the paper's budgets on the paper's model (no scaling); the demo's scaled to its 46,080 neurons.
    on_paper = t8.resolve_budgets(settings.table8, [t.name for t in paper.tasks], 32 * 11008, 176_128)
    assert on_paper["used"].values.tolist() == [[720, 480], [100, 400]] and on_paper.attrs["origin"] == "paper"
    on_demo = t8.resolve_budgets(demo.crosstask.table8, [t.name for t in demo.tasks], 30 * 1536, 23_040)
    assert on_demo["source_task"].values.tolist() == ["sentiment", "ner"]
    assert on_demo["used"].values.tolist() == [[94, 63], [13, 52]] and on_demo.attrs["origin"] == "recipe"
    # A `crosstask:` section is read and checked.
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel: m\ntasks: [sentiment, ner]\ncrosstask: {methods: [tn], k_values: [5, 7], ratio: 0.3}\n")
    assert load_crosstask_recipe(path)[1] == CrossTaskSettings(methods=("tn",), k_values=(5, 7), ratio=0.3)
    path.write_text("name: x\nmodel: m\ntasks: [sentiment]\ncrosstask: {ratio: 1.5}\n")
    with pytest.raises(RecipeError, match="r.yaml: crosstask.ratio"):
        load_crosstask_recipe(path)


# ---- end to end on a tiny random model -------------------------------------------------------

TINY = {
    "name": "tiny-cross",
    "model": None,
    "device": "cpu",
    "answer_format": "letters",
    "tasks": ["sentiment", "ner"],
    "identification_examples": 2,
    "attribution": {"steps": 2},
    "selection": {"methods": ["neuronllm", "tn", "act"], "k": 5, "z": 20},
    "evaluation": {"understood": 3, "not_understood": 3, "candidates": 10, "ratios": [0.0, 0.5, 1.0]},
    # Table 8 budgets counted for 512 neurons: on the 2 x 128-neuron model 2 + 3 (sentiment) and 1 + 2 (ner).
    "crosstask": {
        "table8": {
            "budgets": [{"task": "sentiment", "good": 4, "bad": 6}, {"task": "ner", "good": 2, "bad": 3}],
            "reference_neurons": 512,
        }
    },
}
_RUNS = {}


def tiny_crosstask_run(tmp_path_factory):
    """A finished `nsneurons run` plus `run_crosstask` of TINY, once per session (also used by test_notebooks)."""
    if "out" not in _RUNS:
        from fixtures_models import llama_style_tokenizer, tiny_hf_model

        from nsneurons.recipe import recipe_from_dict
        from nsneurons.runners.neuronllm import run_recipe

        root = tmp_path_factory.mktemp("crosstask")
        tok = llama_style_tokenizer()
        tiny_hf_model("llama", layers=2, vocab_size=len(tok)).save_pretrained(root / "model")
        tok.save_pretrained(root / "model")
        recipe = recipe_from_dict({**TINY, "model": str(root / "model"), "output": str(root / "out")})
        out = run_recipe(recipe, progress=False)
        run_crosstask(recipe, out, methods=["neuronllm", "tn"], k_values=[1, 5, 1000], ratio=0.5, progress=False)
        _RUNS.update(out=out, recipe=recipe)
    return _RUNS["out"], _RUNS["recipe"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return tiny_crosstask_run(tmp_path_factory)


@pytest.mark.slow
def test_needs_a_finished_run(tmp_path):
    from nsneurons.recipe import recipe_from_dict

    recipe = recipe_from_dict({**TINY, "model": "unused", "output": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="finished `nsneurons run`"):
        run_crosstask(recipe)


@pytest.mark.slow
def test_end_to_end_outputs(finished):
    from nsneurons.runfolder import open_crosstask, open_outputs

    out, recipe = finished
    ds = {name: d.load() for name, d in open_crosstask(out).items()}
    matrix = ds["matrix"].effect
    assert matrix.dims == ("selector", "source_task", "eval_task", "direction", "metric")
    assert dict(matrix.sizes) == {"selector": 2, "source_task": 2, "eval_task": 2, "direction": 2, "metric": len(METRIC_NAMES)}
    assert np.isfinite(matrix.sel(metric="acc_change")).all()
    assert ds["budget"].k.values.tolist() == [1, 5, 128]  # 1000 clamped to half of 2 x 128 neurons
    assert ds["common"].effect.dims == ("selector", "task", "direction", "ratio", "metric")
    neurons = open_outputs(out)["neurons"].load()
    for m in ("neuronllm", "tn"):
        common = pairs_of(ds["common"].sel(selector=m))
        for t in ("sentiment", "ner"):
            spec = pairs_of(ds["specific"].sel(selector=m, task=t))
            stored = pairs_of(neurons.sel(selector=m, task=t))
            assert not spec & common and stored - common <= spec
    # Refilling keeps K per role: every layer histogram sums to K (tn has no bad neurons).
    count = ds["layers"]["count"].sum("layer")
    assert (count.sel(selector="neuronllm") == 5).all() and (count.sel(selector="tn", role="good") == 5).all()
    # Budget K = the run's K re-runs the run's own sweep: the same neurons, ratios and evaluation set.
    results = open_outputs(out)["results"].load()
    for m in ("neuronllm", "tn"):
        ours = ds["budget"].sweep.sel(selector=m, k=5).sel(ratio=results.ratio.values)
        theirs = results.sweep.sel(selector=m, metric=list(METRIC_NAMES)).transpose(*ours.dims)
        np.testing.assert_allclose(ours.values, theirs.values, equal_nan=True)
    text = (out / "crosstask.md").read_text()
    for heading in ("Table 5", "Figures 2 and 4", "Table 8", "Figure 7", "Table 7"):
        assert heading in text, heading
    assert "| neuronllm |" in text and "crosstask.md" in (out / "report.md").read_text()
    for name in ("matrix", "common_layers", "layer_change", "budget", "layer_distribution_specific"):
        png = out / "figures" / f"crosstask_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_end_to_end_table8(finished):
    from nsneurons.intervention import BASELINE, correct_table, enhancer, option_probs
    from nsneurons.metrics import evaluate_condition
    from nsneurons.models import load_model
    from nsneurons.runfolder import evaluation_proxies, open_crosstask, open_outputs

    out, recipe = finished
    ds = {name: d.load() for name, d in open_crosstask(out).items()}
    table = ds["table8"]
    # 4 x 256 / 512 = 2, 6 -> 3, 2 -> 1, 3 -> 1.5 -> 2 (halves up).
    assert table["given"].values.tolist() == [[4, 6], [2, 3]] and table["used"].values.tolist() == [[2, 3], [1, 2]]
    assert table.attrs["origin"] == "recipe" and table.attrs["n_model"] == 256
    # The chosen neurons begin the task-specific sets (K = 5 >= every budget); tn (good only) has no bad ones.
    for m in ("neuronllm", "tn"):
        for src in ("sentiment", "ner"):
            part, spec = table.sel(selector=m, source_task=src), ds["specific"].sel(selector=m, task=src)
            for role, n in zip(("good", "bad"), table["used"].sel(source_task=src).values.tolist()):
                n = n if m == "neuronllm" or role == "good" else 0
                assert [p for p in _row(part, role) if p[0] >= 0] == _row(spec, role)[:n], (m, src, role)
    effect = table["effect"].sel(direction="enhance")
    assert np.isfinite(effect.sel(metric="acc_intervened")).all()
    # Each evaluated task's original Acc is the run's own (same evaluation examples, unmodified model).
    results = open_outputs(out)["results"].load()
    for e in ("sentiment", "ner"):
        run_acc = float(results.sweep.sel(selector="neuronllm", task=e, direction="enhance", metric="acc_original").max())
        assert np.allclose(effect.sel(eval_task=e, metric="acc_original").values, run_acc)
    # One cell recomputed from scratch: ner's neurons enhanced, evaluated on sentiment.
    model = load_model(recipe.model, device="cpu")
    part = table.sel(selector="neuronllm", source_task="ner")
    condition = enhancer([p for p in _row(part, "good") if p[0] >= 0], [p for p in _row(part, "bad") if p[0] >= 0], "x")
    probs = option_probs(
        model,
        evaluation_proxies(recipe, recipe.tasks[0], out),
        [BASELINE, condition],
        answer_format=recipe.answer_format,
        position=recipe.evaluation.position,
        progress=False,
    )
    correct = correct_table(probs)
    expected = evaluate_condition(correct.sel(condition="none").values, correct.sel(condition="x").values, "enhance").as_dict()
    stored = effect.sel(selector="neuronllm", source_task="ner", eval_task="sentiment")
    np.testing.assert_allclose(
        [float(stored.sel(metric=k)) for k in METRIC_NAMES], [expected[k] for k in METRIC_NAMES], equal_nan=True
    )
    # The report: the paper's sentence, the budgets used, and Table 8's cells as signed relative changes.
    text = (out / "crosstask.md").read_text()
    assert "## Task-dependent functionality (Table 8)" in text and t8.PAPER_SENTENCE in text
    assert "| sentiment | 4 + 6 | 2 + 3 | 2 + 3 | 2 + 3 |" in text and "| ner | 2 + 3 | 1 + 2 | 1 + 2 | 1 + 2 |" in text
    v = {k: float(stored.sel(metric=k)) for k in METRIC_NAMES}
    acc = (
        "undefined" if v["acc_original"] == 0 else f"{(v['acc_intervened'] - v['acc_original']) / v['acc_original'] * 100:+.1f}%"
    )
    com = (
        "undefined" if v["com_original"] == 0 else f"{(v['com_intervened'] - v['com_original']) / v['com_original'] * 100:+.1f}%"
    )
    assert f"| ner neurons | {acc}/{com} ({v['acc_change']:+.1f}/{v['com_change']:+.1f}) |" in text
