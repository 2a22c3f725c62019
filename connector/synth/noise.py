"""Imperfections of a real extract, placed on study patients without changing the truth.

Each item is planned for a patient; when the patient's course cannot carry it
(no suitable line, free-light-chain disease for a corrected M-protein...), it
passes to the next study patient, so the cohort has exactly the planned count.
"""

from __future__ import annotations

import random

from connector.synth import catalog as cat
from connector.synth.course import Course, NoiseItem

KINDS = ("duplicate", "corrected", "data_absent", "entered_in_error", "not_done")
#: Planned with their own random stream, so adding them left the other draws unchanged.
EXTRA_KINDS = ("death_without_date",)
_NOT_DONE_CANDIDATES = ("carfilzomib", "dara_iv", "elotuzumab", "isatuximab")


def attach(course: Course, kinds: list[str], rng: random.Random) -> list[str]:
    """Attach what fits; return the kinds that must go to another patient."""
    left: list[str] = []
    taken: set[str] = set()
    for kind in kinds:
        item = None if kind in taken else _PLACERS[kind](course, rng)
        if item is None:
            left.append(kind)
        else:
            course.noise.append(item)
            taken.add(kind)
    return left


def _duplicate(course: Course, rng: random.Random) -> NoiseItem | None:
    idx = [i for i, d in enumerate(course.doses) if d.end is None and d.line > 0]
    return NoiseItem("duplicate", index=rng.choice(idx)) if idx else None


def _corrected(course: Course, rng: random.Random) -> NoiseItem | None:
    """Version 1 of the progression M-protein showed the previous (plateau) value."""
    if course.flc_only or course.progression_basis != "imwg_labs":
        return None
    days = [a.day for a in course.assessments]
    if course.progression_day not in days:
        return None
    i = days.index(course.progression_day)
    return NoiseItem("corrected", index=i, value=course.assessments[i - 1].value)


def _data_absent(course: Course, rng: random.Random) -> NoiseItem | None:
    index = course.index_day or 0
    pairs = [(a.day, b.day) for a, b in zip(course.assessments, course.assessments[1:],
                                              strict=False)
             if a.day > index and b.day - a.day >= 20]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    return NoiseItem("data_absent", day=(a + b) // 2)


def _entered_in_error(course: Course, rng: random.Random) -> NoiseItem | None:
    """A teclistamab dose recorded by mistake in the middle of a non-TCE line."""
    lines = [ln for ln in course.lines if ln.therapy_class == "non_tce" and ln.end - ln.start >= 60]
    if not lines:
        return None
    ln = rng.choice(lines)
    return NoiseItem("entered_in_error", day=rng.randint(ln.start + 30, ln.end - 14),
                     drug="teclistamab")


def _not_done(course: Course, rng: random.Random) -> NoiseItem | None:
    """A scheduled dose of a drug foreign to the line, recorded as not done."""
    lines = [ln for ln in course.lines if ln.end - ln.start >= 45]
    if not lines:
        return None
    ln = rng.choice(lines)
    for key in _NOT_DONE_CANDIDATES:
        if cat.DRUGS[key].ingredient not in ln.ingredients:
            return NoiseItem("not_done", day=rng.randint(ln.start + 14, ln.end - 7), drug=key)
    return None


def _death_without_date(course: Course, rng: random.Random) -> NoiseItem | None:
    """The death is sent as ``deceasedBoolean: true`` only: the date is not in the extract.

    The truth follows what the data allow: death known, date unknown, so overall
    survival and time to next treatment are censored at the last contact and a
    line that ended in death is censored at its last assessment.
    """
    if course.death_day is None or not course.death_date_known:
        return None
    course.death_date_known = False
    return NoiseItem("death_without_date", day=course.death_day)


_PLACERS = {
    "death_without_date": _death_without_date,
    "duplicate": _duplicate,
    "corrected": _corrected,
    "data_absent": _data_absent,
    "entered_in_error": _entered_in_error,
    "not_done": _not_done,
}
