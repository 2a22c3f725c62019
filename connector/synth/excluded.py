"""The patients the study excludes: treated without a CAR-T, or given a CD19 CAR-T.

They make the cohort's exclusion counts real (``no_car_t``, ``non_bcma_car_t``) and
share only the first draws and the laying of regimens with the study patients.
"""

from __future__ import annotations

import random

from connector.synth import catalog as cat
from connector.synth.course import Course, Proc, ordinal
from connector.synth.draws import demographics, setup_marker
from connector.synth.labs import LabTrack
from connector.synth.params import SynthParams
from connector.synth.regimens import lay_car_t, lay_regimen


def build_no_car_t(rng: random.Random, p: SynthParams, site: str, with_harvest: bool) -> Course:
    """A myeloma patient treated without any CAR-T (perhaps collected but never infused)."""
    cutoff = ordinal(p.data_cutoff)
    hi = min(ordinal(p.index_date_max), cutoff - 365)
    first = rng.randint(min(ordinal(p.index_date_min), hi), hi)
    birth, gender = demographics(rng, p, first)
    course = Course(kind="no_car_t", site=site, birth_date=birth, gender=gender)
    marker, baseline = setup_marker(course, rng, p)
    track = LabTrack(rng, p, marker, cutoff)
    track.add(first - rng.randint(7, 30), baseline, "pre")
    start = first
    keys = rng.sample([k for k, r in cat.NON_TCE_REGIMENS.items() if r.kind == "cyclic"],
                      rng.randint(2, 3))
    end = start
    for key in keys:
        end = min(start + rng.randint(90, 240), cutoff - 60)
        if end <= start + 30:
            break
        lay_regimen(course, cat.NON_TCE_REGIMENS[key], start, end, 0)
        start = end + rng.randint(7, 30)
    if with_harvest:
        course.procs.append(Proc("car_t_harvest", min(end + 10, cutoff - 30)))
    stop = min(end + rng.randint(30, 120), cutoff)
    day = track.last.day + track.interval()
    while day <= stop:
        value = marker.rnd(min(marker.cap, max(marker.step,
                                               track.last.value * rng.uniform(0.85, 1.12))))
        track.add(day, value, "pre")
        day += track.interval()
    course.assessments = track.points
    last = course.assessments[-1].day
    course.doses = [d for d in course.doses if (d.end or d.day) <= last]
    course.procs = [pr for pr in course.procs if pr.day <= last]
    course.last_contact = last
    return course


def build_non_bcma(rng: random.Random, p: SynthParams, site: str) -> Course:
    """A lymphoma patient given a CD19 CAR-T (axicabtagene ciloleucel)."""
    cutoff = ordinal(p.data_cutoff)
    hi = min(ordinal(p.index_date_max), cutoff - 90)
    index = rng.randint(min(ordinal(p.index_date_min), hi), hi)
    birth, gender = demographics(rng, p, index)
    course = Course(kind="non_bcma_car_t", site=site, birth_date=birth, gender=gender,
                    myeloma=False)
    course.procs.append(Proc("car_t_harvest", index - rng.randint(30, 45)))
    lay_car_t(course, "axi_cel", index, 0, p)
    day = index - rng.randint(40, 60)
    stop = min(cutoff, index + rng.randint(300, 700))
    while day <= stop:
        course.context_days.append(day)
        day += rng.randint(30, 60)
    course.last_contact = max(course.context_days[-1], index)
    return course
