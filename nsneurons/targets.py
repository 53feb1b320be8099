"""Target functions F of Eq. 1, registered in one place and chosen by name.

Each takes `logits` [..., vocab] at the answer position, the four answer token ids (A..D order) and
the index of the correct option, and returns F per row. They use torch only: they run inside
nnsight traces, and on NDIF this module is shipped by value (`nnsight.register`).
"""

from __future__ import annotations

import torch


def ace(logits: torch.Tensor, answer_ids: torch.Tensor, correct: int) -> torch.Tensor:
    """Eq. 3: exp(-crossentropy) = softmax over the four answer tokens' logits, probability of the correct one."""
    return torch.softmax(logits[..., answer_ids].float(), dim=-1)[..., correct]


def qrnca(logits: torch.Tensor, answer_ids: torch.Tensor, correct: int) -> torch.Tensor:
    """QRNCA / KN: whole-vocabulary probability of the correct answer token."""
    return torch.softmax(logits.float(), dim=-1)[..., answer_ids[correct]]


def tn(logits: torch.Tensor, answer_ids: torch.Tensor, correct: int) -> torch.Tensor:
    """TN as the seed paper describes it: P(correct) - mean P(wrong), whole vocabulary."""
    probs = torch.softmax(logits.float(), dim=-1)[..., answer_ids]
    wrong = torch.ones(probs.shape[-1], dtype=torch.bool, device=probs.device)
    wrong[correct] = False
    return probs[..., correct] - probs[..., wrong].mean(dim=-1)


# Its names are typed as nsneurons.vocab.TargetName (a test keeps the two equal); this module imports
# nothing of the package, since NDIF receives it by value.
TARGETS = {"ace": ace, "qrnca": qrnca, "tn": tn}
# Targets that read only the four answer tokens' logits: attribution then computes just those
# four columns of the output layer (no whole-vocabulary projection).
ANSWER_LOGITS_ONLY = frozenset({"ace"})


def target_names() -> tuple[str, ...]:
    """Every registered target, in registry order (the CLI's choices)."""
    return tuple(TARGETS)


def get_target(name: str):
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None


def option_probs(logits: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """Softmax over the four answer tokens (the classes the accuracy compares)."""
    return torch.softmax(logits[..., answer_ids].float(), dim=-1)
