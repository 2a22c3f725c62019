"""``cohort merge``: load site databases into one cohort database, pseudonymized.

What leaves a site is the normalized layer (site, patient, medication_exposure,
procedure_event, lab_result, condition_record), the derived layer (cohort_patient,
therapy_line, patient_baseline) and the site's data-quality counts
(``SITE_COUNT_TABLES``): never the raw resources, the quarantined input or the run
records. On the way, every row is pseudonymized (``pseudonymize_row``):

* every column naming the patient (``patient.source_id``, ``*.patient_source_id``,
  ``cohort_patient.source_id``, ``therapy_line.source_id``,
  ``patient_baseline.source_id`` and the ``patient_key`` columns) becomes the
  patient's keyed pseudonym, the ``patient_key``;
* resource ids (``*.source_id`` of exposures, procedures, labs, conditions) become
  keyed hashes of site, type and id (``connector.keys.resource_key``);
* text that may carry free text or local identifiers (``display``,
  ``original_value``, ``original_unit``, ``version_id``) is emptied, and so is any
  text column this module does not know (a column added later is dropped until
  someone decides it is safe: see ``POLICIES``);
* with ``date_shift_days=N``, every date of a patient moves by that patient's own
  secret offset in [-N, N], so intervals, and the study's results, are unchanged
  (``birth_year`` is kept, so an age in whole years can move by one);
* the quarantine travels as counts by stage and resource type (``quarantine_count``),
  the unmapped codes as codes and counts (no display, no free-text name), so the
  merged report's data completeness equals the sites' own (``site_counts``).

A merged database records in its ``site`` rows that they are pseudonymized, the
fingerprint of the secret and the shift, so it can itself be merged on (a site
writes a small SQLite "share" file, the center merges the share files) without
hashing twice.

Replacing a site is one transaction on the target: delete the site's rows from
every merged table, insert the new ones. A site that sends again replaces its
own rows only; readers see the old rows or the new ones, never a mix.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, types, union
from sqlalchemy.engine import Connection, Engine

from connector.db import models
from connector.db.clock import utcnow
from connector.db.engine import read_snapshot
from connector.db.fastinsert import insert_values
from connector.db.stream import mapping_chunks
from connector.keys import (
    date_offset,
    is_keyed,
    key_fingerprint,
    patient_key,
    resource_key,
    shift_date,
)
from connector.lock import site_locks
from connector.progress import Progress

CHUNK = 5000


class MergeRefused(RuntimeError):
    """The merge would be unsafe or wrong; nothing was written for any site."""


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


# ------------------------------------------------------------------ row transforms


@dataclass
class SiteKeys:
    """The secret material of one site, used only where that site's data is."""

    site: str
    secret: bytes | None
    date_shift_days: int = 0
    known: dict[str, str] = field(default_factory=dict)  # source id -> patient key
    _offsets: dict[str, int] = field(default_factory=dict)

    def key(self, source_id: str) -> str:
        known = self.known.get(source_id)
        return known if known is not None else patient_key(self.site, source_id, self.secret)

    def offset(self, source_id: str) -> int:
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


