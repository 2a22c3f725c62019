"""The study-grade parts of results.json (issue 16 items 3–6), composed in one place.

Subgroups, the multivariable Cox models, the further endpoints and data completeness
each live in their own module; this one reads the clinical thresholds once
(``mappings/rules.toml`` ``[subgroups]``) and hands every part the same frames, so
results.py stays a list of sections.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connector.analysis.completeness import completeness
from connector.analysis.cox import os_multivariable, pfs_line_adjusted
from connector.analysis.endpoints import more_endpoints
from connector.analysis.frames import CohortFrames
from connector.analysis.settings import AnalysisSettings
from connector.analysis.studyrules import StudyRules, study_rules
from connector.analysis.subgroups import subgroups
from connector.analysis.survival import KMResult

#: Per site: counts the map stage and the quarantine kept ("quarantined",
#: "unmapped_observations"); None when the frames came without a database.
Quality = dict[str, dict[str, int]] | None


def only_sites(quality: Quality, sites: Iterable[str]) -> Quality:
    """The quality counts of the analysed sites only (a run may analyse a subset)."""
    if quality is None:
        return None
    keep = {str(s) for s in sites}
    return {site: counts for site, counts in quality.items() if site in keep}


def study_grade(cf: CohortFrames, s: AnalysisSettings, os_fit: KMResult,
                fits: dict[str, dict[str, KMResult]], quality: Quality,
                rules: StudyRules | None = None) -> dict[str, Any]:
    """results.json's ``subgroups``, ``multivariable_cox``, ``endpoints`` and
    ``data_completeness``; the endpoint fits are added to ``fits`` for the report."""
    rules = rules or study_rules()
    early = rules.early_relapse_months
    endpoints, endpoint_fits = more_endpoints(cf.patients, cf.lines, os_fit,
                                              rules.os_landmark_months, s.alpha)
    fits.update({name: {"overall": fit} for name, fit in endpoint_fits.items()})
    return {
        "subgroups": subgroups(cf.patients, cf.lines, early, rules.bcma_ingredients,
                               s.alpha, s.cox_min_events),
        "multivariable_cox": {
            # the first threshold is the clinical "early relapse" of the model
            "os": os_multivariable(cf.patients, early[0] if early else 12.0,
                                   alpha=s.alpha, min_events=s.cox_min_events),
            "pfs_line_adjusted": pfs_line_adjusted(cf.lines, alpha=s.alpha,
                                                   min_events=s.cox_min_events),
        },
        "endpoints": endpoints,
        "data_completeness": completeness(cf.patients, cf.lines, cf.all_patients, quality,
                                          s.alpha),
    }
