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


# Options longer than one token (the paper's Eq. 2): each option's tokens run after the full prompt,
# one forward per option; the score is the summed log-probability of its tokens. The targets on the
# scores, written here independently of nsneurons.targets.
REFERENCE_SCORE_TARGETS = {
    "ace": lambda lp, correct: torch.softmax(lp, -1)[..., correct],
    "qrnca": lambda lp, correct: lp[..., correct].exp(),
    "tn": lambda lp, correct: lp[..., correct].exp() - torch.cat([lp[..., :correct], lp[..., correct + 1 :]], -1).exp().mean(-1),
}


def _summed_logprob(hf_model, input_ids, option, rows):
    """[rows] summed log P(option tokens | prompt) with the whole option appended to the prompt."""
    prompt_len = input_ids.shape[1]
    full = torch.cat([input_ids, torch.tensor([list(option)])], dim=1).expand(rows, -1)
    logp = torch.log_softmax(hf_model(full).logits.float(), -1)
    return sum(logp[:, prompt_len - 1 + k, token] for k, token in enumerate(option))


def _at_answer(module, make_value, captured):
    """A forward pre-hook writing make_value(x[:, answer]) at the answer position (the last prompt token)."""

    def hook(mod, args):
        x = args[0].clone()
        x[:, captured["answer"]] = make_value(x[:, captured["answer"]])
        return (x,) + tuple(args[1:])

    return module.register_forward_pre_hook(hook)


def reference_ig_options(hf_model, down_proj_module, input_ids, options, target, correct, steps=16):
    """IG (right Riemann) of one layer's neurons at the last prompt position for options of any length:
    F = target(summed log-probs [steps, 4]); one scaled leaf shared by the four options' forwards."""
    alphas = torch.arange(1, steps + 1, dtype=torch.float32) / steps
    captured = {"answer": input_ids.shape[1] - 1}

    def scale(x):
        if "scaled" not in captured:
            captured["original"] = x[0].detach().clone()
            captured["scaled"] = (captured["original"] * alphas[:, None]).requires_grad_(True)
        return captured["scaled"]

    handle = _at_answer(down_proj_module, scale, captured)
    try:
        lp = torch.stack([_summed_logprob(hf_model, input_ids, option, steps) for option in options], -1)
    finally:
        handle.remove()
    values = REFERENCE_SCORE_TARGETS[target](lp, correct)
    (grads,) = torch.autograd.grad(values.sum(), [captured["scaled"]])
    return captured["original"] * grads.sum(0) / steps


def reference_option_scores(hf_model, input_ids, options, multipliers=None):
    """[4] summed log-probs of the options, with per-layer neuron multipliers {down_proj_module: vector}
    applied at the answer position (the last prompt token) by hooks."""
    captured = {"answer": input_ids.shape[1] - 1}
    handles = [_at_answer(m, lambda x, v=v: x * v, captured) for m, v in (multipliers or {}).items()]
    try:
        with torch.no_grad():
            return torch.stack([_summed_logprob(hf_model, input_ids, option, 1)[0] for option in options])
    finally:
        for h in handles:
            h.remove()
