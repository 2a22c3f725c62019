"""IMWG progression and response from lab values (imwg.md).

Everything here works on a ``LabBook`` (the patient's labs by analyte, in date
order) and a reference date: the CAR-T infusion for progression after CAR-T, or
a line's start for that line's response. The thresholds come from
``rules.imwg``; the comparison helpers allow for floating-point error so that a
rise of exactly 25 % counts as 25 %.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from connector.cohort.model import Lab
from connector.cohort.rules import ImwgRules, Rules

SERUM, URINE, KAPPA, LAMBDA = "serum_m_protein", "urine_m_protein", "kappa_flc", "lambda_flc"
RATIO, DFLC = "flc_ratio", "dflc"
RESPONSE_ANALYTES = (SERUM, URINE, KAPPA, LAMBDA)

# response categories, worst to best; PD is handled apart from this ranking
RANKS = {"SD": 0, "MR": 1, "PR": 2, "VGPR": 3, "CR": 4, "sCR": 5}
_EPS = 1e-9

Point = tuple[dt.date, float]


def _ge(a: float, b: float) -> bool:
    return a >= b - _EPS


def _gt(a: float, b: float) -> bool:
    return a > b + _EPS


# --------------------------------------------------------------------- the lab book


def _canon(unit: str | None) -> str:
    return (unit or "").strip().casefold()


def _canonical_units(rules: Rules) -> dict[str, tuple[set[str], dict[str, float]]]:
    return {name: ({_canon(r.unit), *(_canon(a) for a in r.aliases)},
                   {_canon(k): v for k, v in r.factors.items()})
            for name, r in rules.units.items()}


def normalize_labs(labs: Iterable[Lab], rules: Rules) -> tuple[list[Lab], int]:
    """Labs with values in canonical units; values in an unknown unit are dropped.

    The map stage already converts units; this guard only catches a value that
    slipped through in another unit (a g/L serum M-protein would otherwise read
    as a ten-fold rise and a false progression). Returns the labs and how many
    values were dropped.
    """
    out: list[Lab] = []
    dropped = 0
    canonical = _canonical_units(rules)
    for lab in labs:
        rule = rules.units.get(lab.analyte)
        if rule is None or lab.value is None or not lab.unit:
            out.append(lab)
            continue
        same, factors = canonical[lab.analyte]
        unit = _canon(lab.unit)
        if unit in same:
            out.append(lab)
            continue
        factor = factors.get(unit)
        if factor is None:
            dropped += 1
            continue
        out.append(Lab(lab.analyte, lab.date, lab.value * factor, rule.unit, lab.value_code))
    return out, dropped


class LabBook:
    """One patient's labs, by analyte, in date order (one value per analyte and day)."""

    def __init__(self, labs: Iterable[Lab]) -> None:
        values: dict[str, dict[dt.date, float]] = {}
        codes: dict[str, dict[dt.date, str]] = {}
        for lab in sorted(labs, key=lambda x: x.date):
            if lab.value is not None:
                values.setdefault(lab.analyte, {})[lab.date] = float(lab.value)
            if lab.value_code:
                codes.setdefault(lab.analyte, {})[lab.date] = lab.value_code.strip()
        self._values = {a: sorted(v.items()) for a, v in values.items()}
        self._codes = {a: sorted(v.items()) for a, v in codes.items()}

    def series(self, analyte: str) -> list[Point]:
        return self._values.get(analyte, [])

    def codes(self, analyte: str) -> list[tuple[dt.date, str]]:
        return self._codes.get(analyte, [])

    def last_on_or_before(self, analyte: str, day: dt.date, lookback: int) -> Point | None:
        pts = self.series(analyte)
        i = bisect_right([d for d, _ in pts], day)
        if i == 0:
            return None
        d, v = pts[i - 1]
        return (d, v) if (day - d).days <= lookback else None

    def dflc_series(self, involved: str) -> list[Point]:
        """Involved minus uninvolved FLC on each day both chains were measured."""
        uninvolved = LAMBDA if involved == KAPPA else KAPPA
        inv = dict(self.series(involved))
        uni = dict(self.series(uninvolved))
        return [(d, inv[d] - uni[d]) for d in sorted(inv) if d in uni]

    def assessment_dates(self, lo: dt.date, hi: dt.date | None,
                         analytes: Iterable[str] = RESPONSE_ANALYTES) -> list[dt.date]:
        """Days strictly after ``lo`` and before ``hi`` with any of ``analytes`` measured."""
        days = {d for a in analytes for d, _ in self.series(a)
                if d > lo and (hi is None or d < hi)}
        return sorted(days)


