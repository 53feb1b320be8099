"""`nsneurons run` end to end on a tiny random model: every output exists and opens; resume equals uninterrupted."""

from pathlib import Path

import pytest
import xarray as xr
import yaml
from fixtures_models import save_tiny_llama

from nsneurons import cli
from nsneurons.recipe import RecipeError, load_recipe, recipe_from_dict

pytestmark = pytest.mark.slow
RECIPE = Path(__file__).parent.parent / "recipes" / "tiny-ci.yaml"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _recipe_file(tmp_path, model_dir, **overrides):
    data = yaml.safe_load(RECIPE.read_text())
    data.update(model=str(model_dir), output=str(tmp_path / "out"), **overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _outputs(out):
    from nsneurons.runfolder import open_outputs

    return {name: ds.load() for name, ds in open_outputs(out).items()}


def test_run_writes_every_output(tmp_path, tiny_model_dir):
    assert cli.main(["run", str(_recipe_file(tmp_path, tiny_model_dir))]) == 0
    out = tmp_path / "out" / "tiny-ci"
    for name in ("report.md", "recipe.yaml"):
        assert (out / name).is_file(), name
    for name in ("results.zarr", "neurons.zarr", "baseline.zarr", "examples.zarr", "tasks/sentiment.zarr"):
        assert (out / name).is_dir(), name
    assert list((out / "figures").glob("*.png"))
    ds = _outputs(out)
    assert set(ds["results"].sweep.dims) == {"task", "selector", "direction", "ratio", "metric"}
    assert int((ds["neurons"].layer.sel(task="sentiment", selector="neuronllm", role="good") >= 0).sum()) == 5
    assert "RAC" in (out / "report.md").read_text()
    scores = xr.open_zarr(out / "scores" / "sentiment-ace.zarr", consolidated=False)
    assert scores.sizes["example"] == 2 and bool(scores.done.all())
    for name in ("results", "neurons", "baseline"):  # no scalar coord of one task leaks into the combined outputs
        assert [c for c in ds[name].coords if c not in ds[name].dims] == [], name
    assert scores.attrs["data_source"] == "packaged fixture"  # where the rows came from (their content: prompts_sha256)
    # A second run finds everything done and recomputes nothing.
    assert cli.main(["run", str(_recipe_file(tmp_path, tiny_model_dir))]) == 0
    _check_export(out, ds["neurons"])


def _check_export(out, neurons):
    """`nsneurons export`: one row per (task, selector, role, rank) that holds a neuron, in every format."""
    import json

    import pandas as pd

    held = int((neurons.layer >= 0).sum())  # neuronllm 5 good + 5 bad, the good-only methods 5 good
    assert held == 5 * 2 + 5 * 5
    for fmt in ("csv", "json", "parquet"):
        assert cli.main(["export", str(out), "--format", fmt]) == 0
        path = out / f"neurons.{fmt}"
        table = (
            pd.read_csv(path)
            if fmt == "csv"
            else pd.read_parquet(path)
            if fmt == "parquet"
            else pd.DataFrame(json.loads(path.read_text())["neurons"])
        )
        assert len(table) == held and not table.duplicated(["task", "selector", "role", "rank"]).any()
        good = table[(table.selector == "neuronllm") & (table.role == "good")].sort_values("rank")
        expected = neurons.sel(task="sentiment", selector="neuronllm", role="good")
        assert good.layer.tolist() == expected.layer.values.tolist() and good.neuron.tolist() == expected.neuron.values.tolist()
    assert json.loads((out / "neurons.json").read_text())["provenance"]["k"] == 5
    assert set(pd.read_csv(out / "neurons.csv").columns) >= {"model", "recipe", "k", "nsneurons_version", "score"}


def test_interrupted_run_resumes_to_the_same_outputs(tmp_path, tiny_model_dir, monkeypatch):
    whole = tmp_path / "whole"
    whole.mkdir()
    assert cli.main(["run", str(_recipe_file(whole, tiny_model_dir))]) == 0

    import nsneurons.scoring as scoring

    real, calls = scoring.attribute_proxies, {"n": 0}  # one call per example (its three proxies)

    def dies_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the second example of the second target's store (2 examples per store)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    broken = tmp_path / "broken"
    broken.mkdir()
    monkeypatch.setattr(scoring, "attribute_proxies", dies_midway)
    assert cli.main(["run", str(_recipe_file(broken, tiny_model_dir))]) == 130
    assert not (broken / "out" / "tiny-ci" / "results.zarr").exists()
    monkeypatch.setattr(scoring, "attribute_proxies", real)
    assert cli.main(["run", str(_recipe_file(broken, tiny_model_dir))]) == 0
    first, second = _outputs(whole / "out" / "tiny-ci"), _outputs(broken / "out" / "tiny-ci")
    for name in first:
        xr.testing.assert_identical(first[name], second[name])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": None}, "missing required key model"),
        ({"selection": {"kk": 3}}, "unknown key selection.kk"),
        ({"selection": {"k": "ten"}}, "selection.k: expected an int, got 'ten'"),
        ({"evaluation": {"ratios": [0.5, 1.5]}}, r"evaluation.ratios\[1\]: expected a ratio in \[0, 1\], got 1.5"),
        ({"selection": {"methods": ["neuronllm", "magic"]}}, r"selection.methods\[1\]: expected one of"),
        ({"attribution": {"quadrature": "simpson"}}, "attribution.quadrature: expected one of 'right', 'midpoint'"),
        ({"experiment": "naica", "tasks": [], "naica": {"t": 1.0}}, r"naica.t: expected in \[0, 1\)"),
        ({"evaluation": {"best_by": "max"}}, "evaluation.best_by: expected one of 'mean', 'rac', 'rcc', 'per_metric'"),
        ({"evaluation": {"bootstrap": 100}}, "evaluation.bootstrap: expected >= 1000 resamples"),
        ({"selection": {"random_draws": 0}}, "selection.random_draws: expected >= 1"),
        ({"evaluation": {"examples_from": "a", "screen_model": "b"}}, "set either examples_from or screen_model"),
    ],
)
def test_bad_recipes_name_the_key(change, message):
    data = {"name": "x", "model": "m", "tasks": ["sentiment"]}
    for key, value in change.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(data)


