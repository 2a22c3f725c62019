"""Best response and progression-free survival of one line (IMWG from labs)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from connector.cohort.imwg import (
    RANKS,
    URINE,
    Assessment,
    Baseline,
    LabBook,
    assessments,
    baseline_at,
    confirmed_best,
    first_confirmed_pd,
    flc_ratio_normal,
    readings_until,
)
from connector.cohort.rules import ImwgRules, Rules


@dataclass(frozen=True)
class LineOutcome:
    best_response: str
    response_note: str
    pfs_event_date: dt.date | None
    pfs_censor_date: dt.date | None
    pd_date: dt.date | None = None


def _within(day: dt.date, start: dt.date, next_start: dt.date | None) -> bool:
    return day > start and (next_start is None or day < next_start)


def _negative(codes: list[str], negatives: tuple[str, ...]) -> bool:
    wanted = {n.casefold() for n in negatives}
    return any(c.casefold() in wanted for c in codes)


def _urine_followed(book: LabBook, base: Baseline, start: dt.date,
                    next_start: dt.date | None) -> bool:
    return base.urine is not None or any(
        _within(d, start, next_start) for d, _ in book.series(URINE))


def _cr_evidence(book: LabBook, base: Baseline, start: dt.date, next_start: dt.date | None,
                 r: ImwgRules) -> tuple[bool, list[str]]:
    """Whether the line has negative serum (and, when required, urine) immunofixation and
    a marrow < 5 %; else what is missing (issue 15 item 7: say which criterion)."""
    def codes(analyte: str) -> list[str]:
        return [c for d, c in book.codes(analyte) if _within(d, start, next_start)]

    ife, urine_ife = codes(r.ife_analyte), codes(r.urine_ife_analyte)
    marrow = [v for d, v in book.series(r.marrow_analyte) if _within(d, start, next_start)]
    need_urine = r.cr_needs_urine_ife == "always" or (
        r.cr_needs_urine_ife == "if_urine_measured"
        and _urine_followed(book, base, start, next_start))
    ok = (_negative(ife, r.ife_negative_codes) and any(v < r.cr_marrow_below for v in marrow)
          and (not need_urine or _negative(urine_ife, r.ife_negative_codes)))
    missing = []
    if not ife:
        missing.append("no immunofixation")
    if need_urine and not urine_ife:
        missing.append("no urine immunofixation")
    if not marrow:
        missing.append("no marrow assessment")
    return ok, missing


def _categories(found: list[Assessment], cr_ok: bool, scr: set[dt.date] | None = None,
                ) -> list[str]:
    """Each assessment's category; CR when M-protein is gone and the line has the CR
    evidence; sCR on the days ``scr`` lists (normal FLC ratio, no clonal marrow cells)."""
    scr = scr or set()
    return [("sCR" if a.day in scr else "CR") if a.undetectable and cr_ok else a.category
            for a in found]


def _scr_days(book: LabBook, found: list[Assessment], start: dt.date,
              next_start: dt.date | None, r: ImwgRules) -> tuple[set[dt.date], str]:
    """Days whose CR is also stringent, and why sCR could not be confirmed (or "")."""
    if not r.derive_scr:
        return set(), ""
    clonality = [c for d, c in book.codes(r.clonality_analyte) if _within(d, start, next_start)]
    normal = {a.day for a in found if a.undetectable and flc_ratio_normal(book, a.day, r)}
    if not normal:
        return set(), ""
    if not _negative(clonality, r.clonality_negative_codes):
        why = "no marrow clonality assessment" if not clonality else "clonal marrow cells"
        return set(), why
    return normal, ""


def best_response(book: LabBook, start: dt.date, next_start: dt.date | None,
                  pd_date: dt.date | None, rules: Rules) -> tuple[str, str]:
    """The best confirmed IMWG category of a line, and a note when it is limited.

    Categories are confirmed by consecutive assessments before the confirmed PD
    (if any). Disease held stable at two assessments before a confirmed PD is SD
    (the best the line reached); PD is the best response only when the line
    progressed before that. CR needs undetectable M-protein, a negative IFE and
    < 5 % marrow plasma cells during the line; without the IFE or marrow the line stops at
    VGPR and the note says why (imwg.md: report "≥VGPR by labs" honestly).
    """
    r = rules.imwg
    base = baseline_at(book, start, r.baseline_lookback_days)
    if base.method(r) is None:
        return "NE", "no measurable disease at baseline"
    found = assessments(book, base, start, next_start, r)
    # a confirmed PD read on the next line's first day is the line's own (readings_until)
    if len(found) < 2 and pd_date is None:
        return "NE", "fewer than two assessments"
    usable = [a for a in found if pd_date is None or a.day < pd_date]
    cr_ok, missing = _cr_evidence(book, base, start, next_start, r)
    scr, scr_missing = _scr_days(book, usable, start, next_start, r) if cr_ok else (set(), "")
    best = confirmed_best(_categories(usable, cr_ok, scr), r.confirmations)
    if best is not None and RANKS[best] >= RANKS["MR"]:
        note = ""
        if best == "VGPR" and missing and \
                confirmed_best(_categories(usable, True), r.confirmations) == "CR":
            note = "VGPR or better by labs; CR not determinable: " + ", ".join(missing)
        elif best == "CR" and scr_missing and confirmed_best(
                _categories(usable, True, {a.day for a in usable}), r.confirmations) == "sCR":
            note = "CR; sCR not determinable: " + scr_missing
        return best, note
    if pd_date is not None and len(usable) < max(1, r.confirmations):
        return "PD", ""
    return "SD", ""


def line_outcome(book: LabBook, start: dt.date, next_start: dt.date | None,
                 death: dt.date | None, rules: Rules) -> LineOutcome:
    """Best response and PFS of the line running from ``start`` to ``next_start``.

    PFS event: the first confirmed PD reading in the line (a reading on the day the
    next line starts included, as for the CAR-T: ``readings_until``), or death if
    earlier (death counts only before the next line starts); otherwise censored at
    the last assessment in the line, or at the start when there is none.
    """
    r = rules.imwg
    base = baseline_at(book, start, r.baseline_lookback_days)
    pd_date, _ = first_confirmed_pd(book, base, start, readings_until(next_start), r)
    best, note = best_response(book, start, next_start, pd_date, rules)
    death_counts = death is not None and death >= start and (
        next_start is None or death < next_start)
    events = [d for d in (pd_date, death if death_counts else None) if d is not None]
    if events:
        return LineOutcome(best, note, min(events), None, pd_date)
    last = book.assessment_dates(start, next_start)
    return LineOutcome(best, note, None, last[-1] if last else start, pd_date)
