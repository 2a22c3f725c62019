"""The draws a synthetic patient's course is made of: who, which disease, which response.

Each is a few calls on the patient's own random stream, in a fixed order (the cohort
is reproducible from its seed, so moving a draw changes every later patient). The
course itself (``timeline.py``) and the regimens (``regimens.py``) call these.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from connector.synth.course import Course
from connector.synth.labs import DESCENTS, RANK, Marker
from connector.synth.params import SynthParams

DAYS_PER_MONTH = 30.4375


class Retry(Exception):
    """The drawn course does not fit before the cutoff; draw again."""


def weighted(rng: random.Random, items: Sequence[tuple[str, float]]) -> str:
    """One key of ``items`` drawn with its weight (one draw from ``rng``)."""
    total = sum(w for _, w in items)
    x = rng.random() * total
    for key, w in items:
        x -= w
        if x < 0:
            return key
    return items[-1][0]


def lognormal_days(rng: random.Random, median: float, sigma: float) -> float:
    """A duration around ``median`` days, log-normally spread by ``sigma``."""
    return median * math.exp(rng.gauss(0.0, sigma))


def demographics(rng: random.Random, p: SynthParams, index_day: int) -> tuple[int, str]:
    """(birth day, gender) of a patient whose course centres on ``index_day``."""
    age = min(max(rng.gauss(p.age_at_index_mean, p.age_at_index_sd), p.age_at_index_min),
              p.age_at_index_max + 0.99)
    birth = index_day - int(age * 365.25)
    return birth, ("female" if rng.random() < p.p_female else "male")


def setup_marker(course: Course, rng: random.Random, p: SynthParams) -> tuple[Marker, float]:
    """Decide the disease type and the first baseline value."""
    course.flc_only = rng.random() < p.p_flc_only
    course.kappa_involved = rng.random() < p.p_kappa
    course.uninvolved_flc = round(rng.uniform(6.0, 16.0), 1)
    course.flc_per_g_dl = round(rng.uniform(20.0, 80.0), 1)
    if course.flc_only:
        # Immunoparesis: a low uninvolved chain keeps VGPR ratios abnormal (labs.Marker).
        course.uninvolved_flc = round(rng.uniform(3.5, 6.0), 1)
        baseline = round(rng.uniform(*p.flc_only_baseline_dflc_mg_l), 1)
        m0 = 0.0 if rng.random() < 0.5 else rng.uniform(0.1, 0.3)
        course.m_protein_scale = m0 / baseline
        return Marker(False, p.flc_floor_at_line_start_mg_l, p.burden_ceiling_dflc_mg_l,
                      vgpr_floor=round(3.6 * course.uninvolved_flc, 1)), baseline
    baseline = round(rng.uniform(*p.serum_baseline_g_dl), 2)
    return Marker(True, p.serum_floor_at_line_start_g_dl, p.burden_ceiling_serum_g_dl), baseline


def draw_response(rng: random.Random, p: SynthParams, group: str,
                  flc_only: bool) -> tuple[str, tuple[str, ...]]:
    """A best response (no MR for FLC-only disease) and the way down to it."""
    probs = dict(p.response_probs[group]) if group in p.response_probs else dict(
        p.post_car_t_response)
    if flc_only and "MR" in probs:
        probs["SD"] = probs.get("SD", 0.0) + probs.pop("MR")
    category = weighted(rng, list(probs.items()))
    descents = DESCENTS[category]
    if flc_only:
        descents = tuple(d for d in descents if "MR" not in d) or ((),)
    return category, descents[rng.randrange(len(descents))]


def fit_under_ceiling(marker: Marker, baseline: float, category: str,
                      descent: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A best response deep enough that the line's progression stays under the cap.

    A line starting near the ceiling with SD or PD would progress above it; such a
    line gets MR instead (PR for FLC-only disease, which has no MR), or PR when even
    an MR nadir is too high. Lines starting lower keep their drawn response.
    """
    for better in ("MR", "PR"):
        if marker.room_for_progression(baseline, category) or RANK[category] >= RANK[better]:
            continue
        if better == "MR" and not marker.serum:
            continue
        category, descent = better, ()
    return category, descent
