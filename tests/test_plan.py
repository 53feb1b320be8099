"""`nsneurons plan`: counts worked out by hand on recipes/tiny-ci.yaml, the JSON schema, bad recipes refused."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from fixtures_models import save_tiny_llama, tiny_hf_model

from nsneurons import cli, conditions, plan, plan_stages, plan_work
from nsneurons.recipe import load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    # 2 layers x 128 neurons, hidden 64, 4 heads (2 KV), untied embeddings; the llama-style test tokenizer.
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _recipe_file(tmp_path, model_dir, **changes):
    data = yaml.safe_load((REPO / "recipes" / "tiny-ci.yaml").read_text())
    data.update(model=str(model_dir), output=str(tmp_path / "out"), **changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shape_from_config_counts_the_parameters_exactly(tiny_dir):
    shape = plan.read_model_shape(str(tiny_dir))
    sizes = (shape.n_layers, shape.n_neurons, shape.hidden, shape.n_heads, shape.n_kv_heads, shape.head_dim)
    assert sizes == (2, 128, 64, 4, 2, 16)
    # Per block: q, o 64 x 64 each, k, v 64 x 32 each, gate/up/down 3 x 64 x 128, two norms of 64.
    assert shape.block_params == 2 * 4096 + 2 * 2048 + 3 * 8192 + 128 == 36992
    model = tiny_hf_model("llama", layers=2, vocab_size=shape.vocab)
    assert shape.n_params == sum(p.numel() for p in model.parameters())  # untied: embeddings and head both counted


def test_tiny_ci_counts_by_hand(tmp_path, tiny_dir):
    recipe = load_recipe(_recipe_file(tmp_path, tiny_dir))
    shape = plan.read_model_shape(recipe.model)
    stages = {s.name: s for s in plan.make_plan(recipe, shape).stages}
    # Screen: candidates capped at 12 examples x 3 proxies = 36 prompts, batches of 16: 16 + 16 + 4.
    assert (stages["sentiment: screen"].passes, stages["sentiment: screen"].rows) == (3, 36)
    # IG targets: neuronllm -> ace, tn -> tn, qrnca and kn -> qrnca (act and random need none).
    assert [n for n in stages if "IG" in n] == ["sentiment: IG ace", "sentiment: IG qrnca", "sentiment: IG tn"]
    # Per target: 2 identification examples x 3 proxies, both layers in one pass (the auto budget fits);
    # staircase rows m + 1 = 5 join at each of the 2 layers: 1 + 5 + 5 = 11 rows reach the output.
    # Passes per example: the common prefix, each proxy's own tokens, each proxy's pass with backward.
    assert plan_work.group_of([[1, 2, 3, 9], [1, 2, 3, 8, 9]]) == plan_work.Group((4, 5), 3)  # prompts minus their last token
    for target in ("ace", "qrnca", "tn"):
        ig = stages[f"sentiment: IG {target}"]
        assert (ig.backward, ig.rows, ig.passes) == (2 * 3, 2 * 3 * 11, 2 * (1 + 3 + 3))
    # Interventions: neuronllm at good counts {0, 3 (2.5 rounds up), 5} x 2 directions = 6 (its ablations are
    # ratios 1 and 0); tn, qrnca, kn, act 2 each; random 5 draws x 2; + none = 25 conditions, each a query row
    # after one shared prefix per evaluation proxy: (3 + 3) examples x 3 proxies = 18 proxies.
    iv = stages["sentiment: interventions"]
    assert plan_stages.condition_counts(recipe) == {"neuronllm": 6, "tn": 2, "qrnca": 2, "kn": 2, "act": 2, "random": 10}
    assert (iv.passes, iv.rows) == (18 * 2, 18 * 25)


def _neuron_set(good, bad):
    pad = [(-1, -1)] * (len(good) - len(bad))
    layer, neuron = zip(*(list(good) + list(bad) + pad))
    shape = (2, len(good))
    dims = ("role", "rank")
    return xr.Dataset(
        {"layer": (dims, np.reshape(layer, shape)), "neuron": (dims, np.reshape(neuron, shape))}, coords={"role": ["good", "bad"]}
    )


@pytest.mark.parametrize(
    "ratios, expected",
    [
        ((0.0, 0.25, 0.5, 0.75, 1.0), 45),  # the demo recipe
        (tuple(i / 10 for i in range(11)), 81),
    ],
)  # the paper's 11 ratios
def test_condition_counts_match_the_runner(ratios, expected):
    """The structural count equals len(conditions.plan(...)) + none on neuron sets with the runner's ties."""
    k, methods = 100, ("neuronllm", "tn", "qrnca", "tn_enabled", "qrnca_enabled", "kn", "act", "random")
    recipe = recipe_from_dict(
        {
            "name": "x",
            "model": "demo",
            "tasks": ["sentiment"],
            "selection": {"methods": list(methods), "k": k},
            "evaluation": {"ratios": list(ratios)},
        }
    )
    rng = np.random.default_rng(0)

    def fresh():
        flat = rng.choice(30 * 1536, 2 * k, replace=False)
        return [(int(f // 1536), int(f % 1536)) for f in flat]

    sets = {m: [] for m in methods}
    for m in ("neuronllm", "tn_enabled", "qrnca_enabled"):
        pairs = fresh()
        sets[m] = [_neuron_set(pairs[:k], pairs[k:])]
    for m in ("tn", "qrnca"):  # the same K good neurons as the enabled variant (same target, same ranking)
        good = sets[f"{m}_enabled"][0].sel(role="good")
        sets[m] = [_neuron_set(list(zip(good.layer.values.tolist(), good.neuron.values.tolist())), [])]
    for m in ("kn", "act"):
        sets[m] = [_neuron_set(fresh()[:k], [])]
    sets["random"] = [_neuron_set(fresh()[:k], []) for _ in range(5)]
    planned, _ = conditions.plan(sets, k, sorted(set(ratios) | {1.0}), ablation=True)
    assert len(planned) + 1 == 1 + sum(plan_stages.condition_counts(recipe).values()) == expected


def test_json_schema(tmp_path, tiny_dir, capsys):
    assert cli.main(["plan", str(_recipe_file(tmp_path, tiny_dir)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"recipe", "model", "rates", "stages", "totals", "notes"}
    assert out["recipe"] == "tiny-ci" and out["model"]["n_layers"] == 2 and out["rates"]["calibrated"] is False
    assert [s["kind"] for s in out["stages"]] == ["load", "screen", "ig", "ig", "ig", "intervene"]
    keys = {
        "name",
        "kind",
        "passes",
        "backward",
        "rows",
        "flops",
        "peak_bytes",
        "download_bytes",
        "upload_bytes",
        "seconds",
        "detail",
    }
    assert all(set(s) == keys for s in out["stages"])
    assert set(out["totals"]) == {
        "passes",
        "backward_passes",
        "rows",
        "flops",
        "seconds",
        "peak_bytes",
        "download_bytes",
        "upload_bytes",
    }
    assert out["totals"]["passes"] == 3 + 3 * 14 + 36 and out["totals"]["backward_passes"] == 18
    assert out["totals"]["download_bytes"] == 0  # a local run downloads nothing


def test_remote_plan_counts_ndif_bytes(tmp_path, tiny_dir, capsys):
    assert cli.main(["plan", str(_recipe_file(tmp_path, tiny_dir)), "--json", "--remote"]) == 0
    stages = {s["name"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    # Per IG pass: IG and activations (2 layers x 128 neurons), F per row (2 x 5), F(x) and 4 logits, float32;
    # plus one saved session per example (2 KB, an estimate).
    assert stages["sentiment: IG ace"]["download_bytes"] == 6 * (2 * 2 * 128 + 2 * 5 + 5) * 4 + 2 * 2048
    # Per evaluation proxy: [25 conditions, 4 options] float32 back. Up: the sparse switch tables, at most
    # 55 switched neurons (K = 5: neuronllm 5 good + 5 bad, tn, qrnca, kn, act 5 each, random 5 draws x 5),
    # each an int64 column and 25 float32 multipliers; the prefix ids (L - 1 int64), the 25 query ids and
    # positions (int64) and the [25, L - 1 + 25] float32 query mask, L the evaluation prompts' length.
    recipe = load_recipe(_recipe_file(tmp_path, tiny_dir))
    (length,) = set(plan.eval_prompts(recipe, plan.stage_inputs(recipe, plan.tokenizer_for(recipe), None)["sentiment"][1]))
    iv = stages["sentiment: interventions"]
    per_proxy = 55 * (8 + 25 * 4) + (length - 1) * 8 + 25 * 16 + 25 * (length - 1 + 25) * 4
    assert (iv["download_bytes"], iv["upload_bytes"]) == (18 * (25 * 16 + 2048), 18 * per_proxy)
    assert "<= 55 switched neurons" in iv["detail"]


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"selection": {"k": "ten"}}, "selection.k"),
        ({"selection": {"k": 200}}, "selection.k"),  # > 256 neurons / 2
        ({"evaluation": {"ratioz": [0.5]}}, "evaluation.ratioz"),
    ],
)
def test_bad_recipe_refused_with_the_key(tmp_path, tiny_dir, capsys, changes, key):
    assert cli.main(["plan", str(_recipe_file(tmp_path, tiny_dir, **changes))]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err and "Traceback" not in err


def test_summary_line(tmp_path, tiny_dir):
    recipe = load_recipe(_recipe_file(tmp_path, tiny_dir))
    line = plan.summary_line(recipe, plan.read_model_shape(recipe.model))
    assert line.startswith("plan: 81 passes (18 with backward), peak cpu ") and "uncalibrated" in line


@pytest.mark.slow
def test_measure_calibrates_on_the_tiny_model(tmp_path, tiny_dir, capsys):
    assert cli.main(["plan", str(_recipe_file(tmp_path, tiny_dir)), "--json", "--measure"]) == 0
    out = json.loads(capsys.readouterr().out)
    rates = out["rates"]
    assert rates["calibrated"] is True and rates["ig_flops"] > 0 and rates["fwd_flops"] > 0 and rates["batch_flops"] > 0
    assert any("load average" in n for n in rates["notes"])
    # Counting does not depend on the rates: the same passes as uncalibrated.
    assert out["totals"]["passes"] == 81 and out["totals"]["backward_passes"] == 18


def test_crosstask_counts_by_hand(tmp_path, tiny_dir):
    path = _recipe_file(
        tmp_path, tiny_dir, tasks=["sentiment", "ner"], selection={"methods": ["neuronllm", "tn"], "k": 5, "z": 20}
    )
    recipe = load_recipe(path)
    stages = {s.name: s for s in plan.make_plan(recipe, plan.read_model_shape(recipe.model), crosstask=True).stages}
    # Per evaluated task: common neurons of neuronllm at 3 ratios x 2 directions = 6; the matrix, 2 source tasks x 2 = 4;
    # Table 7, K in {10, 25, 50, 100, 128 (500 and the rest clamped to 256 neurons / 2)}: neuronllm 5 x 3 ratios x 2 = 30,
    # tn 5 x 2 = 10; no Table 8 (no commonsense task, no budgets) -> 50, one call with none: 51 query rows per proxy.
    assert plan.crosstask_counts(recipe, plan.read_model_shape(recipe.model)) == 50
    ct = stages["ner: crosstask"]
    assert (ct.passes, ct.rows) == (18 * 2, 18 * 51)


def test_naica_counts_by_hand(tmp_path, tiny_dir):
    path = _recipe_file(tmp_path, tiny_dir, experiment="naica", tasks=[], naica={"max_per_domain": 1, "steps": 2})
    recipe = load_recipe(path)
    stages = {s.name: s for s in plan.make_plan(recipe, plan.read_model_shape(recipe.model)).stages}
    # 6 domains x 1 query x 3 prompts; m = 2: rows 1 + 3 + 3 = 7 per pass (both layers in one pass).
    ig = stages["NA-ICA: IG qrnca"]
    assert (ig.backward, ig.rows) == (18, 18 * 7)
    # Editing: per prompt a prefix and a query pass of 5 conditions.
    edit = stages["NA-ICA: editing"]
    assert (edit.passes, edit.rows) == (18 * 2, 18 * 5)


def test_plan_without_the_data(tmp_path, tiny_dir):
    """--prompt-tokens: no data read (hub datasets out of reach); candidates from the recipe, prompts of that length."""
    recipe = load_recipe(_recipe_file(tmp_path, tiny_dir, tasks=[{"name": "sentiment", "source": "no/such-dataset"}]))
    result = plan.make_plan(recipe, plan.read_model_shape(recipe.model), prompt_tokens=40)
    stages = {s.name: s for s in result.stages}
    # 12 candidates x 3 = 36 prompts in batches of 16; IG as from the data (common prefix 40 - 17, own tokens 16).
    assert (stages["sentiment: screen"].passes, stages["sentiment: IG ace"].passes) == (3, 2 * (1 + 3 + 3))
    assert stages["sentiment: interventions"].rows == 18 * 25
    assert result.notes[0].startswith("data not read: every prompt assumed 40 tokens")


def test_a_run_starts_with_the_plan_line_and_a_failure_to_plan_does_not_stop_it():
    from types import SimpleNamespace

    from nsneurons.recipe import load_recipe
    from nsneurons.runfolder import plan_line
    from tests.fixtures_models import tiny_model

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "tiny-ci.yaml")
    line = plan_line(recipe, tiny_model(layers=2))
    assert line.startswith("plan: ") and " passes (" in line and "uncalibrated" in line, line
    broken = SimpleNamespace(hf_model=SimpleNamespace(config=SimpleNamespace(to_dict=lambda: {"model_type": "llama"})))
    assert plan_line(recipe, broken).startswith("plan: not available (ValueError: model PLACEHOLDER: its config lacks")


def test_layers_per_pass_rule_by_hand():
    from nsneurons.attribution import layers_per_pass_for

    # Per row 4 x (2 x 100 + 2 layers x (12 x 8 + 4 x 16) + 2 x 10) = 2160 bytes; a budget of 32 rows.
    sizes = dict(vocab=100, hidden=8, n_layers=2, n_neurons=16, n_attr=5, steps=2, prompt_len=10, budget=32 * 2160)
    assert layers_per_pass_for(**sizes) == 5  # 32 rows // (m + 2 = 4) = 8 layers, capped at the 5 attributed
    assert layers_per_pass_for(**sizes, row_tokens=4) == 2  # units of 4 tokens: 8 rows // 4


def test_ig_counts_multi_token_units_by_hand(tiny_dir):
    from nsneurons.plan_work import Group, Tally, block_flops

    shape = plan.read_model_shape(str(tiny_dir))
    group = Group((30, 31), 20, (1, 2, 4, 2))
    assert group.unit_tokens == 1 + 0 + 1 + 3 + 1 == 6
    t = Tally()
    plan_stages.ig_group(t, shape, group, [[0, 1]], steps=4, midpoint=False, path="staircase", answer_only=True, act=4)
    # The common prefix, each prompt's own tokens, one IG pass per prompt; staircase rows 1 + 5 at layer 0 and
    # 1 + 10 at layer 1, units of 6 tokens: 66 query tokens reach the output, which computes full logits.
    assert (t.passes, t.backward, t.rows) == (1 + 2 + 2, 2, 2 * 66)
    t = Tally()
    plan_stages.ig_group(
        t, shape, Group((30,), 0, (1, 2, 4, 2)), [[0, 1]], steps=4, midpoint=False, path="full", answer_only=True, act=4
    )
    # Full prompts: per layer 5 alpha rows x 4 sequences of 30 + 4 - 1 tokens, logits at every position.
    tokens = 5 * 4 * 33
    per_trace = 2 * block_flops(shape, tokens, 33 / 2) + 2 * 64 * shape.vocab * tokens
    assert (t.passes, t.rows) == (2, 2 * 20) and t.flops == pytest.approx(2 * plan_work.BACKWARD_FACTOR * per_trace)
