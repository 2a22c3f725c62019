"""The soak: a server that keeps changing, 30% faults, kills, incremental runs, for minutes.

Runs only when ``COHORT_SOAK_SECONDS`` is set (``make soak``; e.g. 300). Each cycle
changes the server (amended, new and deleted results, now and then a new patient in
place of the previous one: the server's size holds steady),
runs an incremental REST extraction (cohort scope) through the fault proxy (every
third cycle killed at a random moment first, then resumed), maps and derives, and
checks the database against a fresh, fault-free full extraction of the server as it
now is. The server runs in a process of its own, so that what this process holds is
the connector's: over the soak it must not keep growing in memory, threads or open
files.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
import requests
from fault_proxy import FaultProxy
from fhir_server import FHIR_JSON, transaction_bundles
from reliability_db import DERIVED_TABLES, MAPPED_TABLES, diff, row_count, run_stage, snapshot

from connector import pipeline
from connector.extract import run_extract
from connector.fhir.config import RetryConfig
from connector.synth import synthesize

SECONDS = float(os.environ.get("COHORT_SOAK_SECONDS") or 0)
pytestmark = pytest.mark.skipif(not SECONDS, reason="the soak runs with COHORT_SOAK_SECONDS "
                                                    "set (make soak)")

TESTS = Path(__file__).resolve().parents[1]
RATE = 0.3
RETRY = {"max_attempts": 12, "backoff_initial": 0.01, "backoff_max": 0.05, "budget": 100000}
OPTIONS = {"site": "soak", "rate_limit": 0, "page_size": 40, "patients_per_request": 4,
           "overlap_seconds": 1, "timeout": 0.5}
COMPARED = MAPPED_TABLES[:-1] + DERIVED_TABLES
WARM_UP = 3  # cycles before memory and files are taken as the baseline
SERVE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from fhir_server import start_server
server = start_server(public_url=sys.argv[2])
print(server.port, flush=True)
while True:
    time.sleep(3600)
"""


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open_files() -> list[str]:
    """What this process's descriptors point at, sockets and pipes left out (the proxy's
    connections come and go with the traffic)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if not target.startswith(("socket:", "pipe:", "anon_inode:")):
            out.append(target)
    return sorted(out)


def _live_raw(engine) -> set[tuple]:
    """(type, id, version, hash) of the resources stored and not marked deleted."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.text(
            "SELECT resource_type, resource_id, version_id, content_hash FROM raw_resource "
            "WHERE NOT deleted"))}


class Server:
    """sekmet in a child process, behind the fault proxy, changed over plain HTTP."""

    def __init__(self) -> None:
        self.proxy = FaultProxy(0, seed=62, retry_after="0", slow_seconds=0.8)
        port = self.proxy.reserve()
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE, str(TESTS), self.base_url],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        upstream = int(self.proc.stdout.readline())
        self.direct = f"http://127.0.0.1:{upstream}/fhir"
        self.proxy.upstream_port = upstream
        self.proxy.start()
        # a killed client's connections reset: expected here, not worth a traceback each
        self.proxy._server.handle_error = lambda _request, _address: None
        self.http = requests.Session()

    def load(self, resources: list[dict]) -> None:
        for bundle in transaction_bundles(resources):
            r = self.http.post(self.direct, data=orjson.dumps(bundle), timeout=60,
                               headers={"Content-Type": FHIR_JSON})
            r.raise_for_status()

    def read(self, rtype: str, rid: str) -> dict | None:
        r = self.http.get(f"{self.direct}/{rtype}/{rid}", timeout=30)
        return r.json() if r.status_code == 200 else None

    def put(self, res: dict) -> None:
        r = self.http.put(f"{self.direct}/{res['resourceType']}/{res['id']}",
                          data=orjson.dumps(res), headers={"Content-Type": FHIR_JSON},
                          timeout=30)
        r.raise_for_status()

    def delete(self, rtype: str, rid: str) -> bool:
        return self.http.delete(f"{self.direct}/{rtype}/{rid}", timeout=30).status_code < 300

    def stop(self) -> None:
        self.proxy.stop()
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Changes:
    """Seeded changes to the server between cycles."""

    def __init__(self, server: Server, resources: list[dict], seed: int) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.observations = [r["id"] for r in resources if r["resourceType"] == "Observation"]
        self.patients = [r for r in resources if r["resourceType"] == "Patient"]
        self.by_patient: dict[str, list[dict]] = {}
        for r in resources:
            ref = (r.get("subject") or {}).get("reference", "")
            if ref.startswith("Patient/"):
                self.by_patient.setdefault(ref.split("/", 1)[1], []).append(r)
        self.previous: list[tuple[str, str]] = []  # the last added patient's resources

    def apply(self, cycle: int) -> str:
        """Change the server while keeping its size steady (so memory has a level to hold)."""
        rng, server = self.rng, self.server
        for oid in rng.sample(self.observations, min(5, len(self.observations))):
            obs = server.read("Observation", oid)
            if obs is not None and "valueQuantity" in obs:
                obs.pop("meta", None)
                obs["valueQuantity"]["value"] = round(obs["valueQuantity"]["value"] * 1.01, 3)
                server.put(obs)
        source = rng.choice(list(self.by_patient))
        added = 0
        for res in rng.sample(self.by_patient[source], 3):
            if res["resourceType"] == "Observation":
                new = copy.deepcopy(res)
                new["id"] = f"soak-{uuid.UUID(int=rng.getrandbits(128))}"
                new.pop("meta", None)
                server.put(new)
                self.observations.append(new["id"])
                added += 1
        for oid in rng.sample(self.observations, added):
            if server.delete("Observation", oid):
                self.observations.remove(oid)
        done = f"amended 5, added and deleted {added} results"
        if cycle % 4 == 3:  # a new patient with another's records; the previous one goes
            pid = f"soak-pt-{cycle}"
            patient = copy.deepcopy(rng.choice(self.patients))
            patient.pop("meta", None)
            patient["id"] = pid
            server.put(patient)
            copied = []
            for res in self.by_patient[rng.choice(self.patients)["id"]]:
                new = copy.deepcopy(res)
                new.pop("meta", None)
                new["id"] = f"{new['id'][:40]}-{cycle}"
                new["subject"] = {"reference": f"Patient/{pid}"}
                server.put(new)
                copied.append((new["resourceType"], new["id"]))
            for rtype, rid in self.previous:
                server.delete(rtype, rid)
                if rtype == "Observation" and rid in self.observations:
                    self.observations.remove(rid)
            self.previous = [*copied, ("Patient", pid)]
            self.observations += [rid for rtype, rid in copied if rtype == "Observation"]
            done += ", a new patient in place of the previous one"
        return done


