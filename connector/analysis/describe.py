"""The cohort table: who the patients are, before any outcome is compared."""

from __future__ import annotations

from typing import Any

import pandas as pd

from connector.analysis.estimates import clean
from connector.analysis.rates import rate_of

UNKNOWN = "unknown"


def summary(values: pd.Series) -> dict[str, Any]:
    """Median, quartiles and range of the known values, and how many were known."""
    known = pd.to_numeric(values, errors="coerce").astype("float64").dropna()
    if known.empty:
        return {"median": None, "q1": None, "q3": None, "min": None, "max": None, "n": 0}
    return {"median": clean(known.median()), "q1": clean(known.quantile(0.25)),
            "q3": clean(known.quantile(0.75)), "min": clean(known.min()),
            "max": clean(known.max()), "n": int(known.size)}


def counts(values: pd.Series) -> dict[str, int]:
    """Counts by value, missing as "unknown", keys sorted so output is stable."""
    filled = values.astype(object).where(values.notna(), UNKNOWN).astype(str)
    tally = filled.value_counts()
    return {str(k): int(tally[k]) for k in sorted(tally.index)}


def excluded_counts(all_patients: pd.DataFrame) -> dict[str, int]:
    """Patients left out, by reason; the contract's three reasons always appear."""
    out = {"no_car_t": 0, "non_bcma_car_t": 0, "no_progression": 0}
    reasons = all_patients.loc[~all_patients["in_cohort"], "exclusion_reason"]
    reasons = reasons.astype(object).where(reasons.notna(), "unspecified")
    for reason, count in sorted(reasons.value_counts().items()):
        out[str(reason)] = int(count)
    return out


def describe_cohort(patients: pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Age at CAR-T, sex, product, site, time to progression, lines per patient, ever TCE."""
    treated = patients[patients["n_lines"] > 0]
    return {
        "age_at_car_t_years": summary(patients["age_at_index"]),
        "sex": counts(patients["sex"]),
        "index_product": counts(patients["index_product"]),
        "site": counts(patients["site"]),
        "progression_basis": counts(patients["progression_basis"]),
        "car_t_to_progression_months": summary(patients["cart_to_progression_months"]),
        "lines_per_patient": summary(patients["n_lines"]),
        "patients_with_a_line": int(len(treated)),
        "lines_per_treated_patient": summary(treated["n_lines"]),
        "ever_tce": rate_of(patients["ever_tce"], alpha),
    }
