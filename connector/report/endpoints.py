"""Report section: more endpoints (duration of response, PFS2, best response over all
lines, OS at fixed times), from results.json only."""

from __future__ import annotations

from typing import Any

from connector.report import formatting as fmt
from connector.report.document import Section, Table

ORDER = ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD", "NE")


def _pct(value: float | None) -> str:
    return fmt.NE if value is None else f"{100 * value:.1f}"


def _at(est: dict[str, Any]) -> str:
    if est.get("estimate") is None:
        return f"not estimable ({est.get('status', 'no data')}; n={est.get('n', 0)})"
    return (f"{_pct(est['estimate'])}% (95% CI {_pct(est['ci_low'])}–{_pct(est['ci_high'])}; "
            f"{est['at_risk']} still at risk, n={est['n']})")


def endpoints_section(r: dict[str, Any]) -> Section:
    e = r["endpoints"]
    dor, pfs2 = e["duration_of_response_months"], e["pfs2"]
    best = e["best_response_over_all_lines"]
    ttnt = r["time_to_next_treatment"]["first_line"]["median_months"]["overall"]
    rows = [
        ["Time to next treatment, first salvage line (median)", fmt.median(ttnt)],
        ["Duration of response, first salvage line (median)", fmt.median(dor["first_line"])],
        ["Duration of response, all responding lines (median)", fmt.median(dor["all_lines"])],
        ["PFS2: first salvage line to progression on the next line or death (median)",
         fmt.median(pfs2["median_months"])],
        ["Best response over all lines at least PR (patients)", fmt.pct(best["orr"])],
        ["Best response over all lines at least VGPR (patients)",
         fmt.pct(best["vgpr_or_better"])],
    ]
    rows += [[f"Overall survival at {months} months from progression", _at(est)]
             for months, est in e["os_at_months"].items()]
    counts = best["counts"]
    spread = ", ".join(f"{k} {counts[k]}" for k in ORDER if counts.get(k))
    return Section("More endpoints", [
        "Duration of response counts lines whose best response was at least a partial "
        "response, from the start of the line (the date the response was first reached is "
        "not derived yet) to progression or death, censored at the last assessment. PFS2 "
        "runs from the start of the first salvage line to progression on the second line "
        f"or death; {pfs2['n_with_second_line']} patients had a second line, the others "
        "count death as the event and are censored at last contact. Overall survival at a "
        "time point is read off the Kaplan–Meier curve with its 95% band.",
        Table(["endpoint", "estimate"], rows),
        f"Each patient's best response over all lines ({best['n_patients']} patients): "
        f"{spread}."])
