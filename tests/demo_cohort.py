"""Small random cohorts shaped like the derived tables, for tests and for trying the report.

Not the synthetic FHIR generator (``connector.synth``): this skips FHIR entirely and
writes the derived frames directly, so the analysis and report can be exercised
without a database. The class effects below are assumptions chosen to resemble
the published figures (first-line ORR ~43%, PFS ~3.5 months, OS ~18 months).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from connector.analysis.settings import DAYS_PER_MONTH

PRODUCTS = ("idecabtagene vicleucel", "ciltacabtagene autoleucel")
TCE_REGIMENS = (("bcma_bispecific", "teclistamab"), ("gprc5d_bispecific", "talquetamab"),
                ("car_t", "ciltacabtagene autoleucel;cyclophosphamide;fludarabine"))
NON_TCE_REGIMENS = (("anti_cd38", "daratumumab;dexamethasone;pomalidomide"),
                    ("imid_pi", "carfilzomib;dexamethasone;pomalidomide"),
                    ("chemotherapy", "cisplatin;cyclophosphamide;dexamethasone;etoposide"),
                    ("xpo1_inhibitor", "bortezomib;dexamethasone;selinexor"))
# Assumed per-class parameters (not published): P(response >= PR), median PFS in months.
CLASS_EFFECTS = {"tce": (0.85, 9.0), "non_tce": (0.35, 3.0)}


def _days(months: float) -> int:
    return max(1, round(months * DAYS_PER_MONTH))


def _best_response(rng: np.random.Generator, responds: bool) -> str:
    if rng.random() < 0.04:
        return "NE"
    if responds:
        return str(rng.choice(["sCR", "CR", "VGPR", "PR"], p=[0.1, 0.2, 0.3, 0.4]))
    return str(rng.choice(["MR", "SD", "PD"], p=[0.2, 0.4, 0.4]))


def demo_frames(n_patients: int = 79, n_sites: int = 2, seed: int = 7,
                n_excluded: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(patients, lines) for ``n_patients`` in-cohort patients plus some excluded ones."""
    rng = np.random.default_rng(seed)
    sites = [f"site_{chr(97 + i)}" for i in range(n_sites)]
    patients: list[dict] = []
    lines: list[dict] = []
    start = dt.date(2018, 1, 1)
    for i in range(n_patients):
        site = sites[i % n_sites]
        source_id = f"p{i:05d}"
        index = start + dt.timedelta(days=int(rng.integers(0, 1500)))
        progression = index + dt.timedelta(days=_days(rng.exponential(9.0)))
        os_months = rng.exponential(18.0 / math.log(2))
        follow = rng.uniform(6.0, 40.0)
        died = os_months <= follow
        end = progression + dt.timedelta(days=_days(min(os_months, follow)))
        patients.append({
            "site": site, "source_id": source_id, "patient_key": f"k{seed}_{i:05d}",
            "in_cohort": True, "exclusion_reason": None,
            "index_product": PRODUCTS[int(rng.random() < 0.35)], "index_date": index,
            "progression_date": progression, "progression_basis": "imwg_labs",
            "death_date": end if died else None, "last_contact_date": end,
            "birth_year": index.year - int(rng.normal(64, 9)),
            "sex": "female" if rng.random() < 0.42 else "male",
        })
        lines.extend(_patient_lines(rng, site, source_id, f"k{seed}_{i:05d}", progression,
                                    end, died))
    _add_covariates(patients, np.random.default_rng([seed, 16]))
    for j in range(n_excluded):
        reason = ("no_car_t", "non_bcma_car_t", "no_progression")[j % 3]
        patients.append({"site": sites[j % n_sites], "source_id": f"x{j:05d}",
                         "patient_key": f"x{seed}_{j:05d}", "in_cohort": False,
                         "exclusion_reason": reason, "last_contact_date": start})
    return pd.DataFrame(patients), pd.DataFrame(lines)


def _patient_lines(rng: np.random.Generator, site: str, source_id: str, key: str,
                   progression: dt.date, end: dt.date, died: bool) -> list[dict]:
    rows: list[dict] = []
    line_start = progression + dt.timedelta(days=int(rng.integers(3, 30)))
    number = 1
    while line_start < end and number <= 10:
        tce = rng.random() < (0.2 if number == 1 else 0.3)
        cls = "tce" if tce else "non_tce"
        p_response, median_pfs = CLASS_EFFECTS[cls]
        subclass, drugs = (TCE_REGIMENS if tce else NON_TCE_REGIMENS)[
            int(rng.integers(0, 3 if tce else 4))]
        response = _best_response(rng, rng.random() < p_response)
        pfs_date = line_start + dt.timedelta(
            days=_days(rng.exponential(median_pfs / math.log(2))))
        event = pfs_date < end or died
        event_date = min(pfs_date, end) if event else None
        line_end = event_date or end
        rows.append({
            "site": site, "source_id": source_id, "patient_key": key, "line": number,
            "start_date": line_start, "end_date": line_end, "drugs": drugs,
            "therapy_class": cls, "subclass": subclass, "best_response": response,
            "response_note": "", "pfs_event_date": event_date,
            "pfs_censor_date": None if event else end,
        })
        number += 1
        line_start = line_end + dt.timedelta(days=int(rng.integers(7, 45)))
    return rows


def _add_covariates(patients: list[dict], rng: np.random.Generator) -> None:
    """Table 1 covariates (issue 16) from a stream of their own, so the outcomes above do
    not move; about one in six of each is left not recorded (None)."""
    for row in patients:
        tested = rng.random() < 0.8
        for name, chance in (("del_17p", 0.2), ("t_4_14", 0.15), ("t_14_16", 0.05),
                             ("gain_1q", 0.4)):
            hit = rng.random() < chance
            row[name] = ("present" if hit else "absent") if tested else None
        row["extramedullary"] = "present" if rng.random() < 0.25 else None
        row["riss_stage"] = str(rng.choice(["I", "II", "III"])) if rng.random() < 0.7 else None
        ldh = float(round(rng.lognormal(np.log(220), 0.35))) if rng.random() < 0.85 else None
        row["ldh"] = ldh
        row["ldh_elevated"] = None if ldh is None else ldh > 250
        row["prior_lines"] = int(rng.integers(1, 7)) if rng.random() < 0.9 else None
