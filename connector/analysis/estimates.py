"""The one shape every estimate takes in results.json.

A fixed shape lets scripts read any number the same way, and rounding here keeps
results.json byte-identical between runs on the same data.
"""

from __future__ import annotations

import math
from typing import Any

DECIMALS = 6


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def clean(value: Any) -> float | None:
    """A finite float rounded for stable output, or None for missing, NaN and infinity."""
    number = _finite(value)
    if number is None:
        return None
    return round(number, DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def clean_p(value: Any, digits: int = 4) -> float | None:
    """A p-value or test statistic to ``digits`` significant digits (small p stays > 0)."""
    number = _finite(value)
    if number is None:
        return None
    return float(f"{number:.{digits}g}") + 0.0


def estimate(value: Any, low: Any, high: Any, n: int, **extra: Any) -> dict[str, Any]:
    """{"estimate", "ci_low", "ci_high", "n"} plus any extra fields, in that order."""
    return {"estimate": clean(value), "ci_low": clean(low), "ci_high": clean(high),
            "n": int(n), **extra}


def empty(n: int = 0, **extra: Any) -> dict[str, Any]:
    return estimate(None, None, None, n, **extra)
