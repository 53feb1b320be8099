"""CLI conventions that need no model."""

import pytest

from nsneurons import cli
from nsneurons.version import package_version


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nsneurons {package_version()}"
    assert package_version()[0].isdigit()


def test_verbose_shows_skipped_rows_and_quiet_hides_them(tmp_path, capsys):
    from pathlib import Path

    import nsneurons

    data = tmp_path / "ner.jsonl"
    rows = (Path(nsneurons.__file__).parent / "tasks" / "data" / "ner.jsonl").read_text()
    no_entity = '{"split": "test", "id": "x", "tokens": ["It", "rained", "."], "ner_tags": [0, 0, 0], "fine_ner_tags": [0, 0, 0]}'
    data.write_text(rows + no_entity + "\n")  # a sentence without an entity is skipped, with a reason
    args = ["qatt", "--task", "ner", "--source", str(data), "--n", "1"]
    assert cli.main(["-v", *args]) == 0
    err = capsys.readouterr().err
    assert "INFO: " in err and "skipped 1 row(s): {'no entity': 1}" in err
    assert cli.main(["-q", *args]) == 0
    assert "skipped" not in capsys.readouterr().err


def test_set_overrides_are_validated_like_the_yaml(tmp_path, capsys):
    from nsneurons.recipe import RecipeError, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmodel: m\ntasks: [sentiment]\nselection: {k: 10}\n")
    recipe = load_recipe(path, ["selection.k=7", "evaluation.ratios=[0, 1]", "seed=3"])
    assert (recipe.selection.k, recipe.evaluation.ratios, recipe.seed) == (7, (0.0, 1.0), 3)
    assert load_recipe(path).selection.k == 10  # the file is untouched
    with pytest.raises(RecipeError, match=r"with --set: selection.k: expected an int, got 'ten'"):
        load_recipe(path, ["selection.k=ten"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(path, ["selection.k"])
    assert cli.main(["run", str(path), "--set", "selection.kk=3"]) == 3  # bad input, before any model loads
    assert "unknown key selection.kk" in capsys.readouterr().err


def test_json_output_of_eval_and_info_parses(tmp_path, capsys):
    import json

    from fixtures_models import save_tiny_llama

    model = save_tiny_llama(tmp_path / "m")
    assert cli.main(["info", "--model", str(model), "--device", "cpu", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["n_layers"], info["total_neurons"]) == (2, 2 * info["n_neurons"])
    assert cli.main(["eval", "--model", str(model), "--device", "cpu", "--task", "sentiment", "--n", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["examples"] == 2 and out["proxies"] == 6 and sum(out["chosen"].values()) == 6
    assert 0 <= out["com"] <= 1 and out["acc"] * 6 == pytest.approx(round(out["acc"] * 6))
