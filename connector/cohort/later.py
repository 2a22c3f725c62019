"""The first treatment after the index CAR-T that ends the search for progression.

Progression after CAR-T is searched in the labs up to the start of the next
treatment (``progression.py``): once a salvage regimen has begun, a later rise
belongs to it, and the start is itself the evidence of progression. Maintenance
or consolidation given to a patient in response (lenalidomide from day 90, say)
is not such a treatment: it was started *without* progression, so it must not
end the search nor be taken for a progression (issue 15, item 2). This module
decides which later treatment counts.
"""

from __future__ import annotations

import datetime as dt

from connector.cohort.index import Infusion
from connector.cohort.model import Exposure, Procedure
from connector.cohort.rules import Rules
from connector.cohort.units import CAR_T, DRUGS, Unit, build_units, carried_into, continues


def is_post_index_maintenance(unit: Unit, units: list[Unit], i: int, index_day: dt.date,
                              rules: Rules) -> bool:
    """A single maintenance drug started soon after the index, with nothing joining it.

    The unit must hold one ingredient of ``progression.maintenance_ingredients``
    (dexamethasone counts as an ingredient: Rd is a doublet, not maintenance),
    start within ``progression.maintenance_max_days_after_index`` days of the
    infusion, and no other drug may start within the regimen window while it is
    given (that would make it a regimen).
    """
    pr = rules.progression
    if unit.kind != DRUGS or pr.maintenance_max_days_after_index <= 0:
        return False
    names = {e.ingredient for e in unit.exposures}
    if len(names) != 1:
        return False
    drug = next(iter(names))
    if drug not in pr.maintenance_ingredients:
        return False
    if (unit.date - index_day).days > pr.maintenance_max_days_after_index:
        return False
    window = rules.lines.regimen_window_days
    last = max(e.last for e in unit.exposures)
    for later in units[i + 1:]:
        if (later.date - unit.date).days > window:
            break
        if later.date <= last and (later.kind != DRUGS or any(
                e.ingredient != drug for e in later.exposures)):
            return False
        last = max([last] + [e.last for e in later.exposures if e.ingredient == drug])
    return True


def first_later_therapy(exposures: list[Exposure], procedures: list[Procedure],
                        infusions: list[Infusion], index: Infusion, rules: Rules,
                        units: list[Unit] | None = None) -> dt.date | None:
    """The start of the first treatment after the index CAR-T that ends the lab search.

    Not counted: the index infusion's own records, steroids alone, drugs that
    continue without a gap from before the infusion, and maintenance started
    without progression (``is_post_index_maintenance``), whose later doses then
    continue it.
    """
    if units is None:
        units = build_units(exposures, procedures, infusions, rules)
    index_unit_ids = {id(e) for u in units if u.kind == CAR_T and u.anchor == index.date
                      for e in u.exposures}
    before = [u for u in units if u.date <= index.date]
    tagged = {id(e) for u in before if u.kind != DRUGS for e in u.exposures} | index_unit_ids
    carried = carried_into(index.date + dt.timedelta(days=1), exposures, rules, tagged)
    gap = rules.lines.gap_days
    non_trigger = rules.lines.non_trigger_classes
    for i, u in enumerate(units):
        if u.date <= index.date or (u.kind == CAR_T and u.anchor == index.date):
            continue
        if u.kind != DRUGS:
            return u.date
        fresh = [e for e in u.exposures if not continues(e, carried, gap)]
        for e in u.exposures:
            if e not in fresh:
                carried[e.ingredient] = max(carried[e.ingredient], e.last)
        if not any(e.drug_class not in non_trigger for e in fresh):
            continue
        if len(fresh) == len(u.exposures) and is_post_index_maintenance(
                u, units, i, index.date, rules):
            for e in u.exposures:
                carried[e.ingredient] = max(carried.get(e.ingredient, e.last), e.last)
            continue
        return u.date
    return None
