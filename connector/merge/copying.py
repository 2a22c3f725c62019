"""Copying checked sites into the target, one transaction and one lock per site.

Replacing a site is one transaction on the target: delete the site's rows from
every merged table, insert the new ones. A site that sends again replaces its
own rows only; readers see the old rows or the new ones, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine

from connector.db.clock import utcnow
from connector.db.engine import read_snapshot
from connector.db.fastinsert import insert_values
from connector.db.stream import mapping_chunks
from connector.lock import site_locks
from connector.merge.counts import SITE_COUNT_TABLES, site_counts
from connector.merge.plan import (
    MergeRefused,
    SiteMerge,
    SitePlan,
    check_target,
    display_url,
    plan_site,
    sites_in,
)
from connector.merge.policy import MERGED_TABLES, pseudonymize_row, sanitize_row, table
from connector.progress import Progress

CHUNK = 5000


def _insert(conn: Connection, name: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows in the caller's transaction: COPY on PostgreSQL, executemany elsewhere."""
    insert_values(conn, table(name), rows)


def _rows(conn: Connection, name: str, site: str) -> Iterator[list[Mapping[str, Any]]]:
    """The site's rows of table ``name`` in chunks, in id order."""
    t = table(name)
    yield from mapping_chunks(conn, select(t).where(t.c.site == site).order_by(t.c.id), CHUNK)


def copy_site(plan: SitePlan, target: Engine, progress: Progress | None = None) -> SiteMerge:
    """Replace the site's rows in ``target`` with the source's, in one transaction."""
    progress = progress or Progress.silent()
    counts: dict[str, int] = {}
    replaced: dict[str, int] = {}
    with read_snapshot(plan.source) as src, target.begin() as dst:
        check_target(dst, plan.site)
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
    """Whether two engines point at one database (merging into the source is refused)."""
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
                check_target(conn, plan.site)
        return [copy_site(plan, target, progress) for plan in plans]
