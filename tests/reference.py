"""Independent plain-PyTorch references (forward pre-hooks, full prompt, one layer at a time)."""

from __future__ import annotations

import numpy as np
import torch


def reference_ig(hf_model, down_proj_module, input_ids, target_fn, answer_ids, correct, steps=16, quadrature="right"):
    """IG of one layer's neurons at the last position, full prompt, batch of m scaled copies.
    Gauss-Legendre: numpy's nodes and weights on [-1, 1] mapped to [0, 1] here, independently of nsneurons."""
    k = torch.arange(1, steps + 1, dtype=torch.float32)
    alphas = k / steps if quadrature == "right" else (k - 0.5) / steps
    weights = None
    if quadrature == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = torch.tensor((nodes + 1) / 2, dtype=torch.float32), torch.tensor(w / 2, dtype=torch.float32)
    captured = {}

    def scale_last_position(module, args):
        x = args[0].clone()
        original = x[:, -1].detach().clone()
        scaled = (original * alphas[:, None]).requires_grad_(True)
        captured["original"], captured["scaled"] = original[0], scaled
        x[:, -1] = scaled
        return (x,) + tuple(args[1:])

    handle = down_proj_module.register_forward_pre_hook(scale_last_position)
    try:
        logits = hf_model(input_ids.expand(steps, -1)).logits[:, -1]
    finally:
        handle.remove()
    values = target_fn(logits, answer_ids, correct)
    (grads,) = torch.autograd.grad(values.sum(), [captured["scaled"]])
    if weights is not None:
        return captured["original"] * (weights[:, None] * grads).sum(0)
    return captured["original"] * grads.sum(0) / steps


def reference_option_probs(hf_model, input_ids, answer_ids, multipliers=None, all_positions=False):
    """Option probabilities with per-layer neuron multipliers {down_proj_module: vector} applied by hooks."""
    handles = []
    for module, vector in (multipliers or {}).items():

        def hook(mod, args, vector=vector):
            x = args[0].clone()
            if all_positions:
                x = x * vector
            else:
                x[:, -1] = x[:, -1] * vector
            return (x,) + tuple(args[1:])

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            logits = hf_model(input_ids).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    return torch.softmax(logits[..., answer_ids].float(), -1)
