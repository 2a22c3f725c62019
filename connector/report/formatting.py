"""Numbers as a reader sees them: percentages, months, CIs, p-values, with honest gaps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NE = "NE"  # a confidence bound that cannot be estimated


def _num(value: float | None, digits: int) -> str:
    return NE if value is None else f"{value:.{digits}f}"


def pct(est: dict[str, Any] | None, digits: int = 1, ci: bool = True) -> str:
    """"43.4% (95% CI 32.1–55.3; 33/76)", or "no evaluable lines" when n is 0."""
    if not est or not est.get("n"):
        return "no evaluable data (n=0)"
    value = f"{est['estimate'] * 100:.{digits}f}%"
    count = f"{est['x']}/{est['n']}" if "x" in est else f"n={est['n']}"
    if not ci:
        return f"{value} ({count})"
    low = _num(None if est["ci_low"] is None else est["ci_low"] * 100, digits)
    high = _num(None if est["ci_high"] is None else est["ci_high"] * 100, digits)
    return f"{value} (95% CI {low}–{high}; {count})"


def median(est: dict[str, Any] | None, digits: int = 1, unit: str = " mo") -> str:
    """"3.5 mo (95% CI 2.5–4.6; n=79, 60 events)", "not reached (…)" or "no data"."""
    if not est or not est.get("n"):
        return "no data (n=0)"
    if est["estimate"] is None:
        value = "not reached" if est.get("reached", False) is False else NE
    else:
        value = f"{est['estimate']:.{digits}f}{unit}"
    counts = f"n={est['n']}" + (f", {est['events']} events" if "events" in est else "")
    return (f"{value} (95% CI {_num(est['ci_low'], digits)}–{_num(est['ci_high'], digits)}; "
            f"{counts})")


def p_value(p: float | None) -> str:
    if p is None:
        return "not computed"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def hazard_ratio(est: dict[str, Any]) -> str:
    """"HR 0.42 (95% CI 0.25–0.71), p = 0.001; n=…" or why it was not estimated."""
    if est.get("estimate") is None:
        status = str(est.get("status", "not estimable")).replace("not_estimable: ", "")
        return f"not estimated ({status}; n={est['n']}, {est.get('events', 0)} events)"
    adjusted = ", stratified by site" if est.get("adjusted_for") else ""
    robust = ", robust SEs clustered by patient" if est.get("robust_se") else ""
    return (f"HR {est['estimate']:.2f} (95% CI {_num(est['ci_low'], 2)}–"
            f"{_num(est['ci_high'], 2)}), {p_value(est.get('p'))}; n={est['n']}, "
            f"{est['events']} events{adjusted}{robust}")


def _short(value: float, digits: int) -> str:
    """Whole numbers without decimals (counts, years), others to ``digits`` places."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.{digits}f}"


def spread(summary: dict[str, Any], digits: int = 1) -> str:
    """"64 (IQR 57–70.5; range 41–86; n=79)"."""
    if not summary.get("n"):
        return "unknown"
    s = {k: _short(summary[k], digits) for k in ("median", "q1", "q3", "min", "max")}
    return (f"{s['median']} (IQR {s['q1']}–{s['q3']}; range {s['min']}–{s['max']}; "
            f"n={summary['n']})")


def tally(counts: dict[str, int], total: int,
          namer: Callable[[str], str] = str) -> str:
    """"female 30 (38.0%), male 49 (62.0%)"; ``namer`` turns each code into words."""
    if not counts:
        return "none"
    return ", ".join(f"{namer(k)} {v} ({100 * v / total:.1f}%)" if total else f"{namer(k)} {v}"
                     for k, v in counts.items())
