"""One run per site and database: the second refuses at once with exit code 4."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import event, func, select, text
from typer.testing import CliRunner

from connector.cli import EXIT_LOCKED, app
from connector.db import get_engine, init_db, models
from connector.extract.source import sites_for_source
from connector.lock import LockHeld, is_locked, lock_path, site_lock

T = models.SQLModel.metadata.tables
ROOT = Path(__file__).resolve().parents[2]


def _source(tmp_path: Path, n: int = 50) -> Path:
    """A folder source with one site, ``clinic``, of ``n`` patients."""
    folder = tmp_path / "src" / "clinic"
    folder.mkdir(parents=True)
    lines = [json.dumps({"resourceType": "Patient", "id": f"p{i}", "gender": "female"})
             for i in range(n)]
    (folder / "Patient.ndjson").write_text("\n".join(lines) + "\n")
    return folder.parent


def _raw_count(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(T["raw_resource"])).scalar())


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request, db_url):
    return db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_second_lock_for_a_site_is_refused_and_released_after(any_url):
    engine = get_engine(any_url)
    init_db(engine)
    other = get_engine(any_url)  # a second process would have its own engine
    with site_lock(engine, "site_a") as info:
        assert info.kind in ("flock", "advisory")
        with pytest.raises(LockHeld, match="site 'site_a'") as caught:
            with site_lock(other, "site_a"):
                pass
        assert "pid" in caught.value.holder
        with site_lock(other, "site_b"):  # other sites are independent
            pass
        assert is_locked(other, "site_a") and not is_locked(other, "site_b")
    with site_lock(other, "site_a"):
        pass
    assert not is_locked(engine, "site_a")
    engine.dispose()
    other.dispose()


def test_postgres_locks_are_per_schema(pg_url):
    """Two databases (schemas) on one server do not share their sites' locks."""
    schema = "t_lock_other_" + os.urandom(4).hex()
    base = pg_url.split("?", 1)[0]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        one = get_engine(pg_url)
        two = get_engine(f"{base}?options=-csearch_path%3D{schema}")
        with site_lock(one, "site_a"), site_lock(two, "site_a"):
            assert is_locked(get_engine(pg_url), "site_a")
        one.dispose()
        two.dispose()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_postgres_probe_reads_pg_locks_and_never_takes_the_lock(pg_url):
    """``is_locked`` (cohort status, the tests' waits) must not take the lock it probes:
    a run starting in that moment would be refused."""
    engine = get_engine(pg_url)
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: sent.append(statement))
    holder = get_engine(pg_url)
    assert not is_locked(engine, "clinic")
    with site_lock(holder, "clinic"):
        assert is_locked(engine, "clinic") and not is_locked(engine, "other")
    assert not is_locked(engine, "clinic")
    assert sent and not [s for s in sent if "advisory_lock" in s]
    engine.dispose()
    holder.dispose()


def test_sqlite_lock_file_sits_beside_the_database(db_url, tmp_path):
    engine = get_engine(db_url)
    path = lock_path(engine, "site a/1")
    assert path.parent == tmp_path and path.name.startswith("cohort.db.site_a_1-")
    assert lock_path(engine, "site_a").name == "cohort.db.site_a.lock"
    assert lock_path(get_engine("sqlite://"), "x") is None


def test_sites_for_source(tmp_path):
    src = _source(tmp_path)
    (src / "other").mkdir()
    (src / "other" / "Patient.ndjson").write_text("{}\n")
    assert sites_for_source(str(src), None) == ["clinic", "other"]
    assert sites_for_source(str(src), "named") == ["named"]
    config = tmp_path / "site.toml"
    config.write_text('name = "hospital_x"\nbase_url = "https://fhir.example/r4"\n')
    assert sites_for_source(str(config), None) == ["hospital_x"]
    config.write_text('name = "hospital_y"\nno_such_setting = 1\n')  # invalid, still named
    assert sites_for_source(str(config), None) == ["hospital_y"]
    assert sites_for_source("http://127.0.0.1:8080/fhir/", None) == ["127.0.0.1_8080"]


