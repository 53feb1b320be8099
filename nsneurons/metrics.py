"""Evaluation metrics of section 4.2: Acc, Com, RAC, RCC, Fail, and the evaluation-set sample.

Units: Acc and Com are fractions in [0, 1]; RAC and RCC are percentages (|orig - new| / orig * 100);
signed changes (new - orig) are in percentage points.

Result shape for one condition (method, task, intervention, ratio): `ConditionResult`, built by
`evaluate_condition(correct_original, correct_intervened, direction)`. Its `as_dict()` gives one
float per name in `METRIC_NAMES` (RAC/RCC NaN when undefined, fail flags 0.0/1.0), and
`to_dataarray()` the same along a `metric` dim, so a pipeline can stack conditions into a Dataset
with dims (method, task, intervention, ratio, metric). NaN only ever lives in that numeric store;
anything printed goes through `Cell` / `format_cell`, which write "undefined" or "Fail".

Decisions:
- Fail is strict: a change against the intended direction. No change is 0.0, not Fail.
- Undefined: RAC/RCC when the original Acc/Com is 0 (never divided). A Fail still prints "Fail".
- Choosing a ratio per table cell is a scoring rule, not a metric: nsneurons.cells.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .vocab import DIRECTIONS, Direction

METRIC_NAMES = (
    "acc_original",
    "acc_intervened",
    "com_original",
    "com_intervened",
    "rac",
    "rcc",
    "acc_change",
    "com_change",
    "rac_fail",
    "rcc_fail",
)


def _example_by_proxy(correct) -> np.ndarray:
    if isinstance(correct, xr.DataArray):
        correct = correct.transpose("example", "proxy")
    values = np.asarray(correct, dtype=bool)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"correct must be a non-empty (example, proxy) array, got shape {values.shape}")
    return values


def accuracy(correct) -> float:
    """Fraction of all proxy QAs answered correctly; `correct` is bool (example, proxy)."""
    return float(_example_by_proxy(correct).mean())


def comprehension(correct, min_correct: int = 2) -> float:
    """Fraction of examples "understood": at least min_correct (2 of 3) proxies right."""
    return float((_example_by_proxy(correct).sum(axis=1) >= min_correct).mean())


@dataclass(frozen=True)
class RelativeChange:
    percent: float | None  # None when the original value is 0

    @property
    def undefined(self) -> bool:
        return self.percent is None

    def __str__(self) -> str:
        return "undefined" if self.percent is None else f"{self.percent:.1f}"


def relative_change(original: float, intervened: float) -> RelativeChange:
    """|orig - new| / orig * 100 (RAC from Acc, RCC from Com); undefined when orig == 0."""
    if original == 0:
        return RelativeChange(None)
    return RelativeChange(abs(original - intervened) / original * 100.0)


def signed_change(original: float, intervened: float) -> float:
    """new - orig in percentage points (fractions in, points out)."""
    return (intervened - original) * 100.0


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def directed_change(original: float, intervened: float, direction: Direction) -> float:
    """Signed change in points, positive when it goes the intended way."""
    _check_direction(direction)
    change = signed_change(original, intervened)
    return -change if direction == "degrade" else change


def fail(original: float, intervened: float, direction: Direction) -> bool:
    """True when the change goes strictly against the intended direction."""
    return directed_change(original, intervened, direction) < 0


@dataclass(frozen=True)
class Cell:
    """One printable metric value: a relative change, Fail, or undefined; `ratio` is the
    good:bad ratio it was chosen at (None when not chosen over ratios, or all Fail)."""

    change: RelativeChange
    fail: bool
    ratio: float | None = None

    def __str__(self) -> str:
        return "Fail" if self.fail else str(self.change)


def format_cell(rac: Cell, rcc: Cell) -> str:
    """Table cell like the paper: "53.3/64.0"; "Fail" or "undefined" when both halves say so."""
    left, right = str(rac), str(rcc)
    return left if left == right and left in ("Fail", "undefined") else f"{left}/{right}"


@dataclass(frozen=True)
class ConditionResult:
    direction: Direction
    acc_original: float
    acc_intervened: float
    com_original: float
    com_intervened: float

    def __post_init__(self) -> None:
        _check_direction(self.direction)

    @property
    def rac(self) -> Cell:
        return Cell(relative_change(self.acc_original, self.acc_intervened), self.rac_fail)

    @property
    def rcc(self) -> Cell:
        return Cell(relative_change(self.com_original, self.com_intervened), self.rcc_fail)

    @property
    def rac_fail(self) -> bool:
        return fail(self.acc_original, self.acc_intervened, self.direction)

    @property
    def rcc_fail(self) -> bool:
        return fail(self.com_original, self.com_intervened, self.direction)

    @property
    def acc_change(self) -> float:
        return signed_change(self.acc_original, self.acc_intervened)

    @property
    def com_change(self) -> float:
        return signed_change(self.com_original, self.com_intervened)

    def as_dict(self) -> dict[str, float]:
        def number(change: RelativeChange) -> float:
            return math.nan if change.percent is None else change.percent  # None exactly when undefined

        return {
            "acc_original": self.acc_original,
            "acc_intervened": self.acc_intervened,
            "com_original": self.com_original,
            "com_intervened": self.com_intervened,
            "rac": number(self.rac.change),
            "rcc": number(self.rcc.change),
            "acc_change": self.acc_change,
            "com_change": self.com_change,
            "rac_fail": float(self.rac_fail),
            "rcc_fail": float(self.rcc_fail),
        }

    def to_dataarray(self) -> xr.DataArray:
        values = self.as_dict()
        return xr.DataArray(
            [values[name] for name in METRIC_NAMES],
            dims="metric",
            coords={"metric": list(METRIC_NAMES)},
            attrs={"direction": self.direction},
        )


def evaluate_condition(correct_original, correct_intervened, direction: Direction) -> ConditionResult:
    """Acc and Com before/after one intervention from bool (example, proxy) correctness."""
    return ConditionResult(
        direction,
        accuracy(correct_original),
        accuracy(correct_intervened),
        comprehension(correct_original),
        comprehension(correct_intervened),
    )


# ---- evaluation-set sampling ---------------------------------------------------------------


@dataclass(frozen=True)
class EvalSample:
    ids: list[str]  # understood ids (sorted), then not-understood ids (sorted)
    n_understood: int
    n_not_understood: int
    requested: tuple[int, int]

    @property
    def short(self) -> bool:
        return (self.n_understood, self.n_not_understood) != self.requested

    def message(self) -> str:
        return (
            f"evaluation set: {self.n_understood}/{self.requested[0]} understood and "
            f"{self.n_not_understood}/{self.requested[1]} not-understood examples"
        )


def sample_eval_set(
    understood: Mapping[str, bool],
    n_understood: int = 50,
    n_not: int = 50,
    exclude: Sequence[str] = (),
    seed: int = 0,
) -> EvalSample:
    """Seeded sample of examples the unmodified model understands / does not (Com of one example),
    excluding e.g. the identification examples. Too few available: take all, warn, report counts."""
    excluded = set(exclude)
    # Sorting first makes the sample independent of the dict's insertion order.
    pools = [sorted(i for i, u in understood.items() if bool(u) is want and i not in excluded) for want in (True, False)]
    rng = np.random.default_rng(seed)
    picks = []
    for pool, wanted in zip(pools, (n_understood, n_not)):
        take = min(wanted, len(pool))
        picks.append(sorted(pool[i] for i in rng.choice(len(pool), size=take, replace=False)))
    sample = EvalSample(picks[0] + picks[1], len(picks[0]), len(picks[1]), (n_understood, n_not))
    if sample.short:
        warnings.warn(sample.message() + " (fewer available than requested)", stacklevel=2)
    return sample
