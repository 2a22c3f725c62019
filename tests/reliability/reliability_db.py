"""Helpers for the reliability suite: database snapshots to compare runs, and a stage
runner that can be killed at a chosen moment.

A snapshot holds every row of the tables a stage writes, without what legitimately
differs between two correct runs: surrogate keys and load times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("stage_driver.py")

VOLATILE = {"id", "fetched_at", "created_at", "loaded_at", "derived_at", "updated_at"}
RAW_TABLES = ("raw_resource", "quarantine")
MAPPED_TABLES = ("patient", "medication_exposure", "procedure_event", "lab_result",
                 "quarantine")
DERIVED_TABLES = ("cohort_patient", "therapy_line")


def snapshot(engine: Engine, tables: tuple[str, ...]) -> dict[str, list[tuple]]:
    """Every row of ``tables`` (sorted, without keys and load times)."""
    out: dict[str, list[tuple]] = {}
    meta = sa.MetaData()
    meta.reflect(engine, only=list(tables))
    # freshly reflected tables make new statements each call: keep them out of the
    # engine's statement cache, which would otherwise fill up over a long soak
    with engine.connect().execution_options(compiled_cache=None) as conn:
        for name in tables:
            table = meta.tables[name]
            cols = [c for c in table.columns if c.name not in VOLATILE]
            rows = conn.execute(sa.select(*cols)).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def diff(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> str:
    """A short description of how two snapshots differ ("" when equal)."""
    problems = []
    for name in sorted(set(a) | set(b)):
        ra, rb = set(a.get(name, [])), set(b.get(name, []))
        if ra != rb:
            problems.append(f"{name}: {len(ra - rb)} rows only in the first, "
                            f"{len(rb - ra)} only in the second "
                            f"({len(a.get(name, []))} vs {len(b.get(name, []))} rows)")
        elif len(a.get(name, [])) != len(b.get(name, [])):
            problems.append(f"{name}: duplicate rows ({len(a[name])} vs {len(b[name])})")
    return "; ".join(problems)


@dataclass
class StageRun:
    returncode: int
    killed: bool  # SIGKILL arrived while the stage was at work
    work_seconds: float | None  # the stage's own time, when it finished
    output: str


def run_stage(db_url: str, stage: str, *args: str, kill_after: float | None = None,
              kill_when: Callable[[], bool] | None = None, timeout: float = 120) -> StageRun:
    """Run one stage in a child process (``stage_driver.py``) and maybe kill it.

    ``kill_after``: SIGKILL that many seconds after the stage began its work (imports
    and database set-up done); ``kill_when``: SIGKILL as soon as this returns true
    (polled every few milliseconds once the stage is at work)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(DRIVER), db_url, stage, *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    started = None
    deadline = time.monotonic() + timeout
    while started is None:
        line = proc.stdout.readline().decode()
        if not line:
            break
        lines.append(line)
        if line.startswith("START"):
            started = time.monotonic()
    killed = False
    if started is not None and (kill_after is not None or kill_when is not None):
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_after is not None and time.monotonic() >= started + kill_after:
                break
            if kill_when is not None and kill_when():
                break
            time.sleep(0.003)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed = True
    try:
        rest, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
    output = "".join(lines) + rest.decode("utf-8", "replace")
    work = None
    for line in output.splitlines():
        if line.startswith("DONE "):
            work = float(line.split()[1])
    if killed and proc.returncode != -signal.SIGKILL:
        killed = False  # it ended on its own just before the signal
    return StageRun(proc.returncode, killed, work, output)


def row_count(db: Path, table: str) -> int:
    """Rows committed so far, as another process sees them (0 before the table exists)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0
