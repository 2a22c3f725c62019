"""Report section: Table 1 (baseline at progression after BCMA CAR-T), from results.json."""

from __future__ import annotations

from typing import Any

from connector.report import formatting as fmt
from connector.report.document import Section, Table

NOT_RECORDED = "not_recorded"
FINDING_NAMES = {
    "del_17p": "del(17p)", "t_4_14": "t(4;14)", "t_14_16": "t(14;16)",
    "gain_1q": "1q gain or amplification", "high_risk_cytogenetics":
    "High-risk cytogenetics (any of the four)", "extramedullary": "Extramedullary disease",
}
VALUE_NAMES = {"present": "present", "absent": "absent (tested, not found)",
               "female": "female", "male": "male", "elevated": "above the upper limit",
               "normal": "at or below the upper limit",
               "idecabtagene vicleucel": "idecabtagene vicleucel (ide-cel)",
               "ciltacabtagene autoleucel": "ciltacabtagene autoleucel (cilta-cel)"}


def _share(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.1f}%)" if total else str(count)


def _categorical(name: str, counts: dict[str, int], total: int,
                 prefix: str = "") -> list[list[str]]:
    rows = []
    for key, count in counts.items():
        if key == NOT_RECORDED or not count:
            continue
        rows.append([f"{name}: {prefix}{VALUE_NAMES.get(key, key)}", _share(count, total)])
    if counts.get(NOT_RECORDED, 0):
        rows.append([f"{name}: not recorded", _share(counts[NOT_RECORDED], total)])
    return rows


def _continuous(name: str, summary: dict[str, Any]) -> list[str]:
    missing = summary.get(NOT_RECORDED, 0)
    extra = f"; not recorded {missing}" if missing else ""
    return [name, fmt.spread(summary) + extra]


def table1_section(r: dict[str, Any]) -> Section:
    t = r["table1"]
    n = t["n_patients"]
    rows = [_continuous("Age at CAR-T, years, median", t["age_at_car_t_years"])]
    rows += _categorical("Sex", t["sex"], n)
    rows += _categorical("CAR-T product", t["car_t_product"], n)
    rows.append(_continuous("Months from CAR-T to progression, median",
                            t["car_t_to_progression_months"]))
    rows.append(_continuous("Prior lines before CAR-T recorded at the centre, median",
                            t["prior_lines_before_car_t"]))
    for key in ("del_17p", "t_4_14", "t_14_16", "gain_1q", "high_risk_cytogenetics",
                "extramedullary"):
        rows += _categorical(FINDING_NAMES[key], t[key], n)
    rows += _categorical("R-ISS stage", t["riss_stage"], n, prefix="stage ")
    rows.append(_continuous("LDH, U/L, median", t["ldh_u_per_l"]))
    rows += _categorical("LDH", t["ldh_above_upper_limit"], n)
    return Section("Table 1. Patients at progression after BCMA CAR-T", [
        f"{n} patients. Counts with percentages of all {n}; 'not recorded' means the "
        "hospital record holds no result, and nothing was assumed for it. Cytogenetics and "
        "extramedullary disease come from the problem list (a finding ruled out is "
        "'absent'); extramedullary disease is rarely recorded as absent, so 'not recorded' "
        "there mostly means none was noted. R-ISS stage is the last recorded; LDH the value "
        "nearest progression. Prior lines count only the regimens the centre's records show "
        "before the CAR-T collection, usually fewer than the patient received.",
        Table(["characteristic", "patients"], rows)])
