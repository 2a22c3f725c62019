"""Observation → a ``lab_result`` row: the analyte by code, the value in its canonical unit.

Most Observations of a lab-heavy extract are not study labs, so finding the analyte
is the hot path (``study_lab_coding``, memoized per site). Lab names are too ambiguous
to match by text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from connector.codes.labfilter import study_lab_coding
from connector.codes.labtext import special_value
from connector.mapping.fhir import (
    Coding,
    Excluded,
    Reject,
    code_of,
    codings,
    concept_text,
    event_dates,
)
from connector.mapping.match import match_coded_text, match_coded_value, unit_rule

if TYPE_CHECKING:
    from connector.mapping.resources import RawRow, SiteMapper

Row = dict[str, Any]
_COMPARATORS = frozenset({"<", "<=", ">=", ">"})


def map_observation(mapper: SiteMapper, row: RawRow, res: dict) -> None:
    code = code_of(res)
    hit = lab_hit(mapper, code)
    if hit is None:
        mapper.unmapped(row.resource_type, [code])
        return
    analyte = hit[0]
    mapper.status(row.resource_type, res)
    patient = mapper.subject(res)
    effective, _ = event_dates(res, "effective")
    mapper.check_date(effective, patient, "effective")
    value = lab_value(mapper, analyte, res)
    mapper.defer(row, res, [(
        "lab_result", (patient, analyte, effective),
        (effective, row.resource_type, row.resource_id),
        {"site": mapper.site, "patient_source_id": patient, "source_id": row.resource_id,
         "version_id": row.version_id, "analyte": analyte, "effective_date": effective,
         **value})])


def lab_hit(mapper: SiteMapper, concept: dict) -> tuple[str, Coding] | None:
    """``match_lab`` on the raw codings, decided as the Observation filter decides."""
    found = study_lab_coding(mapper.cs, concept, mapper.lab_codes)
    if found is None:
        return None
    analyte, item = found
    display = item.get("display")
    return analyte, Coding(item["system"].split("|", 1)[0], item["code"],
                           display if isinstance(display, str) else None)


def lab_value(mapper: SiteMapper, analyte: str, res: dict) -> Row:
    if mapper.cs.analytes[analyte].kind == "coded":
        return _coded_value(mapper, analyte, res)
    return _quantity_value(mapper, analyte, res)


def _quantity_value(mapper: SiteMapper, analyte: str, res: dict) -> Row:
    spec = mapper.cs.analytes[analyte]
    special = special_value(mapper.cs.lab_text, analyte, spec.canonical_unit, res)
    if special is not None:
        return special
    if "valueQuantity" in res:
        quantity = res["valueQuantity"]
        if not isinstance(quantity, dict):
            raise Reject("valueQuantity is not a Quantity")
        raw_value = quantity.get("value")
        units = [u for u in (quantity.get("code"), quantity.get("unit"))
                 if isinstance(u, str) and u.strip()]
        comparator = quantity.get("comparator")
    elif "valueInteger" in res:
        raw_value, units, comparator = res["valueInteger"], [], None
    else:
        _no_value(res, f"expected valueQuantity for {analyte}")
    if raw_value is None:
        raise Reject("missing value")
    if isinstance(raw_value, bool) or not isinstance(raw_value, int | float):
        raise Reject("valueQuantity.value is not a number")
    if comparator is not None and comparator not in _COMPARATORS:
        raise Reject("unknown valueQuantity.comparator")
    factor, unit = _unit(mapper, analyte, units)
    value = float(f"{raw_value * factor:.10g}")
    if (spec.min is not None and value < spec.min) or (
            spec.max is not None and value > spec.max):
        raise Reject(f"implausible value for {analyte}: {value:g} {unit} outside "
                     f"{spec.min:g}–{spec.max:g}")
    return {"value": value, "unit": unit, "value_code": None,
            "original_value": f"{comparator or ''}{raw_value}",
            "original_unit": units[-1] if units else None}


def _unit(mapper: SiteMapper, analyte: str, units: list[str]) -> tuple[float, str]:
    spec = mapper.cs.analytes[analyte]
    if not units:
        if spec.unit_required:
            raise Reject(f"missing unit for {analyte}")
        return 1.0, spec.canonical_unit
    for unit in units:
        rule = unit_rule(mapper.cs, analyte, unit)
        if rule:
            return rule
    raise Reject(f"unknown unit {units[0][:30]!r} for {analyte}")


def _coded_value(mapper: SiteMapper, analyte: str, res: dict) -> Row:
    if "valueCodeableConcept" in res:
        concept = res["valueCodeableConcept"]
        if not isinstance(concept, dict):
            raise Reject("valueCodeableConcept is not a CodeableConcept")
        code = match_coded_value(mapper.cs, analyte, concept)
        found = codings(concept)
        original = next((c.code for c in found if c.code), None) or concept_text(concept)
    elif "valueString" in res:
        text = res["valueString"]
        if not isinstance(text, str):
            raise Reject("valueString is not a string")
        code, original = match_coded_text(mapper.cs, analyte, text), text
    else:
        _no_value(res, f"expected a coded value for {analyte}")
    if code is None:
        raise Reject(f"unknown coded value for {analyte}")
    return {"value": None, "unit": None, "value_code": code,
            "original_value": original, "original_unit": None}


def _no_value(res: dict, wrong_type: str) -> NoReturn:
    """Raise the right signal for an Observation without a usable value."""
    if any(k.startswith("value") for k in res):
        raise Reject(wrong_type)
    if "dataAbsentReason" in res:
        raise Excluded
    raise Reject("missing value")
