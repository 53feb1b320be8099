"""Cross-task analyses: common / task-specific neurons worked out by hand, re-selection at other budgets
equals selecting at that budget, the Table 8 cells, and an end-to-end run on a tiny random model."""
import numpy as np
import pytest
import xarray as xr

from nsneurons import selection
from nsneurons.crosstask import (
    common_neurons, functionality_table, load_crosstask_recipe, matrix_table, pairs_of, run_crosstask, task_specific,
)
from nsneurons.metrics import METRIC_NAMES, ConditionResult


def _sets(by_task):
    """{task: (good pairs, bad pairs)} -> neuron sets with dims (task, role, rank)."""
    layer = np.array([[[p[0] for p in role] for role in roles] for roles in by_task.values()])
    neuron = np.array([[[p[1] for p in role] for role in roles] for roles in by_task.values()])
    dims = ("task", "role", "rank")
    return xr.Dataset({"layer": (dims, layer), "neuron": (dims, neuron)},
                      coords={"task": list(by_task), "role": ["good", "bad"], "rank": np.arange(layer.shape[2])})


SETS = _sets({
    "a": ([(0, 1), (1, 2), (2, 3)], [(0, 5), (1, 5), (2, 5)]),
    "b": ([(1, 2), (0, 1), (3, 3)], [(0, 5), (3, 0), (3, 1)]),
    "c": ([(1, 2), (4, 4), (0, 0)], [(2, 5), (3, 0), (4, 0)]),
})


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
    {"layer": (("role", "rank"), [[0, 0, 1, 1, 2, 2], [3, 3, 0, 2, 1, 1]]),
     "neuron": (("role", "rank"), [[0, 1, 2, 3, 0, 1], [3, 2, 5, 2, 1, 0]]),
     "score": (("role", "rank"), [[6.0, 5, 4, 3, 2, 1], [-6.0, -5, -4, -3, -2, -1]])},
    coords={"role": ["good", "bad"], "rank": np.arange(6)})


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
    es = xr.DataArray(rng.normal(size=(4, 3, 8)), dims=("example", "layer", "neuron"),
                      coords={"example": list("abcd"), "layer": np.arange(3), "neuron": np.arange(8)})
    es[:, 0, :2] = 0.0  # ties
    scores = {"ace": es, "tn": es, "qrnca": es}
    full = selection.select(method, k=12, scores=scores, z=5)
    for k in (1, 3, 7):
        small = selection.select(method, k=k, scores=scores, z=5)
        for v in ("layer", "neuron"):
            np.testing.assert_array_equal(full[v].values[:, :k], small[v].values)


def _matrix():
    # Table 8 shape: sentiment / commonsense neurons enhanced, evaluated on both tasks.
    values = {("sentiment", "sentiment"): (0.5, 0.6, 0.5, 0.65),  # +20.0% / +30.0%
              ("sentiment", "commonsense"): (0.5, 0.45, 0.5, 0.4),  # -10.0% / -20.0%
              ("commonsense", "sentiment"): (0.5, 0.4, 0.5, 0.5),  # -20.0% / +0.0%
              ("commonsense", "commonsense"): (0.0, 0.1, 0.5, 0.55)}  # undefined / +10.0%
    tasks = ["sentiment", "commonsense"]
    effect = np.full((1, 2, 2, 2, len(METRIC_NAMES)), np.nan)
    for (src, ev), (ao, ai, co, ci) in values.items():
        d = ConditionResult("enhance", ao, ai, co, ci).as_dict()
        effect[0, tasks.index(src), tasks.index(ev), 1] = [d[m] for m in METRIC_NAMES]
    return xr.Dataset({"effect": (("method", "source_task", "eval_task", "direction", "metric"), effect)},
                      coords={"method": ["neuronllm"], "source_task": tasks, "eval_task": tasks,
                              "direction": ["degrade", "enhance"], "metric": list(METRIC_NAMES)})


def test_functionality_and_matrix_tables():
    table = functionality_table(_matrix(), "neuronllm")
    assert "| sentiment neurons | +20.0%/+30.0% | -10.0%/-20.0% |" in table
    assert "| commonsense neurons | -20.0%/+0.0% | undefined/+10.0% |" in table
    enh = matrix_table(_matrix(), "neuronllm", "enhance")  # rows eval task, points
    assert "| commonsense | -5.0/-10.0 | +10.0/+5.0 |" in enh
    assert "| sentiment | - | - |" in matrix_table(_matrix(), "neuronllm", "degrade")


