"""One handler per FHIR resource type, all behind one protocol.

A handler gets the site's ``SiteMapper`` (connector/mapping/resources.py: code sets,
patients seen, shared checks, the writer), one stored resource and its parsed body.
It either counts the resource as unmapped, or hands rows to the writer with
``mapper.defer``, or raises ``Reject`` (quarantine, with the reason) or ``Excluded``
(the resource says the event did not happen). A new resource type is a new module
with one function and a line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from connector.mapping.administration import map_administration
from connector.mapping.conditions import CONDITION_TYPES, map_condition
from connector.mapping.observation import map_observation
from connector.mapping.orders import ORDER_TYPES, map_order
from connector.mapping.patient import index_medication, map_patient
from connector.mapping.procedure import map_procedure

if TYPE_CHECKING:
    from connector.mapping.resources import RawRow, SiteMapper


class Handler(Protocol):
    def __call__(self, mapper: SiteMapper, row: RawRow, res: dict, /) -> None: ...


#: Read before any event: the patients events attach to, the Medications they name.
FIRST_PASS = ("Patient", "Medication")
EVENT_TYPES = ("MedicationAdministration", *ORDER_TYPES, "Procedure", "Observation",
               *CONDITION_TYPES)

HANDLERS: dict[str, Handler] = {
    "Patient": map_patient,
    "Medication": index_medication,
    "MedicationAdministration": map_administration,
    **dict.fromkeys(ORDER_TYPES, map_order),
    "Procedure": map_procedure,
    "Observation": map_observation,
    **dict.fromkeys(CONDITION_TYPES, map_condition),
}
