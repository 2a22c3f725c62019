"""Regimens laid out as doses, and the choice of the next one.

``lay_regimen`` turns a catalog regimen into dated doses that respect the line rules
of ``timeline.py`` (oral cycles stop before the stop day; antibodies may join later);
``choose_regimen`` draws a salvage regimen that adds a drug the previous line lacked;
``prior_and_bridging`` lays everything before the index infusion; ``line_truth`` reads
a laid line back as ground truth.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from connector.synth import catalog as cat
from connector.synth.course import Course, Dose, LineTruth, Proc, ordinal
from connector.synth.draws import Retry, weighted
from connector.synth.labs import SegmentResult, best_of
from connector.synth.params import SynthParams


def lay_regimen(course: Course, regimen: cat.Regimen, start: int, stop: int,
                line: int, added: dict[str, int] | None = None) -> None:
    """Doses of a cyclic regimen from ``start`` until before ``stop``.

    An oral cycle running into ``stop`` (progression confirmed, death, end of data)
    is recorded as stopped the day before. ``added`` gives components added later
    (drug key -> first day offset): their earlier doses are not given.
    """
    for comp in regimen.components:
        oral = isinstance(comp.schedule, cat.Oral)
        first = (added or {}).get(comp.drug, 0)
        for off in cat.dose_offsets(comp.schedule):
            if off < first:
                continue
            day = start + off
            if day >= stop:
                break
            if oral:
                end = min(day + comp.schedule.period_days - 1, stop - 1)
                course.doses.append(Dose(comp.drug, day, end, line))
            else:
                course.doses.append(Dose(comp.drug, day, None, line))


def lay_car_t(course: Course, product: str, infusion: int, line: int,
              params: SynthParams) -> None:
    """Cyclophosphamide + fludarabine on days -5..-3, then the product on day 0."""
    for offset in params.lymphodepletion_days:
        for drug, _ in cat.LYMPHODEPLETION:
            course.doses.append(Dose(drug, infusion + offset, None, line))
    course.doses.append(Dose(product, infusion, None, line))
    course.procs.append(Proc("car_t_infusion", infusion, product))


#: Induction before high-dose melphalan and ASCT (carfilzomib-dexamethasone, days 1, 8, 15).
INDUCTION = cat.Regimen("induction", "carfilzomib-dexamethasone", "cyclic",
                        tuple(c for c in cat.NON_TCE_REGIMENS["kpd"].components
                              if c.drug != "pomalidomide"))

#: Antibodies that may join a running Pd a month or two in (DPd, IsaPd, EloPd).
ADDED_LATER = ("dara_sc", "dara_iv", "isatuximab", "elotuzumab")

MAINTENANCE = cat.Regimen("maint", "lenalidomide", "cyclic",
                          (cat.Component("lenalidomide", cat.ORAL),))


def prior_and_bridging(course: Course, rng: random.Random, p: SynthParams, index: int,
                       product: str) -> list[str]:
    """Recorded prior regimens, apheresis, bridging, lymphodepletion and the infusion."""
    apheresis = index - rng.randint(*p.apheresis_to_infusion_days)
    n_prior = 2 if rng.random() < p.p_two_prior_regimens else 1
    keys = rng.sample(cat.PRIOR_REGIMENS, n_prior)
    end = apheresis - rng.randint(7, 30)
    for key in keys:
        start = end - rng.randint(*p.prior_regimen_days)
        lay_regimen(course, cat.NON_TCE_REGIMENS[key], start, end + 1, 0)
        end = start - rng.randint(14, 60)
    course.procs.append(Proc("car_t_harvest", apheresis))
    if rng.random() < p.p_bridging:
        bridge = cat.BRIDGING[rng.choice(sorted(cat.BRIDGING))]
        start = apheresis + rng.randint(3, 7)
        stop = index + min(p.lymphodepletion_days) - 10
        if stop - start >= 7:
            lay_regimen(course, bridge, start, stop, 0)
    lay_car_t(course, product, index, 0, p)
    return keys


def index_product_key(rng: random.Random, p: SynthParams) -> str:
    """The index CAR-T product's catalog key."""
    return "ide_cel" if rng.random() < p.p_ide_cel else "cilta_cel"


