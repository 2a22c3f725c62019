"""Alembic environment for the cohort database.

Run by Alembic, never imported directly. The usual caller is
``connector.db.migrations.migrate``, which hands over an open connection in
``config.attributes["connection"]`` inside its own transaction, so the caller
decides locking and commit. Offline mode (``sql`` in ``python -m
connector.db.migrations``) prints the DDL for a database administrator.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.operations.ops import AddColumnOp
from sqlalchemy import DefaultClause
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from connector.db import models  # noqa: F401  (registers the tables)

config = context.config
target_metadata = SQLModel.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write SQLModel's own column types as their plain SQLAlchemy equivalents.

    Revisions then depend on SQLAlchemy only, and stay valid if SQLModel changes.
    """
    if type_ != "type":
        return False
    if isinstance(obj, AutoString):
        length = getattr(obj.impl, "length", None)
        return "sa.String()" if length is None else f"sa.String(length={length})"
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def add_server_defaults(context: Any, revision: Any, directives: list) -> None:
    """Give every NOT NULL column added to an existing table its model default on the server.

    Without one, ``ADD COLUMN … NOT NULL`` fails on PostgreSQL as soon as the table
    has rows, which is every site database in use.
    """
    for script in directives:
        for op in _walk(script.upgrade_ops.ops):
            if not isinstance(op, AddColumnOp):
                continue
            column = op.column
            default = getattr(column.default, "arg", None)
            if column.nullable or column.server_default is not None or callable(default):
                continue
            if isinstance(default, bool | int | float | str):
                column.server_default = DefaultClause(
                    str(int(default)) if isinstance(default, bool) else str(default))


def _walk(ops: list) -> Any:
    for op in ops:
        yield op
        yield from _walk(getattr(op, "ops", []))


def _configure_kwargs() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": True,  # ALTER on SQLite needs table rebuilds; batch mode does them
        "compare_type": True,
        "render_item": render_item,
        "process_revision_directives": add_server_defaults,
    }


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, **_configure_kwargs())
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from connector.db.engine import get_engine

        engine = get_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _run(conn)
        engine.dispose()
        return
    _run(connection)


def _run(connection: Any) -> None:
    context.configure(connection=connection, **_configure_kwargs())
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
