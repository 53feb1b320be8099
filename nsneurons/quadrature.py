"""Quadrature rules for the IG path integral (as captum's approximation_methods), used by every IG path.

IG_i = x_i * integral_0^1 dF/dx_i(alpha x) d alpha ~ x_i * sum_k w_k dF/dx_i(alpha_k x), with m = steps points:
- "right": alpha_k = k/m, w_k = 1/m (right Riemann sum, the paper's Eq. 1);
- "midpoint": alpha_k = (k - 1/2)/m, w_k = 1/m (exact for an F quadratic in the scale);
- "gausslegendre": Gauss-Legendre nodes and weights mapped from [-1, 1] to [0, 1] (weights sum to 1;
  exact for polynomials of degree <= 2m - 1; captum's default).
Right-Riemann's error shrinks only as 1/m; where F bends sharply along the path (the demo model's layer 0,
docs/ig.md) the other two rules are far closer at the same m.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from .vocab import Quadrature

QUADRATURES: tuple[str, ...] = get_args(Quadrature)


def check(quadrature: str) -> None:
    if quadrature not in QUADRATURES:
        raise ValueError(f"quadrature must be one of {', '.join(map(repr, QUADRATURES))}, got {quadrature!r}")


def points_and_weights(steps: int, quadrature: Quadrature) -> tuple[np.ndarray, np.ndarray]:
    """(alpha_k, w_k), k = 1..m, float64; the weights sum to 1."""
    check(quadrature)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    k = np.arange(1, steps + 1, dtype=np.float64)
    if quadrature == "right":
        return k / steps, np.full(steps, 1.0 / steps)
    if quadrature == "midpoint":
        return (k - 0.5) / steps, np.full(steps, 1.0 / steps)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def alphas_for(steps: int, quadrature: Quadrature) -> torch.Tensor:
    """Rows of one layer group (float64): alpha = 0 (the baseline, for the completeness gap), the m
    quadrature points (rows 1..m), and alpha = 1 last (F(x) and the option probabilities) unless the
    m-th point is already 1 (right Riemann)."""
    nodes, _ = points_and_weights(steps, quadrature)
    if quadrature == "right":  # computed in torch as it always was (bit-identical stores)
        points = torch.arange(1, steps + 1, dtype=torch.float64) / steps
        return torch.cat([torch.zeros(1, dtype=torch.float64), points])
    if quadrature == "midpoint":
        points = (torch.arange(1, steps + 1, dtype=torch.float64) - 0.5) / steps
    else:
        points = torch.from_numpy(nodes)
    return torch.cat([torch.zeros(1, dtype=torch.float64), points, torch.ones(1, dtype=torch.float64)])


def step_weights(steps: int, quadrature: Quadrature) -> torch.Tensor | None:
    """w_k as a float64 tensor, or None where every weight is 1/m: IG is then the gradients' sum over m,
    computed that way as it always was (bit-identical stores for "right" and "midpoint")."""
    _, weights = points_and_weights(steps, quadrature)
    return None if quadrature in ("right", "midpoint") else torch.from_numpy(weights)
