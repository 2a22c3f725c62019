"""What each column of a merged table becomes when it leaves its site.

The one pseudonymization policy of the project: ``cohort merge`` and ``cohort export``
both send rows through ``pseudonymize_row`` (or ``sanitize_row`` for rows already
pseudonymized). Each text column is decided on in ``POLICIES``; one nobody decided on
is emptied (``unclassified``), so a column added later cannot leak.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, types

from connector.db import models
from connector.keys import date_offset, patient_key, resource_key, shift_date


@dataclass(frozen=True)
class TablePolicy:
    """How each text column of a merged table leaves the site.

    ``patient_column`` names the patient of a row; ``patient_columns`` are
    replaced by the patient key; ``resource_column`` by a resource key, of type
    ``resource_type`` or, when None, of the row's ``source_type``. ``keep`` lists
    text that holds only codes or the study's own vocabulary; ``drop`` lists text
    that may carry free text or local identifiers. Dates are shifted, numbers and
    flags kept, the ``id`` left to the target.
    """

    patient_column: str
    patient_columns: frozenset[str]
    keep: frozenset[str]
    drop: frozenset[str] = frozenset()
    resource_column: str | None = None
    resource_type: str | None = None


def _fs(*names: str) -> frozenset[str]:
    """A set of column names, written short."""
    return frozenset(names)


_EVENT_KEEP = _fs("site", "source_type", "status", "code_system", "code")
POLICIES: dict[str, TablePolicy] = {
    "patient": TablePolicy("source_id", _fs("source_id", "patient_key"),
                           keep=_fs("site", "sex"), drop=_fs("version_id")),
    "medication_exposure": TablePolicy(
        "patient_source_id", _fs("patient_source_id"),
        keep=_EVENT_KEEP | _fs("ingredient", "drug_class"), drop=_fs("version_id", "display"),
        resource_column="source_id"),
    "procedure_event": TablePolicy(
        "patient_source_id", _fs("patient_source_id"),
        keep=_EVENT_KEEP | _fs("category", "product"), drop=_fs("version_id", "display"),
        resource_column="source_id"),
    "lab_result": TablePolicy(
        "patient_source_id", _fs("patient_source_id"),
        keep=_fs("site", "analyte", "unit", "value_code"),
        drop=_fs("version_id", "original_value", "original_unit"),
        resource_column="source_id", resource_type="Observation"),
    # finding and status are the study's vocabulary (mappings/conditions.csv)
    "condition_record": TablePolicy(
        "patient_source_id", _fs("patient_source_id"),
        keep=_EVENT_KEEP | _fs("finding"), drop=_fs("version_id", "display"),
        resource_column="source_id"),
    "cohort_patient": TablePolicy(
        "source_id", _fs("source_id", "patient_key"),
        keep=_fs("site", "exclusion_reason", "index_product", "progression_basis", "sex")),
    "therapy_line": TablePolicy(
        "source_id", _fs("source_id", "patient_key"),
        keep=_fs("site", "drugs", "therapy_class", "subclass", "best_response",
                 "response_note")),
    # findings are present/absent, the stage I/II/III: derived values, no source text
    "patient_baseline": TablePolicy(
        "source_id", _fs("source_id"),
        keep=_fs("site", "del_17p", "t_4_14", "t_14_16", "gain_1q", "extramedullary",
                 "riss_stage")),
}
#: Merged tables in insert order (``site`` is written by the merge itself).
MERGED_TABLES: tuple[str, ...] = tuple(POLICIES)


def table(name: str) -> Table:
    """The table ``name`` of the models (the schema every database has)."""
    return models.SQLModel.metadata.tables[name]


def _type_family(column: Any) -> str:
    """``int``, ``date``, ``copy`` (numbers, flags, instants) or ``text`` (anything else).

    Unknown types count as text, so a column nobody thought about is emptied,
    not copied.
    """
    ctype = column.type
    ctype = getattr(ctype, "impl_instance", ctype)
    if isinstance(ctype, types.Integer):
        return "int"
    if isinstance(ctype, types.Date):
        return "date"
    if isinstance(ctype, types.Float | types.Numeric | types.Boolean | types.DateTime):
        return "copy"
    return "text"


@functools.cache
def column_kinds(name: str) -> dict[str, str]:
    """Each column's treatment: id, patient, resource, keep, drop, shift, copy, unclassified."""
    policy = POLICIES[name]
    kinds: dict[str, str] = {}
    for column in table(name).columns:
        family = _type_family(column)
        if column.primary_key and family == "int":
            kinds[column.name] = "id"
        elif column.name in policy.patient_columns:
            kinds[column.name] = "patient"
        elif column.name == policy.resource_column:
            kinds[column.name] = "resource"
        elif family == "date":
            kinds[column.name] = "shift"
        elif family in ("int", "copy"):
            kinds[column.name] = "copy"
        elif column.name in policy.keep:
            kinds[column.name] = "keep"
        elif column.name in policy.drop:
            kinds[column.name] = "drop"
        else:
            kinds[column.name] = "unclassified"  # emptied, like drop
    return kinds


@dataclass
class SiteKeys:
    """The secret material of one site, used only where that site's data is."""

    site: str
    secret: bytes | None
    date_shift_days: int = 0
    known: dict[str, str] = field(default_factory=dict)  # source id -> patient key
    _offsets: dict[str, int] = field(default_factory=dict)

    def key(self, source_id: str) -> str:
        """The patient's key: the one stored at the site, else made with the secret."""
        known = self.known.get(source_id)
        return known if known is not None else patient_key(self.site, source_id, self.secret)

    def offset(self, source_id: str) -> int:
        """The patient's own date shift in days (0 without ``date_shift_days``)."""
        if source_id not in self._offsets:
            self._offsets[source_id] = date_offset(self.site, source_id, self.secret,
                                                   self.date_shift_days)
        return self._offsets[source_id]


@functools.cache
def _plan_columns(name: str) -> tuple[tuple[str, str, str | None], ...]:
    """(column, kind, empty value) for every column but the surrogate id, in table order."""
    columns = table(name).columns
    return tuple((col, kind, None if columns[col].nullable else "")
                 for col, kind in column_kinds(name).items() if kind != "id")


def pseudonymize_row(name: str, row: Mapping[str, Any], keys: SiteKeys) -> dict[str, Any]:
    """One row of a site's own database as it may leave the site."""
    policy = POLICIES[name]
    source_id = str(row[policy.patient_column])
    days = keys.offset(source_id)
    out: dict[str, Any] = {}
    for col, kind, empty in _plan_columns(name):
        value = row.get(col)
        if kind == "patient":
            out[col] = keys.key(source_id)
        elif kind == "resource":
            rtype = policy.resource_type or str(row.get("source_type") or "")
            out[col] = None if value is None else resource_key(keys.site, rtype, str(value),
                                                               keys.secret)
        elif kind == "shift":
            out[col] = shift_date(value, days)
        elif kind in ("drop", "unclassified"):
            out[col] = empty
        else:
            out[col] = value
    return out


def sanitize_row(name: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of an already pseudonymized database: copied, free text emptied again."""
    return {col: empty if kind in ("drop", "unclassified") else row.get(col)
            for col, kind, empty in _plan_columns(name)}
