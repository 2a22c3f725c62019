"""Response-assessment values that any correct IMWG implementation reads the same way.

The generator decides each assessment's category first and then draws a value
well inside that category's band, so that no value sits near a threshold:

* response bands (fraction of the line's baseline left): VGPR 1-8 % (> 0), PR
  15-45 %, MR 55-70 %, SD 85-110 %, CR exactly 0 (plus negative immunofixation and
  marrow plasma cells of 2 % on the first two CR assessments);
* a plateau varies by at most ±3 %, far from the 25 % needed for progression;
* progression: a rise of at least 40 % over the nadir and at least 0.8 g/dL
  (1.3 g/dL from a nadir ≥ 4.5 g/dL; for dFLC at least 160 mg/L), and the next
  assessment, 7-21 days later, is higher still; untreated disease after that
  only grows (it never falls back, which would read as a response);
* no value exceeds the marker's ceiling (``Marker.cap``): growth stops there, a
  progression is drawn below it, and a line whose nadir could not progress
  clearly below it responds at least that much (``Marker.room_for_progression``).

A category counts only when two consecutive assessments are at least that good,
which is how ``best_of`` reads the labels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from connector.synth.course import Assessment
from connector.synth.params import SynthParams

RANK = {"NE": 0, "PD": 1, "SD": 2, "MR": 3, "PR": 4, "VGPR": 5, "CR": 6}

#: A progression rises at least this fraction over the nadir (IMWG needs 25 %; the
#: margin covers a nadir read as the lowest *confirmed* value, up to ~6 % higher).
PD_RISE = 0.40
#: The confirming assessment is this much higher than the first progressive one.
CONFIRM_RISE = (1.02, 1.10)
RESPONSES = ("CR", "VGPR", "PR", "MR", "SD", "PD")

#: (draw low, draw high, hard low, hard high) as fractions of the baseline.
BANDS: dict[str, tuple[float, float, float, float]] = {
    "VGPR": (0.01, 0.08, 0.0, 0.09),
    "PR": (0.15, 0.45, 0.12, 0.48),
    "MR": (0.55, 0.70, 0.52, 0.73),
    "SD": (0.85, 1.10, 0.83, 1.14),
}

#: Highest nadir of a line as a fraction of its baseline, by best response (the
#: baseline itself counts, so SD and PD lines have 1.0).
NADIR_FRACTION: dict[str, float] = {
    "CR": 0.0, "VGPR": BANDS["VGPR"][3], "PR": BANDS["PR"][3], "MR": BANDS["MR"][3],
    "SD": 1.0, "PD": 1.0}

#: Categories passed through on the way down to a deeper response.
DESCENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "CR": (("VGPR",), ("PR", "VGPR")),
    "VGPR": ((), ("PR",)),
    "PR": ((), ("MR",)),
    "MR": ((),),
    "SD": ((),),
    "PD": ((),),
}


@dataclass(frozen=True)
class Marker:
    """The measurable disease: serum M-protein (g/dL) or dFLC (mg/L)."""

    serum: bool
    floor: float  # minimum value at a line start (measurable disease)
    #: Highest value ever drawn (params.burden_ceiling_*): real M-protein rarely passes
    #: ~10 g/dL, whereas progression after progression would compound without bound.
    cap: float
    #: Smallest VGPR value. For FLC-only disease it keeps the κ/λ ratio clearly abnormal
    #: (dFLC ≥ 3.6 × the uninvolved chain), so a VGPR never looks like a CR.
    vgpr_floor: float = 0.01

    @property
    def step(self) -> float:
        return 0.01 if self.serum else 0.1

    @property
    def max_nadir(self) -> float:
        """The highest nadir from which a clear progression still fits under the cap."""
        return self.cap / ((1 + PD_RISE) * CONFIRM_RISE[0])

    def room_for_progression(self, baseline: float, category: str) -> bool:
        """Whether a line of this best response, from this baseline, can progress under
        the cap (the nadir is at most the baseline times the band's upper edge)."""
        return baseline * NADIR_FRACTION[category] <= self.max_nadir

    def rnd(self, value: float) -> float:
        return round(value, 2) if self.serum else round(value, 1)

    def in_band(self, baseline: float, category: str, rng: random.Random,
                level: float) -> float:
        """A value for ``category`` at plateau ``level``, kept inside the hard band."""
        if category == "CR":
            return 0.0
        _, _, lo_f, hi_f = BANDS[category]
        value = self.rnd(baseline * level * rng.uniform(0.97, 1.03))
        lo = max(self.step, math.ceil(baseline * lo_f / self.step - 1e-9) * self.step)
        if category == "VGPR":
            lo = max(lo, self.vgpr_floor)
        hi = math.floor(baseline * hi_f / self.step + 1e-9) * self.step
        return self.rnd(min(max(value, lo), hi))

    def progression(self, nadir: float, rng: random.Random) -> tuple[float, float]:
        """The first progressive value and its (higher) confirmation, under the cap.

        Only when the nadir is above ``max_nadir`` (which the course avoids) would the
        smallest clear rise have to pass the cap; it then passes it as little as possible.
        """
        if self.serum:
            abs_min = (1.0 if nadir >= 4.5 else 0.5) + 0.3
            extra = abs_min + rng.uniform(0.0, 0.5)
        else:
            abs_min = 100.0 + 60.0
            extra = abs_min + rng.uniform(0.0, 90.0)
        least = nadir + max(PD_RISE * nadir, abs_min)
        drawn = nadir + max(PD_RISE * nadir, extra)
        first = self.rnd(max(least, min(drawn, self.cap / CONFIRM_RISE[0])))
        second = max(first * rng.uniform(*CONFIRM_RISE), self.floor * rng.uniform(1.0, 1.25))
        second = min(second, max(self.cap, first * CONFIRM_RISE[0]))
        return first, self.rnd(second)

    def rising(self, value: float, rng: random.Random) -> float:
        """Untreated disease after progression grows, slower near the cap, never falls."""
        grown = max(value, self.floor) * rng.uniform(1.01, 1.06)
        return self.rnd(max(value, min(self.cap, grown)))


def draw_level(category: str, rng: random.Random) -> float:
    if category in BANDS:
        lo, hi, _, _ = BANDS[category]
        return rng.uniform(lo, hi)
    return 0.0


def best_of(labels: list[str]) -> str:
    """Best category held by two consecutive assessments; NE with fewer than two."""
    if len(labels) < 2:
        return "NE"
    best = 0
    for a, b in zip(labels, labels[1:], strict=False):
        best = max(best, min(RANK.get(a, 1), RANK.get(b, 1)))
    return next(k for k, v in RANK.items() if v == best)


@dataclass
class SegmentResult:
    outcome: str  # pd | death | censored
    labels: list[str]
    pd_day: int | None = None
    confirm_day: int | None = None
    death_day: int | None = None
    last_day: int | None = None  # last assessment within the segment


class LabTrack:
    """The patient's assessment schedule, filled phase by phase."""

    def __init__(self, rng: random.Random, params: SynthParams, marker: Marker,
                 cutoff: int) -> None:
        self.rng = rng
        self.p = params
        self.marker = marker
        self.cutoff = cutoff
        self.points: list[Assessment] = []

    @property
    def last(self) -> Assessment:
        return self.points[-1]

    def interval(self) -> int:
        lo, hi = self.p.assessment_interval_days
        return self.rng.randint(lo, hi)

    def add(self, day: int, value: float, label: str) -> Assessment:
        point = Assessment(day, value, label)
        self.points.append(point)
        return point

    def pre_treatment(self, first_day: int, index_day: int, baseline: float) -> None:
        """Labs before the index, drifting up to the baseline value."""
        days = [first_day]
        while days[-1] + self.p.assessment_interval_days[1] < index_day:
            days.append(days[-1] + self.interval())
        days = [d for d in days if d < index_day]
        n = len(days)
        for i, day in enumerate(days):
            frac = 0.8 + 0.2 * (i + 1) / n
            self.add(day, self.marker.rnd(baseline * frac), "pre")
        self.ensure_baseline(index_day)
        self.last.value = self.marker.rnd(baseline)

    def ensure_baseline(self, start: int) -> None:
        """Cycle-1-day-1 labs: a fresh assessment a few days before a start."""
        if self.points and self.last.day >= start - self.p.baseline_max_age_days:
            return
        day = start - self.rng.randint(1, 3)
        value = self.last.value if self.points else self.marker.floor
        if self.points and self.last.label in ("PD", "post"):
            value = self.marker.rising(value, self.rng)
        self.add(day, value, self.points[-1].label if self.points else "pre")

    def follow(self, until: int) -> None:
        """Regular assessments of untreated, growing disease up to ``until`` (exclusive)."""
        until = min(until, self.cutoff + 1)
        day = self.last.day + self.interval()
        while day < until:
            self.add(day, self.marker.rising(self.last.value, self.rng), "post")
            day += self.interval()

    def segment(self, start: int, category: str, pfs_days: float, death: int | None,
                descent: tuple[str, ...], lead_in: Assessment | None = None) -> SegmentResult:
        """Assessments from a treatment start to its progression, death or the cutoff.

        ``lead_in`` is the previous line's PD confirmation when this line started on the
        PD reading's day: drawn after the start, it is this line's first assessment (no
        change from its baseline yet, so stable disease).
        """
        rng, p, m = self.rng, self.p, self.marker
        baseline = self.last.value
        nadir = baseline
        labels = list(descent)
        need = 0 if category == "PD" else len(descent) + 2
        level = draw_level(category, rng)
        levels = {c: draw_level(c, rng) for c in descent}
        pd_from = start + math.ceil(pfs_days) if math.isfinite(pfs_days) else None
        day = start + rng.randint(*p.first_assessment_after_start_days)
        seen: list[str] = []
        lead = 0
        if lead_in is not None:
            self.points.append(lead_in)
            seen.append("SD")
            lead = 1  # not one of the assessments a response needs before its PD
            need += 1 if need else 0
            day = max(day, lead_in.day + self.interval())
        cr_marked = 0
        while True:
            limit = self.cutoff if death is None else min(self.cutoff, death - 1)
            if day > limit:
                break
            i = len(seen)
            if pd_from is not None and i >= need and day >= pd_from:
                confirm = day + rng.randint(*p.confirm_after_pd_days)
                # Death right after progression: keep the confirmation before it.
                after_pd = None
                if death is not None and confirm >= death:
                    death = after_pd = confirm + rng.randint(1, 10)
                if confirm <= self.cutoff:
                    if after_pd is not None and after_pd > self.cutoff:
                        after_pd = None
                    first, second = m.progression(nadir, rng)
                    self.add(day, first, "PD")
                    self.add(confirm, second, "PD")
                    return SegmentResult("pd", seen + ["PD", "PD"], day, confirm, after_pd,
                                         confirm)
                pd_from = None  # the confirmation would fall after the cutoff
            label = labels[i - lead] if i - lead < len(labels) else category
            if label == "PD":  # a PD line seen only after the cutoff: hold at baseline
                label = "SD"
                level = 1.0
            lvl = levels.get(label, level)
            value = m.in_band(baseline, label, rng, lvl)
            point = self.add(day, value, label)
            if label == "CR" and cr_marked < 2:
                point.ife, point.marrow = "negative", p.marrow_plasma_cells_in_cr_pct
                cr_marked += 1
            elif label == "VGPR" and rng.random() < 0.3:
                point.ife = "positive"
            nadir = min(nadir, value)
            seen.append(label)
            day += self.interval()
        last = self.points[-1].day if seen else None
        if death is not None and death <= self.cutoff:
            return SegmentResult("death", seen, death_day=death, last_day=last)
        return SegmentResult("censored", seen, last_day=last)
