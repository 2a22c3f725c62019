"""Migrations: every database reaches head, and the head schema equals the models."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from alembic import command
from sqlalchemy import inspect, text

from connector.db import get_engine, init_db
from connector.db.migrations import (
    BASELINE,
    SchemaTooNew,
    alembic_config,
    current_revision,
    head_revision,
    schema_differences,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request, db_url):
    """The same test on a SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return db_url
    return request.getfixturevalue("pg_url")


def _revision(engine) -> str | None:
    with engine.connect() as conn:
        return current_revision(conn)


def test_migrated_schema_equals_models(any_url):
    engine = get_engine(any_url)
    init_db(engine)
    assert _revision(engine) == head_revision()
    assert schema_differences(engine) == []
    engine.dispose()


def test_init_db_is_idempotent(any_url):
    engine = get_engine(any_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sync_state (site, resource_type, mode, watermark, "
                          "updated_at) VALUES ('a', 'Patient', 'rest', 'w', '2024-01-01')"))
    init_db(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sync_state")).scalar() == 1
    engine.dispose()


def test_alembic_version_lives_in_the_search_path_schema(pg_url):
    engine = get_engine(pg_url)
    init_db(engine)
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
        where = conn.execute(text(
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name = 'alembic_version' AND table_schema = :s"), {"s": schema}).all()
        tables = set(inspect(conn).get_table_names())
    assert schema.startswith("t_")
    assert where == [(schema,)]
    assert {"patient", "therapy_line", "site", "alembic_version"} <= tables
    engine.dispose()


def test_pre_migration_database_is_stamped_and_upgraded(any_url):
    """A database made by create_all before migrations existed keeps its rows and gains columns."""
    engine = get_engine(any_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO site (name, loaded_at) VALUES ('old', '2024-01-01')"))
    assert _revision(engine) is None
    init_db(engine)
    assert _revision(engine) == head_revision()
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT name, pseudonymized, date_shift_days, key_fingerprint FROM site")).one()
    assert tuple(row) == ("old", False, 0, None)
    assert schema_differences(engine) == []
    engine.dispose()


def test_newer_schema_is_refused(db_url):
    engine = get_engine(db_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaTooNew, match="9999"):
        init_db(engine)
    engine.dispose()


def test_concurrent_init_db_on_a_fresh_database(any_url):
    engines = [get_engine(any_url) for _ in range(4)]
    errors: list[BaseException] = []

    def work(engine) -> None:
        try:
            init_db(engine)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _revision(engines[0]) == head_revision()
    assert schema_differences(engines[0]) == []
    for e in engines:
        e.dispose()


def test_check_command_reports_agreement():
    done = subprocess.run([sys.executable, "-m", "connector.db.migrations", "check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"head {head_revision()}" in done.stdout


def test_sql_command_prints_postgresql_ddl():
    done = subprocess.run([sys.executable, "-m", "connector.db.migrations", "sql"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE therapy_line" in done.stdout
    assert "TIMESTAMP WITH TIME ZONE" in done.stdout
