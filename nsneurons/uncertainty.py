"""Bootstrap over evaluation examples: the one place resampling and percentile intervals live.

An example is the unit resampled (with its three proxies, which share its question), because
Acc and Com are means over examples of per-example values: Acc = mean of each example's share of
right proxies, Com = mean of "at least 2 of 3 right". So a resampled Acc or Com is the mean of
per-example values at resampled indices, and every metric of `cells` follows from those means.

Decisions:
- Percentile intervals (2.5% and 97.5% of the resampled statistic for level 0.95): simple,
  transformation-respecting, and what a reader expects; with n examples the interval cannot be
  finer than 1/n in Acc (stated in the report).
- A resample whose statistic is undefined (an original Acc or Com of 0 in that resample) is left
  out of the percentiles (`nanquantile`); the share left out is tiny with 50 + 50 examples.
- Seeds: one index matrix per (seed, task), shared by every method and condition of that task,
  so differences between methods are paired (the same resampled examples on both sides).
"""

from __future__ import annotations

import numpy as np


def bootstrap_indices(n: int, resamples: int, seed) -> np.ndarray:
    """(resamples, n) example indices drawn with replacement; seed: an int or a sequence of ints."""
    if n < 1:
        raise ValueError(f"bootstrap needs at least one example, got n={n}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resampled_means(per_example: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Means of per_example[..., idx] for each resample: (..., n) values, (B, n) indices -> (..., B)."""
    values = np.asarray(per_example, dtype=np.float64)
    return values[..., indices].mean(axis=-1)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds over the last axis, NaN samples ignored (all NaN -> NaN)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    samples = np.asarray(samples, dtype=np.float64)
    tail = (1.0 - level) / 2.0
    finite = np.isfinite(samples).any(axis=-1)
    safe = np.where(finite[..., None], samples, 0.0)  # all-NaN rows would warn; they become NaN below
    lo, hi = np.nanquantile(safe, [tail, 1.0 - tail], axis=-1)
    return np.where(finite, lo, np.nan), np.where(finite, hi, np.nan)
