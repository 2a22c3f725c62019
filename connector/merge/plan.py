"""Whether a site may leave its database as asked, checked before anything is written.

A site database needs its key secret (or ``--allow-unkeyed`` for test data) and patient
keys made with it; a database already pseudonymized (a share file, a central database)
is copied as it is, never hashed or shifted twice. The target must not hold the site's
own identified data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.engine import Connection, Engine

from connector.keys import is_keyed, key_fingerprint
from connector.merge.policy import MERGED_TABLES, SiteKeys, table


class MergeRefused(RuntimeError):
    """The merge would be unsafe or wrong; nothing was written for any site."""


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
    """The site's ``site`` row (its provenance), or None."""
    t = table("site")
    row = conn.execute(select(t).where(t.c.name == site)).mappings().first()
    return dict(row) if row is not None else None


def _known_keys(conn: Connection, site: str) -> dict[str, str]:
    """Source id -> patient key of the site's patients, as stored."""
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


def check_target(conn: Connection, site: str) -> None:
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
