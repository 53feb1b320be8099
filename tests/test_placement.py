"""Models split across devices (device_map / max_memory through HF and accelerate): values checked
before loading; a model with layers offloaded to the disk (accelerate's dispatch hooks, as in a
multi-GPU split) gives the plain model's IG on every path and its intervention results."""

import numpy as np
import pytest
import torch
from fixtures_models import llama_style_tokenizer, tiny_hf_model

from nsneurons.attribution import AttributionConfig, attribute_proxies
from nsneurons.intervention import BASELINE, Condition, option_probs
from nsneurons.models import load_model
from nsneurons.placement import (
    PlacementError,
    check_device_map,
    check_max_memory,
    free_gpu_bytes,
    gpu_count,
    normalized,
    parse_cli,
    split_devices,
    without_cudnn_attention,
)
from nsneurons.recipe import RecipeError, recipe_from_dict
from nsneurons.tasks.base import Proxy

OPTIONS = ("positive", "negative", "neutral", "not sure")
TEXT = "Question: review number {} was good\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"
# Layers 1 and 2 and the output layer live on the disk; accelerate brings each in for its own forward.
SPLIT = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "disk",
    "model.norm": "cpu",
    "lm_head": "disk",
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("placed") / "model"
    tok = llama_style_tokenizer()
    tiny_hf_model("llama", layers=3, vocab_size=len(tok)).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def models(folder, tmp_path_factory):
    split = load_model(str(folder), device_map=SPLIT, offload_folder=tmp_path_factory.mktemp("offload"))
    return load_model(str(folder), device="cpu"), split


def _proxies():
    return [Proxy("ex0", p, TEXT.format(0), OPTIONS, p % 4, "sentiment") for p in range(3)]


