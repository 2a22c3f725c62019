"""The study's published figures beside this cohort's, row by row.

Published values are facts quoted from Van Oekelen et al., Blood 2023;141(7):756-765
(abstract and key points), as listed in the project's study reference; each row
says where its number comes from so a reader can check it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.report import formatting as fmt
from connector.report.labels import plural

SOURCE = "Van Oekelen et al., Blood 2023;141(7):756-765, abstract/key points"


@dataclass(frozen=True)
class Published:
    measure: str
    published: str
    ours: Callable[[dict[str, Any]], str]
    source: str = SOURCE


def _lines_per_patient(r: dict[str, Any]) -> str:
    s = r["cohort"]["lines_per_patient"]
    if not s["n"]:
        return "no patients"
    treated = r["cohort"]["patients_with_a_line"]
    return (f"median {s['median']:g} (range {s['min']:g}–{s['max']:g}); "
            f"{treated} of {r['n_patients']} patients had ≥1 line")


def _ever_tce(r: dict[str, Any]) -> str:
    e = r["tce"]["ever_tce"]
    return fmt.pct(e) if e["n"] else "no patients"


ROWS: tuple[Published, ...] = (
    Published("Patients progressing after BCMA CAR-T", "79 (2 centers)",
              lambda r: f"{r['n_patients']} ({plural(r['n_sites'], 'site')})"),
    Published("Salvage lines after progression", "237 (about 3 per patient)",
              lambda r: str(r["n_lines"])),
    Published("Salvage lines per patient", "median 2 (range 1–10)", _lines_per_patient),
    Published("Patients receiving ≥1 TCE line", "35 of 79 (44.3%)", _ever_tce),
    Published("ORR (≥PR), first salvage line",
              "43.4% (denominator likely ~76 evaluable patients)",
              lambda r: fmt.pct(r["first_line_detail"]["orr"]["overall"])),
    Published("Median PFS, first salvage line", "3.5 mo (95% CI 2.5–4.6)",
              lambda r: fmt.median(r["first_line_detail"]["pfs_median_months"]["overall"])),
    Published("Response to TCE (patients, any line after relapse)", "91.4% (32 of 35)",
              lambda r: fmt.pct(r["tce"]["patient_response_evaluable"])),
    Published("Median OS from relapse after CAR-T", "17.9 mo (95% CI 14.0–NE)",
              lambda r: fmt.median(r["os"]["median_months"])),
    Published("Median OS, patients who received TCE (naive grouping)", "not reached",
              lambda r: fmt.median(r["os"]["median_months_by_ever_tce"]["tce"])),
    Published("Median follow-up, TCE subgroup", "21.3 mo",
              lambda r: fmt.median(r["os"]["follow_up_median_months"]["tce"])),
)


def comparison_rows(results: dict[str, Any]) -> list[list[str]]:
    """[measure, published, this cohort] for every published figure."""
    return [[row.measure, row.published, row.ours(results)] for row in ROWS]
