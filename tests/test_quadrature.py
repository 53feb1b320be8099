"""Quadrature rules and the IG formula, captum style: targets whose IG is known in closed form.

IG_i = x_i * sum_k w_k dF/dx_i(alpha_k x) (nsneurons.quadrature's nodes and weights, the formula in
nsneurons.trace_ops), in float64, with F given directly as a function of the scaled vector.
- F(x) = w.x (linear): dF/dx_i = w_i everywhere, so IG_i = w_i x_i exactly for every rule (weights sum
  to 1) and the completeness gap |sum IG - (F(x) - F(0))| / |F(x) - F(0)| is 0.
- F(x) = sum_i c_i x_i^2: dF/dx_i(alpha x) = 2 c_i alpha x_i, so IG_i = 2 c_i x_i^2 sum_k w_k alpha_k.
  Right Riemann: sum_k (1/m)(k/m) = (m + 1) / (2m), so IG_i = c_i x_i^2 (1 + 1/m): the error c_i x_i^2 / m
  shrinks as 1/m and the relative gap is exactly 1/m. Midpoint: sum_k (k - 1/2) / m^2 = 1/2, and
  Gauss-Legendre integrates alpha exactly: IG_i = c_i x_i^2, gap 0.
"""

import math

import numpy as np
import pytest
import torch

from nsneurons import trace_ops
from nsneurons.attribution import AttributionConfig
from nsneurons.quadrature import QUADRATURES, alphas_for, points_and_weights, step_weights

X = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
W = torch.tensor([0.25, -1.5, 2.0], dtype=torch.float64)
C = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)


def ig_and_gap(f, x, steps, quadrature):
    """(IG [n], relative completeness gap) of F at x, zero baseline, through the library's rows and formula."""
    alphas = alphas_for(steps, quadrature)
    rows = trace_ops.scaled_copies(x, alphas)  # row 0: alpha = 0; rows 1..m: the nodes; last row: alpha = 1
    f_rows = f(rows)
    (grads,) = torch.autograd.grad(f_rows.sum(), [rows])
    ig = trace_ops.integrated_gradient(x, grads, steps, step_weights(steps, quadrature))
    delta = (f_rows[-1] - f_rows[0]).detach()
    return ig.detach(), float((ig.sum() - delta).abs() / delta.abs())


@pytest.mark.parametrize("quadrature", QUADRATURES)
@pytest.mark.parametrize("steps", [1, 4, 16])
def test_linear_target_ig_is_exact_and_gap_zero(quadrature, steps):
    ig, gap = ig_and_gap(lambda rows: rows @ W, X, steps, quadrature)
    np.testing.assert_allclose(ig.numpy(), [0.25, -3.0, -6.0], rtol=1e-12)  # w_i x_i
    assert gap < 1e-12


def test_quadratic_right_riemann_by_hand():
    # c x^2 = [0.5, -4, 18]; m = 4: x (1 + 1/4) = [0.625, -5, 22.5]; sum 18.125 vs F(x) - F(0) = 14.5.
    ig, gap = ig_and_gap(lambda rows: (C * rows**2).sum(-1), X, 4, "right")
    np.testing.assert_allclose(ig.numpy(), [0.625, -5.0, 22.5], rtol=1e-12)
    assert gap == pytest.approx(0.25, rel=1e-12)  # 3.625 / 14.5 = 1/m


@pytest.mark.parametrize("steps", [1, 4, 16, 64])
def test_quadratic_right_riemann_error_shrinks_as_one_over_m(steps):
    ig, gap = ig_and_gap(lambda rows: (C * rows**2).sum(-1), X, steps, "right")
    exact = (C * X**2).numpy()
    np.testing.assert_allclose(ig.numpy(), exact * (1 + 1 / steps), rtol=1e-12)
    np.testing.assert_allclose((ig.numpy() - exact) * steps, exact, rtol=1e-10)  # error x m is constant
    assert gap == pytest.approx(1 / steps, rel=1e-10)


@pytest.mark.parametrize("quadrature", ["midpoint", "gausslegendre"])
@pytest.mark.parametrize("steps", [1, 3, 16])
def test_quadratic_is_exact_for_midpoint_and_gausslegendre(quadrature, steps):
    ig, gap = ig_and_gap(lambda rows: (C * rows**2).sum(-1), X, steps, quadrature)
    np.testing.assert_allclose(ig.numpy(), [0.5, -4.0, 18.0], rtol=1e-12)
    assert gap < 1e-12


def test_gausslegendre_is_exact_for_a_degree_2m_minus_1_path_but_midpoint_is_not():
    # F = sum c_i x_i^4: dF/dx_i(alpha x) = 4 c_i alpha^3 x_i^3 (degree 3 in alpha), integral of alpha^3 = 1/4.
    f = lambda rows: (C * rows**4).sum(-1)  # noqa: E731
    exact = (C * X**4).numpy()
    ig, gap = ig_and_gap(f, X, 2, "gausslegendre")
    np.testing.assert_allclose(ig.numpy(), exact, rtol=1e-12)
    assert gap < 1e-12
    ig, _ = ig_and_gap(f, X, 2, "midpoint")
    # Midpoint, m = 2: IG_i = c_i x_i^4 * 4 * (1/2) * ((1/4)^3 + (3/4)^3) = 0.875 c_i x_i^4 (exact: 1 c_i x_i^4).
    np.testing.assert_allclose(ig.numpy(), exact * 0.875, rtol=1e-12)


def test_nodes_and_weights_by_hand():
    points, weights = points_and_weights(4, "right")
    np.testing.assert_allclose(points, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(weights, [0.25] * 4)
    points, weights = points_and_weights(2, "midpoint")
    np.testing.assert_allclose(points, [0.25, 0.75])
    np.testing.assert_allclose(weights, [0.5, 0.5])
    points, weights = points_and_weights(2, "gausslegendre")  # nodes +-1/sqrt(3) on [-1, 1]
    np.testing.assert_allclose(points, [(1 - 1 / math.sqrt(3)) / 2, (1 + 1 / math.sqrt(3)) / 2], rtol=1e-14)
    np.testing.assert_allclose(weights, [0.5, 0.5], rtol=1e-14)
    points, weights = points_and_weights(3, "gausslegendre")  # nodes 0, +-sqrt(3/5); weights 5/9, 8/9, 5/9
    np.testing.assert_allclose(points, [0.5 - math.sqrt(0.15), 0.5, 0.5 + math.sqrt(0.15)], rtol=1e-14)
    np.testing.assert_allclose(weights, [5 / 18, 8 / 18, 5 / 18], rtol=1e-14)
    for steps in (1, 7, 64):
        assert points_and_weights(steps, "gausslegendre")[1].sum() == pytest.approx(1.0, abs=1e-14)


def test_rows_of_a_layer_group():
    np.testing.assert_allclose(
        alphas_for(2, "gausslegendre").numpy(), [0, (1 - 1 / math.sqrt(3)) / 2, (1 + 1 / math.sqrt(3)) / 2, 1], rtol=1e-14
    )
    assert alphas_for(4, "right").shape == (5,) and alphas_for(4, "midpoint").shape == (6,)
    assert step_weights(4, "right") is None and step_weights(4, "midpoint") is None
    np.testing.assert_allclose(step_weights(2, "gausslegendre").numpy(), [0.5, 0.5])


def test_an_unknown_quadrature_is_refused():
    with pytest.raises(ValueError, match="quadrature must be one of 'right', 'midpoint', 'gausslegendre', got 'simpson'"):
        AttributionConfig(quadrature="simpson")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        points_and_weights(0, "right")
