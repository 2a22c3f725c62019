"""Drugs recorded as MedicationRequest, MedicationDispense or MedicationStatement.

Oral myeloma drugs (lenalidomide, pomalidomide, selinexor, venetoclax, ixazomib,
oral cyclophosphamide) are taken at home: hospitals record the prescription, the
pharmacy dispense or a statement of use, rarely an administration. Without them
DPd looks like daratumumab alone and Xd disappears (issue 15, item 1). Each
becomes a ``medication_exposure`` with its ``source_type`` and a period:

- MedicationRequest: ``authoredOn`` (else the dosage's ``boundsPeriod.start``)
  for ``dispenseRequest.expectedSupplyDuration`` days (else the bounds' end);
- MedicationDispense: ``whenHandedOver`` (else ``whenPrepared``) for
  ``daysSupply`` days;
- MedicationStatement: ``effective[x]`` (else ``dateAsserted``).

A period of N days from day D ends on D + N - 1. Requests that are only a
proposal, plan or option are not exposures; statuses come from
mappings/statuses.csv as for administrations.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import TYPE_CHECKING, Any

from connector.mapping.administration import map_drug_event
from connector.mapping.fhir import Excluded, Reject, event_dates, parse_date

if TYPE_CHECKING:
    from connector.mapping.resources import RawRow, SiteMapper

ORDER_TYPES = ("MedicationRequest", "MedicationDispense", "MedicationStatement")
NOT_AN_ORDER = frozenset({"proposal", "plan", "option"})
#: UCUM (and common) duration units in days
_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30,
         "months": 30}


def _days(quantity: Any, what: str) -> int | None:
    """Whole days of a Duration/Quantity, or None when absent."""
    if quantity is None:
        return None
    if not isinstance(quantity, dict):
        raise Reject(f"{what} is not a Quantity")
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise Reject(f"{what} has no positive value")
    unit = quantity.get("code") or quantity.get("unit") or "d"
    factor = _DAYS.get(str(unit).strip().lower())
    if factor is None:
        raise Reject(f"{what} has an unknown unit")
    return max(1, round(value * factor))


def _through(start: dt.date, days: int | None) -> dt.date | None:
    return start + dt.timedelta(days=days - 1) if days else None


def _request_dates(res: dict) -> tuple[dt.date, dt.date | None]:
    if res.get("intent") in NOT_AN_ORDER:
        raise Excluded
    bounds = _bounds(res)
    if "authoredOn" in res:
        start = parse_date(res["authoredOn"], "authoredOn")
    elif bounds and "start" in bounds:
        start = parse_date(bounds["start"], "boundsPeriod.start")
    else:
        raise Reject("missing authoredOn")
    dispense = res.get("dispenseRequest")
    supply = _days(dispense.get("expectedSupplyDuration"), "expectedSupplyDuration") \
        if isinstance(dispense, dict) else None
    end = _through(start, supply)
    if end is None and bounds and "end" in bounds:
        end = parse_date(bounds["end"], "boundsPeriod.end")
    return start, end


def _bounds(res: dict) -> dict | None:
    dosage = res.get("dosageInstruction")
    if not isinstance(dosage, list) or not dosage or not isinstance(dosage[0], dict):
        return None
    timing = dosage[0].get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
    return bounds if isinstance(bounds, dict) else None


def _dispense_dates(res: dict) -> tuple[dt.date, dt.date | None]:
    for name in ("whenHandedOver", "whenPrepared"):
        if name in res:
            start = parse_date(res[name], name)
            return start, _through(start, _days(res.get("daysSupply"), "daysSupply"))
    raise Reject("missing whenHandedOver")


def _statement_dates(res: dict) -> tuple[dt.date, dt.date | None]:
    if any(k.startswith("effective") for k in res):
        return event_dates(res, "effective")
    if "dateAsserted" in res:
        return parse_date(res["dateAsserted"], "dateAsserted"), None
    raise Reject("missing effective date")


_DATES = {"MedicationRequest": _request_dates, "MedicationDispense": _dispense_dates,
          "MedicationStatement": _statement_dates}


def exposure_period(resource_type: str, res: dict) -> tuple[dt.date, dt.date | None]:
    """(start, end) of the exposure a request, dispense or statement records."""
    start, end = _DATES[resource_type](res)
    if end is not None and end < start:
        raise Reject("the supply period ends before it starts")
    return start, end


def map_order(mapper: SiteMapper, row: RawRow, res: dict) -> None:
    """One request, dispense or statement → exposures (one per study ingredient)."""
    map_drug_event(mapper, row, res, partial(exposure_period, row.resource_type), "exposure")
