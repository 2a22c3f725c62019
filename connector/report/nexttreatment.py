"""Report section: time to next treatment, PFS with a switch as an event, and two data
completeness counts per site (issue 15). Numbers come from results.json only."""

from __future__ import annotations

from typing import Any

from connector.report import formatting as fmt
from connector.report.document import Section, Table

GROUPS = {"overall": "all", "tce": "TCE", "non_tce": "non-TCE"}


def next_treatment_section(r: dict[str, Any]) -> Section:
    ttnt, switch = r["time_to_next_treatment"], r["pfs_switch_as_event"]
    pfs_first = r["first_line_detail"]["pfs_median_months"]
    pfs_all = r["all_lines"]["pfs_median_months_by_class"]
    rows = [[GROUPS[g], fmt.median(pfs_first[g]),
             fmt.median(switch["first_line"]["median_months"][g]),
             fmt.median(ttnt["first_line"]["median_months"][g]),
             fmt.median(pfs_all[g]),
             fmt.median(switch["all_lines"]["median_months"][g]),
             fmt.median(ttnt["all_lines"]["median_months"][g])]
            for g in GROUPS]
    return Section("Time to next treatment and PFS with a switch as event", [
        "Beside the study's PFS (censored at the last response assessment), time to next "
        "treatment (TTNT: line start to the next line's start, or death when no line "
        "follows; censored at last contact) and, as a sensitivity analysis, PFS counting "
        "the start of the next line as an event when no progression or death was measured "
        "before it. A large gap between PFS and the switch-as-event PFS means many lines "
        "ended without a measured progression.",
        Table(["class", "first line PFS", "first line PFS, switch as event",
               "first line TTNT", "all lines PFS", "all lines PFS, switch as event",
               "all lines TTNT"], rows),
        completeness_line(r["cohort"])])


def completeness_line(c: dict[str, Any]) -> str:
    """One line: how often progression was dated by the new-line fallback, and deaths
    known without a date, per site."""
    fallback = c.get("new_line_fallback_by_site", {})
    undated = c.get("deaths_without_date_by_site", {})
    sites = sorted(set(fallback) | set(undated))
    per_site = "; ".join(f"{s}: {fallback.get(s, 0)} by new-line fallback, "
                         f"{undated.get(s, 0)} death(s) without a date" for s in sites)
    return ("Data completeness per site (patients whose progression date is the start of "
            "the next line because labs could not date it; patients known dead without a "
            f"date, censored at last contact): {per_site or 'no sites'}.")
