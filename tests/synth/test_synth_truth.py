"""The ground truth agrees with the FHIR it describes, read independently.

Progression dates and best responses are re-derived from the labs with plain
IMWG rules; line contents, starts and separability from the completed
administrations. Both the committed fixture and a larger noisy cohort are checked.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import orjson
import pytest
from synth_reader import (
    PatientData,
    best_response,
    first_confirmed_pd,
    marker,
    read_site,
)

from connector.synth.catalog import subclass_of, therapy_class_of

COHORTS = ["small_cohort", "committed_cohort"]
CAR_T = {"idecabtagene vicleucel", "ciltacabtagene autoleucel", "axicabtagene ciloleucel"}


def d(text: str | None) -> dt.date | None:
    return None if text is None else dt.date.fromisoformat(text)


def _load(request: pytest.FixtureRequest, which: str) -> tuple[dict, dict[str, PatientData]]:
    folder, truth = request.getfixturevalue(which)
    data: dict[str, PatientData] = {}
    for site in sorted(p for p in folder.iterdir() if p.is_dir()):
        data.update(read_site(site))
    return truth, data


@pytest.fixture(scope="module", params=COHORTS)
def cohort(request: pytest.FixtureRequest) -> tuple[dict, dict[str, PatientData]]:
    return _load(request, request.param)


def _study(truth: dict, basis: str | None = None) -> list[dict]:
    return [p for p in truth["patients"] if p["in_cohort"]
            and (basis is None or p["progression_basis"] == basis)]


def test_progression_dates_follow_imwg(cohort: tuple[dict, dict]) -> None:
    truth, data = cohort
    checked = 0
    for p in _study(truth, "imwg_labs"):
        points = sorted(data[p["source_id"]].points.values(), key=lambda x: x.day)
        index = d(p["index_date"])
        before = [x for x in points if x.day <= index]
        after = [x for x in points if x.day > index]
        base = before[-1]
        serum = (base.m or 0) >= 1.0
        assert serum == (not p["flc_only"])
        kappa = (base.kappa or 0) > (base.lam or 0)
        values = marker(after, not serum, kappa)
        i = first_confirmed_pd(values, marker([base], not serum, kappa)[0], serum)
        assert i is not None and after[i].day == d(p["progression_date"]), p["source_id"]
        checked += 1
    assert checked >= 70


def test_line_responses_and_pfs_follow_imwg(cohort: tuple[dict, dict]) -> None:
    truth, data = cohort
    seen = Counter()
    for p in _study(truth, "imwg_labs"):
        points = sorted(data[p["source_id"]].points.values(), key=lambda x: x.day)
        base0 = [x for x in points if x.day <= d(p["index_date"])][-1]
        serum = not p["flc_only"]
        kappa = (base0.kappa or 0) > (base0.lam or 0)
        lines = p["lines"]
        for k, ln in enumerate(lines):
            start = d(ln["start_date"])
            stop = d(lines[k + 1]["start_date"]) if k + 1 < len(lines) else dt.date.max
            base = [x for x in points if x.day <= start][-1]
            window = [x for x in points if start < x.day < stop]
            # A reading on the next line's first day is drawn before its first dose: a PD
            # there is this line's, confirmed by the next reading (issue 15 item 3).
            on_stop = [x for x in points if x.day == stop]
            if on_stop:
                window = window + on_stop + [x for x in points if x.day > stop][:1]
                seen["next line on the PD reading"] += 1
            b = marker([base], not serum, kappa)[0]
            values = marker(window, not serum, kappa)
            if serum:
                assert b >= 1.2
            else:
                assert max(base.kappa or 0, base.lam or 0) >= 300
            expected = ln["best_response"]
            assert best_response(window, values, b, serum) == expected, (p["source_id"], k)
            # Also with CR evidence (IFE, marrow) taken from anywhere in the line.
            assert best_response(window, values, b, serum, lenient=True) == expected
            seen[ln["best_response"]] += 1
            i = first_confirmed_pd(values, b, serum)
            death = d(p["death_date"])
            if i is not None and window[i].day > stop:
                i = None  # the confirmation read on the next line, not a PD of this one
            if i is not None and (death is None or window[i].day < death):
                assert d(ln["pfs_event_date"]) == window[i].day
                assert ln["pfs_censor_date"] is None
            elif ln["pfs_event_date"] is not None:
                assert d(ln["pfs_event_date"]) == death
            else:  # censored (alive, or dead without a date: the extract cannot say when)
                assert d(ln["pfs_censor_date"]) == (window[-1].day if window else start)
                assert death is None and k == len(lines) - 1
    assert {"CR", "VGPR", "PR", "SD", "PD", "next line on the PD reading"} <= set(seen)


def test_missing_labs_patients_fall_back_to_the_new_line(cohort: tuple[dict, dict]) -> None:
    truth, data = cohort
    fallback = _study(truth, "new_line_fallback")
    assert fallback
    for p in fallback:
        pdata = data[p["source_id"]]
        assert all(day <= d(p["index_date"]) for day in pdata.points)
        assert not pdata.status_days
        # the extract shows the progression only through the next line: dated at its start
        assert p["lines"][0]["start_date"] == p["progression_date"]
        assert all(ln["best_response"] == "NE" for ln in p["lines"])


def test_lines_are_separable_from_the_administrations(cohort: tuple[dict, dict]) -> None:
    truth, data = cohort
    for p in _study(truth):
        meds = sorted(data[p["source_id"]].meds)
        index = d(p["index_date"])
        previous = {"cyclophosphamide", "fludarabine", p["index_product"]}
        assert p["index_product"] in {m[2] for m in meds if m[0] == index}
        first_start = d(p["lines"][0]["start_date"])
        # maintenance after the CAR-T, started without progression, is no line: lenalidomide
        # alone, from 60-150 days after the infusion, stopped before the first line
        maintenance = [m for m in meds if index < m[0] < first_start]
        assert {m[2] for m in maintenance} <= {"lenalidomide"}
        if maintenance:
            assert 60 <= (maintenance[0][0] - index).days <= 150
            assert maintenance[-1][1] < first_start
        post = [m for m in meds if m[0] >= first_start]
        covered = 0
        for k, ln in enumerate(p["lines"]):
            start, end = d(ln["start_date"]), d(ln["end_date"])
            mine = [m for m in post if start <= m[0] <= end]
            covered += len(mine)
            drugs = sorted({m[2] for m in mine})
            assert drugs == ln["drugs"], (p["source_id"], ln["line"])
            assert min(m[0] for m in mine) == start
            assert max(m[1] for m in mine) <= end
            transplant = ln["subclass"] == "autologous_transplant"
            assert ln["subclass"] == subclass_of(set(drugs), transplant)
            assert ln["therapy_class"] == therapy_class_of(set(drugs))
            for drug in drugs:
                spans = [m for m in mine if m[2] == drug]
                if not (transplant and drug in ("lenalidomide", "melphalan")):
                    # an antibody may be added to Pd up to ~2 months in, without progression
                    window = 90 if drug in ("daratumumab", "isatuximab", "elotuzumab") else 30
                    if ln["subclass"] == "car_t":  # bridging first, then LD and the product
                        window = 90
                    assert (spans[0][0] - start).days <= window, (drug, ln["line"])
                    gaps = [(b[0] - a[1]).days for a, b in zip(spans, spans[1:], strict=False)]
                    assert all(g <= 90 for g in gaps)
            assert set(drugs) - previous - {"dexamethasone"}, "no new drug"
            previous = set(drugs)
            if k + 1 < len(p["lines"]):
                nxt = d(p["lines"][k + 1]["start_date"])
                assert end < nxt
                assert (nxt - start).days > 30
        assert covered == len(post), "an administration after the index outside every line"


def test_truth_is_self_consistent(cohort: tuple[dict, dict]) -> None:
    truth, data = cohort
    for p in truth["patients"]:
        pdata = data[p["source_id"]]
        last = d(p["last_contact_date"])
        death = d(p["death_date"])
        assert max(pdata.all_days) <= last
        if death is not None:
            assert last == death and p["deceased"]
        elif p["deceased"]:  # death sent without its date: the last dated record
            assert max(pdata.all_days) == last
        elif p["exclusion_reason"] != "non_bcma_car_t":
            assert max(pdata.points) == last  # the last contact is a lab assessment
        if not p["in_cohort"]:
            assert p["lines"] == [] and p["progression_date"] is None
            products = {m[2] for m in pdata.meds} & CAR_T
            expected = {"no_car_t": set(), "non_bcma_car_t": {"axicabtagene ciloleucel"}}
            assert products == expected.get(p["exclusion_reason"], {p["index_product"]})
            continue
        prog = d(p["progression_date"])
        assert d(p["index_date"]) < prog and p["lines"]
        assert [ln["line"] for ln in p["lines"]] == list(range(1, len(p["lines"]) + 1))
        assert d(p["lines"][0]["start_date"]) >= prog
        for k, ln in enumerate(p["lines"]):
            start, end = d(ln["start_date"]), d(ln["end_date"])
            event, censor = d(ln["pfs_event_date"]), d(ln["pfs_censor_date"])
            assert (event is None) != (censor is None)
            assert start <= end <= last
            undated_death = p["deceased"] and death is None
            # a line that ended in a death the extract does not date, before any assessment,
            # is censored at its start (derive's rule for a line without assessments)
            assert start < (event or censor) <= last or (undated_death and censor == start)
            nxt = d(p["lines"][k + 1]["start_date"]) if k + 1 < len(p["lines"]) else None
            if nxt is not None:
                assert event is not None and event <= nxt  # PD read on its first day
            ttnt = (d(ln["ttnt_event_date"]), d(ln["ttnt_censor_date"]))
            assert ttnt == ((nxt, None) if nxt else (death, None) if death else (None, last))


def test_noise_is_present(small_cohort: tuple[Path, dict]) -> None:
    folder, _ = small_cohort
    statuses: Counter = Counter()
    versions: list[tuple[str, str]] = []
    duplicates = 0
    absent = 0
    for site in sorted(p for p in folder.iterdir() if p.is_dir()):
        seen: set[bytes] = set()
        for line in (site / "MedicationAdministration.ndjson").read_bytes().splitlines():
            res = orjson.loads(line)
            statuses[res["status"]] += 1
            res.pop("id")
            key = orjson.dumps(res, option=orjson.OPT_SORT_KEYS)
            duplicates += key in seen
            seen.add(key)
        for line in (site / "Observation.ndjson").read_bytes().splitlines():
            res = orjson.loads(line)
            versions.append((res["id"], res["meta"]["versionId"]))
            absent += "dataAbsentReason" in res
    assert statuses["entered-in-error"] >= 1 and statuses["not-done"] >= 1
    assert duplicates >= 3 and absent >= 3
    twice = [i for i, n in Counter(i for i, _ in versions).items() if n > 1]
    assert twice
    for rid in twice:
        order = [v for i, v in versions if i == rid]
        assert order == ["1", "2"]  # version 2 is written after version 1
