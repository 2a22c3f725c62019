"""What a benchmark child process runs: ``python -m benchmarks.tasks NAME JSON-ARGS``.

Each task times only its own work (``perf_counter`` around it, after imports and
set-up) and prints one ``BENCH-RESULT {json}`` line; the parent adds peak memory
and CPU time (``benchmarks.measure``).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from benchmarks.measure import RESULT_PREFIX

TASKS: dict[str, Callable[..., dict[str, Any]]] = {}


def task(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    TASKS[fn.__name__] = fn
    return fn


def _quiet_logs() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)


# ------------------------------------------------------------------ (b) folder


@task
def folder_load(folder: str, db: str, loader: str = "python") -> dict[str, Any]:
    """Folder NDJSON → raw store → normalized tables (extract + map), with either loader."""
    _import_stages("connector.extract", "connector.mapping")
    if loader == "duckdb":
        _import_stages("connector.extract.duck")
    from connector import pipeline

    engine = pipeline.open_db(f"sqlite:///{db}")
    t0 = time.perf_counter()
    summary = pipeline.extract(engine, folder, loader=loader)
    t1 = time.perf_counter()
    mapped = pipeline.map_(engine)
    t2 = time.perf_counter()
    return {"read": summary.read, "extract_s": t1 - t0, "map_s": t2 - t1, "seconds": t2 - t0,
            "rows": dict(mapped.rows), "unmapped": mapped.unmapped,
            "quarantined": mapped.quarantined + summary.quarantined}


def _ndjson_lines(folder: Path) -> Any:
    for path in sorted(folder.rglob("*.ndjson")):
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield line


@task
def validate_all(folder: str, limit: int = 0) -> dict[str, Any]:
    """The naive baseline: parse and validate every resource with fhir.resources R4B.

    With ``limit`` > 0 only an evenly spaced sample of about that many lines is
    validated (every k-th line), so the mix of types is the whole's and the rate,
    which is what counts, is measured in bounded time. Reading the files is not timed.
    """
    import importlib

    from pydantic import ValidationError

    modules = {"Patient": "patient", "Observation": "observation", "Procedure": "procedure",
               "MedicationAdministration": "medicationadministration",
               "MedicationRequest": "medicationrequest",
               "MedicationDispense": "medicationdispense",
               "MedicationStatement": "medicationstatement",
               "Condition": "condition",
               "Medication": "medication"}
    models = {name: getattr(importlib.import_module(f"fhir.resources.R4B.{mod}"), name)
              for name, mod in modules.items()}
    total = sum(1 for _ in _ndjson_lines(Path(folder)))
    stride = max(1, -(-total // limit)) if limit else 1
    lines = list(itertools.islice(_ndjson_lines(Path(folder)), 0, None, stride))
    valid = invalid = 0
    t0 = time.perf_counter()
    for line in lines:
        res = orjson.loads(line)
        try:
            models[res["resourceType"]].model_validate(res)
            valid += 1
        except ValidationError:
            invalid += 1
    seconds = time.perf_counter() - t0
    return {"read": len(lines), "valid": valid, "invalid": invalid, "seconds": seconds}


# ------------------------------------------------------------------- (a) REST


#: The search a request belongs to; a context variable, so that the client's page
#: prefetch (which runs the request in a thread with a copy of the context) keeps it.
_CHAIN: contextvars.ContextVar[int | None] = contextvars.ContextVar("chain", default=None)


class _Recorder:
    """Which requests an extraction sent, grouped into chains (a search and its next pages)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.requests: list[tuple[int | None, str, list[list[str]] | None]] = []

    def install(self) -> None:
        from connector.fhir.client import FhirClient

        recorder = self
        original_search, original_send = FhirClient.search, FhirClient._send

        def search(client: Any, rtype: str, params: Any = (), *, count: int | None = None):
            chain = next(recorder.counter)
            pages = original_search(client, rtype, params, count=count)
            while True:
                token = _CHAIN.set(chain)
                try:
                    page = next(pages)
                except StopIteration:
                    return
                finally:
                    _CHAIN.reset(token)
                yield page

        def send(client: Any, method: str, url: str, params: Any, headers: Any, data: Any,
                 **kw: Any):
            chain = _CHAIN.get()
            with recorder.lock:
                recorder.requests.append(
                    (chain, url, [list(p) for p in params] if params else None))
            return original_send(client, method, url, params, headers, data, **kw)

        FhirClient.search = search  # type: ignore[method-assign]
        FhirClient._send = send  # type: ignore[method-assign]

    def chains(self) -> list[list[tuple[str, list[list[str]] | None]]]:
        grouped: dict[Any, list[tuple[str, list[list[str]] | None]]] = {}
        for n, (chain, url, params) in enumerate(self.requests):
            grouped.setdefault(chain if chain is not None else f"single-{n}", []).append(
                (url, params))
        return list(grouped.values())


