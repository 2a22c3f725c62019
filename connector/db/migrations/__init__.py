"""Schema migrations (Alembic), shipped inside the package so an installed tool can migrate.

``migrate(engine)`` brings any cohort database, SQLite or PostgreSQL, to the head
revision. It is what ``init_db`` runs, so every command that opens a database
upgrades it first. On PostgreSQL the ``alembic_version`` table lives in the
connection's current schema, so ``?options=-csearch_path%3Dsite_a`` URLs keep one
schema per site (or per test) fully separate.

Databases made before migrations existed (tables created straight from the
models, no ``alembic_version``) are stamped with the baseline revision and then
upgraded, so old site databases keep working.

For developers: ``python -m connector.db.migrations --help`` (``check``,
``revision``, ``rebuild-initial``, ``sql``).
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

SCRIPT_LOCATION = Path(__file__).resolve().parent
VERSIONS = SCRIPT_LOCATION / "versions"
#: The revision that equals the schema of databases created before migrations existed.
BASELINE = "0001"


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer version of the tool than this one."""


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts, with no ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    if head is None:
        raise RuntimeError("no migration revisions found in the package")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or None for an unversioned one."""
    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the database to the head revision; a no-op (read-only) when it is already there.

    Concurrent callers are serialized: PostgreSQL by a transaction-scoped advisory
    lock per schema, SQLite by ``BEGIN IMMEDIATE``. DDL runs in that same
    transaction, so a failed migration leaves the schema as it was.
    """
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return
    with engine.begin() as conn:
        _serialize(conn)
        current = current_revision(conn)
        if current == head:
            return
        if current is not None and not _known(current):
            raise SchemaTooNew(
                f"the database schema is at revision {current}, which this version of the "
                f"tool does not know (its newest is {head}); upgrade mm-cart-connector")
        cfg = alembic_config(conn)
        if current is None and inspect(conn).has_table("raw_resource"):
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")


def _known(rev: str) -> bool:
    try:
        return _script().get_revision(rev) is not None
    except Exception:  # noqa: BLE001  (alembic raises several kinds for unknown ids)
        return False


def _serialize(conn: Connection) -> None:
    """Take the database-wide migration lock inside the current transaction."""
    if conn.dialect.name == "postgresql":
        from connector.db.advisory import advisory_key

        schema = conn.execute(text("SELECT current_schema()")).scalar() or "public"
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                     {"k": advisory_key(f"migrate|{schema}")})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def schema_differences(engine: Engine) -> list:
    """What differs between the database and the models (empty when in step)."""
    from sqlmodel import SQLModel

    from connector.db import models  # noqa: F401

    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
