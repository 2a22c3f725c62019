"""Compare the derived tables with a synthetic cohort's ground_truth.json.

Used by the end-to-end tests and handy when changing a rule: it says, item by
item, how many patients the derive stage reads the way the generator meant.
Disagreements are reported by site and source id, which are synthetic here;
do not point this at real data and share the output.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from connector.db.models import CohortPatient, TherapyLine

ITEMS = ("cohort", "index_date", "progression_date", "n_lines", "line_start", "line_class",
         "best_response")
#: Compared exactly and reported, but not part of "all items" (the brief's agreement).
EXTRA = ("index_product", "progression_basis", "death_date", "deceased", "last_contact_date",
         "line_end", "line_drugs", "line_pfs", "line_ttnt")


@dataclass
class TruthReport:
    """Per-item agreement and the patients that disagree (with what differs)."""

    patients: int = 0
    agree: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ITEMS + EXTRA, 0))
    all_agree: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # site, id, what

    def rate(self, item: str | None = None) -> float:
        n = self.all_agree if item is None else self.agree[item]
        return n / self.patients if self.patients else 1.0

    def __str__(self) -> str:
        parts = [f"{item} {self.rate(item):.1%}" for item in ITEMS]
        extra = [f"{item} {self.rate(item):.1%}" for item in EXTRA]
        return (f"{self.patients} patients; all items {self.rate():.1%}; " + ", ".join(parts)
                + "; also " + ", ".join(extra))


def _date(value: Any) -> dt.date | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _near(a: dt.date | None, b: dt.date | None, days: int) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs((a - b).days) <= days


def _load(engine: Engine) -> tuple[dict, dict]:
    with engine.connect() as conn:
        pats = {(r.site, r.source_id): r for r in conn.execute(select(CohortPatient))}
        lines: dict[tuple[str, str], list] = {}
        for r in conn.execute(select(TherapyLine).order_by(TherapyLine.line)):
            lines.setdefault((r.site, r.source_id), []).append(r)
    return pats, lines


def _check_patient(truth: dict, got: Any, got_lines: list, prog_days: int,
                   start_days: int) -> dict[str, str]:
    """What differs for one patient: item -> short description (empty when all agree)."""
    bad: dict[str, str] = {}
    if got is None:
        return dict.fromkeys(ITEMS + EXTRA, "no cohort_patient row")
    if bool(got.in_cohort) != bool(truth["in_cohort"]) or (
            not truth["in_cohort"] and got.exclusion_reason != truth.get("exclusion_reason")):
        bad["cohort"] = f"{got.in_cohort}/{got.exclusion_reason} vs " \
                        f"{truth['in_cohort']}/{truth.get('exclusion_reason')}"
    if _date(truth.get("index_date")) != got.index_date:
        bad["index_date"] = f"{got.index_date} vs {truth.get('index_date')}"
    if not _near(got.progression_date, _date(truth.get("progression_date")), prog_days):
        bad["progression_date"] = f"{got.progression_date} vs {truth.get('progression_date')}"
    want = truth.get("lines") or []
    if len(want) != len(got_lines):
        bad["n_lines"] = f"{len(got_lines)} vs {len(want)}"
    pairs = list(zip(got_lines, want, strict=False))
    starts = [f"{g.line}: {g.start_date} vs {w['start_date']}" for g, w in pairs
              if not _near(g.start_date, _date(w["start_date"]), start_days)]
    classes = [f"{g.line}: {g.therapy_class}/{g.subclass} vs {w['therapy_class']}/{w['subclass']}"
               for g, w in pairs
               if (g.therapy_class, g.subclass) != (w["therapy_class"], w["subclass"])]
    responses = [f"{g.line}: {g.best_response} vs {w['best_response']}" for g, w in pairs
                 if g.best_response != w["best_response"]]
    for item, found in (("line_start", starts), ("line_class", classes),
                        ("best_response", responses)):
        if found:  # lines are compared pairwise in order; n_lines covers the count
            bad[item] = "; ".join(found)
    bad.update(_check_extra(truth, got, pairs))
    return bad


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else value


def _check_extra(truth: dict, got: Any, pairs: list) -> dict[str, str]:
    bad: dict[str, str] = {}
    for item in ("index_product", "progression_basis", "death_date", "deceased",
                 "last_contact_date"):
        if item in truth and _iso(getattr(got, item)) != truth[item]:
            bad[item] = f"{_iso(getattr(got, item))} vs {truth[item]}"
    ends = [f"{g.line}: {g.end_date} vs {w.get('end_date')}" for g, w in pairs
            if _iso(g.end_date) != w.get("end_date")]
    drugs = [f"{g.line}: {g.drugs} vs {';'.join(w['drugs'])}" for g, w in pairs
             if g.drugs != ";".join(w["drugs"])]
    pfs = [f"{g.line}: {g.pfs_event_date}/{g.pfs_censor_date} vs "
           f"{w.get('pfs_event_date')}/{w.get('pfs_censor_date')}" for g, w in pairs
           if (_iso(g.pfs_event_date), _iso(g.pfs_censor_date))
           != (w.get("pfs_event_date"), w.get("pfs_censor_date"))]
    ttnt = [f"{g.line}: {g.ttnt_event_date}/{g.ttnt_censor_date} vs "
            f"{w.get('ttnt_event_date')}/{w.get('ttnt_censor_date')}" for g, w in pairs
            if "ttnt_event_date" in w and (_iso(g.ttnt_event_date), _iso(g.ttnt_censor_date))
            != (w.get("ttnt_event_date"), w.get("ttnt_censor_date"))]
    for item, found in (("line_end", ends), ("line_drugs", drugs), ("line_pfs", pfs),
                        ("line_ttnt", ttnt)):
        if found:
            bad[item] = "; ".join(found)
    return bad


def compare_with_truth(engine: Engine, truth: dict, *, progression_days: int = 14,
                       start_days: int = 7) -> TruthReport:
    """Agreement of the derived tables with ``truth`` (the parsed ground_truth.json)."""
    pats, lines = _load(engine)
    report = TruthReport()
    for t in truth["patients"]:
        key = (t["site"], t["source_id"])
        bad = _check_patient(t, pats.get(key), lines.get(key, []), progression_days,
                             start_days)
        report.patients += 1
        for item in ITEMS + EXTRA:
            report.agree[item] += item not in bad
        report.problems += [(key[0], key[1], f"{k}: {v}") for k, v in bad.items()]
        report.all_agree += not any(item in bad for item in ITEMS)
    return report
