"""Simulate each patient's clinical course, from prior therapy to death or the cutoff.

The course is built forward in time. For a study patient: recorded prior
regimens, CAR-T apheresis, optional bridging, lymphodepletion, the index infusion,
a deep response, confirmed progression, then salvage lines one after another.
Each line draws a regimen, a best response, a time to progression and a
competing death; its labs come from ``labs.LabTrack``. Ground truth is read
off the same record (``truth.py``), so it is the generator's own true course.

Line rules the course respects, so that a correct line-of-therapy algorithm
finds the same lines: every drug of a line starts within its first days (a
transplant's maintenance and a CAR-T's lymphodepletion excepted, as
docs/design.md groups them); a line's drugs stop before its progression is
confirmed; the next line starts after that confirmation, at least 45 days after
the previous start, and brings a drug (other than dexamethasone) that the
previous line did not have.
"""

from __future__ import annotations

import math
import random

from connector.synth import catalog as cat
from connector.synth.course import Assessment, Course, Dose, Proc, ordinal
from connector.synth.draws import (
    DAYS_PER_MONTH,
    Retry,
    demographics,
    draw_response,
    fit_under_ceiling,
    lognormal_days,
    setup_marker,
    weighted,
)
from connector.synth.labs import DESCENTS, LabTrack, SegmentResult
from connector.synth.params import SynthParams
from connector.synth.regimens import (
    ADDED_LATER,
    INDUCTION,
    MAINTENANCE,
    by_line,
    choose_regimen,
    index_product_key,
    lay_car_t,
    lay_regimen,
    line_truth,
    prior_and_bridging,
    regimen_group,
)