@task
def rest_extract(url: str, db: str, options: dict[str, Any],
                 record: str | None = None) -> dict[str, Any]:
    """One REST extraction (full on a fresh database, incremental on a used one)."""
    _quiet_logs()
    from connector.extract.remote import extract_remote
    from connector.pipeline import open_db

    engine = open_db(f"sqlite:///{db}")
    recorder = _Recorder()
    if record:
        recorder.install()
    t0, c0 = time.perf_counter(), time.process_time()
    summary = extract_remote(engine, url, **options)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if record:
        Path(record).write_bytes(orjson.dumps(recorder.chains()))
    return {"read": summary.read, "stored": summary.counts.stored, "seconds": seconds,
            "cpu_s": cpu,
            "requests": len(recorder.requests) or _requests_of_last_run(engine),
            **_client_settings(engine)}


def _last_run(engine: Any) -> Any:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT message FROM extract_run ORDER BY id DESC LIMIT 1")).scalar_one_or_none()


def _requests_of_last_run(engine: Any) -> int:
    """Requests of the run, from its record (when no recorder counted them)."""
    m = re.search(r"(\d+) requests", _last_run(engine) or "")
    return int(m.group(1)) if m else 0


def _client_settings(engine: Any) -> dict[str, Any]:
    """Page size and rate limit the run used, and its wait on that limit, from its record."""
    message = _last_run(engine) or ""
    out: dict[str, Any] = {}
    for key in ("page_size", "rate_limit", "rate_limit_wait"):
        m = re.search(rf"{key}=([0-9.]+)", message)
        if m:
            out[key] = m.group(1)
    return out


_NEXT = re.compile(rb'"relation"\s*:\s*"next"\s*,\s*"url"\s*:\s*"([^"]+)"')
_ENTRY = re.compile(rb'"fullUrl"\s*:')


@task
def raw_paging(chains: str, concurrency: int = 4) -> dict[str, Any]:
    """The same searches with plain HTTP: first page, then next links; nothing parsed or kept.

    Each chain (one search) is followed page by page in one thread, ``concurrency``
    chains at a time, as the extractor's workers do. Next links are found with a
    regular expression on the body's bytes.
    """
    import requests

    work = orjson.loads(Path(chains).read_bytes())
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def follow(chain: list) -> tuple[int, int]:
        url, params = chain[0]
        pages = entries = 0
        headers = {"Accept": "application/fhir+json"}
        is_search = len(chain) > 1 or (params and any(k == "_count" for k, _ in params))
        while url:
            r = session().get(url, params=params, headers=headers, timeout=120)
            r.raise_for_status()
            body = r.content
            pages += 1
            entries += len(_ENTRY.findall(body))
            params = None
            m = _NEXT.search(body) if is_search else None
            url = m.group(1).decode() if m else None
        return pages, entries

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(follow, work))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "requests": sum(p for p, _ in results),
            "entries": sum(e for _, e in results), "chains": len(work)}


@task
def type_paging(url: str, types: list[str], page_size: int = 200) -> dict[str, Any]:
    """Every resource of each type by plain paging (``Type?_count=N`` then next links)."""
    import requests

    session = requests.Session()
    pages = entries = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for rtype in types:
        nxt: str | None = f"{url}/{rtype}?_count={page_size}"
        while nxt:
            r = session.get(nxt, headers={"Accept": "application/fhir+json"}, timeout=300)
            r.raise_for_status()
            pages += 1
            entries += len(_ENTRY.findall(r.content))
            m = _NEXT.search(r.content)
            nxt = m.group(1).decode() if m else None
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "requests": pages, "entries": entries}


# ------------------------------------------------------ (c), (d) and the pipeline


STAGE_MODULES = ("connector.extract", "connector.mapping", "connector.cohort",
                 "connector.analysis", "connector.report")