def _insert(conn: Connection, name: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows in the caller's transaction: COPY on PostgreSQL, executemany elsewhere."""
    insert_values(conn, table(name), rows)


# --------------------------------------------------------------------- site counts

#: The site's data-quality counts (the report's data completeness reads them, see
#: ``connector.analysis.completeness.load_quality``), replaced with the site's rows.
SITE_COUNT_TABLES: tuple[str, ...] = ("quarantine_count", "unmapped_code", "unmapped_count")
#: Each text column of the count tables: "keep" (codes, the study's vocabulary) or "drop"
#: (free text from the source, emptied by ``_unmapped_codes``). A test checks that every
#: text column of these tables is here, so a column added later is decided on.
SITE_COUNT_TEXT: dict[str, dict[str, str]] = {
    "quarantine_count": {"site": "keep", "stage": "keep", "resource_type": "keep"},
    "unmapped_code": {"site": "keep", "resource_type": "keep", "system": "keep",
                      "code": "keep", "text": "drop", "display": "drop"},
    "unmapped_count": {"site": "keep"},
}
#: A FHIR resource type name. The extract stage records only types it recognized, but
#: a quarantine row is unusable input by definition: anything else travels as "".
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
#: The ``display`` of the merged row that counts the names without a code (the names stay
#: at the site).
UNCODED = "(names without a code, not carried by merge)"


def _type_name(value: object) -> str:
    text = "" if value is None else str(value)
    return text if _TYPE_NAME.fullmatch(text) else ""


def _quarantine_counts(conn: Connection, site: str) -> list[dict[str, Any]]:
    """The site's quarantine as counts by stage and resource type.

    Counted from the quarantine itself (a site database) plus the counts a merged
    database already carries (a share file merged on): bodies, resource ids and
    reasons (which may quote the input) stay where they are.
    """
    q, qc = table("quarantine"), table("quarantine_count")
    counts: Counter[tuple[str, str]] = Counter()
    grouped = (select(q.c.stage, q.c.resource_type, func.count()).where(q.c.site == site)
               .group_by(q.c.stage, q.c.resource_type))
    carried = select(qc.c.stage, qc.c.resource_type, qc.c.n).where(qc.c.site == site)
    for query in (grouped, carried):
        for stage, rtype, n in conn.execute(query):
            counts[(str(stage), _type_name(rtype))] += int(n)
    return [{"site": site, "stage": stage, "resource_type": rtype, "n": n}
            for (stage, rtype), n in sorted(counts.items())]


def _unmapped_codes(conn: Connection, site: str) -> list[dict[str, Any]]:
    """The site's unmapped codes as codes and counts.

    A display, and the name of a coding that has no code (``text``), are free text
    from the source and stay at the site; the names without a code are counted
    together per resource type and system, so the totals still match the site's.
    """
    t = table("unmapped_code")
    counts: Counter[tuple[str, str, str]] = Counter()
    for rtype, system, code, n in conn.execute(
            select(t.c.resource_type, t.c.system, t.c.code, t.c.n).where(t.c.site == site)):
        counts[(str(rtype), str(system), str(code))] += int(n)
    return [{"site": site, "resource_type": rtype, "system": system, "code": code,
             "text": "", "display": "" if code else UNCODED, "n": n}
            for (rtype, system, code), n in sorted(counts.items())]


def site_counts(conn: Connection, site: str) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``SITE_COUNT_TABLES`` that leave the site: counts, codes, the map time."""
    t = table("unmapped_count")
    totals = [dict(r) for r in conn.execute(select(t).where(t.c.site == site)).mappings()]
    return {"quarantine_count": _quarantine_counts(conn, site),
            "unmapped_code": _unmapped_codes(conn, site), "unmapped_count": totals}


# ------------------------------------------------------------------------ planning


@dataclass
class SitePlan:
    """One site of one source database, checked and ready to copy."""

    site: str
    source: Engine
    pseudonymized: bool  # already pseudonymized at the site (a share file or a central db)
    keys: SiteKeys
    loaded_at: dt.datetime | None
    key_fingerprint: str | None
    date_shift_days: int


@dataclass
class SiteMerge:
    """What merging one site did."""

    site: str
    source: str
    rows: dict[str, int]
    keyed: bool
    date_shift_days: int
    pseudonymized_here: bool
    replaced: dict[str, int] = field(default_factory=dict)


def display_url(engine: Engine) -> str:
    """The database as it may be printed: no password."""
    return engine.url.render_as_string(hide_password=True)


def db_url_of(spec: str) -> str:
    """A database URL for a ``SITE_DB`` argument: a URL, or a path to a SQLite file."""
    if "://" in spec:
        return spec
    path = Path(spec)
    if not path.is_file():
        raise MergeRefused(f"no such site database file: {spec}")
    return f"sqlite:///{path.resolve()}"


def sites_in(conn: Connection) -> list[str]:
    """Every site with rows in a merged table or a ``site`` row."""
    queries = [select(table(n).c.site) for n in MERGED_TABLES]
    queries.append(select(table("site").c.name))
    return sorted(r[0] for r in conn.execute(union(*queries)))


def _site_row(conn: Connection, site: str) -> Mapping[str, Any] | None:
    t = table("site")
    row = conn.execute(select(t).where(t.c.name == site)).mappings().first()
    return dict(row) if row is not None else None


def _known_keys(conn: Connection, site: str) -> dict[str, str]:
    t = table("patient")
    rows = conn.execute(select(t.c.source_id, t.c.patient_key).where(t.c.site == site))
    return {str(sid): str(key) for sid, key in rows}


def plan_site(conn: Connection, source: Engine, site: str, *, secret: bytes | None,
              date_shift_days: int, allow_unkeyed: bool) -> SitePlan:
    """Check that one site of a source can leave it as asked; raise MergeRefused if not."""
    site_row = _site_row(conn, site)
    known = _known_keys(conn, site)
    if site_row is not None and site_row.get("pseudonymized"):
        return _plan_pseudonymized(site, source, site_row, known, date_shift_days=date_shift_days,
                                   allow_unkeyed=allow_unkeyed)
    if secret is None and not allow_unkeyed:
        raise MergeRefused(
            f"site '{site}': no key secret, so its patient keys would be unkeyed hashes that "
            "anyone can recompute from a guessed id. Set COHORT_KEY_SECRET_FILE to the site "
            "secret (and map with it), or pass --allow-unkeyed for synthetic or test data.")
    if date_shift_days and secret is None:
        raise MergeRefused(f"site '{site}': date shifting needs a key secret "
                           "(COHORT_KEY_SECRET_FILE)")
    if secret is not None:
        wrong = sum(1 for sid, key in known.items() if not is_keyed(site, sid, key, secret))
        if wrong:
            raise MergeRefused(
                f"site '{site}': {wrong} of {len(known)} patient keys were not made with this "
                "secret (mapped without COHORT_KEY_SECRET_FILE, or with another secret). "
                "Re-run `cohort map` and `cohort derive` with the site secret, then merge.")
    return SitePlan(site=site, source=source, pseudonymized=False,
                    keys=SiteKeys(site, secret, date_shift_days, known),
                    loaded_at=(site_row or {}).get("loaded_at"),
                    key_fingerprint=key_fingerprint(secret), date_shift_days=date_shift_days)


def _plan_pseudonymized(site: str, source: Engine, site_row: Mapping[str, Any],
                        known: dict[str, str], *, date_shift_days: int,
                        allow_unkeyed: bool) -> SitePlan:
    fingerprint = site_row.get("key_fingerprint")
    if fingerprint is None and not allow_unkeyed:
        raise MergeRefused(
            f"site '{site}' was pseudonymized without a key secret (unkeyed hashes anyone can "
            "recompute). Ask the site to merge again with COHORT_KEY_SECRET_FILE set, or pass "
            "--allow-unkeyed for synthetic or test data.")
    if date_shift_days:
        raise MergeRefused(f"site '{site}' is already pseudonymized; dates are shifted at the "
                           "site, not again here (drop --date-shift-days)")
    leaked = sum(1 for sid, key in known.items() if sid != key)
    if leaked:
        raise MergeRefused(f"site '{site}' is marked pseudonymized but {leaked} patient rows "
                           "still carry a source id; refusing to copy it")
    return SitePlan(site=site, source=source, pseudonymized=True,
                    keys=SiteKeys(site, None, 0, known), loaded_at=site_row.get("loaded_at"),
                    key_fingerprint=fingerprint,
                    date_shift_days=int(site_row.get("date_shift_days") or 0))


def _check_target(conn: Connection, site: str) -> None:
    """Refuse to overwrite a site's own (identified) data with its pseudonymized copy."""
    raw = table("raw_resource")
    if conn.execute(select(func.count()).select_from(raw).where(raw.c.site == site)).scalar():
        raise MergeRefused(f"the target database holds raw FHIR data of site '{site}': it is a "
                           "site database, not a central one; merge into another database")
    row = _site_row(conn, site)
    patients = table("patient")
    has_rows = conn.execute(select(func.count()).select_from(patients)
                            .where(patients.c.site == site)).scalar()
    if has_rows and not (row and row.get("pseudonymized")):
        raise MergeRefused(f"the target database holds unpseudonymized rows of site '{site}' "
                           "(mapped there, not merged); merge into another database")


# ------------------------------------------------------------------------- copying



def _rows(conn: Connection, name: str, site: str) -> Iterator[list[Mapping[str, Any]]]:
    t = table(name)
    yield from mapping_chunks(conn, select(t).where(t.c.site == site).order_by(t.c.id), CHUNK)


def copy_site(plan: SitePlan, target: Engine, progress: Progress | None = None) -> SiteMerge:
    """Replace the site's rows in ``target`` with the source's, in one transaction."""
    progress = progress or Progress.silent()
    counts: dict[str, int] = {}
    replaced: dict[str, int] = {}
    with read_snapshot(plan.source) as src, target.begin() as dst:
        _check_target(dst, plan.site)
        for name in reversed(MERGED_TABLES + SITE_COUNT_TABLES):
            t = table(name)
            replaced[name] = dst.execute(delete(t).where(t.c.site == plan.site)).rowcount
        site_t = table("site")
        dst.execute(delete(site_t).where(site_t.c.name == plan.site))
        now = utcnow()
        dst.execute(insert(site_t).values(
            name=plan.site, loaded_at=plan.loaded_at or now, pseudonymized=True,
            key_fingerprint=plan.key_fingerprint, date_shift_days=plan.date_shift_days,
            merged_at=now))
        with progress.task(f"merge {plan.site}", total=len(MERGED_TABLES)) as advance:
            for name in MERGED_TABLES:
                counts[name] = 0
                for chunk in _rows(src, name, plan.site):
                    out = [sanitize_row(name, r) if plan.pseudonymized
                           else pseudonymize_row(name, r, plan.keys) for r in chunk]
                    _insert(dst, name, out)
                    counts[name] += len(out)
                advance(1)
        for name, rows in site_counts(src, plan.site).items():
            _insert(dst, name, rows)
            counts[name] = len(rows)
    return SiteMerge(site=plan.site, source=display_url(plan.source), rows=counts,
                     keyed=plan.key_fingerprint is not None,
                     date_shift_days=plan.date_shift_days,
                     pseudonymized_here=not plan.pseudonymized, replaced=replaced)


def _same_database(a: Engine, b: Engine) -> bool:
    return a.url.render_as_string(hide_password=False) == b.url.render_as_string(
        hide_password=False)


def merge_sites(target: Engine, sources: Sequence[Engine], *, sites: Sequence[str] | None = None,
                secret: bytes | None = None, date_shift_days: int = 0,
                allow_unkeyed: bool = False,
                progress: Progress | None = None) -> list[SiteMerge]:
    """Merge every site (or the named ``sites``) of each source database into ``target``.

    Every site is checked before anything is written; then each site is copied
    in its own transaction, holding the site's lock on the source (no run may
    change it meanwhile) and on the target (no other merge of it). Databases must
    already be at the head revision (``init_db``). Raises ``MergeRefused``, or
    ``connector.lock.LockHeld`` when a lock is taken.
    """
    if date_shift_days < 0:
        raise MergeRefused("--date-shift-days must be 0 or more")
    wanted = set(sites or [])
    found: dict[str, Engine] = {}
    per_source: list[tuple[Engine, list[str]]] = []
    for source in sources:
        if _same_database(source, target):
            raise MergeRefused(f"source and target are the same database: {display_url(source)}")
        with source.connect() as conn:
            names = [s for s in sites_in(conn) if not wanted or s in wanted]
        for name in names:
            if name in found:
                raise MergeRefused(f"site '{name}' is in two source databases: "
                                   f"{display_url(found[name])} and {display_url(source)}")
            found[name] = source
        per_source.append((source, names))
    missing = wanted - set(found)
    if missing:
        raise MergeRefused(f"site(s) not found in any source: {', '.join(sorted(missing))}")
    if not found:
        raise MergeRefused("the source databases hold no site data (run map and derive first)")

    with ExitStack() as locks:
        locks.enter_context(site_locks(target, sorted(found)))
        plans: list[SitePlan] = []
        for source, names in per_source:
            locks.enter_context(site_locks(source, names))
            with source.connect() as conn:
                plans.extend(plan_site(conn, source, name, secret=secret,
                                       date_shift_days=date_shift_days,
                                       allow_unkeyed=allow_unkeyed) for name in names)
        with target.connect() as conn:
            for plan in plans:
                _check_target(conn, plan.site)
        return [copy_site(plan, target, progress) for plan in plans]
