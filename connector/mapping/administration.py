"""MedicationAdministration → one ``medication_exposure`` row per study ingredient.

The drug is named by ``medicationCodeableConcept``, a contained Medication or a
separate one (indexed in the first pass); a Medication's ingredients count too,
for compounded or local items. Requests, dispenses and statements name their drug
the same way (connector/mapping/orders.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from connector.mapping.fhir import Reject, event_dates, provenance, reference_target
from connector.mapping.match import DrugMatch
from connector.mapping.modifiers import unknown_modifier
from connector.mapping.writer import structure_problem

if TYPE_CHECKING:
    from connector.mapping.resources import RawRow, SiteMapper


def map_administration(mapper: SiteMapper, row: RawRow, res: dict) -> None:
    map_drug_event(mapper, row, res, lambda r: event_dates(r, "effective"), "effective")


def map_drug_event(mapper: SiteMapper, row: RawRow, res: dict,
                   period: Callable[[dict], tuple[dt.date, dt.date | None]], what: str) -> None:
    """An administration, request, dispense or statement → its exposures; ``period``
    reads the (start, end) the resource type records (``what``: the date's name)."""
    concepts, external = medication_concepts(mapper, res)
    matches = mapper.match_drug(concepts)
    if not matches:
        mapper.unmapped(row.resource_type, concepts)
        return
    status = mapper.status(row.resource_type, res)
    patient = mapper.subject(res)
    start, end = period(res)
    mapper.check_date(start, patient, what)
    if external is not None:
        check_medication(mapper, external)
    defer_exposures(mapper, row, res, patient, start, end, status, matches)


def defer_exposures(mapper: SiteMapper, row: RawRow, res: dict, patient: str, start: dt.date,
                    end: dt.date | None, status: str, matches: list[DrugMatch]) -> None:
    """Queue one exposure per matched ingredient (administrations and orders alike)."""
    order = (start, row.resource_type, row.resource_id)
    mapper.defer(row, res, [(
        "medication_exposure", (patient, m.ingredient, start), order,
        {"site": mapper.site, "patient_source_id": patient,
         "source_type": row.resource_type, "source_id": row.resource_id,
         "version_id": row.version_id, "ingredient": m.ingredient,
         "drug_class": m.drug_class, "start_date": start, "end_date": end,
         "status": status, **provenance(m.coding)}) for m in matches])


def medication_concepts(mapper: SiteMapper, res: dict) -> tuple[list[object], str | None]:
    """The concepts naming the drug, and the id of a separate Medication if one is used."""
    if "medicationCodeableConcept" in res:
        concept = res["medicationCodeableConcept"]
        if not isinstance(concept, dict):
            raise Reject("medicationCodeableConcept is not a CodeableConcept")
        return [concept], None
    ref = res.get("medicationReference")
    if ref is None:
        raise Reject("missing medication")
    if not isinstance(ref, dict):
        raise Reject("medicationReference is not a Reference")
    text = ref.get("reference")
    if not isinstance(text, str) or not text:
        if isinstance(ref.get("display"), str):
            return [{"text": ref["display"]}], None
        raise Reject("medicationReference has no reference")
    if text.startswith("#"):
        medication = _contained(res, text[1:])
        if medication is None:
            raise Reject("medicationReference: contained Medication not found")
        return _medication_codes(medication), None
    target = reference_target(ref)
    if target is None or target[0] != "Medication":
        raise Reject("medicationReference is not a Medication reference")
    held = mapper.medications.get(target[1])
    if held is None:
        raise Reject("medicationReference: Medication not found")
    return _medication_codes(held[1]), target[1]


def check_medication(mapper: SiteMapper, medication_id: str) -> None:
    """Validate a separate Medication once; quarantine it and its users when invalid."""
    if medication_id not in mapper.medication_problem:
        row, res = mapper.medications[medication_id]
        problem = (unknown_modifier(res, mapper.cs.allowed_modifiers("Medication"), row.body)
                   or structure_problem("Medication", res, mapper.cs.max_string_chars,
                                        row.body))
        mapper.medication_problem[medication_id] = problem
        if problem:
            mapper.quarantine(row, problem)
    if mapper.medication_problem[medication_id]:
        raise Reject("medicationReference: Medication is invalid")


def _contained(res: dict, local_id: str) -> dict | None:
    contained = res.get("contained")
    if not isinstance(contained, list):
        return None
    for item in contained:
        if (isinstance(item, dict) and item.get("resourceType") == "Medication"
                and item.get("id") == local_id):
            return item
    return None


def _medication_codes(medication: dict) -> list[object]:
    """A Medication's code, then its ingredients' codes (for compounded or local items)."""
    concepts: list[object] = []
    if isinstance(medication.get("code"), dict):
        concepts.append(medication["code"])
    ingredients = medication.get("ingredient")
    if isinstance(ingredients, list):
        for item in ingredients:
            if isinstance(item, dict) and isinstance(item.get("itemCodeableConcept"), dict):
                concepts.append(item["itemCodeableConcept"])
    return concepts