def test_the_split_model_is_placed_by_accelerate(models):
    _, split = models
    assert split.provenance["device_map"] == "cpu x 4, disk x 3" and split.provenance["device"] == "cpu"
    # Offloaded weights wait on the meta device; inputs go where the embedding runs.
    assert split.hf_model.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    assert str(split.device) == "cpu" and [str(d) for d in split_devices(split.hf_model)] == ["cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("path, target", [("staircase", "ace"), ("prefix", "ace"), ("full", "ace"), ("staircase", "tn")])
def test_ig_of_a_split_model_equals_the_plain_models(models, path, target):
    plain, split = models
    config = AttributionConfig(target=target, steps=2, path=path, layers_per_pass=2)
    expected, got = attribute_proxies(plain, _proxies(), config), attribute_proxies(split, _proxies(), config)
    for a, b in zip(expected, got):
        assert np.abs(a.ig).max() > 1e-4  # numbers worth comparing
        np.testing.assert_allclose(b.ig, a.ig, rtol=0, atol=1e-6)
        np.testing.assert_allclose(b.option_prob, a.option_prob, rtol=0, atol=1e-6)
        np.testing.assert_allclose(b.ig_delta, a.ig_delta, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("position", ["answer", "all"])
def test_interventions_on_a_split_model_equal_the_plain_models(models, position):
    plain, split = models
    switched = [
        BASELINE,
        Condition("off", silence=tuple((layer, n) for layer in (1, 2) for n in range(0, 128, 3))),
        Condition("up", excite=tuple((layer, n) for layer in (0, 2) for n in range(1, 128, 5))),
    ]
    expected = option_probs(plain, _proxies(), switched, position=position, batch_size=2, progress=False)
    got = option_probs(split, _proxies(), switched, position=position, batch_size=2, progress=False)
    assert float(abs(expected.sel(condition="off") - expected.sel(condition="none")).max()) > 1e-3  # the switches act
    np.testing.assert_allclose(got.values, expected.values, rtol=0, atol=1e-6)


def test_placement_values_are_checked_with_one_clear_error():
    check_device_map("auto"), check_device_map({"model.layers.0": 0, "lm_head": "cuda:1", "model.norm": "disk"})
    check_max_memory({0: "20GiB", "cpu": "60GiB", 1: 10**9}, "auto")
    for value, says in (
        (
            "everywhere",
            "device_map: expected one of 'auto', 'balanced', 'balanced_low_0', 'sequential' or a mapping, got 'everywhere'",
        ),
        (
            {"model.layers.0": "gpu0"},
            "device_map.model.layers.0: expected a GPU index (0, 1, ...), 'cuda:N', 'cpu' or 'disk', got 'gpu0'",
        ),
        ({}, "or a mapping, got {}"),
    ):
        with pytest.raises(PlacementError) as caught:
            check_device_map(value)
        assert str(caught.value).endswith(says) and str(caught.value).startswith("device_map")
    with pytest.raises(PlacementError, match=r"max_memory\.0: expected a size such as '20GiB'.*got '20 gigs'"):
        check_max_memory({0: "20 gigs"}, "auto")
    with pytest.raises(PlacementError, match="max_memory: takes effect only with device_map"):
        check_max_memory({0: "20GiB"}, None)
    assert normalized({"lm_head": "1"}, {"0": "2GiB", "cpu": "4GiB"}) == ({"lm_head": 1}, {0: "2GiB", "cpu": "4GiB"})
    assert parse_cli("0=20GiB,cpu=60GiB", "max-memory") == {"0": "20GiB", "cpu": "60GiB"}
    assert parse_cli('{"lm_head": 1}', "device-map") == {"lm_head": 1} and parse_cli("auto", "device-map") == "auto"


def test_recipe_keys_device_map_and_max_memory():
    recipe = recipe_from_dict(
        {"name": "x", "model": "demo", "tasks": ["sentiment"], "device_map": "auto", "max_memory": {0: "70GiB"}}
    )
    assert recipe.device_map == "auto" and recipe.max_memory == {0: "70GiB"}
    with pytest.raises(RecipeError, match="^device_map: expected one of 'auto'"):
        recipe_from_dict({"name": "x", "model": "demo", "tasks": ["sentiment"], "device_map": "everywhere"})
    with pytest.raises(RecipeError, match="^max_memory: takes effect only with device_map"):
        recipe_from_dict({"name": "x", "model": "demo", "tasks": ["sentiment"], "max_memory": {0: "70GiB"}})


def test_the_memory_budget_sums_the_gpus_a_split_model_runs_on(monkeypatch):
    import torch

    class Placed(torch.nn.Module):
        hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": "cpu"}

    free = {"cuda:0": 10 << 30, "cuda:1": 30 << 30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (free[str(d)], 80 << 30))
    # The CPU-offloaded head runs on the first GPU: two devices, the input's first.
    assert [str(d) for d in split_devices(Placed())] == ["cuda:0", "cuda:1"]
    assert free_gpu_bytes(Placed()) == 40 << 30


def test_the_plan_spreads_a_split_model_over_its_gpus():
    from nsneurons.plan import default_rates
    from nsneurons.plan_inputs import shape_from_config
    from nsneurons.plan_stages import ig_budget, load_stage

    base = {"name": "x", "model": "demo", "tasks": ["sentiment"], "device": "cuda"}
    one = default_rates(recipe_from_dict(base))
    two = default_rates(
        recipe_from_dict({**base, "device_map": {"model.layers.0": 0, "model.layers.1": "cuda:1", "lm_head": "cpu"}})
    )
    assert (one.gpus, two.gpus, gpu_count("auto", {0: "70GiB", 1: "70GiB", 2: "70GiB", "cpu": "1GiB"})) == (1, 2, 3)
    config = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 128, "vocab_size": 600}
    shape = shape_from_config({**config, "num_attention_heads": 4, "num_key_value_heads": 2}, "tiny")
    weights = shape.weight_bytes("float32")
    assert ig_budget(two, shape) == int((160e9 - weights) * 0.5) and ig_budget(one, shape) == int((80e9 - weights) * 0.5)
    assert load_stage(None, shape, two).peak_bytes["2 x cuda"] == weights // 2


def test_cli_placement_flags_are_checked_before_loading(capsys):
    from nsneurons import cli

    assert cli.main(["info", "--model", "demo", "--device-map", "everywhere"]) == 3
    assert "error: --device-map: expected one of 'auto', 'balanced'" in capsys.readouterr().err
    assert cli.main(["info", "--model", "demo", "--max-memory", "0=20GiB"]) == 3
    assert "error: --max-memory: takes effect only with device_map" in capsys.readouterr().err
    recipe = str(__import__("pathlib").Path(__file__).parent.parent / "recipes" / "tiny-ci.yaml")
    assert cli.main(["run", recipe, "--device-map", "everywhere"]) == 3  # the recipe key, refused before any loading
    assert "tiny-ci.yaml with --set: device_map: expected one of 'auto'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="device_map: NDIF places the model itself"):
        load_model("meta-llama/Llama-3.1-8B", remote=True, device_map="auto")


class _OnDevice:
    def __init__(self, kind: str):
        self.device = torch.device(kind)


def test_cudnn_attention_is_left_out_on_a_gpu_for_the_call_only():
    """IG and interventions on a local GPU exclude cuDNN's attention kernel (a plan per new sequence
    length: bench/RESULTS.md) and restore the process's choice after; on the CPU nothing changes."""
    seen = []

    @without_cudnn_attention
    def body(model, tag):
        seen.append((tag, torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled()))
        return tag

    assert torch.backends.cuda.cudnn_sdp_enabled()
    assert body(_OnDevice("cuda"), "gpu") == "gpu" and body(_OnDevice("cpu"), "cpu") == "cpu"
    assert seen == [("gpu", False, True), ("cpu", True, True)]
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored
    assert attribute_proxies.__wrapped__ and option_probs.__wrapped__  # the two entry points carry it
