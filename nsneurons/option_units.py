"""Layouts for options longer than one token (the paper's Eq. 2), built before a session.

An option is scored by the summed log-probability of its tokens t_1..t_n after the prompt; only
t_1..t_(n-1) are ever inputs (the logits predicting t_n are read, never run on). Two layouts:

- a *unit* (shared-prefix paths and interventions): U = [q] + t_1[:-1] + t_2[:-1] + t_3[:-1] + t_4[:-1]
  after the cached prompt prefix, q being the prompt's last token (the answer position, where neurons
  are scaled). q sees the prefix and itself; option i's k-th input token sees the prefix, q and option
  i's tokens up to itself (never another option's). Positions: q at P, option token k at P + 1 + k.
  Single-token options give U = [q] (T = 1): exactly the one query token of single-token answers.
- *full rows* (the full-prompt reference): four sequences prompt + t_i[:-1], right-padded to a common
  length (causal attention: padding after a position cannot change it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .trace_ops import OptionIndex


def single_token(options: Sequence[Sequence[int]]) -> bool:
    """Whether every option is one token (the single-token code paths apply)."""
    return all(len(option) == 1 for option in options)


def _index(options: Sequence[Sequence[int]], rows: list[list[int]], positions: list[list[int]], shape) -> OptionIndex:
    width = max(len(option) for option in options)
    pad = [[0] * (width - len(row)) for row in rows]
    tokens = [list(option) + p for option, p in zip(options, pad)]
    valid = [[True] * len(option) + [False] * len(p) for option, p in zip(options, pad)]
    return OptionIndex(
        rows=torch.tensor([r + p for r, p in zip(rows, pad)]),
        positions=torch.tensor([r + p for r, p in zip(positions, pad)]),
        tokens=torch.tensor(tokens),
        valid=torch.tensor(valid),
        shape=shape,
    )


def option_unit(ids: torch.Tensor, options: Sequence[Sequence[int]]):
    """((unit ids [1, T], position ids [1, T], pattern [T, T] bool), OptionIndex) for a prompt `ids`
    [1, P + 1] and its four options' token sequences (see the module docstring)."""
    prompt_len = ids.shape[1] - 1
    tokens, positions, starts = [int(ids[0, -1])], [prompt_len], []
    for option in options:
        starts.append(len(tokens))
        tokens += [int(t) for t in option[:-1]]
        positions += [prompt_len + 1 + k for k in range(len(option) - 1)]
    width = len(tokens)
    pattern = torch.zeros(width, width, dtype=torch.bool)
    pattern[:, 0] = True
    for start, option in zip(starts, options):
        for k in range(len(option) - 1):
            pattern[start + k, start : start + k + 1] = True
    # t_ik is predicted by q (k = 0) or by option i's (k - 1)-th input token.
    read = [[0] + [start + k for k in range(len(option) - 1)] for start, option in zip(starts, options)]
    index = _index(options, [[0] * len(r) for r in read], read, (1, width))
    unit = (torch.tensor([tokens]), torch.tensor([positions]), pattern)
    return unit, index


def full_rows(ids: torch.Tensor, options: Sequence[Sequence[int]]):
    """(batch [4, P + S], OptionIndex) of the full-prompt layout: row i is the prompt then option i's
    tokens but its last, right-padded with the prompt's last token; the index reads the logits from
    position P on (the caller slices them there), S being the longest option's length."""
    width = max(len(option) for option in options)
    prompt = [int(t) for t in ids[0]]
    batch = [prompt + [int(t) for t in option[:-1]] + [prompt[-1]] * (width - len(option)) for option in options]
    read = [list(range(len(option))) for option in options]
    index = _index(options, [[i] * len(r) for i, r in enumerate(read)], read, (4, width))
    return torch.tensor(batch), index
