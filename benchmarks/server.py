"""A sekmet-fhir server in its own process, loaded with a synthetic cohort.

The server runs in a separate interpreter (``python -m benchmarks.server``) so that
it and the extractor each have a core and do not share a GIL, as a hospital's
server and the connector would not.

Loading 600k resources through transaction Bundles takes minutes (~2,000/s), so
``build_store`` writes sekmet's own SQLite store directly: the same rows its
``Store.update`` writes (current version, history entry, search index from
sekmet's own indexer), with the index built once at the end and analysed. Search
index rows are computed in worker processes. The built store is kept in a cache
folder, keyed by what it holds, so later runs start at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parents[1]
STORE_FORMAT = 3  # bump when build_store writes differently
STAMP_AGE_S = 600
SMALL_BYTES = 20 << 20  # below this, worker processes cost more than they save


def _resources(folder: Path) -> Iterator[bytes]:
    for path in sorted(folder.rglob("*.ndjson")):
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield line


def _last_occurrences(folder: Path) -> set[int]:
    """Line numbers that are the last occurrence of their (type, id): what PUTs leave."""
    last: dict[tuple[str, str], int] = {}
    for n, line in enumerate(_resources(folder)):
        res = orjson.loads(line)
        last[(res["resourceType"], res["id"])] = n
    return set(last.values())


def _rows(chunk: list[tuple[int, bytes]], stamp: str) -> tuple[list[tuple], list[tuple]]:
    """(resource rows, index rows) of a chunk, as ``Store._write`` would make them."""
    from sekmet.fhir.indexer import extract

    res_rows, idx_rows = [], []
    for seq, line in chunk:
        res = orjson.loads(line)
        res["meta"] = {**(res.get("meta") or {}), "versionId": "1", "lastUpdated": stamp}
        body = json.dumps(res, separators=(",", ":"))
        rtype, rid = res["resourceType"], res["id"]
        res_rows.append((rtype, rid, 1, stamp, "internal", body, seq))
        idx_rows += [(rtype, rid, r.param, r.s, r.sys, r.code, r.rtype, r.rid, r.lo, r.hi, r.num)
                     for r in extract(res)]
    return res_rows, idx_rows


def _chunks(folder: Path, keep: set[int], size: int = 2000) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    seq = 0
    for n, line in enumerate(_resources(folder)):
        if n not in keep:
            continue
        seq += 1
        chunk.append((seq, line))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _windowed(pool: ProcessPoolExecutor, chunks: Iterator[list[tuple[int, bytes]]], stamp: str,
              window: int) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """``_rows`` of each chunk, in order, with at most ``window`` chunks in flight."""
    pending: deque = deque()
    for chunk in chunks:
        pending.append(pool.submit(_rows, chunk, stamp))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def build_store(folder: Path, db_path: Path, *, workers: int = 2) -> int:
    """Write sekmet's store for every resource under ``folder``; returns how many."""
    from sekmet.fhir.common import instant
    from sekmet.fhir.store import SCHEMA, Store

    db_path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    Store(str(db_path)).conn.close()  # the schema, as sekmet makes it
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    indexes = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='idx'")]
    for name in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    keep = _last_occurrences(folder)
    # stamped a while back, so that an incremental run right after the first one does
    # not rightly fetch them again for being inside its overlap window
    stamp = instant(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=STAMP_AGE_S))
    n = 0
    conn.execute("BEGIN")
    small = sum(p.stat().st_size for p in folder.rglob("*.ndjson")) < SMALL_BYTES
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = ((_rows(c, stamp) for c in _chunks(folder, keep)) if small
                else _windowed(pool, _chunks(folder, keep), stamp, workers * 2))
        for res_rows, idx_rows in rows:
            conn.executemany("INSERT INTO resources(type,id,version,last_updated,deleted,origin,"
                             "json,seq) VALUES (?,?,?,?,0,?,?,?)", res_rows)
            conn.executemany("INSERT INTO versions(type,id,version,last_updated,deleted,method,"
                             "json,seq) VALUES (?,?,?,?,0,'PUT',?,?)",
                             [(r[0], r[1], r[2], r[3], r[5], r[6]) for r in res_rows])
            conn.executemany("INSERT INTO idx(type,id,param,s,sys,code,rtype,rid,lo,hi,num) "
                             "VALUES (?,?,?,?,?,?,?,?,?,?,?)", idx_rows)
            n += len(res_rows)
    conn.execute("COMMIT")
    conn.executescript(SCHEMA)  # recreates the search indexes in one pass each
    # Statistics for SQLite's planner. Without them a search for several patients
    # (``patient=a,b,c``) uses only the (type, param, rtype) prefix of sekmet's reference
    # index and reads every reference of the type: ~1 s a page at 600k resources, which
    # would measure a planner accident rather than a server.
    conn.execute("ANALYZE")
    conn.close()
    return n


def cached_store(folder: Path, key: str, cache: Path) -> tuple[Path, int]:
    """A built store for ``folder`` from the cache (path, resources), building it if missing."""
    import sekmet

    version = getattr(sekmet, "__version__", "?")
    digest = hashlib.sha256(f"{key}|{version}|{STORE_FORMAT}".encode()).hexdigest()[:16]
    path = cache / f"sekmet-{digest}.db"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        return path, int(info["resources"])
    tmp = path.with_suffix(".building")
    n = build_store(folder, tmp)
    tmp.replace(path)
    meta.write_text(json.dumps({"key": key, "resources": n}))
    return path, n


# ------------------------------------------------------------------ process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    base_url: str
    db_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(db_path: Path, *, timeout: float = 60) -> ServerProcess:
    """Serve a copy-free store file at a free loopback port; returns once it answers."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", "--db", str(db_path), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sekmet exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(f"{base}/metadata", timeout=5).ok:
                return ServerProcess(proc, base, db_path)
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("sekmet did not start")
        time.sleep(0.1)


def serve(db_path: str, port: int) -> None:
    import uvicorn
    from sekmet.config import Settings
    from sekmet.main import create_app

    base = f"http://127.0.0.1:{port}/fhir"
    settings = Settings.model_validate({
        "base_url": base, "host": "127.0.0.1", "port": port, "db_path": db_path,
        "log_inbound": False, "simulator": {"enabled": False, "delay_seconds": 0},
        "validation": {"inbound": "off"}, "server_auth": {"types": ["none"]},
        "own_private_key_path": "/nonexistent/sekmet_private.pem",
    })
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                access_log=False, lifespan="off", log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description="serve a sekmet store file (benchmarks)")
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("SEKMET_CONFIG", "/nonexistent/settings.yaml")
    serve(args.db, args.port)


if __name__ == "__main__":
    main()
