"""Clinical plausibility of the simulated courses: maintenance timing, lab ceilings."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import random
from pathlib import Path

import orjson
import pytest

from connector.synth import simulate
from connector.synth.course import ordinal
from connector.synth.draws import fit_under_ceiling
from connector.synth.labs import PD_RISE, Marker
from connector.synth.params import DEFAULT_PARAMS
from connector.synth.regimens import by_line, tce_availability

ROOT = Path(__file__).resolve().parents[2]
LOINC_ANALYTE = {"33358-3": "serum_m_protein", "36916-5": "kappa_flc",
                 "33944-0": "lambda_flc", "48378-4": "flc_ratio"}


@pytest.fixture(scope="module")
def courses() -> list:
    return [c for _, c in simulate(2500, 2, seed=11, noise=False)]


def test_maintenance_starts_before_the_first_pd_of_its_line(courses: list) -> None:
    with_maintenance = 0
    for course in courses:
        for ln in course.lines:
            if ln.regimen != "asct":
                continue
            maint = [d.day for d in course.doses if d.line == ln.line and d.drug == "lenalidomide"]
            if not maint:
                continue
            with_maintenance += 1
            assert min(maint) > ln.start + 2  # after the transplant
            if ln.pfs_event is not None:
                assert min(maint) < ln.pfs_event  # never started after progression
    assert with_maintenance >= 10


def test_marker_never_exceeds_its_ceiling(courses: list) -> None:
    p = DEFAULT_PARAMS
    serum = [a.value for c in courses if not c.flc_only for a in c.assessments]
    dflc = [a.value for c in courses if c.flc_only for a in c.assessments]
    assert max(serum) <= p.burden_ceiling_serum_g_dl
    assert max(dflc) <= p.burden_ceiling_dflc_mg_l
    assert max(serum) >= 0.9 * p.burden_ceiling_serum_g_dl  # the ceiling is reached


@pytest.mark.parametrize("serum", [True, False])
def test_progression_is_clear_and_under_the_cap(serum: bool) -> None:
    cap = 7.5 if serum else 6000.0
    marker = Marker(serum, 1.3 if serum else 320.0, cap)
    rng = random.Random(5)
    for i in range(400):
        nadir = marker.rnd(marker.max_nadir * i / 399)
        first, second = marker.progression(nadir, rng)
        assert second <= cap and first < second
        assert first >= nadir * (1 + PD_RISE) - marker.step
        assert first - nadir >= (0.8 if serum else 160.0) - marker.step


def test_a_line_near_the_ceiling_responds_enough_to_progress_under_it() -> None:
    serum = Marker(True, 1.3, 7.5)
    assert fit_under_ceiling(serum, 2.0, "SD", ()) == ("SD", ())
    assert fit_under_ceiling(serum, 6.0, "PD", ()) == ("MR", ())
    assert fit_under_ceiling(serum, 7.5, "SD", ()) == ("PR", ())
    assert fit_under_ceiling(serum, 7.5, "VGPR", ("PR",)) == ("VGPR", ("PR",))
    flc = Marker(False, 320.0, 6000.0, vgpr_floor=20.0)
    assert fit_under_ceiling(flc, 5000.0, "SD", ()) == ("PR", ())
    assert fit_under_ceiling(flc, 1000.0, "PD", ()) == ("PD", ())


def _limits() -> dict[str, tuple[float, float]]:
    with (ROOT / "mappings" / "analytes.csv").open(newline="") as fh:
        return {r["analyte"]: (float(r["min"]), float(r["max"]))
                for r in csv.DictReader(fh) if r["min"] and r["max"]}


@pytest.mark.parametrize("which", ["small_cohort", "committed_cohort"])
def test_lab_values_are_inside_the_map_stage_plausible_range(
        which: str, request: pytest.FixtureRequest) -> None:
    folder, _ = request.getfixturevalue(which)
    limits = _limits()
    checked = 0
    for path in sorted(folder.glob("*/Observation.ndjson")):
        for line in path.read_bytes().splitlines():
            res = orjson.loads(line)
            analyte = LOINC_ANALYTE.get(res["code"]["coding"][0]["code"])
            if analyte is None or "valueQuantity" not in res:
                continue
            lo, hi = limits[analyte]
            assert lo <= res["valueQuantity"]["value"] <= hi, analyte
            if analyte == "serum_m_protein":
                assert res["valueQuantity"]["value"] <= DEFAULT_PARAMS.burden_ceiling_serum_g_dl
            checked += 1
    assert checked > 1000


def test_tce_availability_rises_over_the_era() -> None:
    p = DEFAULT_PARAMS
    lo, hi = (ordinal(d) for d in p.tce_availability_ramp)
    assert tce_availability(p, lo - 400) == p.tce_early_factor < 0.5
    assert p.tce_early_factor < tce_availability(p, (lo + hi) // 2) < 1.0
    assert tce_availability(p, hi) == tce_availability(p, hi + 400) == 1.0
    flat = dataclasses.replace(p, tce_availability_ramp=(dt.date(2019, 1, 1),) * 2)
    assert tce_availability(flat, ordinal("2019-01-01")) == 1.0  # no division by zero


def test_line_values_repeat_the_last_one() -> None:
    factors = DEFAULT_PARAMS.pfs_line_factor
    assert by_line(factors, 1) == 1.0  # the first line keeps the calibrated PFS
    assert by_line(factors, 9) == factors[-1] < by_line(factors, 2) < 1.0
