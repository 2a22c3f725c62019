"""Report section: data completeness per centre, from results.json only."""

from __future__ import annotations

from typing import Any

from connector.report import formatting as fmt
from connector.report import labels as lb
from connector.report.document import Section, Table


def _count(value: int | None) -> str:
    return "not available" if value is None else str(value)


def _row(name: str, c: dict[str, Any]) -> list[str]:
    interval = c["lab_interval_days"]
    density = ("no patient with two results" if not interval.get("n") else
               f"{interval['median']:.0f} days (IQR {interval['q1']:.0f}–{interval['q3']:.0f}; "
               f"{interval['n']} patients)")
    reasons = "; ".join(f"{k}: {v}" for k, v in c["lines_not_evaluable_by_reason"].items())
    not_evaluable = f"{c['lines_not_evaluable']} of {c['lines']}" + (
        f" ({reasons})" if reasons else "")
    return [name, density, not_evaluable, fmt.pct(c["progression_from_new_line"]),
            str(c["deaths_without_date"]), _count(c["quarantined"]),
            _count(c["unmapped_observations"]), c["data_cutoff"] or "unknown"]


def completeness_section(r: dict[str, Any]) -> Section:
    d = r["data_completeness"]
    rows = [_row(lb.site_name(site), c) for site, c in d["by_site"].items()]
    if len(d["by_site"]) > 1:
        rows.append(_row("all centres", d["overall"]))
    return Section("Data completeness", [
        "How densely each centre's records follow the patients, and what could not be used. "
        "Lab spacing is each patient's median number of days between M-protein or free "
        "light chain results after progression (the median over patients). A progression "
        "dated by the next line is one the labs could not date. Deaths known without a "
        "date are censored at last contact. Quarantined resources failed checks and are "
        "kept aside with their reason; unmapped Observations carry a code no lab mapping "
        "knows. The cut-off is the latest date in the centre's records.",
        Table(["centre", "lab spacing (median)", "lines not evaluable for response",
               "progression dated by the next line", "deaths without a date",
               "quarantined resources", "unmapped Observations", "data cut-off"], rows)])