def _import_stages(*modules: str) -> None:
    """Import the stages' modules first, so no timing includes an import (only those a
    task uses: the analysis stack alone holds ~150 MB, which a load should not be charged)."""
    import importlib

    for name in modules or STAGE_MODULES:
        importlib.import_module(name)


def _all_stages(engine: Any, source: str, out: Path) -> dict[str, float]:
    from connector import pipeline

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    for stage, step in (("extract", lambda: pipeline.extract(engine, source)),
                        ("map", lambda: pipeline.map_(engine)),
                        ("derive", lambda: pipeline.derive(engine)),
                        ("analyze", lambda: pipeline.analyze(engine, out))):
        t = time.perf_counter()
        step()
        times[f"{stage}_s"] = time.perf_counter() - t
    times["seconds"] = time.perf_counter() - t0
    return times


@task
def pipeline_twice(source: str, db: str, out: str) -> dict[str, Any]:
    """Every stage, as ``cohort run`` does, on a fresh database and then once more."""
    _quiet_logs()
    _import_stages()
    from connector import pipeline

    engine = pipeline.open_db(f"sqlite:///{db}")
    first = _all_stages(engine, source, Path(out))
    again = _all_stages(engine, source, Path(out))
    return {"first": first, "again": again}


@task
def derive_analyze(db: str, out: str) -> dict[str, Any]:
    """Derive + analyse + report on a database whose normalized tables are filled."""
    _quiet_logs()
    _import_stages("connector.cohort", "connector.analysis", "connector.report")
    import sqlalchemy as sa

    from connector import pipeline

    engine = pipeline.open_db(f"sqlite:///{db}")
    with engine.connect() as conn:
        patients = conn.execute(sa.text("SELECT count(*) FROM patient")).scalar_one()
    t0 = time.perf_counter()
    pipeline.derive(engine)
    t1 = time.perf_counter()
    results = pipeline.analyze(engine, Path(out))
    t2 = time.perf_counter()
    with engine.connect() as conn:
        cohort = conn.execute(sa.text(
            "SELECT count(*) FROM cohort_patient WHERE in_cohort")).scalar_one()
        lines = conn.execute(sa.text("SELECT count(*) FROM therapy_line")).scalar_one()
    return {"patients": patients, "in_cohort": cohort, "lines": lines, "derive_s": t1 - t0,
            "analyze_s": t2 - t1, "seconds": t2 - t0, "results_keys": len(results)}


@task
def prepare_many_patients(db: str, work: str, n_patients: int, seed: int = 17,
                          template_patients: int = 500) -> dict[str, Any]:
    """Normalized tables for ``n_patients``: a synthetic cohort, extracted and mapped once,
    then copied site by site under new site names and patient keys until there are
    ``n_patients`` patients (the last copy takes only part of a site)."""
    from benchmarks.replicate import replicate_sites
    from connector import pipeline
    from connector.synth import synthesize

    folder = Path(work) / "template"
    synthesize(template_patients, 2, seed, folder)
    engine = pipeline.open_db(f"sqlite:///{db}")
    pipeline.extract(engine, str(folder))
    pipeline.map_(engine)
    total = replicate_sites(engine, n_patients)
    return {"patients": total}


# ------------------------------------------------------------ issue 4: 1 GB export


@task
def bulk_load(folder: str, db: str, site: str = "bulk") -> dict[str, Any]:
    """A folder of export NDJSON into the raw store through the bulk loader."""
    from benchmarks.export_folder import load_ndjson_export
    from connector.pipeline import open_db

    engine = open_db(f"sqlite:///{db}")
    t0 = time.perf_counter()
    summary = load_ndjson_export(engine, folder, site=site)
    path = "benchmarks.export_folder.load_ndjson_export"
    seconds = time.perf_counter() - t0
    return {"read": summary.read, "stored": summary.counts.stored, "seconds": seconds,
            "path": path}


def _own_peak_kb() -> int | None:
    """This process's own peak RSS since its exec (``VmHWM``).

    The kernel's ``ru_maxrss`` of a child also counts the memory of the parent it
    was forked from (the high-water mark survives exec), so a large harness would
    show up as the task's peak; ``VmHWM`` belongs to the new address space only.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    result = TASKS[name](**args)
    result["_vmhwm_kb"] = _own_peak_kb()
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
