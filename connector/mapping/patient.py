"""Patient → a ``patient`` row; Medication → indexed for the events that reference it."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from connector.keys import patient_key
from connector.mapping.fhir import Reject, parse_date

if TYPE_CHECKING:
    from connector.mapping.resources import RawRow, SiteMapper

GENDERS = frozenset({"male", "female", "other", "unknown"})
_BIRTH_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def map_patient(mapper: SiteMapper, row: RawRow, res: dict) -> None:
    """One Patient; a rejected one is remembered so its events say why they are rejected."""
    try:
        birth_year = _birth_year(mapper, res)
        gender = res.get("gender")
        if gender is not None and gender not in GENDERS:
            raise Reject("unknown gender value")
        death_date, deceased = _death(mapper, res, birth_year)
        mapper.check_modifiers(row, res)
        mapper.check_structure(row.resource_type, res, row.body)
    except Reject:
        mapper.bad_patients.add(row.resource_id)
        raise
    mapper.patients[row.resource_id] = birth_year
    mapper.writer.patient_rows.append({
        "site": mapper.site, "source_id": row.resource_id,
        "patient_key": patient_key(mapper.site, row.resource_id, mapper.secret),
        "birth_year": birth_year, "sex": gender, "death_date": death_date,
        "deceased": deceased, "version_id": row.version_id,
    })


def _birth_year(mapper: SiteMapper, res: dict) -> int | None:
    if "birthDate" not in res:
        return None
    value = res["birthDate"]
    if not isinstance(value, str) or not _BIRTH_DATE.match(value):
        raise Reject("invalid birthDate")
    try:
        born = parse_date(value, "birthDate")
    except Reject:
        raise Reject("invalid birthDate: no such calendar date") from None
    if born.year < mapper.cs.min_birth_year or born > mapper.max_date:
        raise Reject("implausible birthDate")
    return born.year


def _death(mapper: SiteMapper, res: dict,
           birth_year: int | None) -> tuple[dt.date | None, bool]:
    if "deceasedDateTime" in res:
        died = parse_date(res["deceasedDateTime"], "deceasedDateTime")
        if birth_year is not None and died.year < birth_year:
            raise Reject("deceasedDateTime before birthDate")
        if died > mapper.max_date:
            raise Reject("implausible deceasedDateTime")
        return died, True
    if "deceasedBoolean" in res:
        flag = res["deceasedBoolean"]
        if not isinstance(flag, bool):
            raise Reject("deceasedBoolean is not a boolean")
        return None, flag
    return None, False


def index_medication(mapper: SiteMapper, row: RawRow, res: dict) -> None:
    """Index a Medication; it is checked only when a kept event uses it
    (connector/mapping/administration.py ``check_medication``)."""
    mapper.medications[row.resource_id] = (row, res)
