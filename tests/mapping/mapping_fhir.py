"""Builders for small FHIR R4 resources used by the mapping tests (no other test imports it)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from connector.extract.store import RawStore

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
ATC = "http://www.whocc.no/atc"
NDC = "http://hl7.org/fhir/sid/ndc"
UCUM = "http://unitsofmeasure.org"

Resource = dict[str, Any]


def concept(system: str, code: str, display: str | None = None) -> dict:
    coding: dict[str, str] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def patient(pid: str, birth: str = "1955-04-02", gender: str = "female", **extra: Any) -> Resource:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": gender, **extra}


def med_admin(mid: str, pid: str, med: dict | None = None, date: str = "2022-03-01",
              status: str = "completed", **extra: Any) -> Resource:
    res: Resource = {"resourceType": "MedicationAdministration", "id": mid, "status": status,
                     "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date}
    if med is not None:
        res["medicationCodeableConcept"] = med
    res.update(extra)
    if "effectivePeriod" in extra and "effectiveDateTime" not in extra:
        del res["effectiveDateTime"]
    return res


def procedure(prid: str, pid: str, code: dict, date: str = "2022-03-01",
              status: str = "completed", **extra: Any) -> Resource:
    res: Resource = {"resourceType": "Procedure", "id": prid, "status": status, "code": code,
                     "subject": {"reference": f"Patient/{pid}"}, "performedDateTime": date,
                     **extra}
    if "performedPeriod" in extra and "performedDateTime" not in extra:
        del res["performedDateTime"]
    return res


def observation(oid: str, pid: str, loinc: str, date: str = "2022-03-01",
                value: Any = None, unit: str | None = "g/dL", status: str = "final",
                **extra: Any) -> Resource:
    res: Resource = {"resourceType": "Observation", "id": oid, "status": status,
                     "code": concept(LOINC, loinc), "subject": {"reference": f"Patient/{pid}"},
                     "effectiveDateTime": date}
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity.update({"unit": unit, "system": UCUM, "code": unit})
        res["valueQuantity"] = quantity
    res.update(extra)
    if "effectivePeriod" in extra and "effectiveDateTime" not in extra:
        del res["effectiveDateTime"]
    return res


def load(engine, resources: list[Resource], site: str = "site_a",
         base: str | None = None) -> None:
    """Put resources into the raw store the way the extract stage does; ``base``: the
    server's base URL, under which absolute references are local."""
    with engine.begin() as conn:
        store = RawStore(conn)
        store.base = base
        for res in resources:
            store.add(copy.deepcopy(res), site=site, source="test")
        store.flush()


def write_ndjson(folder: Path, site: str, lines: list[bytes | Resource]) -> None:
    """Write one NDJSON file per site; bytes lines are written as they are."""
    (folder / site).mkdir(parents=True, exist_ok=True)
    with (folder / site / "resources.ndjson").open("wb") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else orjson.dumps(line))
            fh.write(b"\n")
