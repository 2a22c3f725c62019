"""Table 1: who the patients were at progression after BCMA CAR-T.

Each characteristic counts "not recorded" beside the known values; nothing is
imputed. Cytogenetics and extramedullary disease come from Condition resources
(present, absent when refuted, else not recorded), R-ISS and LDH from
Observations (connector/cohort/baseline.py). High-risk cytogenetics: any of
del(17p), t(4;14), t(14;16) or 1q gain/amplification present; standard risk: all
four recorded absent; otherwise not recorded.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from connector.analysis.describe import summary
from connector.analysis.frames import FINDINGS

NOT_RECORDED = "not_recorded"
CYTOGENETICS = ["del_17p", "t_4_14", "t_14_16", "gain_1q"]
RISS = ["I", "II", "III"]


def high_risk(patients: pd.DataFrame) -> pd.Series:
    """present | absent | None per patient (see the module docstring)."""
    cyto = patients[CYTOGENETICS]
    present = (cyto == "present").any(axis=1)
    absent = (cyto == "absent").all(axis=1)
    return pd.Series([("present" if p else "absent" if a else None)
                      for p, a in zip(present, absent, strict=True)],
                     index=patients.index, dtype=object)


def _categories(values: pd.Series, order: list[str]) -> dict[str, int]:
    """Counts in ``order`` (extra values after, sorted), then ``not_recorded``."""
    known = values.dropna().astype(str)
    tally = known.value_counts()
    keys = order + sorted(set(tally.index) - set(order))
    return {**{k: int(tally.get(k, 0)) for k in keys},
            NOT_RECORDED: int(values.isna().sum())}


def _continuous(values: pd.Series) -> dict[str, Any]:
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    return {**summary(numeric), NOT_RECORDED: int(numeric.isna().sum())}


def table1(patients: pd.DataFrame) -> dict[str, Any]:
    """Table 1 of the in-cohort patients (frame from ``cohort_frames``)."""
    elevated = patients["ldh_elevated"].map(
        lambda v: None if v is None else ("elevated" if v else "normal"))
    out: dict[str, Any] = {
        "n_patients": int(len(patients)),
        "age_at_car_t_years": _continuous(patients["age_at_index"]),
        "sex": _categories(patients["sex"], ["female", "male"]),
        "car_t_product": _categories(patients["index_product"], []),
        "car_t_to_progression_months": _continuous(patients["cart_to_progression_months"]),
        "prior_lines_before_car_t": _continuous(patients["prior_lines"]),
    }
    for finding in FINDINGS:
        out[finding] = _categories(patients[finding], ["present", "absent"])
    out["high_risk_cytogenetics"] = _categories(high_risk(patients), ["present", "absent"])
    out["riss_stage"] = _categories(patients["riss_stage"], RISS)
    out["ldh_u_per_l"] = _continuous(patients["ldh"])
    out["ldh_above_upper_limit"] = _categories(elevated, ["elevated", "normal"])
    return out
