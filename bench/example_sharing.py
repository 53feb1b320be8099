#!/usr/bin/env python
"""An example's three proxies in one session (`attribute_proxies`) against one call per proxy,
timed interleaved in one process on the demo model (the bench's 256-token prompt, m = 16).

Usage: python bench/example_sharing.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ig_bench  # noqa: E402

from nsneurons import load_model  # noqa: E402
from nsneurons.attribution import AttributionConfig, attribute_proxies, attribute_proxy  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    model = load_model("demo", device="cpu")
    prompt = ig_bench.build_prompt(model.tokenizer, 256)
    example = ig_bench.example_proxies(prompt, correct=1)
    config = AttributionConfig()
    attribute_proxies(model, example, config)  # warm-up
    for _ in range(args.rounds):
        start = time.perf_counter()
        attribute_proxies(model, example, config)
        together = time.perf_counter() - start
        start = time.perf_counter()
        for proxy in example:
            attribute_proxy(model, proxy, config)
        alone = time.perf_counter() - start
        print(f"together {together:.2f} s, one by one {alone:.2f} s")
    ids = model.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        start = time.perf_counter()
        model.hf_model(ids[:, :-1], use_cache=True, logits_to_keep=1)
        print(f"prefix forward {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
