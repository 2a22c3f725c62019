"""All analyses of one cohort, assembled into results.json and the objects the report draws.

Denominators (stated once here and in the report):
- Response rates (ORR = best response ≥ PR; ≥ VGPR) count lines whose best response is
  a category other than NE ("evaluable", as in the study); ``orr_all_treated`` counts
  every line, NE as non-response. ≥ CR leaves out VGPR lines whose note says CR could
  not be determined (no immunofixation or marrow).
- First line: each patient's lowest-numbered line after progression; one per patient.
- All-lines rates and PFS pool lines, several per patient; their CIs treat lines as
  independent (the Cox model for all lines uses patient-clustered robust errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from connector.analysis.describe import describe_cohort, excluded_counts
from connector.analysis.flow import patient_flow
from connector.analysis.frames import RESPONSES, CohortFrames, cohort_frames
from connector.analysis.nexttreatment import next_treatment_results, per_site_counts
from connector.analysis.rates import fisher_between, rate_of, rates_by
from connector.analysis.settings import AnalysisSettings
from connector.analysis.studygrade import Quality, only_sites, study_grade
from connector.analysis.survival import (
    KMResult,
    Landmark,
    cox_hazard_ratio,
    kaplan_meier,
    kaplan_meier_by,
    landmark_os,
    logrank,
    reverse_km_median,
    time_varying_tce_cox,
)
from connector.analysis.table1 import table1
from connector.codes.rulesfile import TCE_KINDS

CLASSES = ["tce", "non_tce"]
CONTRACT_FIELDS = ("estimate", "ci_low", "ci_high", "n")

DEFINITIONS = {
    "orr": "best response >= PR; denominator: lines with a response category other than NE",
    "vgpr_or_better": "best response >= VGPR; same denominator as orr",
    "cr_or_better": "best response >= CR; denominator: evaluable lines where CR was "
                    "determinable (VGPR lines noted 'CR not determinable' left out)",
    "orr_all_treated": "best response >= PR; denominator: every line (NE counted as no response)",
    "first_line": "each patient's lowest-numbered line after progression on BCMA CAR-T",
    "pfs": "line start to first confirmed PD or death; censored at the last assessment",
    "time_to_next_treatment": "line start to the next line's start, or death when no line "
                              "follows; censored at last contact",
    "pfs_switch_as_event": "sensitivity analysis: PFS with the next line's start as an event "
                           "when no PD or death came first",
    "deaths_without_date": "death known (Patient.deceasedBoolean) without a date: censored "
                           "at last contact in OS and TTNT, counted per site",
    "os": "progression after CAR-T to death; censored at last contact",
    "median": "smallest time with Kaplan-Meier estimate <= 0.5; 95% CI from the log(-log) "
              "pointwise band; null when not reached or not estimable",
    "rate_ci": "exact Clopper-Pearson",
    "months": "days / 30.4375",
    "os_by_ever_tce": "patients grouped by any TCE line at any time (as published); subject "
                      "to immortal-time bias, see os.landmark and os.tce_time_varying_cox",
}


@dataclass
class Analysis:
    """The content of results.json and what the report needs to draw it."""

    results: dict[str, Any]
    patients: pd.DataFrame  # in-cohort patients with the analysis columns
    lines: pd.DataFrame  # their lines with the analysis columns
    all_patients: pd.DataFrame  # every patient given, with in_cohort and exclusion_reason
    fits: dict[str, dict[str, KMResult]] = field(default_factory=dict)
    landmark: Landmark | None = None
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)


def contract(est: dict[str, Any]) -> dict[str, Any]:
    """Only the four contract fields, for the keys contracts.md fixes."""
    return {k: est[k] for k in CONTRACT_FIELDS}


def _rates_by_class(frame: pd.DataFrame, flag: str, alpha: float) -> dict[str, dict[str, Any]]:
    return {"overall": rate_of(frame[flag], alpha),
            **rates_by(frame, flag, "therapy_class", CLASSES, alpha)}


def _km_by_class(frame: pd.DataFrame, alpha: float) -> dict[str, KMResult]:
    valid = frame[frame["pfs_valid"]]
    return {"overall": kaplan_meier(valid["pfs_months"], valid["pfs_event"], "all", alpha),
            **kaplan_meier_by(valid, "pfs_months", "pfs_event", "therapy_class", CLASSES,
                              alpha)}


def _first_line(cf: CohortFrames, s: AnalysisSettings,
                fits: dict[str, dict[str, KMResult]]) -> tuple[dict, dict]:
    first = cf.lines[cf.lines["is_first"]]
    evaluable = first[first["evaluable"]]
    determinable = first[first["cr_determinable"]]
    pfs = _km_by_class(first, s.alpha)
    fits["first_line_pfs"] = pfs
    orr = _rates_by_class(evaluable, "responder", s.alpha)
    vgpr = _rates_by_class(evaluable, "vgpr_plus", s.alpha)
    core = {"orr": {k: contract(v) for k, v in orr.items()},
            "vgpr_or_better": {k: contract(v) for k, v in vgpr.items()},
            "pfs_median_months": {k: contract(v.as_estimate()) for k, v in pfs.items()}}
    valid = first[first["pfs_valid"]]
    detail = {
        "n_patients_with_a_line": int(len(first)),
        "n_not_evaluable": {"overall": int((~first["evaluable"]).sum()),
                            **{c: int(((first["therapy_class"] == c)
                                       & ~first["evaluable"]).sum()) for c in CLASSES}},
        "orr": orr,
        "vgpr_or_better": vgpr,
        "cr_or_better": _rates_by_class(determinable, "cr_plus", s.alpha),
        "n_cr_not_determinable": int((first["evaluable"] & ~first["cr_determinable"]).sum()),
        "orr_all_treated": _rates_by_class(first, "responder", s.alpha),
        "best_response_counts": _response_counts(first),
        "orr_fisher_tce_vs_non_tce": fisher_between(evaluable, "responder", "therapy_class",
                                                    "tce", "non_tce", s.alpha),
        "pfs_median_months": {k: v.as_estimate() for k, v in pfs.items()},
        "n_pfs_not_usable": int((~first["pfs_valid"]).sum()),
        "pfs_logrank_tce_vs_non_tce": logrank(valid, "pfs_months", "pfs_event",
                                              "therapy_class"),
        "pfs_cox_tce_vs_non_tce": cox_hazard_ratio(
            valid.assign(is_tce=valid["therapy_class"] == "tce"), "pfs_months", "pfs_event",
            "is_tce", alpha=s.alpha, min_events=s.cox_min_events),
    }
    return core, detail


def _response_counts(lines: pd.DataFrame) -> dict[str, int]:
    tally = lines["best_response"].value_counts()
    known = list(RESPONSES)
    extra = sorted(set(tally.index) - set(known))
    return {k: int(tally.get(k, 0)) for k in known + extra}


def _all_lines(cf: CohortFrames, s: AnalysisSettings,
               fits: dict[str, dict[str, KMResult]]) -> dict[str, Any]:
    lines = cf.lines
    evaluable = lines[lines["evaluable"]]
    determinable = lines[lines["cr_determinable"]]
    valid = lines[lines["pfs_valid"]]
    subclasses = sorted(lines["subclass"].dropna().unique().tolist())
    pfs = _km_by_class(lines, s.alpha)
    fits["all_lines_pfs"] = pfs
    by_subclass = kaplan_meier_by(valid, "pfs_months", "pfs_event", "subclass", subclasses,
                                  s.alpha)
    return {
        "n_lines": int(len(lines)),
        "n_not_evaluable": int((~lines["evaluable"]).sum()),
        "orr_by_class": _rates_by_class(evaluable, "responder", s.alpha),
        "vgpr_or_better_by_class": _rates_by_class(evaluable, "vgpr_plus", s.alpha),
        "cr_or_better_by_class": _rates_by_class(determinable, "cr_plus", s.alpha),
        "orr_by_subclass": rates_by(evaluable, "responder", "subclass", subclasses, s.alpha),
        "lines_by_subclass": {k: int((lines["subclass"] == k).sum()) for k in subclasses},
        "best_response_counts": _response_counts(lines),
        "orr_fisher_tce_vs_non_tce": fisher_between(evaluable, "responder", "therapy_class",
                                                    "tce", "non_tce", s.alpha),
        "pfs_median_months_by_class": {k: v.as_estimate() for k, v in pfs.items()},
        "pfs_median_months_by_subclass": {k: v.as_estimate() for k, v in by_subclass.items()},
        "pfs_logrank_tce_vs_non_tce": logrank(valid, "pfs_months", "pfs_event", "therapy_class"),
        "pfs_cox_tce_vs_non_tce": cox_hazard_ratio(
            valid.assign(is_tce=valid["therapy_class"] == "tce"), "pfs_months", "pfs_event",
            "is_tce", cluster="pid", alpha=s.alpha, min_events=s.cox_min_events),
    }


def _tce(cf: CohortFrames, s: AnalysisSettings,
         fits: dict[str, dict[str, KMResult]]) -> dict[str, Any]:
    lines, patients = cf.lines, cf.patients
    tce_lines = lines[lines["therapy_class"] == "tce"]
    per_patient = tce_lines.groupby("pid").agg(any_response=("responder", "any"),
                                               any_evaluable=("evaluable", "any"))
    evaluable_patients = per_patient[per_patient["any_evaluable"]]
    kinds = tce_lines[tce_lines["tce_kind"].isin(TCE_KINDS)]
    kinds_evaluable = kinds[kinds["evaluable"]]
    kinds_valid = kinds[kinds["pfs_valid"]]
    pfs = kaplan_meier_by(kinds_valid, "pfs_months", "pfs_event", "tce_kind", TCE_KINDS,
                          s.alpha)
    fits["tce_kind_pfs"] = pfs
    return {
        "ever_tce": rate_of(patients["ever_tce"], s.alpha),
        "patient_response_evaluable": rate_of(evaluable_patients["any_response"], s.alpha),
        "patient_response_all_treated": rate_of(per_patient["any_response"], s.alpha),
        "bispecific_vs_car_t": {
            "n_lines": {k: int((kinds["tce_kind"] == k).sum()) for k in TCE_KINDS},
            "orr": rates_by(kinds_evaluable, "responder", "tce_kind", TCE_KINDS, s.alpha),
            "orr_fisher": fisher_between(kinds_evaluable, "responder", "tce_kind",
                                         "bispecific", "car_t", s.alpha),
            "pfs_median_months": {k: v.as_estimate() for k, v in pfs.items()},
            "pfs_logrank": logrank(kinds_valid, "pfs_months", "pfs_event", "tce_kind"),
        },
    }


def _os(cf: CohortFrames, s: AnalysisSettings,
        fits: dict[str, dict[str, KMResult]]) -> tuple[dict, dict, Landmark]:
    valid = cf.patients[cf.patients["os_valid"]].assign(
        group=lambda f: f["ever_tce"].map({True: "tce", False: "non_tce"}))
    overall = kaplan_meier(valid["os_months"], valid["os_event"], "all patients", s.alpha)
    by_tce = kaplan_meier_by(valid, "os_months", "os_event", "group", CLASSES, s.alpha)
    fits["os"] = {"overall": overall}
    fits["os_ever_tce"] = by_tce
    follow_up = {"overall": reverse_km_median(valid["os_months"], valid["os_event"], "all",
                                              s.alpha)}
    for name in CLASSES:
        part = valid[valid["group"] == name]
        follow_up[name] = reverse_km_median(part["os_months"], part["os_event"], name, s.alpha)
    mark = landmark_os(cf.patients, s.landmark_months, s.alpha)
    fits["os_landmark"] = mark.fits
    detail = {
        "median_months": overall.as_estimate(),
        "n_not_usable": int((~cf.patients["os_valid"]).sum()),
        "median_months_by_ever_tce": {k: v.as_estimate() for k, v in by_tce.items()},
        "ever_tce_logrank": logrank(valid, "os_months", "os_event", "group"),
        # naive (immortal-time biased) like the grouping it describes; for its figure only
        "ever_tce_cox": cox_hazard_ratio(valid, "os_months", "os_event", "ever_tce",
                                         alpha=s.alpha, min_events=s.cox_min_events),
        # reverse KM: its "events" would be censorings, so only the median and n are kept
        "follow_up_median_months": {k: {**contract(v.as_estimate()), "reached": v.reached}
                                    for k, v in follow_up.items()},
        "landmark": mark.results(s.alpha, s.cox_min_events),
        "tce_time_varying_cox": time_varying_tce_cox(cf.patients, alpha=s.alpha,
                                                     min_events=s.cox_min_events),
    }
    core = {"overall": contract(overall.as_estimate()),
            "by_ever_tce": {k: contract(v.as_estimate()) for k, v in by_tce.items()}}
    return core, detail, mark


def analyze_frames(patients: pd.DataFrame, lines: pd.DataFrame,
                   settings: AnalysisSettings | None = None, *,
                   quality: Quality = None) -> Analysis:
    """Every analysis on (patients, lines) frames shaped like the derived tables.

    ``patients`` may hold every patient (with ``in_cohort`` and ``exclusion_reason``)
    or only the cohort; a frame without ``in_cohort`` is taken as all in the cohort.
    ``quality``: per site, the quarantined and unmapped counts the database keeps
    (``load_quality``); None when the frames have no database (shown as not available).
    """
    s = settings or AnalysisSettings()
    cf = cohort_frames(patients, lines)
    fits: dict[str, dict[str, KMResult]] = {}
    first_core, first_detail = _first_line(cf, s, fits)
    os_core, os_detail, mark = _os(cf, s, fits)
    results: dict[str, Any] = {
        "n_patients": int(len(cf.patients)),
        "n_sites": int(cf.patients["site"].nunique()),
        "n_lines": int(len(cf.lines)),
        "excluded": excluded_counts(cf.all_patients),
        "first_line": first_core,
        "os_median_months": os_core["overall"],
        "os_median_months_by_ever_tce": os_core["by_ever_tce"],
        "settings": s.as_dict(),
        "definitions": DEFINITIONS,
        "cohort": {**describe_cohort(cf.patients, s.alpha), **per_site_counts(cf.patients)},
        "first_line_detail": first_detail,
        "all_lines": _all_lines(cf, s, fits),
        "tce": _tce(cf, s, fits),
        "os": os_detail,
        **next_treatment_results(cf.lines, s.alpha),
        "table1": table1(cf.patients),
        "patient_flow": patient_flow(cf.all_patients, cf.patients),
        **study_grade(cf, s, fits["os"]["overall"], fits,
                      only_sites(quality, cf.all_patients["site"].dropna().unique())),
    }
    return Analysis(results=results, patients=cf.patients, lines=cf.lines,
                    all_patients=cf.all_patients, fits=fits, landmark=mark, settings=s)
