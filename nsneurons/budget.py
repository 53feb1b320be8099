"""K as a count or as a share of the model's FFN neurons: parsing, the one resolution rule, how it reads.

A budget is written in a recipe as a count (`k: 100`) or as a share of the loaded model's FFN
neurons (all layers x neurons per layer) with a percent sign (`k: 0.028%`, `k: "0.5%"`). The recipe
keeps what was written (so its fingerprint and recipe.yaml are unchanged for counts); `resolve`
turns it into a count once the model is known.

Decisions:
- A fraction without a percent sign (`k: 0.005`) is refused: 0.5 could mean half the neurons or
  0.5% of them, and a count of 0 or 1 would be easy to mistype as a share. The percent sign says it.
- Rounding: count = round(share x n), halves up (floor(x + 1/2)), computed exactly from the decimal
  text (no binary float error), and at least 1. A share must be in (0, 100].
- The paper's 100 neurons of LLaMA 2-7B (32 x 11008 = 352,256) are 0.02839% of it: `0.028%` gives
  98.63 -> **99**, not 100 (the issue's "0.028%" is rounded); `0.0284%` gives 100.04 -> 100. To
  reproduce the paper exactly on LLaMA 2-7B write `k: 100`.
- `describe` states K both ways, "100 (0.22% of 46,080 FFN neurons)", the share to 2 significant digits.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

EXAMPLE = "'0.028%'"  # how a share is written, in messages


def half_up(numerator: int, denominator: int) -> int:
    """floor(numerator / denominator + 1/2) in exact integer arithmetic (numerator, denominator >= 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def share_of(text: str) -> Decimal | None:
    """The percentage a share string holds ('0.028%' -> Decimal('0.028')); None when it is not one."""
    body = text.strip()
    if not body.endswith("%"):
        return None
    try:
        value = Decimal(body[:-1].strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def problem(value) -> str | None:
    """Why `value` is not a budget (a message after 'key: '), None when it is one."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"expected an int, got {value!r} (or a share of the model's FFN neurons with a percent sign, e.g. {EXAMPLE})"
    if isinstance(value, int):
        return None if value >= 1 else f"expected an int >= 1, got {value}"
    share = share_of(value)
    if share is None:
        return f"expected an int, got {value!r} (or a share of the model's FFN neurons with a percent sign, e.g. {EXAMPLE})"
    if not 0 < share <= 100:
        return f"expected a share in (0%, 100%], got {value!r}"
    return None


def resolve(value: int | str, n_total: int) -> int:
    """The count a budget means for a model of `n_total` FFN neurons (see the module doc)."""
    message = problem(value)
    if message is not None:
        raise ValueError(f"budget {value!r}: {message}")
    if isinstance(value, int):
        return value
    share = share_of(value)
    assert share is not None  # checked above
    numerator, denominator = (share * n_total).as_integer_ratio()
    return max(1, half_up(numerator, denominator * 100))


def percent(count: int, n_total: int) -> str:
    """count / n_total in % to 2 significant digits, positional ('0.22', '0.028', '50')."""
    import numpy as np

    return np.format_float_positional(100.0 * count / n_total, precision=2, unique=True, fractional=False, trim="-")


def share_text(count: int, n_total: int, given: int | str | None = None) -> str:
    """'0.22% of 46,080 FFN neurons'; a share as written (given) is quoted as written."""
    share = given.strip() if isinstance(given, str) else f"{percent(count, n_total)}%"
    return f"{share} of {n_total:,} FFN neurons"


def describe(count: int, n_total: int, given: int | str | None = None) -> str:
    """K both ways: '100 (0.22% of 46,080 FFN neurons)', or '99 (0.028% of 352,256 FFN neurons)' for k: 0.028%."""
    return f"{count} ({share_text(count, n_total, given)})"


def attrs_text(attrs) -> str | None:
    """K both ways from a Dataset's attrs (k, n_layers, n_neurons, k_given); None when they lack them."""
    try:
        k, n_total = int(attrs["k"]), int(attrs["n_layers"]) * int(attrs["n_neurons"])
    except (KeyError, TypeError, ValueError):
        return None
    return describe(k, n_total, attrs.get("k_given"))


def resolved_k(recipe, n_layers: int, n_neurons: int) -> int:
    """A recipe's selection.k as a count for a model of n_layers x n_neurons FFN neurons."""
    return resolve(recipe.selection.k, n_layers * n_neurons)


def sweep_ks(recipe, n_layers: int, n_neurons: int) -> tuple[int, ...]:
    """A recipe's selection.k_sweep as counts, ascending, each once (two shares may round to one count)."""
    return tuple(sorted({resolve(k, n_layers * n_neurons) for k in recipe.selection.k_sweep}))
