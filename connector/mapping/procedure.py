"""Procedure → a ``procedure_event`` row (CAR-T infusion or harvest, transplant, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.mapping.fhir import code_of, event_dates, provenance
from connector.mapping.match import IGNORED, match_procedure

if TYPE_CHECKING:
    from connector.mapping.resources import RawRow, SiteMapper


def map_procedure(mapper: SiteMapper, row: RawRow, res: dict) -> None:
    code = code_of(res)
    match = match_procedure(mapper.cs, code)
    if match is None:
        mapper.unmapped(row.resource_type, [code])
        return
    if match is IGNORED:  # a known code that is not a study event (e.g. CAR-T transport)
        mapper.result.ignored += 1
        return
    status = mapper.status(row.resource_type, res)
    patient = mapper.subject(res)
    start, end = event_dates(res, "performed")
    mapper.check_date(start, patient, "performed")
    mapper.defer(row, res, [(
        "procedure_event", (patient, match.category, start, match.product),
        (start, row.resource_type, row.resource_id),
        {"site": mapper.site, "patient_source_id": patient, "source_type": row.resource_type,
         "source_id": row.resource_id, "version_id": row.version_id,
         "category": match.category, "product": match.product, "performed_date": start,
         "end_date": end, "status": status, **provenance(match.coding)})])
