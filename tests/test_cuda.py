"""nsneurons on a CUDA device against the CPU: IG, interventions and a tiny recipe, float32 and bfloat16.

Marked `cuda`; skipped where torch sees no CUDA device. With NSNEURONS_TEST_DEVICE=cpu the same
comparisons run with the CPU as the device under test (what `bench/gpu_check.py --shrink` does, so
CI runs these code paths): float32 then compares the CPU with itself, and bfloat16 still compares
low precision with the float32 CPU reference. Every model here is a tiny random LLaMA whose weights
bfloat16 represents exactly, so a bfloat16 run differs from the reference by its arithmetic only.
"""

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures_models import llama_style_tokenizer, tiny_hf_model

from nsneurons.attribution import AttributionConfig, attribute_proxy
from nsneurons.intervention import BASELINE, degrader, enhancer, option_probs
from nsneurons.models import wrap
from nsneurons.tasks.base import Proxy

DEVICE = os.environ.get("NSNEURONS_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE is None, reason="no CUDA device (NSNEURONS_TEST_DEVICE=cpu runs these comparisons on the CPU)"),
]

# Tolerances. IG differences are max |x - ref| / max |ref| over all neurons; probabilities absolute.
# float32: the same arithmetic in another order (cuBLAS and SDPA kernels against the CPU's); TF32 is
# off for matmuls by default. Differences of this size are ~1e-6; 1e-4 is the project's bar for
# "the same numbers" (bench/RESULTS.md).
F32_IG_REL = 1e-4
F32_PROB_ABS = 1e-5
# bfloat16 keeps 8 bits of mantissa: every activation is rounded to ~0.4 %, and the rounding
# compounds over layers. On the CPU, bfloat16 against float32 moved these tiny models' IG by up to
# 1.2 % of the largest value, option probabilities by up to 0.002, and kept 95-100 % of the top-20
# neurons (2026-11-30). CUDA's bf16 matmuls also accumulate in float32 but in other orders and
# kernels; the bounds leave ~4x for that.
BF16_IG_REL = 0.05
BF16_TOP_OVERLAP = 0.8  # of the 20 highest and of the 20 lowest IG neurons (out of 384)
BF16_PROB_ABS = 0.01
TOP_K = 20

PROMPT = (
    "You are an expert. Read the question and four options then answer with the letter of the correct option.\n"
    "Question: this movie was good\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"
)
OPTIONS = ("positive", "negative", "neutral", "not sure")
TINY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-ci.yaml"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="module")
def weights():
    """(float32 HF model with bf16-representable weights, tokenizer): 3 layers x 128 neurons."""
    tok = llama_style_tokenizer()
    hf = tiny_hf_model("llama", layers=3, vocab_size=len(tok))
    return hf.to(torch.bfloat16).to(torch.float32), tok


def _on(weights, device, dtype):
    hf, tok = weights
    return wrap(copy.deepcopy(hf).to(device=device, dtype=dtype), tok, source=f"tiny-llama on {device}")


@pytest.fixture(scope="module")
def reference(weights):
    return _on(weights, "cpu", torch.float32)


@pytest.fixture(scope="module", params=sorted(DTYPES))
def on_device(request, weights):
    return request.param, _on(weights, DEVICE, DTYPES[request.param])


def _max_rel(x, ref):
    return float(np.abs(x - ref).max() / np.abs(ref).max())


def _top_overlap(x, ref, k=TOP_K):
    ox, orf = np.argsort(x.ravel()), np.argsort(ref.ravel())
    return min(len(set(ox[-k:]) & set(orf[-k:])), len(set(ox[:k]) & set(orf[:k]))) / k


@pytest.mark.parametrize("path,target", [("staircase", "ace"), ("prefix", "ace"), ("full", "ace"), ("staircase", "qrnca")])
def test_ig_on_the_device_equals_the_cpu(reference, on_device, path, target):
    dtype, model = on_device
    proxy = Proxy("e1", 0, PROMPT, OPTIONS, 1, "sentiment")
    config = AttributionConfig(path=path, target=target)
    ref = attribute_proxy(reference, proxy, config)
    got = attribute_proxy(model, proxy, config)
    assert got.ig.shape == ref.ig.shape == (3, 128)
    assert np.abs(ref.ig).max() > 1e-6  # not a comparison of zeros
    rel, top = _max_rel(got.ig, ref.ig), _top_overlap(got.ig, ref.ig)
    print(f"IG {dtype} {path} {target}: max rel diff {rel:.2e}, top-{TOP_K} overlap {top:.0%}")
    if dtype == "float32":
        assert rel <= F32_IG_REL
        np.testing.assert_allclose(got.option_prob, ref.option_prob, atol=F32_PROB_ABS)
    else:
        assert rel <= BF16_IG_REL and top >= BF16_TOP_OVERLAP
        np.testing.assert_allclose(got.option_prob, ref.option_prob, atol=BF16_PROB_ABS)


@pytest.mark.parametrize("position", ["answer", "all"])
def test_interventions_on_the_device_equal_the_cpu(reference, on_device, position):
    dtype, model = on_device
    proxies = [
        Proxy("e1", 0, PROMPT, OPTIONS, 1, "sentiment"),
        Proxy("e2", 0, PROMPT.replace("was good", "was boring and too long"), OPTIONS, 2, "sentiment"),
    ]
    good, bad = [(0, 5), (1, 7), (2, 9), (2, 100)], [(0, 64), (1, 3), (2, 11)]
    conditions = [BASELINE, enhancer(good, bad, "enh"), degrader(good, bad, "deg")]
    ref = option_probs(reference, proxies, conditions, position=position).values
    got = option_probs(model, proxies, conditions, position=position).values
    assert ref.shape == (3, 2, 4)
    assert np.abs(ref[1] - ref[0]).max() > 1e-3  # the switches change something
    diff = float(np.abs(got - ref).max())
    print(f"option probs {dtype} position={position}: max abs diff {diff:.2e}")
    assert diff <= (F32_PROB_ABS if dtype == "float32" else BF16_PROB_ABS)


