"""``cohort share``: a site's results as aggregates only, safe to send to a consortium.

The file holds, per site and group, event/risk tables for the study's time-to-event
analyses (``connector.federated.tables``) and response counts; cohort counts. No
patient row, no key, no date: times are whole days since each patient's own start
(progression, or a line's start), and counts between 1 and ``min_cell - 1`` are not
published (event tables are coarsened, response counts withheld). What the pooled
analyses can and cannot reproduce from this is listed in docs/federated.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from connector.analysis.results import Analysis
from connector.analysis.settings import DAYS_PER_MONTH
from connector.federated.tables import coarsen, event_table, small, to_days

FORMAT = "mm-cart-connector/federated-aggregates"
VERSION = 1
DEFAULT_MIN_CELL = 5

#: name -> (frame, subset, duration, event, group column) of each time-to-event analysis
SURVIVAL = {
    "first_line_pfs": ("lines", "is_first", "pfs_months", "pfs_event", "therapy_class"),
    "all_lines_pfs": ("lines", None, "pfs_months", "pfs_event", "therapy_class"),
    "tce_kind_pfs": ("lines", "tce_kind", "pfs_months", "pfs_event", "tce_kind"),
    "os": ("patients", None, "os_months", "os_event", "ever_tce_group"),
}
#: name -> (subset, group column) of each set of response counts
RESPONSES = {
    "first_line": ("is_first", "therapy_class"),
    "all_lines": (None, "therapy_class"),
    "all_lines_by_subclass": (None, "subclass"),
}
#: the counts of each response group: name -> (numerator flag, denominator flag or None)
COUNTS = {
    "treated": None, "evaluable": "evaluable", "responder": "responder",
    "vgpr_or_better": "vgpr_plus", "cr_determinable": "cr_determinable",
    "cr_or_better": "cr_among_determinable",
}


def _frames(analysis: Analysis) -> dict[str, pd.DataFrame]:
    patients = analysis.patients[analysis.patients["os_valid"]].assign(
        ever_tce_group=lambda f: f["ever_tce"].map({True: "tce", False: "non_tce"}))
    lines = analysis.lines.assign(
        cr_among_determinable=lambda f: f["cr_plus"] & f["cr_determinable"],
        tce_kind=lambda f: f["tce_kind"].where(f["therapy_class"] == "tce", ""))
    return {"patients": patients, "lines": lines}


def _subset(frame: pd.DataFrame, subset: str | None) -> pd.DataFrame:
    if subset is None:
        return frame
    column = frame[subset]
    return frame[column.astype(bool) if column.dtype == bool else column.fillna("") != ""]


def survival_tables(frame: pd.DataFrame, duration: str, event: str, group: str,
                    min_cell: int) -> dict[str, Any]:
    """One published table per group present in ``frame``."""
    out: dict[str, Any] = {}
    for name, part in sorted(frame.groupby(group, sort=True), key=lambda kv: str(kv[0])):
        rows, coarsened = coarsen(event_table(to_days(part[duration]), part[event]), min_cell)
        out[str(name)] = {"suppressed": rows is None, "coarsened": coarsened,
                          "rows": None if rows is None else
                          [[r.days, r.at_risk, r.events, r.censored] for r in rows]}
    return out


#: (part, whole, which to withhold) for nested counts: ``whole - part`` is itself a
#: count of lines, so when it is small one of the two goes. ``treated`` goes first
#: (only the all-treated ORR needs it), so NE lines do not cost every rate.
NESTED = (("evaluable", "treated", "treated"), ("cr_determinable", "treated", "treated"),
          ("responder", "evaluable", "responder"),
          ("vgpr_or_better", "responder", "vgpr_or_better"),
          ("vgpr_or_better", "evaluable", "vgpr_or_better"),
          ("cr_determinable", "evaluable", "cr_determinable"),
          ("cr_or_better", "cr_determinable", "cr_or_better"),
          ("cr_or_better", "vgpr_or_better", "cr_or_better"))


def _withhold(counts: dict[str, int], min_cell: int) -> dict[str, int | None]:
    """Counts with every small count, and one of each nested pair whose difference is
    small, set to None (repeated until nothing changes)."""
    out: dict[str, int | None] = {k: None if small(v, min_cell) else v
                                  for k, v in counts.items()}
    changed = True
    while changed:
        changed = False
        for part, whole, victim in NESTED:
            if out[part] is not None and out[whole] is not None and small(
                    out[whole] - out[part], min_cell):
                out[victim] = None
                changed = True
    return out


def response_counts(frame: pd.DataFrame, group: str, min_cell: int) -> dict[str, Any]:
    """Counts of lines per group, small counts (and small differences) withheld."""
    out: dict[str, Any] = {}
    for name, part in sorted(frame.groupby(group, sort=True), key=lambda kv: str(kv[0])):
        counts = {key: int(len(part)) if flag is None else int(part[flag].astype(bool).sum())
                  for key, flag in COUNTS.items()}
        out[str(name)] = _withhold(counts, min_cell)
    return out


def _count(value: int, min_cell: int) -> int | None:
    return None if small(value, min_cell) else int(value)


def share_aggregates(analysis: Analysis, *, min_cell: int = DEFAULT_MIN_CELL) -> dict[str, Any]:
    """The share file's content for the sites of ``analysis`` (one block per site)."""
    if min_cell < 0:
        raise ValueError("min_cell must be 0 or more")
    frames = _frames(analysis)
    sites = sorted(analysis.patients["site"].dropna().unique().tolist())
    survival: dict[str, Any] = {}
    for name, (which, subset, duration, event, group) in SURVIVAL.items():
        valid = "pfs_valid" if which == "lines" else "os_valid"
        frame = _subset(frames[which], subset)
        frame = frame[frame[valid]]
        survival[name] = {"group_by": group, "sites": {
            site: survival_tables(frame[frame["site"] == site], duration, event, group,
                                  min_cell) for site in sites}}
    responses: dict[str, Any] = {}
    for name, (subset, group) in RESPONSES.items():
        frame = _subset(frames["lines"], subset)
        responses[name] = {"group_by": group, "sites": {
            site: response_counts(frame[frame["site"] == site], group, min_cell)
            for site in sites}}
    counts = {site: {
        "n_patients": _count(int((analysis.patients["site"] == site).sum()), min_cell),
        "n_lines": _count(int((analysis.lines["site"] == site).sum()), min_cell),
        "excluded": {k: _count(int(v), min_cell) for k, v in sorted(_excluded(
            analysis.all_patients[analysis.all_patients["site"] == site]).items())},
    } for site in sites}
    return {"format": FORMAT, "version": VERSION, "sites": sites, "min_cell": min_cell,
            "time_unit": "days", "days_per_month": DAYS_PER_MONTH,
            "alpha": analysis.settings.alpha, "counts": counts, "survival": survival,
            "responses": responses}


