"""Report section: time to next treatment, PFS with a switch as an event, and two data
completeness counts per site (issue 15). Numbers come from results.json only."""

from __future__ import annotations

from typing import Any

from connector.report import formatting as fmt
from connector.report import labels as lb
from connector.report.document import Section, Table

GROUPS = lb.CLASS_NAMES


def next_treatment_section(r: dict[str, Any]) -> Section:
    ttnt, switch = r["time_to_next_treatment"], r["pfs_switch_as_event"]
    rows = [[GROUPS[g], fmt.median(switch["first_line"]["median_months"][g]),
             fmt.median(ttnt["first_line"]["median_months"][g]),
             fmt.median(switch["all_lines"]["median_months"][g]),
             fmt.median(ttnt["all_lines"]["median_months"][g])]
            for g in GROUPS]
    blocks: list = [
        "Beside the study's PFS (censored at the last response assessment; in the tables "
        "above), time to next treatment (TTNT: line start to the next line's start, or death "
        "when no line follows; censored at last contact) and, as a sensitivity analysis, PFS "
        "counting the start of the next line as an event when no progression or death was "
        "measured before it. A large gap between PFS and the switch-as-event PFS means many "
        "lines ended without a measured progression.",
        Table(["class", "first line: PFS, switch as event", "first line: TTNT",
               "all lines: PFS, switch as event", "all lines: TTNT"], rows)]
    completeness = completeness_line(r["cohort"])
    if completeness:
        blocks.append(completeness)
    return Section("Time to next treatment and PFS with a switch as event", blocks)


def completeness_line(c: dict[str, Any]) -> str:
    """Per site, how often progression was dated by the new-line fallback and how many
    deaths are known without a date; empty when both are zero everywhere (no filler)."""
    fallback = c.get("new_line_fallback_by_site", {})
    undated = c.get("deaths_without_date_by_site", {})
    parts = []
    for site in sorted(set(fallback) | set(undated)):
        counts = [text for n, text in (
            (fallback.get(site, 0), f"{lb.plural(fallback.get(site, 0), 'patient')} with the "
                                    "progression date from the new-line fallback"),
            (undated.get(site, 0), f"{lb.plural(undated.get(site, 0), 'death')} without a "
                                   "date")) if n]
        if counts:
            parts.append(f"{lb.site_name(site)}: {' and '.join(counts)}")
    if not parts:
        return ""
    return ("Data completeness (the new-line fallback dates progression by the start of the "
            "next line when laboratory values could not date it; deaths without a date are "
            f"censored at last contact): {'; '.join(parts)}.")
