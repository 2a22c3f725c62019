"""An independent, deliberately plain reading of a synthetic cohort, for the tests.

It re-derives what the ground truth claims from the NDJSON alone (newest version
of each resource, values only, completed administrations only) with the IMWG
rules of /work/shared/reference/imwg.md, without importing the generator's logic.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from connector.synth.catalog import DRUGS, HCPCS, RXNORM

MEDICATION_TYPES = ("MedicationAdministration", "MedicationRequest", "MedicationDispense",
                    "MedicationStatement")

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "cohort"
LOINC_KEYS = {"33358-3": "m", "36916-5": "kappa", "33944-0": "lambda", "48378-4": "ratio",
              "25700-6": "ife", "11118-7": "marrow", "97509-4": "status"}
RANK = {"NE": 0, "PD": 1, "SD": 2, "MR": 3, "PR": 4, "VGPR": 5, "CR": 6}

# Code → ingredient, built from the code lists (RxNorm, HCPCS) and the texts.
_BY_CODE: dict[tuple[str, str], str] = {}
_BY_TEXT: dict[str, str] = {}
for _d in DRUGS.values():
    if _d.rxnorm:
        _BY_CODE[(RXNORM, _d.rxnorm)] = _d.ingredient
    if _d.hcpcs:
        _BY_CODE[(HCPCS, _d.hcpcs)] = _d.ingredient
    _BY_TEXT[_d.text] = _d.ingredient


def day_of(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


@dataclass
class Point:
    day: dt.date
    m: float | None = None
    kappa: float | None = None
    lam: float | None = None
    ife: str | None = None
    marrow: float | None = None


@dataclass
class PatientData:
    points: dict[dt.date, Point] = field(default_factory=dict)
    meds: list[tuple[dt.date, dt.date, str]] = field(default_factory=list)  # start, end, ingr
    statuses: list[str] = field(default_factory=list)
    status_days: list[dt.date] = field(default_factory=list)
    procedures: list[tuple[dt.date, str]] = field(default_factory=list)
    all_days: list[dt.date] = field(default_factory=list)


def _newest(path: Path) -> list[dict]:
    """Resources of one file, newest version per id (later lines win ties)."""
    best: dict[str, dict] = {}
    for line in path.read_bytes().splitlines():
        res = orjson.loads(line)
        old = best.get(res["id"])
        if old is None or int(res["meta"]["versionId"]) >= int(old["meta"]["versionId"]):
            best[res["id"]] = res
    return list(best.values())


def ingredient_of(concept: dict) -> str:
    for coding in concept.get("coding", []):
        found = _BY_CODE.get((coding["system"], coding["code"]))
        if found:
            return found
    return _BY_TEXT[concept["text"]]


def read_site(folder: Path) -> dict[str, PatientData]:
    data: dict[str, PatientData] = defaultdict(PatientData)
    for res in _newest(folder / "Observation.ndjson"):
        pid = res["subject"]["reference"].split("/")[1]
        pdata = data[pid]
        day = day_of(res["effectiveDateTime"])
        pdata.all_days.append(day)
        code = res["code"]["coding"][0]["code"]
        key = LOINC_KEYS.get(code)
        if key is None or "dataAbsentReason" in res:
            continue
        if key == "status":
            pdata.status_days.append(day)
            continue
        point = pdata.points.setdefault(day, Point(day))
        if key == "ife":
            point.ife = res["valueCodeableConcept"]["text"].lower()
        elif key == "marrow":
            point.marrow = res["valueQuantity"]["value"]
        elif key == "m":
            # an undetectable M-spike may come as text or below a limit (issue 15): 0
            quantity = res.get("valueQuantity") or {}
            point.m = 0.0 if "valueString" in res or "comparator" in quantity \
                else quantity["value"]
        elif key == "kappa":
            point.kappa = res["valueQuantity"]["value"]
        elif key == "lambda":
            point.lam = res["valueQuantity"]["value"]
    for rtype in MEDICATION_TYPES:
        path = folder / f"{rtype}.ndjson"
        for res in _newest(path) if path.exists() else ():
            pid = res["subject"]["reference"].split("/")[1]
            pdata = data[pid]
            pdata.statuses.append(res["status"])
            start, end = _period(res)
            pdata.all_days.append(end)
            if res["status"] == "completed":
                pdata.meds.append((start, end, ingredient_of(res["medicationCodeableConcept"])))
    for res in _newest(folder / "Procedure.ndjson"):
        pid = res["subject"]["reference"].split("/")[1]
        day = day_of(res["performedDateTime"])
        data[pid].procedures.append((day, res["code"]["coding"][0]["code"]))
        data[pid].all_days.append(day)
    return data


def _period(res: dict) -> tuple[dt.date, dt.date]:
    """(first, last) day of an administration, request, dispense or statement."""
    if "effectivePeriod" in res:
        return day_of(res["effectivePeriod"]["start"]), day_of(res["effectivePeriod"]["end"])
    if "effectiveDateTime" in res:
        day = day_of(res["effectiveDateTime"])
        return day, day
    if res["resourceType"] == "MedicationRequest":
        start = day_of(res["authoredOn"])
        days = res["dispenseRequest"]["expectedSupplyDuration"]["value"]
    else:
        start = day_of(res["whenHandedOver"])
        days = res["daysSupply"]["value"]
    return start, start + dt.timedelta(days=days - 1)


# --------------------------------------------------------------------------- IMWG


def marker(points: list[Point], flc_only: bool, kappa_involved: bool) -> list[float]:
    if not flc_only:
        return [p.m or 0.0 for p in points]
    out = []
    for p in points:
        inv, uninv = (p.kappa, p.lam) if kappa_involved else (p.lam, p.kappa)
        out.append((inv or 0.0) - (uninv or 0.0))
    return out


def is_pd(value: float, nadir: float, serum: bool) -> bool:
    if serum:
        need = 1.0 if nadir >= 5 else 0.5
        return value >= 1.25 * nadir and value - nadir >= need
    return value >= 1.25 * nadir and value - nadir > 100


def first_confirmed_pd(values: list[float], baseline: float, serum: bool) -> int | None:
    nadir = baseline
    for i, v in enumerate(values):
        if i + 1 < len(values) and is_pd(v, nadir, serum) and is_pd(values[i + 1], nadir, serum):
            return i
        nadir = min(nadir, v)
    return None


def category(value: float, baseline: float, point: Point, serum: bool, nadir: float,
             cr_evidence: bool | None = None) -> str:
    """IMWG category of one assessment.

    ``cr_evidence`` None: CR needs negative immunofixation and marrow < 5 % on the same
    day; True/False: that evidence was (not) found anywhere in the line (lenient reading).
    """
    if is_pd(value, nadir, serum):
        return "PD"
    ratio_ok = True
    if not serum and point.kappa and point.lam:
        ratio_ok = 0.26 <= point.kappa / point.lam <= 1.65
    candidate = value == 0 if serum else ratio_ok
    if candidate:
        same_day = point.ife == "negative" and point.marrow is not None and point.marrow < 5
        if same_day if cr_evidence is None else cr_evidence:
            return "CR"
        return "VGPR"
    reduction = 1 - value / baseline
    if reduction >= 0.9:
        return "VGPR"
    if reduction >= 0.5:
        return "PR"
    if serum and reduction >= 0.25:
        return "MR"
    return "SD"


def best_response(points: list[Point], values: list[float], baseline: float,
                  serum: bool, lenient: bool = False) -> str:
    """Best category held by two consecutive assessments (NE with fewer than two)."""
    if len(values) < 2:
        return "NE"
    evidence = None
    if lenient:
        evidence = any(p.ife == "negative" for p in points) and any(
            p.marrow is not None and p.marrow < 5 for p in points)
    cats = []
    nadir = baseline
    for p, v in zip(points, values, strict=True):
        cats.append(category(v, baseline, p, serum, nadir, evidence))
        nadir = min(nadir, v)
    best = max(min(RANK[a], RANK[b]) for a, b in zip(cats, cats[1:], strict=False))
    return next(k for k, v in RANK.items() if v == best)