def test_cli_map_and_derive_exit_4_while_the_site_is_locked(tmp_path, db_url):
    src = _source(tmp_path)
    engine = get_engine(db_url)
    init_db(engine)
    runner = CliRunner()
    assert runner.invoke(app, ["extract", "--source", str(src), "--db", db_url, "-q"]
                         ).exit_code == 0
    with site_lock(engine, "clinic"):
        mapped = runner.invoke(app, ["map", "--db", db_url, "-q"])
    assert mapped.exit_code == EXIT_LOCKED, mapped.output
    assert runner.invoke(app, ["map", "--db", db_url, "-q"]).exit_code == 0
    with site_lock(engine, "clinic"):
        derived = runner.invoke(app, ["derive", "--db", db_url, "-q"])
    assert derived.exit_code == EXIT_LOCKED, derived.output
    assert runner.invoke(app, ["derive", "--db", db_url, "-q"]).exit_code == 0
    engine.dispose()


def test_cli_extract_exits_4_while_the_site_is_locked(tmp_path, db_url):
    src = _source(tmp_path)
    engine = get_engine(db_url)
    init_db(engine)
    runner = CliRunner()
    with site_lock(engine, "clinic"):
        result = runner.invoke(app, ["extract", "--source", str(src), "--db", db_url, "-q"])
    assert result.exit_code == EXIT_LOCKED
    assert "another cohort run holds the lock for site 'clinic'" in result.output
    assert _raw_count(engine) == 0
    again = runner.invoke(app, ["extract", "--source", str(src), "--db", db_url, "-q"])
    assert again.exit_code == 0, again.output
    assert _raw_count(engine) == 50
    engine.dispose()


def _cohort(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "connector", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _holds_lock(engine, site: str) -> bool:
    """Whether a run holds the site's lock, without ever taking it: a probe that took the
    lock for a moment would make the first run, starting in that moment, exit 4. On
    PostgreSQL ``is_locked`` reads pg_locks; for the file lock, the holder's text is
    written only once the lock is held (and the file is fresh in ``tmp_path``)."""
    path = lock_path(engine, site)
    if path is None:
        return is_locked(engine, site)
    return path.exists() and "pid" in path.read_text()


def _wait_locked(engine, site: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _holds_lock(engine, site):
        if proc.poll() is not None:
            raise AssertionError(f"first run ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("first run never took the lock")
        time.sleep(0.05)


def _two_runs(db: str, src: Path, engine, hold, release) -> None:
    """Start run 1, stall it inside its lock, start run 2, then let run 1 finish."""
    hold()
    first = _cohort("extract", "--source", str(src), "--db", db, "-q")
    try:
        _wait_locked(engine, "clinic", first)
        second = _cohort("extract", "--source", str(src), "--db", db, "-q")
        out2, err2 = second.communicate(timeout=60)
        assert second.returncode == EXIT_LOCKED, err2
        assert "lock for site 'clinic'" in err2 and "pid" in err2
    finally:
        release()
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert "extract: 50 read, 50 stored" in out1


def test_two_concurrent_runs_sqlite(tmp_path, db_url):
    src = _source(tmp_path)
    engine = get_engine(db_url)
    init_db(engine)
    blocker = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)

    _two_runs(db_url, src, engine, hold=lambda: blocker.execute("BEGIN IMMEDIATE"),
              release=lambda: blocker.execute("COMMIT"))
    blocker.close()
    assert _raw_count(engine) == 50
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        runs = conn.execute(select(T["extract_run"].c.status)).scalars().all()
    assert runs == ["ok"]  # the refused run left no trace
    engine.dispose()


def test_two_concurrent_runs_postgres(tmp_path, pg_url):
    src = _source(tmp_path)
    engine = get_engine(pg_url)
    init_db(engine)
    blocker = engine.connect()

    def hold() -> None:
        blocker.execute(text("LOCK TABLE extract_run IN ACCESS EXCLUSIVE MODE"))

    _two_runs(pg_url, src, engine, hold=hold, release=blocker.commit)
    blocker.close()
    assert _raw_count(engine) == 50
    with engine.connect() as conn:
        runs = conn.execute(select(T["extract_run"].c.status)).scalars().all()
    assert runs == ["ok"]
    engine.dispose()
