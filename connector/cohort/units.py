"""A timeline cut into *units*: things that begin together and must stay in one line.

A CAR-T infusion with its lymphodepletion and bridging, a transplant with its
conditioning, and the exposures that start on one day. Each exposure and procedure
lands in at most one unit; ``lines.py`` walks the units into lines. Drugs given
before progression that go on after it are *carried* across it (``carried_into``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from operator import attrgetter

from connector.cohort.index import Infusion
from connector.cohort.model import Exposure, Procedure
from connector.cohort.rules import Rules

CAR_T, TRANSPLANT, DRUGS = "car_t", "transplant", "drugs"


@dataclass
class Unit:
    """Things that begin together and must stay in one line."""

    kind: str  # car_t | transplant | drugs
    date: dt.date
    exposures: list[Exposure] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    anchor: dt.date | None = None  # the infusion or transplant day
    product: str = ""


def _ld_for(infusion_day: dt.date, exposures: list[Exposure], rules: Rules) -> list[Exposure]:
    """The lymphodepletion of the infusion on ``infusion_day`` (``[lymphodepletion]``)."""
    ld = rules.lymphodepletion
    return [e for e in exposures if e.ingredient in ld.ingredients
            and ld.min_days_before <= (infusion_day - e.start).days <= ld.max_days_before]


def _conditioning_for(tx_day: dt.date, exposures: list[Exposure], rules: Rules) -> list[Exposure]:
    """The conditioning of the transplant on ``tx_day`` (``[transplant]``)."""
    tr = rules.transplant
    return [e for e in exposures if e.ingredient in tr.conditioning_ingredients
            and 0 <= (tx_day - e.start).days <= tr.conditioning_max_days_before]


def bridging_for(infusion_day: dt.date, members: list[Exposure], exposures: list[Exposure],
                 procedures: list[Procedure], used: set[int], rules: Rules) -> list[Exposure]:
    """Bridging: drugs started after the CAR-T apheresis and before the lymphodepletion.

    They belong to the CAR-T's line (IMWG: one planned sequence), whose start and
    response baseline then come before them (``[car_t] bridging_max_days_after_harvest``).
    """
    limit = rules.car_t.bridging_max_days_after_harvest
    if limit <= 0:
        return []
    harvests = [p.date for p in procedures if p.category == "car_t_harvest"
                and 0 < (infusion_day - p.date).days <= limit]
    if not harvests:
        return []
    harvest = max(harvests)
    before = min([e.start for e in members] + [infusion_day])
    car_t = frozenset(rules.car_t.all_classes)
    return [e for e in exposures if id(e) not in used and e.drug_class not in car_t
            and harvest <= e.start < before]


def _car_t_exposures(inf: Infusion, exposures: list[Exposure], rules: Rules) -> list[Exposure]:
    """CAR-T exposures recorded for the infusion ``inf`` (same product, same days)."""
    window = rules.car_t.same_infusion_days
    classes = rules.car_t.all_classes
    return [e for e in exposures if e.drug_class in classes
            and abs((e.start - inf.date).days) <= window]


def build_units(exposures: list[Exposure], procedures: list[Procedure],
                infusions: list[Infusion], rules: Rules) -> list[Unit]:
    """Cut a timeline into units; each exposure and procedure lands in at most one."""
    used: set[int] = set()
    units: list[Unit] = []
    roles = set(rules.lymphodepletion.ingredients) | set(rules.transplant.conditioning_ingredients)
    car_t = frozenset(rules.car_t.all_classes)
    pool = [e for e in exposures if e.ingredient in roles or e.drug_class in car_t]
    for inf in sorted(infusions, key=lambda i: i.date):
        free = [e for e in pool if id(e) not in used]
        members = _car_t_exposures(inf, free, rules) + _ld_for(inf.date, free, rules)
        members += bridging_for(inf.date, members, exposures, procedures, used | {
            id(e) for e in members}, rules)
        procs = [p for p in procedures if p.category in rules.car_t.infusion_categories
                 and abs((p.date - inf.date).days) <= rules.car_t.same_infusion_days]
        used.update(id(e) for e in members)
        start = min([e.start for e in members] + [inf.date])
        units.append(Unit(CAR_T, start, members, procs, inf.date, inf.product))
    for tx in sorted((p for p in procedures if p.category in rules.transplant.categories),
                     key=lambda p: p.date):
        free = [e for e in pool if id(e) not in used]
        members = _conditioning_for(tx.date, free, rules)
        used.update(id(e) for e in members)
        start = min([e.start for e in members] + [tx.date])
        units.append(Unit(TRANSPLANT, start, members, [tx], tx.date))
    by_day: dict[dt.date, list[Exposure]] = defaultdict(list)
    for e in exposures:
        if e.drug_class not in car_t and id(e) not in used:
            by_day[e.start].append(e)
    by_name = attrgetter("ingredient")
    units += [Unit(DRUGS, day, sorted(es, key=by_name) if len(es) > 1 else es)
              for day, es in by_day.items()]
    order = {CAR_T: 0, TRANSPLANT: 1, DRUGS: 2}
    return sorted(units, key=lambda u: (u.date, order[u.kind]))


def carried_into(boundary: dt.date, exposures: list[Exposure], rules: Rules,
                 exclude: set[int] | None = None) -> dict[str, dt.date]:
    """Drugs given before ``boundary`` (ingredient -> last use before it).

    Their later doses, when no gap exceeds ``lines.gap_days``, continue that
    treatment: they neither start a line nor count as a new drug. They join the
    first line only when something new starts one (the brief's simple rule).
    """
    exclude = exclude or set()
    car_t = frozenset(rules.car_t.all_classes)
    out: dict[str, dt.date] = {}
    for e in exposures:
        if e.start < boundary and e.drug_class not in car_t and id(e) not in exclude:
            last = e.last
            old = out.get(e.ingredient)
            if old is None or last > old:
                out[e.ingredient] = last
    return out


def continues(e: Exposure, carried: dict[str, dt.date], gap: int) -> bool:
    """Whether ``e`` goes on with a carried drug (within ``gap`` days of its last use)."""
    last = carried.get(e.ingredient)
    return last is not None and (e.start - last).days <= gap