# ----------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class Baseline:
    """The disease burden at a reference date, and which method can measure it."""

    serum: float | None
    urine: float | None
    kappa: float | None
    lam: float | None
    ratio: float | None
    involved: str  # kappa_flc | lambda_flc

    @property
    def dflc(self) -> float | None:
        if self.kappa is None or self.lam is None:
            return None
        return (self.kappa - self.lam) if self.involved == KAPPA else (self.lam - self.kappa)

    def serum_measurable(self, r: ImwgRules) -> bool:
        return self.serum is not None and _ge(self.serum, r.serum_measurable)

    def urine_measurable(self, r: ImwgRules) -> bool:
        return self.urine is not None and _ge(self.urine, r.urine_measurable)

    def m_protein_unmeasurable(self, r: ImwgRules) -> bool:
        """Serum and urine both unmeasurable: the condition for using dFLC."""
        return not self.serum_measurable(r) and not self.urine_measurable(r)

    def flc_measurable(self, r: ImwgRules) -> bool:
        if self.kappa is None or self.lam is None:
            return False
        involved = self.kappa if self.involved == KAPPA else self.lam
        ratio = self.ratio if self.ratio is not None else (
            self.kappa / self.lam if self.lam > 0 else None)
        abnormal = ratio is None or not (
            r.flc_ratio_normal_low <= ratio <= r.flc_ratio_normal_high)
        return _ge(involved, r.flc_measurable) and abnormal

    def method(self, r: ImwgRules) -> str | None:
        """How response is measured: serum, urine, dflc, or None (not measurable)."""
        if self.serum_measurable(r):
            return SERUM
        if self.urine_measurable(r):
            return URINE
        if self.flc_measurable(r):
            return DFLC
        return None


def baseline_at(book: LabBook, day: dt.date, lookback: int) -> Baseline:
    """The last value of each analyte on or before ``day`` (within ``lookback`` days).

    An analyte with no value there stays unknown; only the involved chain falls
    back to the first pair measured after ``day``, so dFLC still has a direction.
    """
    def last(analyte: str) -> float | None:
        p = book.last_on_or_before(analyte, day, lookback)
        return p[1] if p else None

    kappa, lam = last(KAPPA), last(LAMBDA)
    return Baseline(last(SERUM), last(URINE), kappa, lam, last(RATIO),
                    _involved_chain(book, day, kappa, lam))


def _involved_chain(book: LabBook, day: dt.date, kappa: float | None,
                    lam: float | None) -> str:
    if kappa is not None and lam is not None:
        return KAPPA if kappa >= lam else LAMBDA
    ks, ls = dict(book.series(KAPPA)), dict(book.series(LAMBDA))
    for d in sorted(ks):
        if d > day and d in ls:
            return KAPPA if ks[d] >= ls[d] else LAMBDA
    return KAPPA


# --------------------------------------------------------------------- progression


def readings_until(next_start: dt.date | None) -> dt.date | None:
    """The exclusive end of the days whose PD readings belong to a period ending at
    ``next_start`` (the start of the next treatment).

    One rule for both periods, the index CAR-T's and every line's: labs drawn on
    the day the next treatment starts are drawn before its first dose, so a PD
    reading that day is progression on the treatment before (issue 15, item 3).
    """
    return next_start + dt.timedelta(days=1) if next_start is not None else None


def pd_criterion(analyte: str, r: ImwgRules) -> Callable[[float, float], bool]:
    """Whether a value is progression against a nadir, for one analyte."""
    def rises(value: float, nadir: float) -> bool:
        return _ge(value, nadir * (1 + r.pd_relative))

    if analyte == SERUM:
        def serum(value: float, nadir: float) -> bool:
            need = r.serum_pd_abs_high_nadir if _ge(nadir, r.serum_high_nadir) else r.serum_pd_abs
            return rises(value, nadir) and _ge(value - nadir, need)
        return serum
    if analyte == URINE:
        return lambda v, n: rises(v, n) and _ge(v - n, r.urine_pd_abs)
    return lambda v, n: rises(v, n) and _gt(v - n, r.dflc_pd_abs)


def nadir_of(start: float | None, earlier: list[float], mode: str) -> float | None:
    """The nadir before the current assessment.

    ``confirmed``: the lowest level held at two consecutive assessments, or the
    starting value (IMWG measures PD from the lowest *confirmed* value, so one low
    outlier does not make the next normal reading look like a rise).
    """
    candidates = [] if start is None else [start]
    if mode == "running_min":
        candidates += earlier
    else:
        candidates += [max(a, b) for a, b in zip(earlier, earlier[1:], strict=False)]
    return min(candidates) if candidates else None


def first_confirmed_pd_in_series(start: float | None, points: list[Point],
                                 criterion: Callable[[float, float], bool],
                                 r: ImwgRules, first_before: dt.date | None = None,
                                 ) -> dt.date | None:
    """The first PD reading confirmed by the next reading(s) against the same nadir.

    ``points`` are the readings after the reference date; ``start`` is the value at
    the reference (the baseline), or None, when the first reading plays that role.
    The PD reading must fall before ``first_before``; its confirmation may not.
    """
    if start is None:
        if not points:
            return None
        start, points = points[0][1], points[1:]
    need = max(1, r.confirmations)
    for i, (day, value) in enumerate(points):
        if first_before is not None and day >= first_before:
            break
        nadir = nadir_of(start, [v for _, v in points[:i]], r.nadir)
        if nadir is None or not criterion(value, nadir):
            continue
        follow = points[i + 1:i + need]
        if len(follow) == need - 1 and all(criterion(v, nadir) for _, v in follow):
            return day
    return None


