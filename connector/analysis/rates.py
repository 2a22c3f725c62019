"""Response rates with exact (Clopper–Pearson) intervals and Fisher's exact test.

Exact intervals because the study's groups are small (tens of patients), where
normal-approximation intervals undercover and can leave [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from connector.analysis.estimates import clean_p, empty, estimate

EXACT_OR_MAX_N = 2000


def clopper_pearson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The exact two-sided (1 - alpha) interval for a binomial proportion."""
    if n <= 0:
        raise ValueError("Clopper-Pearson needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError("successes must lie in [0, n]")
    low = 0.0 if successes == 0 else float(
        stats.beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(
        stats.beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def rate(successes: int, n: int, alpha: float = 0.05, **extra: Any) -> dict[str, Any]:
    """A proportion as an estimate object; ``x`` (the numerator) is kept beside ``n``."""
    successes, n = int(successes), int(n)
    if n == 0:
        return empty(0, x=0, **extra)
    low, high = clopper_pearson(successes, n, alpha)
    return estimate(successes / n, low, high, n, x=successes, **extra)


def rate_of(flags: pd.Series, alpha: float = 0.05, **extra: Any) -> dict[str, Any]:
    """The share of True among ``flags`` (the denominator is every row given)."""
    values = flags.astype(bool)
    return rate(int(values.sum()), int(values.size), alpha, **extra)


def rates_by(frame: pd.DataFrame, flag: str, by: str, groups: list[str] | None = None,
             alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """The rate of ``flag`` within each value of ``by`` (all named groups, even empty)."""
    names = groups if groups is not None else sorted(frame[by].dropna().unique().tolist())
    counts = frame.groupby(by, sort=True)[flag].agg(["sum", "size"])
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in counts.index:
            out[name] = rate(int(counts.at[name, "sum"]), int(counts.at[name, "size"]), alpha)
        else:
            out[name] = rate(0, 0, alpha)
    return out


def fisher_exact(x1: int, n1: int, x2: int, n2: int, alpha: float = 0.05) -> dict[str, Any]:
    """Two-sided Fisher's exact test of x1/n1 against x2/n2, with the conditional odds ratio.

    The odds ratio is the conditional maximum-likelihood estimate with its exact
    interval (what R's fisher.test reports), which stays finite-or-infinite in a
    well-defined way when a cell is zero. Above ``EXACT_OR_MAX_N`` rows that exact
    interval takes seconds, and the sample odds ratio with its Woolf (log) interval
    is used instead; the two agree closely at such sizes.
    """
    if n1 <= 0 or n2 <= 0:
        return {"p": None, "odds_ratio": empty(n1 + n2), "table": [[x1, n1 - x1], [x2, n2 - x2]]}
    table = np.array([[x1, n1 - x1], [x2, n2 - x2]])
    p_value = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
    kind = "conditional" if n1 + n2 <= EXACT_OR_MAX_N else "sample"
    try:
        odds = stats.contingency.odds_ratio(table, kind=kind)
        ci = odds.confidence_interval(confidence_level=1 - alpha)
        odds_ratio = estimate(odds.statistic, ci.low, ci.high, n1 + n2, kind=kind)
    except (ValueError, FloatingPointError):
        odds_ratio = empty(n1 + n2)
    return {"p": clean_p(p_value), "odds_ratio": odds_ratio,
            "table": [[int(x1), int(n1 - x1)], [int(x2), int(n2 - x2)]]}


def fisher_between(frame: pd.DataFrame, flag: str, by: str, first: str, second: str,
                   alpha: float = 0.05) -> dict[str, Any]:
    """Fisher's test of ``flag`` between two groups of column ``by`` (rows: first, second)."""
    a = frame.loc[frame[by] == first, flag].astype(bool)
    b = frame.loc[frame[by] == second, flag].astype(bool)
    result = fisher_exact(int(a.sum()), int(a.size), int(b.sum()), int(b.size), alpha)
    return {"groups": [first, second], **result}