def test_soak(tmp_path: Path) -> None:
    folder = tmp_path / "cohort"
    synthesize(6, 1, 61, folder)
    resources = [orjson.loads(line) for p in sorted(folder.rglob("*.ndjson"))
                 for line in p.read_bytes().splitlines() if line.strip()]
    server = Server()
    proxy = server.proxy
    try:
        server.load(resources)
        changes = Changes(server, resources, seed=63)
        db = tmp_path / "soak.db"
        url = f"sqlite:///{db}"
        engine = pipeline.open_db(url)
        retry = RetryConfig(**RETRY)
        rng = random.Random(64)
        deadline = time.monotonic() + SECONDS
        baseline: tuple[float, int, list[str]] | None = None
        half = 0.0
        cycle = kills = faulted = faults = 0
        while time.monotonic() < deadline or cycle <= WARM_UP:
            what = changes.apply(cycle) if cycle else "initial load"
            proxy.paths.clear()  # (the proxy keeps every path it served)
            proxy.rate = RATE
            before_requests, before_faults = proxy.requests, sum(proxy.faults.values())
            if cycle % 3 == 2:  # killed half way, then resumed by the normal run below
                total = row_count(db, "raw_resource")
                opts = json.dumps({**OPTIONS, "retry": RETRY})
                kills += run_stage(url, "extract", server.base_url, opts,
                                   kill_after=rng.uniform(0.05, 1.5),
                                   kill_when=lambda t=total: row_count(db, "raw_resource")
                                   > t + 50).killed
            run_extract(engine, server.base_url, retry=retry, **OPTIONS)
            faulted += proxy.requests - before_requests
            faults += sum(proxy.faults.values()) - before_faults
            pipeline.map_(engine)
            pipeline.derive(engine)
            # the reference: everything the server now holds, fetched afresh without faults
            # (through the proxy, whose address the server's links carry)
            proxy.rate = 0.0
            ref_db = tmp_path / f"ref-{cycle}.db"
            ref = pipeline.open_db(f"sqlite:///{ref_db}")
            run_extract(ref, server.base_url, retry=retry, **OPTIONS)
            pipeline.map_(ref)
            pipeline.derive(ref)
            assert _live_raw(ref) == _live_raw(engine), f"cycle {cycle} ({what})"
            a, b = snapshot(ref, COMPARED), snapshot(engine, COMPARED)
            assert not diff(a, b), f"cycle {cycle} ({what}): {diff(a, b)}"
            ref.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{ref_db}{suffix}").unlink(missing_ok=True)
            del a, b
            gc.collect()
            if cycle == WARM_UP:
                baseline = (_rss_mb(), threading.active_count(), _open_files())
            if time.monotonic() < deadline - SECONDS / 2:
                half = _rss_mb()
            cycle += 1
        assert baseline is not None
        grown_mb, late_mb = _rss_mb() - baseline[0], _rss_mb() - half
        threads, files = threading.active_count(), _open_files()
        print(f"\nsoak: {cycle} cycles ({kills} killed runs) in {SECONDS:.0f} s; "
              f"{faulted} requests in the faulty runs, {faults} faulted "
              f"{dict(proxy.faults)}; memory {grown_mb:+.1f} MB since cycle {WARM_UP}, "
              f"{late_mb:+.1f} MB in the second half; threads {threads - baseline[1]:+d}, "
              f"files {len(files) - len(baseline[2]):+d}")
        assert faults >= 0.2 * faulted
        assert threads <= baseline[1], "threads left running"
        # (the database's connection pool may hold a few more connections to the same files)
        assert set(files) == set(baseline[2]), f"files left open: {set(files) - set(baseline[2])}"
        # The allocator keeps some high-water memory (RSS rarely shrinks); a leak keeps
        # growing, so the second half of the soak must add little.
        assert grown_mb < 40, f"the process grew by {grown_mb:.0f} MB"
        assert late_mb < 15, f"the process grew by {late_mb:.0f} MB in the second half"
    finally:
        server.stop()
