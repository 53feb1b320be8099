"""Target functions F of Eq. 1, registered in one place and chosen by name.

Two forms of each target, the same function of the options:
- on option scores (`SCORE_TARGETS`): `scores` [..., 4] are the four options' summed log-probabilities
  (the paper's Eq. 2: lp_i = sum_k log P(t_ik | prompt, t_i1..t_i(k-1))) and F is ace = softmax(lp)[correct]
  (Eq. 3), qrnca (also KN) = exp(lp[correct]), tn = exp(lp[correct]) - mean over wrong of exp(lp[wrong]).
  Used when an option is longer than one token.
- on `logits` [..., vocab] at the answer position and the four answer token ids (`TARGETS`): the same
  numbers for single-token options (lp = log_softmax(logits)[ids], up to float rounding); the path
  single-token answers keep, so their numbers stay what they were.
They use torch only: they run inside nnsight traces, and on NDIF this module is shipped by value
(`nnsight.register`).
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


def ace_scores(scores: torch.Tensor, correct: int) -> torch.Tensor:
    """Eq. 2/3: softmax over the four options' summed log-probabilities, probability of the correct one.
    (Shift-invariant: the four raw logits of single-token options give the same value.)"""
    return torch.softmax(scores.float(), dim=-1)[..., correct]


def qrnca_scores(scores: torch.Tensor, correct: int) -> torch.Tensor:
    """QRNCA / KN: probability of the correct option's whole token sequence, exp(lp[correct])."""
    return torch.exp(scores[..., correct].float())


def tn_scores(scores: torch.Tensor, correct: int) -> torch.Tensor:
    """TN: exp(lp[correct]) - mean over the wrong options of exp(lp[wrong])."""
    probs = torch.exp(scores.float())
    wrong = torch.ones(probs.shape[-1], dtype=torch.bool, device=probs.device)
    wrong[correct] = False
    return probs[..., correct] - probs[..., wrong].mean(dim=-1)


# Its names are typed as nsneurons.vocab.TargetName (a test keeps the two equal); this module imports
# nothing of the package, since NDIF receives it by value.
TARGETS = {"ace": ace, "qrnca": qrnca, "tn": tn}
# The same targets on option scores (same names, same order).
SCORE_TARGETS = {"ace": ace_scores, "qrnca": qrnca_scores, "tn": tn_scores}
# Targets that read only the four answer tokens' logits when every option is one token: attribution
# then computes just those four columns of the output layer (no whole-vocabulary projection).
ANSWER_LOGITS_ONLY = frozenset({"ace"})


def target_names() -> tuple[str, ...]:
    """Every registered target, in registry order (the CLI's choices)."""
    return tuple(TARGETS)


def get_target(name: str):
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None


def get_score_target(name: str):
    """The target `name` on option scores (see the module docstring)."""
    get_target(name)
    return SCORE_TARGETS[name]


def option_probs(logits: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """Softmax over the four answer tokens (the classes the accuracy compares)."""
    return torch.softmax(logits[..., answer_ids].float(), dim=-1)