def _excluded(patients: pd.DataFrame) -> dict[str, int]:
    out = patients[~patients["in_cohort"]]["exclusion_reason"].fillna("unknown")
    return {str(k): int(v) for k, v in out.value_counts().items()}


def write_share(analysis: Analysis, path: Path, *,
                min_cell: int = DEFAULT_MIN_CELL) -> dict[str, Any]:
    """Write the share file (no timestamp: the same database gives the same bytes)."""
    content = share_aggregates(analysis, min_cell=min_cell)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return content


def share_from_db(engine: Any, path: Path, *, sites: list[str] | None = None,
                  min_cell: int = DEFAULT_MIN_CELL) -> dict[str, Any]:
    """Analyse the derived tables of ``engine`` (only ``sites`` if given) and write the file."""
    from connector.analysis import analyze_frames, load_tables

    patients, lines = load_tables(engine)
    if sites:
        missing = sorted(set(sites) - set(patients["site"]))
        if missing:
            raise ValueError(f"site(s) not in the database: {', '.join(missing)}")
        patients = patients[patients["site"].isin(sites)]
        lines = lines[lines["site"].isin(sites)]
    if not patients["in_cohort"].any():
        raise ValueError("no cohort patients to share (run derive first)")
    return write_share(analyze_frames(patients, lines), path, min_cell=min_cell)