def first_confirmed_pd(book: LabBook, base: Baseline, after: dt.date,
                       first_before: dt.date | None, r: ImwgRules) -> tuple[dt.date | None, str]:
    """The first confirmed PD after ``after`` by any usable analyte, and the analyte.

    Serum and urine M-protein always count; dFLC only when both were unmeasurable
    at the baseline (IMWG uses FLC for PD only in that case).
    """
    usable: list[tuple[str, float | None, list[Point]]] = [
        (SERUM, base.serum, [p for p in book.series(SERUM) if p[0] > after]),
        (URINE, base.urine, [p for p in book.series(URINE) if p[0] > after]),
    ]
    if base.m_protein_unmeasurable(r):
        usable.append((DFLC, base.dflc,
                       [p for p in book.dflc_series(base.involved) if p[0] > after]))
    found: list[tuple[dt.date, str]] = []
    for analyte, start, pts in usable:
        day = first_confirmed_pd_in_series(start, pts, pd_criterion(analyte, r), r, first_before)
        if day is not None:
            found.append((day, analyte))
    if not found:
        return None, ""
    return min(found)


# ------------------------------------------------------------------------ response


def _reduction(base: float, value: float) -> float:
    return (base - value) / base if base > 0 else 0.0


def serum_category(base: float, value: float, r: ImwgRules) -> str:
    red = _reduction(base, value)
    if _ge(red, r.vgpr_reduction):
        return "VGPR"
    if _ge(red, r.pr_reduction):
        return "PR"
    if _ge(red, r.mr_reduction):
        return "MR"
    return "SD"


def urine_category(base: float, value: float, r: ImwgRules) -> str:
    red = _reduction(base, value)
    if value < r.urine_vgpr_abs:
        return "VGPR"
    if _ge(red, r.urine_pr_reduction) or value < r.urine_pr_abs:
        return "PR"
    if _ge(red, r.urine_mr_reduction):
        return "MR"
    return "SD"


def dflc_category(base: float, value: float, r: ImwgRules) -> str:
    red = _reduction(base, value)
    if _gt(red, r.vgpr_reduction):
        return "VGPR"
    if _ge(red, r.pr_reduction):
        return "PR"
    return "SD"


@dataclass
class Assessment:
    """One response assessment: its day, category, and whether M-protein was gone."""

    day: dt.date
    category: str
    undetectable: bool = False


def flc_ratio_normal(book: LabBook, day: dt.date, r: ImwgRules) -> bool:
    ratio = dict(book.series(RATIO)).get(day)
    if ratio is None:
        k, lam = dict(book.series(KAPPA)).get(day), dict(book.series(LAMBDA)).get(day)
        ratio = k / lam if k is not None and lam else None
    return ratio is not None and r.flc_ratio_normal_low <= ratio <= r.flc_ratio_normal_high


def assessments(book: LabBook, base: Baseline, lo: dt.date, hi: dt.date | None,
                r: ImwgRules) -> list[Assessment]:
    """The category at each assessment strictly between ``lo`` and ``hi``.

    With serum and urine both measurable, a day where both were measured takes the
    worse of the two (IMWG PR and VGPR need both); a day with one takes that one.
    """
    method = base.method(r)
    if method is None:
        return []

    def within(pts: list[Point]) -> dict[dt.date, float]:
        return {d: v for d, v in pts if d > lo and (hi is None or d < hi)}

    if method == DFLC:
        out = []
        for day, value in sorted(within(book.dflc_series(base.involved)).items()):
            cat = dflc_category(base.dflc or 0.0, value, r)
            out.append(Assessment(day, cat, cat == "VGPR" and flc_ratio_normal(book, day, r)))
        return out
    serum = within(book.series(SERUM)) if base.serum_measurable(r) else {}
    urine = within(book.series(URINE)) if base.urine_measurable(r) else {}
    out = []
    for day in sorted(set(serum) | set(urine)):
        cats: list[str] = []
        gone = True
        if day in serum:
            cats.append(serum_category(base.serum or 0.0, serum[day], r))
            gone &= serum[day] <= r.serum_undetectable + _EPS
        if day in urine:
            cats.append(urine_category(base.urine or 0.0, urine[day], r))
            gone &= urine[day] <= _EPS
        cat = min(cats, key=RANKS.__getitem__)
        out.append(Assessment(day, cat, gone and cat == "VGPR"))
    return out


def confirmed_best(cats: list[str], need: int) -> str | None:
    """The best category held at ``need`` consecutive assessments (or None)."""
    need = max(1, need)
    best: str | None = None
    for i in range(len(cats) - need + 1):
        window = cats[i:i + need]
        held = min(window, key=RANKS.__getitem__)
        if best is None or RANKS[held] > RANKS[best]:
            best = held
    return best
