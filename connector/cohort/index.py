"""CAR-T infusions and the index infusion (the first BCMA CAR-T).

An infusion can arrive twice: as a ``car_t_administration`` procedure and as a
medication exposure of the product. Both are folded into one infusion when they
are a few days apart, so a second record never looks like a second CAR-T.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from connector.cohort.model import Exposure, Procedure
from connector.cohort.rules import Rules

BCMA, OTHER, UNKNOWN = "bcma", "other", "unknown"


@dataclass
class Infusion:
    """One CAR-T infusion, possibly seen as several records."""

    date: dt.date
    target: str  # bcma | other | unknown
    product: str = ""
    from_procedure: bool = False
    from_exposure: bool = False


@dataclass(frozen=True)
class IndexResult:
    infusion: Infusion | None
    exclusion_reason: str | None
    infusions: list[Infusion]

    @property
    def date(self) -> dt.date | None:
        return self.infusion.date if self.infusion else None


def _target_of_product(product: str, class_of: dict[str, str], rules: Rules) -> str:
    """BCMA, other or unknown, from the product's exposure class or the rules' lists."""
    cls = class_of.get(product)
    if cls in rules.car_t.bcma_classes or product in rules.car_t.bcma_products:
        return BCMA
    if cls in rules.car_t.other_classes or product in rules.car_t.other_products:
        return OTHER
    return UNKNOWN


def _raw_infusions(exposures: list[Exposure], procedures: list[Procedure],
                   rules: Rules) -> list[Infusion]:
    ct = rules.car_t
    class_of = {e.ingredient: e.drug_class for e in exposures}
    out = [Infusion(e.start, BCMA if e.drug_class in ct.bcma_classes else OTHER,
                    e.ingredient, from_exposure=True)
           for e in exposures if e.drug_class in ct.all_classes]
    for p in procedures:
        if p.category not in ct.infusion_categories:
            continue
        target = _target_of_product(p.product, class_of, rules) if p.product else UNKNOWN
        out.append(Infusion(p.date, target, p.product, from_procedure=True))
    return sorted(out, key=lambda i: (i.date, i.target == UNKNOWN))


def _compatible(a: Infusion, b: Infusion) -> bool:
    return a.target == b.target or UNKNOWN in (a.target, b.target)


def _merge(into: Infusion, other: Infusion) -> None:
    if into.target == UNKNOWN:
        into.target = other.target
    into.product = into.product or other.product
    into.date = min(into.date, other.date)
    into.from_procedure |= other.from_procedure
    into.from_exposure |= other.from_exposure


def find_infusions(exposures: list[Exposure], procedures: list[Procedure],
                   rules: Rules) -> list[Infusion]:
    """Every CAR-T infusion, records a few days apart folded into one.

    A procedure without a product that matches no exposure stays ``unknown`` here
    and is resolved by ``resolve_unknown``.
    """
    window = rules.car_t.same_infusion_days
    merged: list[Infusion] = []
    for inf in _raw_infusions(exposures, procedures, rules):
        match = next((m for m in merged if abs((inf.date - m.date).days) <= window
                      and _compatible(m, inf)), None)
        if match is None:
            merged.append(Infusion(inf.date, inf.target, inf.product,
                                   inf.from_procedure, inf.from_exposure))
        else:
            _merge(match, inf)
    return resolve_unknown(merged, rules)


def resolve_unknown(infusions: list[Infusion], rules: Rules) -> list[Infusion]:
    """A productless infusion is BCMA unless the patient has any other-target CAR-T.

    The study cohort is BCMA CAR-T patients, and most CAR-T given to myeloma
    patients targets BCMA; a patient with a CD19 (or other) product on record is
    the case where a productless record cannot be trusted to be BCMA.
    """
    has_other = any(i.target == OTHER for i in infusions)
    for inf in infusions:
        if inf.target == UNKNOWN and rules.car_t.productless_is_bcma and not has_other:
            inf.target = BCMA
    return infusions


def find_index(exposures: list[Exposure], procedures: list[Procedure],
               rules: Rules) -> IndexResult:
    """The first BCMA CAR-T infusion, or why there is none."""
    infusions = find_infusions(exposures, procedures, rules)
    if not infusions:
        return IndexResult(None, "no_car_t", infusions)
    bcma = [i for i in infusions if i.target == BCMA]
    if not bcma:
        return IndexResult(None, "non_bcma_car_t", infusions)
    return IndexResult(min(bcma, key=lambda i: i.date), None, infusions)