def test_run_without_ratio_one_and_reusing_its_evaluation_set(tmp_path, tiny_model_dir):
    # Good-only methods run at ratio 1.0 even when the recipe's sweep lacks it (a KeyError before).
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    assert (
        cli.main(
            [
                "run",
                str(
                    _recipe_file(
                        first,
                        tiny_model_dir,
                        evaluation={"understood": 3, "not_understood": 3, "candidates": 12, "ratios": [0.0, 0.5]},
                    )
                ),
            ]
        )
        == 0
    )
    out = first / "out" / "tiny-ci"
    results = _outputs(out)["results"]
    assert results["ratio"].values.tolist() == [0.0, 0.5, 1.0]
    assert results["chosen_ratio"].sel(selector="tn").values.ravel().tolist() == [1.0] * 4
    assert set(results["chosen_ratio"].sel(selector="neuronllm").values.ravel()) <= {0.0, 0.5}
    # A second run (other ratios, a fresh folder) evaluates on the examples the first one saved.
    assert (
        cli.main(
            [
                "run",
                str(
                    _recipe_file(
                        second, tiny_model_dir, evaluation={"candidates": 12, "ratios": [0.0, 1.0], "examples_from": str(out)}
                    )
                ),
            ]
        )
        == 0
    )
    saved, reused = (_outputs(d / "out" / "tiny-ci")["examples"] for d in (first, second))
    assert reused["evaluation_example"].values.tolist() == saved["evaluation_example"].values.tolist()
    assert reused.attrs["evaluation_set"] == f"examples of {out}"
    report = (second / "out" / "tiny-ci" / "report.md").read_text()
    assert f"examples of {out}" in report and "Table 6" in report


def test_k_larger_than_the_model_is_refused(tmp_path, tiny_model_dir):
    path = _recipe_file(tmp_path, tiny_model_dir, selection={"k": 10_000})
    assert cli.main(["run", str(path)]) == 3  # bad input: one clear error line, no traceback
    from nsneurons.recipe import check_against_model

    with pytest.raises(RecipeError, match="selection.k: 10000 is larger than the 128 neurons available per role"):
        check_against_model(load_recipe(path), n_layers=2, n_neurons=128)


def test_recipe_file_errors_name_the_file(tmp_path):
    with pytest.raises(RecipeError, match="cannot read recipe .*missing.yaml"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: m\ntasks: [sentiment]\nseed: [1\n")
    with pytest.raises(RecipeError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)


def test_shipped_recipes_are_valid():
    paths = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        load_recipe(path)


def test_naica_recipe_runs_through_nsneurons_run(tmp_path, tiny_model_dir):
    path = _recipe_file(
        tmp_path,
        tiny_model_dir,
        experiment="naica",
        tasks=[],
        naica={"max_per_domain": 3, "steps": 2, "v": 5, "domains": ["biology", "physics", "geography"]},
    )
    assert cli.main(["run", str(path)]) == 0
    out = tmp_path / "out" / "tiny-ci"
    assert (out / "report.md").is_file() and (out / "naica_layer_histogram.png").is_file()
    assert (out / "naica_overlap_heatmap.png").is_file() and (out / "naica.zarr").is_dir()


@pytest.mark.demo
def test_naica_demo_recipe_writes_figures_and_report(tmp_path):
    """recipes/na-ica.yaml as shipped, on the real demo model (several minutes on 2 cores)."""
    recipe = Path(__file__).parent.parent / "recipes" / "na-ica.yaml"
    assert cli.main(["run", str(recipe), "--output", str(tmp_path)]) == 0
    out = tmp_path / "na-ica"
    for name in ("report.md", "naica_layer_histogram.png", "naica_overlap_heatmap.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "Localized regions" in report and "Neuron-based prediction" in report and "Editing" in report


def test_a_reference_model_screens_the_evaluation_candidates(tmp_path, tiny_model_dir):
    # Appendix A.1: one model (LLaMA 2-7B) screens the examples that every model is evaluated on.
    from nsneurons.evaluation_set import reference_screens, screen
    from nsneurons.models import load_model
    from nsneurons.splits import task_proxies

    recipe = load_recipe(
        _recipe_file(tmp_path, tiny_model_dir, evaluation={"candidates": 6, "screen_model": str(tiny_model_dir)})
    )
    screens = reference_screens(recipe, lambda t: task_proxies(recipe, t)[1], progress=False)
    _, candidates = task_proxies(recipe, recipe.tasks[0])
    direct = screen(recipe, load_model(str(tiny_model_dir), device="cpu"), candidates, progress=False)
    assert screens == {"sentiment": direct} and len(direct) == 6
    assert (
        reference_screens(load_recipe(_recipe_file(tmp_path, tiny_model_dir)), lambda t: []) == {}
    )  # default: the run's own model
