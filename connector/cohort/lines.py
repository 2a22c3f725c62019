"""Lines of therapy after progression (OHDSI LambdaBuilder rules, codes.md §5 A).

The timeline is first cut into *units* (``units.py``): a CAR-T infusion with its
lymphodepletion, a transplant with its conditioning, and single exposures.
Units are then walked in date order. A line keeps what starts within the
regimen window, what continues a drug already in it, and maintenance; it ends
when a new drug is added after the window, when every drug has been unused for
more than the gap, or when a CAR-T infusion or a transplant starts a new one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from connector.cohort.index import Infusion
from connector.cohort.model import Exposure, Procedure
from connector.cohort.rules import Rules
from connector.cohort.units import (
    CAR_T,
    DRUGS,
    TRANSPLANT,
    Unit,
    build_units,
    carried_into,
    continues,
)

#: A drug of the line given this recently makes the line "ongoing" for an added drug.
ADD_TO_ONGOING_DAYS = 28
#: (line start, day) -> whether the labs show progression on the line before that day;
#: None when they cannot say (no measurable baseline or no assessment in between).
Progressed = Callable[[dt.date, dt.date], bool | None]


@dataclass
class Line:
    """A line being built; turned into a ``LineRecord`` once classified."""

    start: dt.date
    exposures: list[Exposure] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    products: set[str] = field(default_factory=set)
    car_t_dates: list[dt.date] = field(default_factory=list)
    transplant_dates: list[dt.date] = field(default_factory=list)
    ld_only: bool = False
    end: dt.date | None = None
    # caches for the walk, which asks for these after every unit: the lists only
    # grow, so only the items added since the last call are looked at
    _seen: tuple[int, ...] = field(default=(0, 0, 0, 0), init=False, repr=False, compare=False)
    _last: dt.date | None = field(default=None, init=False, repr=False, compare=False)
    _names: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _named: int = field(default=0, init=False, repr=False, compare=False)

    def _ingredient_set(self) -> set[str]:
        """The cached set itself (callers must not change it); ``ingredients`` copies it."""
        n = len(self.exposures)
        if n < self._named:
            self._names, self._named = set(), 0
        if n != self._named:
            self._names.update(e.ingredient for e in self.exposures[self._named:])
            self._named = n
        return self._names

    @property
    def ingredients(self) -> set[str]:
        return set(self._ingredient_set())

    @property
    def drugs(self) -> list[str]:
        return sorted(self._ingredient_set() | self.products)

    @property
    def classes(self) -> set[str]:
        return {e.drug_class for e in self.exposures}

    @property
    def categories(self) -> set[str]:
        return {p.category for p in self.procedures}

    @property
    def last_activity(self) -> dt.date:
        seen = (len(self.exposures), len(self.procedures), len(self.car_t_dates),
                len(self.transplant_dates))
        if seen != self._seen:
            e0, p0, c0, t0 = self._seen
            last = self._last
            if seen[0] < e0 or seen[1] < p0 or seen[2] < c0 or seen[3] < t0:
                e0 = p0 = c0 = t0 = 0  # a list was replaced: look at everything again
                last = None
            for day in (*[e.last for e in self.exposures[e0:]], *self.car_t_dates[c0:],
                        *self.transplant_dates[t0:], *[p.date for p in self.procedures[p0:]]):
                if last is None or day > last:
                    last = day
            self._last, self._seen = last, seen
        return self._last if self._last is not None else self.start

    def add(self, unit: Unit) -> None:
        self.exposures += unit.exposures
        self.procedures += unit.procedures
        if unit.product:
            self.products.add(unit.product)
        if unit.kind == CAR_T and unit.anchor:
            self.car_t_dates.append(unit.anchor)
        if unit.kind == TRANSPLANT and unit.anchor:
            self.transplant_dates.append(unit.anchor)


class _Walker:
    """Walks the units in date order and cuts them into lines."""

    def __init__(self, units: list[Unit], carried: dict[str, dt.date], rules: Rules,
                 spanning: list[Exposure] | None = None,
                 progressed: Progressed | None = None) -> None:
        self.units = units
        self.progressed = progressed
        self.spanning = list(spanning or [])  # courses running across the boundary
        self.rules = rules
        self.lines: list[Line] = []
        self.current: Line | None = None
        self.pending: list[Unit] = []  # steroid-only units waiting for a triggering drug
        self.carried = dict(carried)
        self.lr = rules.lines

    def triggering(self, e: Exposure) -> bool:
        return e.drug_class not in self.lr.non_trigger_classes

    def run(self) -> list[Line]:
        for i, unit in enumerate(self.units):
            if unit.kind == DRUGS:
                self.drugs(unit, i)
            else:
                self.procedure_unit(unit)
        self.close()
        return self.lines

    # -- opening and closing

    def open(self, unit: Unit) -> None:
        """Start a line with ``unit``; the carry-over across progression ends here."""
        self.close()
        self.carried = {}
        start = unit.date
        fresh = [p for p in self.pending
                 if (unit.date - p.date).days <= self.lr.regimen_window_days]
        if fresh and unit.kind == DRUGS:
            start = min(p.date for p in fresh)
        line = Line(start=start)
        if unit.kind == DRUGS:
            for p in fresh:
                line.add(p)
        self.pending = []
        line.add(unit)
        line.ld_only = unit.kind == DRUGS and bool(unit.exposures) and all(
            e.ingredient in self.rules.lymphodepletion.ingredients for e in unit.exposures)
        self.current = line

    def close(self) -> None:
        if self.current is not None:
            self.lines.append(self.current)
            self.spanning = []
        self.current = None

    # -- CAR-T and transplant units

    def procedure_unit(self, unit: Unit) -> None:
        cur = self.current
        window = self.lr.regimen_window_days
        if unit.kind == CAR_T and cur is not None and cur.ld_only \
                and (unit.date - cur.start).days <= window:
            cur.add(unit)
            cur.ld_only = False
            return
        if unit.kind == TRANSPLANT and cur is not None and cur.transplant_dates and \
                unit.anchor is not None and \
                (unit.anchor - cur.transplant_dates[-1]).days <= self.rules.transplant.tandem_days:
            cur.add(unit)
            return
        if unit.kind == TRANSPLANT and cur is not None and self.induction(cur, unit):
            cur.add(unit)
            return
        self.open(unit)

    def induction(self, cur: Line, unit: Unit) -> bool:
        """Induction + high-dose melphalan + ASCT are one line, when nothing progressed."""
        tr = self.rules.transplant
        if tr.induction_max_days <= 0 or cur.transplant_dates or cur.car_t_dates \
                or self.progressed is None:
            return False
        return (unit.date - cur.start).days <= tr.induction_max_days \
            and (unit.date - cur.last_activity).days <= tr.induction_max_gap_days \
            and self.progressed(cur.start, unit.date) is False

    # -- drug units

    def drugs(self, unit: Unit, i: int) -> None:
        cur = self.current
        gap = self.lr.gap_days
        rest = []
        for e in unit.exposures:
            if self.carried and continues(e, self.carried, gap):
                self.carried[e.ingredient] = max(self.carried[e.ingredient], e.last)
            else:
                rest.append(e)
        if cur is None:
            self._without_line(unit, rest)
            return
        if (unit.date - cur.last_activity).days > gap:
            if self.maintenance(cur, unit, i):
                cur.add(unit)
                return
            self.close()
            self._without_line(unit, rest)
            return
        names = cur._ingredient_set()
        new = [e for e in rest if e.ingredient not in names and self.triggering(e)]
        if not new or (unit.date - cur.start).days <= self.lr.regimen_window_days \
                or self.late_add(cur, unit, new) or self.added_without_progression(cur, unit) \
                or self.maintenance(cur, unit, i):
            cur.add(unit)
            cur.ld_only = cur.ld_only and all(
                e.ingredient in self.rules.lymphodepletion.ingredients for e in unit.exposures)
            return
        self.open(unit)

    def _without_line(self, unit: Unit, rest: list[Exposure]) -> None:
        """Drugs with no open line: a new triggering drug opens one, steroids wait.

        ``rest`` are the unit's exposures that do not continue a drug carried
        across progression; carried doses alone are no line, but join the line
        that a new drug opens on the same day.
        """
        if any(self.triggering(e) for e in rest):
            self.open(unit)
            if self.spanning:
                self.current.exposures += [e for e in self.spanning if e.last >= unit.date]
                self.spanning = []
        elif rest:
            self.pending.append(Unit(DRUGS, unit.date, rest))

    # -- the exceptions that keep a new drug in the line

    def late_add(self, cur: Line, unit: Unit, new: list[Exposure]) -> bool:
        """LambdaBuilder: an IMiD or PI added early, when the line has none, stays (if on)."""
        days = self.lr.late_add_days
        if days <= 0 or (unit.date - cur.start).days > days:
            return False
        classes = cur.classes
        return all(e.drug_class in self.lr.late_add_classes and e.drug_class not in classes
                   for e in new)

    def added_without_progression(self, cur: Line, unit: Unit) -> bool:
        """A drug added to a line still being given, with labs showing no progression."""
        days = self.lr.add_without_progression_days
        if days <= 0 or self.progressed is None or (unit.date - cur.start).days > days:
            return False
        if (unit.date - cur.last_activity).days > ADD_TO_ONGOING_DAYS:
            return False
        return self.progressed(cur.start, unit.date) is False

    def maintenance(self, cur: Line, unit: Unit, i: int) -> bool:
        """A single maintenance drug after a transplant or a multi-drug regimen."""
        mr = self.rules.maintenance
        names = {e.ingredient for e in unit.exposures}
        if len(names) != 1:
            return False
        drug = next(iter(names))
        if drug not in mr.ingredients and not (
                drug in mr.ingredients_if_in_previous and drug in cur._ingredient_set()):
            return False
        duration = self._single_for(drug, unit.date, i)
        if duration is None:
            return False
        after_tx = bool(cur.transplant_dates) and \
            (unit.date - cur.transplant_dates[-1]).days <= mr.after_transplant_days \
            and (mr.min_duration_after_transplant_days <= 0
                 or duration > mr.min_duration_after_transplant_days)
        prev_days = (cur.last_activity - cur.start).days
        multi = len(cur._ingredient_set() | cur.products) >= mr.previous_regimen_min_drugs \
            and prev_days > mr.previous_regimen_min_days \
            and (unit.date - cur.last_activity).days <= mr.after_regimen_days \
            and duration > mr.min_duration_days
        return after_tx or multi

    def _single_for(self, drug: str, day: dt.date, i: int) -> int | None:
        """Days ``drug`` is given from ``day`` on, or None if another drug joins it.

        Another drug joins it when it starts within the regimen window while
        ``drug`` is still being given; one that starts after ``drug`` has stopped
        leaves it a monotherapy (and starts its own line).
        """
        window, gap = self.lr.regimen_window_days, self.lr.gap_days
        last = max([day] + [e.last for e in self.units[i].exposures if e.ingredient == drug])
        for u in self.units[i + 1:]:
            joins = (u.date - day).days <= window and u.date <= last
            if u.kind != DRUGS:
                if joins:
                    return None
                break
            if joins and any(e.ingredient != drug for e in u.exposures):
                return None
            for e in u.exposures:
                if e.ingredient == drug and (e.start - last).days <= gap:
                    last = max(last, e.last)
        return (last - day).days


def finish(lines: list[Line]) -> list[Line]:
    """Set each line's end: its last administration or procedure, before the next line."""
    for cur, nxt in zip(lines, lines[1:] + [None], strict=False):
        end = cur.last_activity
        if nxt is not None and end >= nxt.start:
            end = max(cur.start, nxt.start - dt.timedelta(days=1))
        cur.end = end
    return lines


def build_lines(exposures: list[Exposure], procedures: list[Procedure],
                infusions: list[Infusion], progression: dt.date, rules: Rules,
                units: list[Unit] | None = None,
                progressed: Progressed | None = None) -> list[Line]:
    """The lines of therapy that start on or after ``progression``.

    Exposures before it (bridging, the index CAR-T's lymphodepletion, earlier
    lines) are not lines; a drug that started before and continues after it
    joins the first line only when something new starts that line.
    """
    if units is None:
        units = build_units(exposures, procedures, infusions, rules)
    before = [u for u in units if u.date < progression]
    after = [u for u in units if u.date >= progression]
    tagged = {id(e) for u in before if u.kind != DRUGS for e in u.exposures}
    carried = carried_into(progression, exposures, rules, tagged)
    car_t = frozenset(rules.car_t.all_classes)
    spanning = [e for e in exposures if e.start < progression <= e.last and id(e) not in tagged
                and e.drug_class not in car_t]
    return finish(_Walker(after, carried, rules, spanning, progressed).run())
