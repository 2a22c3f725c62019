"""A bulk extraction killed with SIGKILL while downloading, then run again, ends with the same
database as an uninterrupted run and does not download the finished files again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import FAST
from sqlalchemy import select
from sqlmodel import Session

from connector.db import get_engine, init_db
from connector.db.models import BulkJob, Quarantine, RawResource
from connector.extract import run_extract

ROOT = Path(__file__).resolve().parents[2]


def _cli(url: str, db: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "extract", "--source", url, "--bulk",
         "--db", f"sqlite:///{db}", "-q"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _done_files(db: Path) -> tuple[int, int]:
    """(files loaded, files listed) as another process sees them; (0, 0) before the tables."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            done, total = conn.execute(
                "SELECT coalesce(sum(done), 0), count(*) FROM bulk_file").fetchone()
            return int(done), int(total)
    except sqlite3.Error:
        return 0, 0


def _table(engine, model) -> list[tuple]:
    """Every row but the surrogate key and the load time, in a stable order."""
    cols = [c for c in model.__table__.columns if c.name not in ("id", "fetched_at",
                                                                  "created_at")]
    with Session(engine) as s:
        return sorted(tuple(row) for row in s.exec(select(*cols)).all())


def test_sigkill_during_download_then_rerun_equals_an_uninterrupted_run(bulk_proxied, tmp_path,
                                                                        bulk_data):
    server, proxy = bulk_proxied
    # every file download waits 0.4 s in the proxy: a window to kill the process in
    proxy.kinds, proxy.only, proxy.rate, proxy.slow_seconds = ("slow",), "/bulk-files/", 1.0, 0.4
    db = tmp_path / "killed.db"
    proc = _cli(server.base_url, db, tmp_path)
    deadline = time.monotonic() + 60
    try:
        while _done_files(db)[0] < 1:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no file was loaded within 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done, listed = _done_files(db)
    assert 1 <= done < listed  # killed half way through the files
    engine = get_engine(f"sqlite:///{db}")
    with Session(engine) as s:
        finished = set(s.exec(select(RawResource.source)).scalars())
        job = s.exec(select(BulkJob)).scalars().one()
    assert job.state == "downloading"

    proxy.rate = 0.0
    before = len(proxy.paths)
    rerun = _cli(server.base_url, db, tmp_path)
    output = rerun.communicate(timeout=60)[0].decode()
    assert rerun.returncode == 0, output
    again = proxy.paths[before:]
    assert not any("$export" in p for p in again)  # the same job, no second kick-off
    fetched = {p.rsplit("/", 1)[-1].removesuffix(".ndjson") for p in again
               if "/bulk-files/" in p}
    assert fetched and not fetched & {s.removeprefix("$export ") for s in finished}
    assert len(fetched) <= listed - done

    reference = get_engine(f"sqlite:///{tmp_path / 'uninterrupted.db'}")
    init_db(reference)
    run_extract(reference, server.base_url, bulk=True, **FAST)
    assert _table(engine, RawResource) == _table(reference, RawResource)
    assert len(_table(engine, RawResource)) == len(bulk_data["resources"])
    assert _table(engine, Quarantine) == _table(reference, Quarantine)
    assert not list((tmp_path / ".bulk").rglob("*.ndjson*"))  # the job's files are cleaned up
