"""Data completeness per site (issue 16 item 6): how far the numbers can be trusted.

Per site: lab density (the median over patients of their median days between
M-protein or FLC results after progression, from ``patient_baseline``), lines not
evaluable for response by reason, the share of progression dates taken from the
start of the next line (labs could not date it), deaths known without a date,
resources quarantined and Observations left unmapped (stored as their code only),
and the data cut-off (the latest date in the site's records).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from connector.analysis.describe import summary
from connector.analysis.rates import rate_of

FALLBACK = "new_line_fallback"


def load_quality(engine: Engine) -> dict[str, dict[str, int]]:
    """Per site: resources quarantined (any stage) and Observations no lab code maps (stored
    as their code only), as the map stage counted them (``unmapped_count``).

    A site's own database counts its quarantine; a merged one carries only the counts
    (``quarantine_count``, written by ``cohort merge``), so both give the site's number.
    """
    from connector.db.models import Quarantine, QuarantineCount, UnmappedCount

    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        quarantined = [select(Quarantine.site, func.count()).group_by(Quarantine.site),
                       select(QuarantineCount.site, func.sum(QuarantineCount.n))
                       .group_by(QuarantineCount.site)]
        for query in quarantined:
            for site, n in conn.execute(query):
                if n:
                    counts = out.setdefault(str(site), {})
                    counts["quarantined"] = counts.get("quarantined", 0) + int(n)
        counted = select(UnmappedCount.site, UnmappedCount.stored_as_code).where(
            UnmappedCount.stored_as_code > 0)
        for site, n in conn.execute(counted):
            out.setdefault(str(site), {})["unmapped_observations"] = int(n)
    return out


def _latest(frame: pd.DataFrame) -> str | None:
    dates = pd.concat([frame[c] for c in ("last_contact_date", "death_date", "index_date",
                                          "progression_date") if c in frame.columns])
    dates = dates.dropna()
    return None if dates.empty else dates.max().date().isoformat()


def _site(patients: pd.DataFrame, lines: pd.DataFrame, everyone: pd.DataFrame,
          quality: dict[str, int] | None, alpha: float) -> dict[str, Any]:
    ne = lines[~lines["evaluable"]]
    reasons = ne["response_note"].fillna("").replace("", "no reason recorded")
    return {
        "n_patients": int(len(patients)),
        "lab_interval_days": summary(patients["lab_interval_days"]),
        "lines": int(len(lines)),
        "lines_not_evaluable": int(len(ne)),
        "lines_not_evaluable_by_reason": {str(k): int(v) for k, v in
                                          sorted(reasons.value_counts().items())},
        "progression_from_new_line": rate_of(patients["progression_basis"] == FALLBACK, alpha),
        "deaths_without_date": int((patients["deceased"] & patients["death_date"].isna()).sum()),
        "quarantined": None if quality is None else int(quality.get("quarantined", 0)),
        "unmapped_observations": None if quality is None
        else int(quality.get("unmapped_observations", 0)),
        "data_cutoff": _latest(everyone),
    }


def completeness(patients: pd.DataFrame, lines: pd.DataFrame, all_patients: pd.DataFrame,
                 quality: dict[str, dict[str, int]] | None, alpha: float) -> dict[str, Any]:
    """results.json's ``data_completeness``: ``overall`` and ``by_site``."""
    sites = sorted(all_patients["site"].dropna().unique().tolist())
    total = None if quality is None else {
        "quarantined": sum(q.get("quarantined", 0) for q in quality.values()),
        "unmapped_observations": sum(q.get("unmapped_observations", 0)
                                     for q in quality.values())}
    return {
        "overall": _site(patients, lines, all_patients, total, alpha),
        "by_site": {site: _site(patients[patients["site"] == site],
                                lines[lines["site"] == site],
                                all_patients[all_patients["site"] == site],
                                None if quality is None else quality.get(site, {}), alpha)
                    for site in sites},
    }
