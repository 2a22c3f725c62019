"""Synthetic multi-site FHIR R4 cohort with ground truth (``cohort synth``).

``synthesize`` writes OUT/<site>/<ResourceType>.ndjson and OUT/ground_truth.json
(contracts.md). Everything follows from the seed: each patient has its own
random streams, seeded from (seed, kind, number), so a cohort of 80 starts with
the same 79 patients as a cohort of 79, and no clock is ever read.

Modules: ``params`` (every number), ``catalog`` (drugs, codes, regimens),
``labs`` (IMWG-safe lab values), ``timeline`` (the clinical course, from
``draws`` and ``regimens``), ``excluded`` (patients the study excludes), ``noise``
(extract imperfections), ``fhir`` (resources), ``truth``, ``writer``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.synth import noise as noise_mod
from connector.synth.course import Course
from connector.synth.covariates import draw_covariates
from connector.synth.excluded import build_no_car_t, build_non_bcma
from connector.synth.fhir import FhirBuilder, site_name
from connector.synth.params import DEFAULT_PARAMS, SynthParams
from connector.synth.timeline import CohortPatient
from connector.synth.truth import patient_truth
from connector.synth.writer import NdjsonWriter, write_truth

__all__ = ["synthesize", "simulate", "SynthParams", "DEFAULT_PARAMS"]


@dataclass
class Slot:
    """One patient to generate: what kind, which site, which imperfections."""

    kind: str  # cohort | no_car_t | non_bcma_car_t | no_progression
    number: int
    site_no: int = 0
    missing_labs: bool = False
    noise: list[str] = field(default_factory=list)


def _count(fraction: float, n: int) -> int:
    return max(1, round(fraction * n)) if n > 0 else 0


def plan(n_patients: int, n_sites: int, seed: int, noise: bool,
         params: SynthParams) -> list[Slot]:
    """Who is generated, at which site, in which file order."""
    rng = random.Random(f"{seed}:plan")
    groups: dict[str, list[Slot]] = {"cohort": [Slot("cohort", i) for i in range(n_patients)]}
    if noise:
        n = max(n_patients, 1)
        for kind, frac in (("no_car_t", params.noise_no_car_t_fraction),
                           ("non_bcma_car_t", params.noise_non_bcma_car_t_fraction),
                           ("no_progression", params.noise_no_progression_fraction)):
            groups[kind] = [Slot(kind, i) for i in range(_count(frac, n))]
        cohort = groups["cohort"]
        order = list(range(n_patients))
        rng.shuffle(order)
        n_missing = min(_count(params.noise_missing_labs_fraction, n_patients), n_patients)
        for i in order[:n_missing]:
            cohort[i].missing_labs = True
        hosts = order[n_missing:] or order
        for kind in noise_mod.KINDS:
            frac = getattr(params, f"noise_{'duplicates' if kind == 'duplicate' else kind}"
                                   f"_fraction")
            for _ in range(_count(frac, n_patients) if hosts else 0):
                cohort[rng.choice(hosts)].noise.append(kind)
        extra = random.Random(f"{seed}:plan:extra")
        for kind in noise_mod.EXTRA_KINDS:
            for _ in range(_count(getattr(params, f"noise_{kind}_fraction"), n_patients)
                           if hosts else 0):
                cohort[extra.choice(hosts)].noise.append(kind)
    slots: list[Slot] = []
    for members in groups.values():
        sites = [i % n_sites for i in range(len(members))]
        rng.shuffle(sites)
        for slot, site_no in zip(members, sites, strict=True):
            slot.site_no = site_no
        slots.extend(members)
    rng.shuffle(slots)
    return slots


def _course(slot: Slot, seed: int, params: SynthParams, site: str) -> Course:
    rng = random.Random(f"{seed}:{slot.kind}:{slot.number}:course")
    if slot.kind == "cohort":
        extra = random.Random(f"{seed}:{slot.kind}:{slot.number}:extra")
        course = CohortPatient(rng, params, site, extra).build(missing_labs=slot.missing_labs)
    elif slot.kind == "no_progression":
        course = CohortPatient(rng, params, site).build_no_progression()
    elif slot.kind == "no_car_t":
        course = build_no_car_t(rng, params, site, with_harvest=slot.number == 0)
    else:
        course = build_non_bcma(rng, params, site)
    # a stream of their own: the covariates leave every other draw unchanged; patients
    # outside the cohort have them too, so a cohort-scoped extraction must leave theirs out
    cov_rng = random.Random(f"{seed}:{slot.kind}:{slot.number}:covariates")
    course.covariates = draw_covariates(course, cov_rng, params)
    return course


def simulate(n_patients: int, n_sites: int, seed: int, noise: bool = True,
             params: SynthParams | None = None) -> Iterator[tuple[Slot, Course]]:
    """The courses alone, without FHIR (fast; used for calibration)."""
    params = params or DEFAULT_PARAMS
    carry: list[str] = []
    for slot in plan(n_patients, n_sites, seed, noise, params):
        course = _course(slot, seed, params, site_name(slot.site_no))
        if slot.kind == "cohort" and (slot.noise or carry):
            noise_rng = random.Random(f"{seed}:{slot.kind}:{slot.number}:noise")
            carry = noise_mod.attach(course, slot.noise + carry, noise_rng)
        yield slot, course


def _builder(slot: Slot, seed: int, params: SynthParams) -> FhirBuilder:
    rng = random.Random(f"{seed}:{slot.kind}:{slot.number}:fhir")
    return FhirBuilder(rng, site_name(slot.site_no), slot.site_no, params)


def synthesize(n_patients: int, n_sites: int, seed: int, out_dir: Path | str,
               noise: bool = True, params: SynthParams | None = None) -> dict[str, Any]:
    """Write the cohort and return the ground truth (also in OUT/ground_truth.json).

    ``n_patients`` counts study (in-cohort) patients; with ``noise`` the excluded
    patients and the extract's imperfections come on top.
    """
    if n_sites < 1 or n_patients < 0:
        raise ValueError("need at least one site and a non-negative number of patients")
    params = params or DEFAULT_PARAMS
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sites = [site_name(i) for i in range(n_sites)]
    patients: list[dict[str, Any]] = []
    with NdjsonWriter(out, sites) as writer:
        for slot, course in simulate(n_patients, n_sites, seed, noise, params):
            pid, emitted = _builder(slot, seed, params).build(course)
            writer.write(course.site, emitted)
            patients.append(patient_truth(course, pid))
    parameters = {"n_patients": n_patients, "n_sites": n_sites, "noise": noise,
                  **params.to_dict()}
    truth = {"seed": seed, "parameters": parameters, "patients": patients}
    write_truth(out / "ground_truth.json", truth)
    return truth


def truth_only(n_patients: int, n_sites: int, seed: int, noise: bool = True,
               params: SynthParams | None = None) -> list[dict[str, Any]]:
    """The ground-truth patients without writing FHIR (same ids as ``synthesize``)."""
    params = params or DEFAULT_PARAMS
    return [patient_truth(course, _builder(slot, seed, params).new_id())
            for slot, course in simulate(n_patients, n_sites, seed, noise, params)]