def test_a_tiny_recipe_on_the_device_matches_the_cpu(weights, tmp_path_factory):
    """tiny-ci on the device (float32 and bfloat16) and on the CPU (float32): in float32 the same
    baseline, neurons and sweep; in bfloat16 most of the same neurons (its screen may rank a
    near-tied option differently, so its evaluation set and baseline are not compared)."""
    from nsneurons.recipe import recipe_from_dict
    from nsneurons.runfolder import open_outputs
    from nsneurons.runners.neuronllm import run_recipe

    folder = tmp_path_factory.mktemp("tiny-weights")
    weights[0].save_pretrained(folder)
    weights[1].save_pretrained(folder)
    base = yaml.safe_load(TINY_RECIPE.read_text())
    base.update(
        model=str(folder),
        selection={"methods": ["neuronllm", "act"], "k": 5, "z": 20},
        evaluation={"understood": 2, "not_understood": 2, "candidates": 6, "ratios": [0.0, 1.0], "ablation": False},
    )
    runs = {}
    # On the CPU as the device, its float32 run would repeat the reference: it is the reference.
    kinds = (
        [("cpu", "cpu", "float32")]
        + ([("float32", DEVICE, "float32")] if DEVICE != "cpu" else [])
        + [("bfloat16", DEVICE, "bfloat16")]
    )
    for name, device, dtype in kinds:
        recipe = recipe_from_dict(
            dict(base, name=f"tiny-{name}", device=device, dtype=dtype, output=str(tmp_path_factory.mktemp(name)))
        )
        runs[name] = {k: ds.load() for k, ds in open_outputs(run_recipe(recipe, progress=False)).items()}
    ref = runs["cpu"]
    for name in [n for n in ("float32", "bfloat16") if n in runs]:
        got = runs[name]
        pairs = {
            n: set(
                zip(
                    r["neurons"].layer.sel(selector="neuronllm").values.ravel().tolist(),
                    r["neurons"].neuron.sel(selector="neuronllm").values.ravel().tolist(),
                )
            )
            for n, r in (("ref", ref), ("got", got))
        }
        shared = len(pairs["ref"] & pairs["got"]) / len(pairs["ref"])
        print(f"tiny recipe {name}: {shared:.0%} of neuronllm's neurons shared with the CPU")
        if name == "float32":
            assert shared == 1.0
            np.testing.assert_array_equal(got["baseline"].baseline.values, ref["baseline"].baseline.values)
            np.testing.assert_allclose(got["results"].sweep.values, ref["results"].sweep.values, atol=1e-6)
        else:
            assert shared >= BF16_TOP_OVERLAP


@pytest.mark.skipif(DEVICE != "cuda" or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_layers_split_across_two_devices_equal_the_cpu(weights, reference):
    """accelerate's dispatch puts the embedding and block 0 on cuda:0, blocks 1-2, the norm and the
    head on cuda:1 (as device_map="auto" splits a large model); IG and switches match the CPU."""
    from accelerate import dispatch_model

    hf, tok = weights
    device_map = {
        "model.embed_tokens": 0,
        "model.rotary_emb": 0,
        "model.layers.0": 0,
        "model.layers.1": 1,
        "model.layers.2": 1,
        "model.norm": 1,
        "lm_head": 1,
    }
    split = wrap(dispatch_model(copy.deepcopy(hf), device_map=device_map), tok, source="tiny-llama on 2 GPUs")
    proxy = Proxy("e1", 0, PROMPT, OPTIONS, 1, "sentiment")
    for path in ("staircase", "full"):
        got = attribute_proxy(split, proxy, AttributionConfig(path=path))
        assert _max_rel(got.ig, attribute_proxy(reference, proxy, AttributionConfig(path=path)).ig) <= F32_IG_REL, path
    conditions = [BASELINE, enhancer([(0, 5), (2, 9)], [(1, 3)], "enh")]
    diff = np.abs(option_probs(split, [proxy], conditions).values - option_probs(reference, [proxy], conditions).values)
    assert float(diff.max()) <= F32_PROB_ABS


def test_ig_and_interventions_on_the_device_run_without_cudnn_attention(on_device, monkeypatch):
    """On a GPU every attention call of IG and of the interventions runs with cuDNN's kernel left
    out (it planned per prompt length: bench/results/gpu_h200_new_lengths.md); on the CPU (the
    NSNEURONS_TEST_DEVICE=cpu dry run) nothing is switched."""
    _, model = on_device
    sdpa, seen = torch.nn.functional.scaled_dot_product_attention, []

    def recording(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    proxy = Proxy("ex", 0, PROMPT, OPTIONS, 0, "sentiment")
    attribute_proxy(model, proxy, AttributionConfig(target="ace", steps=4))
    option_probs(model, [proxy], [BASELINE, enhancer([(0, 1)], [])])
    assert seen, "the model's attention did not go through scaled_dot_product_attention"
    assert set(seen) == ({False} if model.device.type == "cuda" else {torch.backends.cuda.cudnn_sdp_enabled()})