class CohortPatient:
    """Builds one study patient's course (and the excluded BCMA CAR-T kinds)."""

    def __init__(self, rng: random.Random, p: SynthParams, site: str,
                 extra: random.Random | None = None) -> None:
        self.rng = rng
        # Draws added after calibration come from their own stream, so the calibrated
        # courses stay the same with them.
        self._extra = extra
        self.induction = 0  # days of induction before the current line's transplant
        self.bridge = 0  # days of bridging before the current CAR-T line's lymphodepletion
        #: the last line's PD segment when its regimen stopped at the PD reading so that the
        #: next line may start that day (issue 15 item 3)
        self.switch: SegmentResult | None = None
        self._bridge_regimen = next(iter(cat.BRIDGING.values()))
        self.p = p
        self.site = site
        self.cutoff = ordinal(p.data_cutoff)

    # -- the whole course -------------------------------------------------------

    def build(self, missing_labs: bool = False) -> Course:
        for _ in range(200):
            try:
                return self._attempt(missing_labs)
            except Retry:
                continue
        raise RuntimeError("could not fit a course before the cutoff")

    def _attempt(self, missing_labs: bool) -> Course:
        rng, p = self.rng, self.p
        index, t_prog = self._draw_index()
        course, track = self._start_course("cohort", index)
        category, descent = draw_response(rng, p, "post_car_t", course.flc_only)
        seg0 = track.segment(index, category, t_prog, None, descent)
        if seg0.outcome != "pd":
            raise Retry("progression after the cutoff")
        course.progression_day = seg0.pd_day
        course.progression_basis = "imwg_labs"
        if missing_labs:
            return self._missing_labs_course(course, track, index)
        if rng.random() < p.p_disease_status_obs:
            course.status_obs_day = seg0.pd_day
        self._post_car_t_maintenance(course, index, seg0)
        self._salvage(course, track, seg0.confirm_day or 0)
        course.assessments = track.points
        return self._finish(course)

    def _post_car_t_maintenance(self, course: Course, index: int, seg0: SegmentResult) -> None:
        """Lenalidomide maintenance in response, until the progression is confirmed.

        Started without progression, it neither dates the progression (the labs do)
        nor makes a line; its doses after the progression reading continue it.
        """
        p = self.p
        extra = self._extra if self._extra is not None else random.Random(self.rng.random())
        if extra.random() >= p.p_post_car_t_maintenance or seg0.pd_day is None:
            return
        start = index + extra.randint(*p.post_car_t_maintenance_start_days)
        if start >= seg0.pd_day - 14:
            return
        lay_regimen(course, MAINTENANCE, start, seg0.confirm_day or seg0.pd_day, 0)

    def build_no_progression(self) -> Course:
        """A BCMA CAR-T patient still in remission at the cutoff."""
        rng, p = self.rng, self.p
        hi = min(ordinal(p.index_date_max), self.cutoff - 180)
        lo = min(hi, max(ordinal(p.index_date_min), hi - p.no_progression_index_window_days))
        index = rng.randint(lo, hi)
        course, track = self._start_course("no_progression", index)
        category = weighted(rng, [("CR", 0.6), ("VGPR", 0.4)])
        descent = DESCENTS[category][rng.randrange(len(DESCENTS[category]))]
        track.segment(index, category, math.inf, None, descent)
        course.assessments = track.points
        return self._finish(course)

    def _draw_index(self) -> tuple[int, float]:
        rng, p = self.rng, self.p
        lo, hi = ordinal(p.index_date_min), ordinal(p.index_date_max)
        for _ in range(100):
            t_prog = max(float(p.car_t_to_progression_min_days),
                         lognormal_days(rng, p.car_t_to_progression_median_days,
                                        p.car_t_to_progression_sigma))
            latest = min(hi, self.cutoff - int(max(t_prog, 200.0)) - 280)
            if latest >= lo:
                # Exactly one draw whatever the range (randint's may vary), so another
                # era moves the same courses in time rather than drawing new ones.
                return lo + int(rng.random() * (latest - lo + 1)), t_prog
        raise Retry("no index date fits")

    def _start_course(self, kind: str, index: int) -> tuple[Course, LabTrack]:
        rng, p = self.rng, self.p
        birth, gender = demographics(rng, p, index)
        course = Course(kind=kind, site=self.site, birth_date=birth, gender=gender)
        marker, baseline = setup_marker(course, rng, p)
        product = index_product_key(rng, p)
        course.index_day = index
        course.index_product = cat.DRUGS[product].ingredient
        prior = prior_and_bridging(course, rng, p, index, product)
        course.prior_regimens = len(prior)
        self.used = set(prior)
        self.other_product = "cilta_cel" if product == "ide_cel" else "ide_cel"
        self.previous = frozenset({"cyclophosphamide", "fludarabine", course.index_product})
        track = LabTrack(rng, p, marker, self.cutoff)
        first = index - rng.randint(*p.labs_before_index_days)
        track.pre_treatment(first, index, baseline)
        return course, track

    def _finish(self, course: Course) -> Course:
        days = [a.day for a in course.assessments]
        days += [d.end if d.end is not None else d.day for d in course.doses]
        days += [pr.day for pr in course.procs]
        course.last_contact = course.death_day if course.death_day is not None else max(days)
        course.doses.sort(key=lambda d: (d.day, d.drug))
        return course

    # -- lines after progression -----------------------------------------------

    def _salvage(self, course: Course, track: LabTrack, confirm: int) -> None:
        rng, p = self.rng, self.p
        prev_start = (course.index_day or 0) + min(p.lymphodepletion_days)
        last_start = self.cutoff - p.min_follow_up_for_new_line_days
        line = 1
        self.switch = None
        self.tolerant = rng.random() < p.p_lines_tolerant
        p_next = p.p_next_line_tolerant if self.tolerant else p.p_next_line
        while True:
            allow_car_t = confirm + 30 + p.car_t_manufacturing_days[1] + 5 <= last_start
            key, regimen = choose_regimen(rng, p, line, self.previous, self.used,
                                          self.other_product, allow_car_t, confirm)
            gap = rng.randint(*p.line_start_after_confirm_days)
            apheresis = None
            if regimen.kind == "car_t":
                apheresis = confirm + gap
                start = apheresis + rng.randint(*p.car_t_manufacturing_days)
            elif regimen.kind == "asct":
                start = confirm + rng.randint(*p.transplant_start_after_confirm_days)
                self.induction = self._induction_days()
                if self.induction:  # induction first: the line starts with it
                    start = confirm + gap
            else:
                start = confirm + gap
            start = max(start, prev_start + p.min_days_between_line_starts, confirm + 1)
            if start > last_start:
                if line == 1:
                    raise Retry("no time for a first salvage line")
                track.follow(self.cutoff + 1)
                return
            lead_in = self._start_on_pd_reading(track, regimen, prev_start)
            if lead_in is not None:
                start = lead_in[0]
            # bridging after the apheresis: the CAR-T line starts with it (IMWG)
            self.bridge = self._bridging_days(apheresis, start)
            start -= self.bridge
            track.follow(start)
            track.ensure_baseline(start)
            if apheresis is not None:
                course.procs.append(Proc("car_t_harvest", apheresis))
            seg = self._run_line(course, track, line, key, regimen, start,
                                 lead_in[1] if lead_in else None)
            if seg.outcome == "death" or (seg.outcome == "pd" and seg.death_day is not None):
                if seg.outcome == "pd":
                    track.follow(seg.death_day or 0)
                course.death_day = seg.death_day
                return
            if seg.outcome == "censored":
                return
            confirm = seg.confirm_day or 0
            prev_start = start
            self.previous = frozenset(course.lines[-1].ingredients)
            self.used.add(key)
            if line >= p.max_lines or rng.random() >= p_next:
                death = confirm + max(7, int(lognormal_days(
                    rng, p.bsc_survival_median_days, p.bsc_survival_sigma)))
                track.follow(death)
                if death <= self.cutoff:
                    course.death_day = death
                return
            line += 1

    def _start_on_pd_reading(self, track: LabTrack, regimen: cat.Regimen,
                             prev_start: int) -> tuple[int, Assessment] | None:
        """(start day, the PD confirmation) when the next line starts on the PD reading's day.

        Only a cyclic regimen (a CAR-T or a transplant needs weeks of preparation) and
        only when the PD reading is measurable disease for a line start and the confirmation
        is a small further rise, so that on the new line it reads as stable disease from its
        baseline (the PD reading).
        """
        seg, self.switch = self.switch, None
        if seg is None or regimen.kind != "cyclic" or seg.pd_day is None:
            return None
        first, second = track.points[-2], track.points[-1]
        if (first.day, second.day) != (seg.pd_day, seg.confirm_day) or \
                seg.pd_day < prev_start + self.p.min_days_between_line_starts or \
                second.value > first.value * 1.2 or first.value < track.marker.floor:
            return None
        track.points.pop()  # drawn after the new start: the new line's first assessment
        return seg.pd_day, second

    def _stops_at_pd_reading(self, regimen: cat.Regimen, seg: SegmentResult) -> bool:
        """Whether this line's regimen stops at its PD reading (the next may start then)."""
        if seg.outcome != "pd" or seg.death_day is not None or regimen.kind != "cyclic" or \
                self._extra is None:
            return False
        return self._extra.random() < self.p.p_next_line_on_pd_reading

    def _run_line(self, course: Course, track: LabTrack, line: int, key: str,
                  regimen: cat.Regimen, start: int,
                  lead_in: Assessment | None = None) -> SegmentResult:
        rng, p = self.rng, self.p
        group = regimen_group(regimen)
        category, descent = draw_response(rng, p, group, course.flc_only)
        category, descent = fit_under_ceiling(track.marker, track.last.value, category,
                                              descent)
        pfs_days = 0.0 if category == "PD" else lognormal_days(
            rng, p.pfs_median_days[group][category], p.pfs_sigma)
        if group != "tce":
            pfs_days *= by_line(p.pfs_line_factor, line)
        hazard = p.death_hazard_per_month[group] / DAYS_PER_MONTH
        if self.tolerant:
            hazard *= p.tolerant_hazard_ratio
        high = p.high_burden_dflc_mg_l if course.flc_only else p.high_burden_serum_g_dl
        if track.last.value >= high:
            hazard *= p.high_burden_hazard_ratio
        death = start + max(7, math.ceil(rng.expovariate(hazard)))
        ld_start = start + self.bridge
        if regimen.kind == "car_t":
            death = max(death, ld_start - min(p.lymphodepletion_days) + 3)
        if self.bridge:  # the line must reach its infusion: no progression during bridging
            if category == "PD":
                category, descent = "SD", ()
            pfs_days = max(pfs_days, self.bridge + 60.0)
        if lead_in is not None:  # the previous line's confirmation comes before any death
            death = max(death, lead_in.day + 7)
        seg = track.segment(start, category, pfs_days, death, descent, lead_in)
        if seg.outcome == "pd":
            stop = seg.confirm_day or start
            if self._stops_at_pd_reading(regimen, seg):
                stop, self.switch = seg.pd_day or start, seg
        elif seg.outcome == "death":
            stop = seg.death_day or start
        else:
            stop = (seg.last_day or start) + 1
        transplant = False
        if regimen.kind == "car_t":
            product = regimen.components[-1].drug
            if self.bridge:
                lay_regimen(course, self._bridge_regimen, start, min(stop, ld_start - 10), line)
            lay_car_t(course, product, ld_start - min(p.lymphodepletion_days), line, p)
        elif regimen.kind == "asct" and not self._lay_induction(course, start, stop, line, seg):
            lay_regimen(course, INDUCTION, start, stop, line)  # progressed during induction
        elif regimen.kind == "asct":
            transplant = True
            mel = start + self.induction
            course.doses.append(Dose("melphalan", mel, None, line))
            course.procs.append(Proc("auto_transplant", mel + 2))
            if rng.random() < p.p_lenalidomide_maintenance:
                m_start = mel + 2 + rng.randint(*p.maintenance_start_after_transplant_days)
                # Maintenance is for disease that has not progressed: none once the
                # first PD assessment has been seen (or when it would come first).
                if seg.pd_day is None or m_start < seg.pd_day:
                    lay_regimen(course, MAINTENANCE, m_start, stop, line)
        else:
            lay_regimen(course, regimen, start, stop, line,
                        self._added_later(regimen, track, start, stop, seg))
        self._drop_cr_evidence(track, start, seg)
        course.lines.append(line_truth(course, line, key, start, seg, transplant))
        return seg

    def _bridging_days(self, apheresis: int | None, ld_start: int) -> int:
        """Days of bridging before a salvage CAR-T's lymphodepletion (0: none).

        Bridging runs from 3-7 days after the apheresis to 10 days before the
        lymphodepletion, at least a week (own random stream).
        """
        if apheresis is None or self._extra is None or \
                self._extra.random() >= self.p.p_bridging_salvage_car_t:
            return 0
        bridge_start = apheresis + self._extra.randint(3, 7)
        self._bridge_regimen = cat.BRIDGING[self._extra.choice(sorted(cat.BRIDGING))]
        return ld_start - bridge_start if ld_start - bridge_start >= 17 else 0

    def _induction_days(self) -> int:
        """Days of induction before high-dose melphalan (0: none), own random stream.

        Not after a carfilzomib line: the induction would read as that line going on.
        """
        if self._extra is None or self._extra.random() >= self.p.p_induction_before_asct:
            return 0
        if "carfilzomib" in self.previous:
            return 0
        return self._extra.randint(*self.p.induction_days)

    def _lay_induction(self, course: Course, start: int, stop: int, line: int,
                       seg: SegmentResult) -> bool:
        """Lay the induction before a transplant; False when the transplant cannot follow.

        Induction + melphalan + ASCT are one line (IMWG) only without progression: a
        line that progresses (or stops) during induction never gets its transplant.
        """
        if not self.induction:
            return True
        mel = start + self.induction
        if stop <= mel + 2 or (seg.pd_day is not None and seg.pd_day <= mel + 2):
            self.induction = 0
            return False
        lay_regimen(course, INDUCTION, start, mel - 14, line)
        return True

    def _added_later(self, regimen: cat.Regimen, track: LabTrack, start: int, stop: int,
                     seg: SegmentResult) -> dict[str, int]:
        """An antibody added to Pd after 35-55 days, without progression (issue 15).

        Only when the line is assessed before the addition, has no PD reading before it
        and goes on for a month after it: the derive rule (IMWG) then keeps it one line.
        """
        dara = [c.drug for c in regimen.components if c.drug in ADDED_LATER]
        first = {cat.DRUGS[c.drug].ingredient for c in regimen.components
                 if c.drug not in ADDED_LATER} - {"dexamethasone"}
        # what starts on day 1 must be new, or the line would read as the last one going on
        if not dara or not first - self.previous or self._extra is None or \
                self._extra.random() >= self.p.p_drug_added_in_line:
            return {}
        offset = self._extra.randint(35, 55)
        day = start + offset
        assessed = any(start < a.day <= day for a in track.points)
        if not assessed or stop <= day + 28 or (seg.pd_day is not None and seg.pd_day <= day):
            return {}
        return {dara[0]: offset}

    def _drop_cr_evidence(self, track: LabTrack, start: int, seg: SegmentResult) -> None:
        """Leave out the immunofixation or the marrow of a CR line now and then.

        Without them CR cannot be confirmed (IMWG): the line is VGPR by labs, and
        derive says which test was missing.
        """
        if "CR" not in seg.labels or self._extra is None:
            return
        if self._extra.random() >= self.p.p_cr_evidence_missing:
            return
        drop_ife = self._extra.random() < 0.5
        for point in track.points:
            if point.day > start and point.label == "CR":
                if drop_ife:
                    point.ife = None
                else:
                    point.marrow = None
        seg.labels = ["VGPR" if label == "CR" else label for label in seg.labels]

    # -- progression seen only through a new line --------------------------------

    def _missing_labs_course(self, course: Course, track: LabTrack, index: int) -> Course:
        """No labs after the infusion: one line, then death (progression by new line)."""
        rng, p = self.rng, self.p
        progression = course.progression_day or index
        start = progression + rng.randint(0, 10)
        death = min(start + rng.randint(60, 300), self.cutoff - 1)
        if death - start < 45:
            raise Retry("too close to the cutoff")
        course.progression_basis = "new_line_fallback"
        options = [(k, w) for k, w in p.non_tce_weights.items()
                   if k not in self.used and cat.NON_TCE_REGIMENS[k].kind == "cyclic"]
        key = weighted(rng, options)
        lay_regimen(course, cat.NON_TCE_REGIMENS[key], start, death, 1)
        seg = SegmentResult("death", [], death_day=death)
        course.lines.append(line_truth(course, 1, key, start, seg, False))
        course.death_day = death
        course.assessments = [a for a in track.points if a.day <= index]
        return self._finish(course)