def tce_availability(p: SynthParams, day: int) -> float:
    """How available TCE was on ``day`` (0..1): mostly trials before the approvals."""
    lo, hi = (ordinal(d) for d in p.tce_availability_ramp)
    if day >= hi:
        return 1.0
    if day <= lo:
        return p.tce_early_factor
    return p.tce_early_factor + (1.0 - p.tce_early_factor) * (day - lo) / (hi - lo)


def by_line(values: Sequence[float], line: int) -> float:
    """The value for salvage line ``line`` (1-based); the last value repeats."""
    return values[min(line, len(values)) - 1]


def choose_regimen(rng: random.Random, p: SynthParams, line: int, previous: frozenset[str],
                   used: set[str], other_product: str, allow_car_t: bool,
                   day: int) -> tuple[str, cat.Regimen]:
    """A regimen not given before that adds a drug the previous line lacked."""
    p_tce = by_line(p.p_tce_by_line, line) * tce_availability(p, day)
    pools = [("tce", p.tce_weights), ("non_tce", p.non_tce_weights)]
    if rng.random() >= p_tce:
        pools.reverse()
    for _, weights in pools:
        options: list[tuple[str, float]] = []
        for key, w in weights.items():
            if key in used or w <= 0:
                continue
            if key == "car_t" and not allow_car_t:
                continue
            reg = _resolve(key, other_product)
            if reg.ingredients - previous - {"dexamethasone"}:
                options.append((key, w))
        if options:
            key = weighted(rng, options)
            regimen = _resolve(key, other_product)
            if key == "dara_pom_dex" and rng.random() >= p.p_daratumumab_sc:
                regimen = _dara_iv(regimen)
            return key, regimen
    raise Retry("no regimen left")  # unreachable with the default catalog


def _resolve(key: str, other_product: str) -> cat.Regimen:
    if key == "car_t":
        return cat.car_t_regimen(other_product)
    return cat.TCE_REGIMENS.get(key) or cat.NON_TCE_REGIMENS[key]


def _dara_iv(regimen: cat.Regimen) -> cat.Regimen:
    comps = tuple(cat.Component("dara_iv", c.schedule) if c.drug == "dara_sc" else c
                  for c in regimen.components)
    return cat.Regimen(regimen.key, regimen.label, regimen.kind, comps)


def regimen_group(regimen: cat.Regimen) -> str:
    """The response and survival group of a regimen: tce, asct or non_tce (params)."""
    if regimen.is_tce:
        return "tce"
    return "asct" if regimen.kind == "asct" else "non_tce"


def line_truth(course: Course, line: int, key: str, start: int, seg: SegmentResult,
               transplant: bool) -> LineTruth:
    """The line as laid in ``course``, read back as ground truth (``truth.py``)."""
    doses = [d for d in course.doses if d.line == line and d.status == "completed"]
    ingredients = sorted({cat.DRUGS[d.drug].ingredient for d in doses})
    end = max(d.end if d.end is not None else d.day for d in doses)
    procs = [pr.day for pr in course.procs if pr.kind != "car_t_harvest" and start <= pr.day
             and pr.day <= end + 7]
    end = max([end, *procs])
    frozen = frozenset(ingredients)
    return LineTruth(
        line=line, regimen=key, start=start, end=end, ingredients=ingredients,
        therapy_class=cat.therapy_class_of(frozen),
        subclass=cat.subclass_of(frozen, transplant),
        best_response=best_of(seg.labels),
        pfs_event=seg.pd_day if seg.outcome == "pd" else seg.death_day,
        pfs_censor=seg.last_day if seg.outcome == "censored" else None,
        pfs_event_kind="pd" if seg.outcome == "pd" else (
            "death" if seg.death_day is not None else ""),
    )