def test_shipped_crosstask_recipes_load(tmp_path):
    from pathlib import Path

    from nsneurons.crosstask import CrossTaskSettings
    from nsneurons.recipe import RecipeError, load_recipe

    root = Path(__file__).parent.parent / "recipes"
    demo = load_recipe(root / "cross-task-demo.yaml")
    assert demo.model == "demo" and len(demo.tasks) >= 2
    paper, settings = load_crosstask_recipe(root / "cross-task-paper.yaml")
    assert paper.model == "meta-llama/Llama-2-7b-hf" and [t.name for t in paper.tasks] == ["ner", "chunking", "sentiment", "commonsense"]
    assert settings == CrossTaskSettings(methods=("neuronllm",), budget_methods=("neuronllm", "tn", "qrnca"))
    assert settings.k_values == (10, 25, 50, 100, 150, 200, 250, 500)
    # A `crosstask:` section is read and checked.
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel: m\ntasks: [sentiment, ner]\ncrosstask: {methods: [tn], k_values: [5, 7], ratio: 0.3}\n")
    assert load_crosstask_recipe(path)[1] == CrossTaskSettings(methods=("tn",), k_values=(5, 7), ratio=0.3)
    path.write_text("name: x\nmodel: m\ntasks: [sentiment]\ncrosstask: {ratio: 1.5}\n")
    with pytest.raises(RecipeError, match="r.yaml: crosstask.ratio"):
        load_crosstask_recipe(path)


# ---- end to end on a tiny random model -------------------------------------------------------

TINY = {"name": "tiny-cross", "model": None, "device": "cpu", "answer_format": "letters", "tasks": ["sentiment", "ner"],
        "identification_examples": 2, "attribution": {"steps": 2},
        "selection": {"methods": ["neuronllm", "tn", "act"], "k": 5, "z": 20},
        "evaluation": {"understood": 3, "not_understood": 3, "candidates": 10, "ratios": [0.0, 0.5, 1.0]}}
_RUNS = {}


def tiny_crosstask_run(tmp_path_factory):
    """A finished `nsneurons run` plus `run_crosstask` of TINY, once per session (also used by test_notebooks)."""
    if "out" not in _RUNS:
        from fixtures_models import llama_style_tokenizer, tiny_hf_model
        from nsneurons.pipeline import run_recipe
        from nsneurons.recipe import recipe_from_dict

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
    from nsneurons.crosstask import open_crosstask
    from nsneurons.pipeline import open_outputs

    out, recipe = finished
    ds = {name: d.load() for name, d in open_crosstask(out).items()}
    matrix = ds["matrix"].effect
    assert matrix.dims == ("method", "source_task", "eval_task", "direction", "metric")
    assert dict(matrix.sizes) == {"method": 2, "source_task": 2, "eval_task": 2, "direction": 2, "metric": len(METRIC_NAMES)}
    assert np.isfinite(matrix.sel(metric="acc_change")).all()
    assert ds["budget"].k.values.tolist() == [1, 5, 128]  # 1000 clamped to half of 2 x 128 neurons
    assert ds["common"].effect.dims == ("method", "task", "direction", "ratio", "metric")
    neurons = open_outputs(out)["neurons"].load()
    for m in ("neuronllm", "tn"):
        common = pairs_of(ds["common"].sel({"method": m}))
        for t in ("sentiment", "ner"):
            spec = pairs_of(ds["specific"].sel({"method": m, "task": t}))
            stored = pairs_of(neurons.sel({"method": m, "task": t}))
            assert not spec & common and stored - common <= spec
    # Refilling keeps K per role: every layer histogram sums to K (tn has no bad neurons).
    count = ds["layers"]["count"].sum("layer")
    assert (count.sel({"method": "neuronllm"}) == 5).all() and (count.sel({"method": "tn", "role": "good"}) == 5).all()
    # Budget K = the run's K re-runs the run's own sweep: the same neurons, ratios and evaluation set.
    results = open_outputs(out)["results"].load()
    for m in ("neuronllm", "tn"):
        ours = ds["budget"].sweep.sel({"method": m, "k": 5}).sel(ratio=results.ratio.values)
        theirs = results.sweep.sel({"method": m, "metric": list(METRIC_NAMES)}).transpose(*ours.dims)
        np.testing.assert_allclose(ours.values, theirs.values, equal_nan=True)
    text = (out / "crosstask.md").read_text()
    for heading in ("Table 5", "Figures 2 and 4", "Table 8", "Figure 7", "Table 7"):
        assert heading in text, heading
    assert "| neuronllm |" in text and "crosstask.md" in (out / "report.md").read_text()
    for name in ("matrix", "common_layers", "layer_change", "budget", "layer_distribution_specific"):
        png = out / "figures" / f"crosstask_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
