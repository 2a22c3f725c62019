"""Subgroups (issue 16 item 3): first-salvage ORR and PFS, and OS, by patient groups.

Groups: early vs late relapse after CAR-T (each threshold of ``[subgroups]
early_relapse_months``), CAR-T product, extramedullary disease recorded, high-risk
cytogenetics (present vs all four absent; not recorded left out and counted),
BCMA-targeted vs other first salvage line, and site. For each group: ORR with an
exact CI among evaluable first lines, Kaplan-Meier medians of first-line PFS and of
OS from progression, and Cox hazard ratios of the first level against the second
(the reference), stratified by site when there are several (not for the site
comparison itself). These are descriptive: small groups, many comparisons, no
adjustment for multiplicity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from connector.analysis.rates import rate_of
from connector.analysis.survival import cox_hazard_ratio, kaplan_meier
from connector.analysis.table1 import high_risk


@dataclass(frozen=True)
class Grouping:
    key: str  # results.json key
    label: str  # in clinical words
    levels: tuple[tuple[str, str], ...]  # (value, label); the last is the reference


def _bcma_first(lines: pd.DataFrame, ingredients: frozenset[str]) -> pd.Series:
    first = lines[lines["is_first"]].set_index("pid")["drugs"].fillna("")
    return first.map(lambda d: "bcma" if set(d.split(";")) & ingredients else "other")


def patient_groups(patients: pd.DataFrame, lines: pd.DataFrame, early_months: tuple[float, ...],
                   bcma_ingredients: frozenset[str]) -> tuple[pd.DataFrame, list[Grouping]]:
    """One column per grouping on the patient frame (None = not classifiable)."""
    frame = patients[["pid", "site", "os_months", "os_event", "os_valid"]].copy()
    groupings: list[Grouping] = []
    months = patients["cart_to_progression_months"]
    for m in early_months:
        key = f"relapse_within_{m:g}_months"
        frame[key] = np.where(months.isna(), None, np.where(months < m, "early", "late"))
        groupings.append(Grouping(key, f"Relapse within {m:g} months of CAR-T", (
            ("early", f"under {m:g} months"), ("late", f"{m:g} months or later"))))
    frame["product"] = patients["index_product"].map({
        "ciltacabtagene autoleucel": "cilta_cel", "idecabtagene vicleucel": "ide_cel"})
    groupings.append(Grouping("product", "CAR-T product", (
        ("cilta_cel", "ciltacabtagene autoleucel"), ("ide_cel", "idecabtagene vicleucel"))))
    frame["extramedullary"] = np.where(patients["extramedullary"] == "present", "recorded",
                                       "none_recorded")
    groupings.append(Grouping("extramedullary", "Extramedullary disease", (
        ("recorded", "recorded"), ("none_recorded", "none recorded"))))
    frame["high_risk_cytogenetics"] = high_risk(patients).values
    groupings.append(Grouping("high_risk_cytogenetics", "High-risk cytogenetics", (
        ("present", "present"), ("absent", "standard risk (all four tested, none found)"))))
    first = _bcma_first(lines, bcma_ingredients)
    frame["first_salvage_target"] = frame["pid"].map(first)
    groupings.append(Grouping("first_salvage_target", "First salvage line", (
        ("bcma", "BCMA-targeted retreatment"), ("other", "not BCMA-targeted"))))
    sites = sorted(patients["site"].dropna().unique().tolist())
    frame["site_group"] = patients["site"]
    if len(sites) == 2:
        # the label is the site's own name; the report words it
        groupings.append(Grouping("site_group", "Centre", tuple((s, s) for s in sites)))
    return frame, groupings


def _hr(frame: pd.DataFrame, duration: str, event: str, flag: pd.Series, stratify: bool,
        alpha: float, min_events: int) -> dict[str, Any]:
    data = frame.assign(flag=flag)
    if not stratify:
        data = data.assign(site="all")
    return cox_hazard_ratio(data, duration, event, "flag", alpha=alpha, min_events=min_events)


def subgroups(patients: pd.DataFrame, lines: pd.DataFrame, early_months: tuple[float, ...],
              bcma_ingredients: frozenset[str], alpha: float, min_events: int
              ) -> dict[str, Any]:
    """results.json's ``subgroups``: one entry per grouping."""
    frame, groupings = patient_groups(patients, lines, early_months, bcma_ingredients)
    first = lines[lines["is_first"]].merge(frame.drop(columns=["site"]), on="pid", how="left")
    out: dict[str, Any] = {}
    for g in groupings:
        values = [v for v, _ in g.levels]
        patient_rows = frame[frame[g.key].isin(values) & frame["os_valid"]]
        first_rows = first[first[g.key].isin(values)]
        pfs_rows = first_rows[first_rows["pfs_valid"]]
        levels = {}
        for value, label in g.levels:
            pts = patient_rows[patient_rows[g.key] == value]
            fl = first_rows[first_rows[g.key] == value]
            pf = pfs_rows[pfs_rows[g.key] == value]
            levels[value] = {
                "label": label, "n_patients": int((frame[g.key] == value).sum()),
                "orr": rate_of(fl.loc[fl["evaluable"], "responder"], alpha),
                "pfs_median_months": kaplan_meier(pf["pfs_months"], pf["pfs_event"], value,
                                                  alpha).as_estimate(),
                "os_median_months": kaplan_meier(pts["os_months"], pts["os_event"], value,
                                                 alpha).as_estimate(),
            }
        stratify = g.key != "site_group"
        test, ref = values
        out[g.key] = {
            "label": g.label, "levels": levels, "comparison": f"{test} vs {ref}",
            "not_classified": int((~frame[g.key].isin(values)).sum()),
            "pfs_hazard_ratio": _hr(pfs_rows, "pfs_months", "pfs_event",
                                    pfs_rows[g.key] == test, stratify, alpha, min_events),
            "os_hazard_ratio": _hr(patient_rows, "os_months", "os_event",
                                   patient_rows[g.key] == test, stratify, alpha, min_events),
        }
    return out
