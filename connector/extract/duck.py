"""The DuckDB load path for NDJSON files (folders and Bulk exports): filter in SQL first.

A hospital export is mostly Observations no study lab code maps (vital signs,
chemistry, blood counts): four in five resources of a lab-heavy export. The
Python path parses, hashes and writes a raw row for every one of them; this path
lets DuckDB read the file and decide which lines the study needs before Python
sees any of them:

1. **Codes** (one scan): the distinct ``code`` objects of the file's Observations
   with their counts, and per code and patient the latest day (for the last
   contact). Each distinct code is judged once by the raw store's own test
   (``ObservationTrim.is_study_lab``, built from ``mappings/labs.csv`` and
   ``systems.csv``); the codes no lab maps become a table joined in the next scan.
2. **Kept lines** (second scan): every line except Observations whose ``code``
   is in that table, whose ``id`` is a valid one and which the raw store does not
   hold yet. Those lines go through the same ``RawStore.add_raw`` as on the Python
   path, so validation (in the map stage), quarantine, versions and hashes are
   unchanged. A line that is not a usable resource (no id, no resourceType, not an
   object) is never dropped here: it reaches ``RawStore`` and is quarantined with
   its reason as before.
3. **Counts**: the dropped Observations are recorded as one ``raw_code_count``
   row per (file, code) with the same trimmed body the raw store would have held,
   so the map stage's unmapped count, the unmapped-code report and the stale-code
   check read them exactly like trimmed rows.

A file DuckDB cannot read (a malformed line, a gzip stream cut short) is loaded
by the Python path instead (``connector.extract.folder.load_file``), which
quarantines each bad line with its reason. An Observation id the raw store
already holds (from an earlier load) always goes to Python, so a resource that
changed to a code the study does not use replaces its stored copy rather than
leaving a stale whole body behind.

Differences from the Python path, by design: dropped Observations have no raw
row, so a Bulk ``deleted`` file cannot mark them deleted (their counts stay in
the unmapped report until the file is loaded again), and a file holding two
versions of one Observation id, one under a study code and one under another
code, keeps the study version whatever their order.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

import duckdb
import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from connector.codes.labfilter import ObservationTrim
from connector.db.models import RawCodeCount, RawResource
from connector.extract.contact import merge_day, today_text, write_contacts
from connector.extract.store import RawStore

log = logging.getLogger(__name__)

#: Lines handed from DuckDB to Python at a time.
FETCH_ROWS = 2000
#: DuckDB's own memory (file buffers, the code table); it spills to a temp folder beyond.
MEMORY_LIMIT = os.environ.get("COHORT_DUCKDB_MEMORY", "160MB")
THREADS = int(os.environ.get("COHORT_DUCKDB_THREADS", "1") or 1)
#: The most bytes one line may have (DuckDB's ``maximum_object_size``); a longer line
#: makes the file go through the Python path, which quarantines it or stores it.
MAX_LINE_BYTES = 8 * 1024 * 1024

#: The fields the filter reads, parsed once per line (each ``->`` would parse the whole
#: line again): x[1] resourceType, x[2] id, x[3] code, x[4] subject.reference, as JSON.
_FIELDS = "json_extract(json, ['$.resourceType', '$.id', '$.code', '$.subject.reference'])"
#: The patient a line belongs to ('' when none can be read): a Patient's id, else the id
#: in its subject reference (the pattern of the REST screen, connector/extract/remote.py).
_PATIENT_OF = ("CASE WHEN x[1] = '\"Patient\"' THEN coalesce(x[2]->>'$', '') "
               "ELSE coalesce(regexp_extract(x[4]->>'$', "
               "'(?:^|/)Patient/([A-Za-z0-9\\-.]{1,64})(?:/_history/[^/]+)?$', 1), '') END")
_PATIENT_TYPES = ("'\"Patient\"', '\"MedicationAdministration\"', '\"Procedure\"', "
                  "'\"Observation\"', '\"MedicationRequest\"', '\"MedicationDispense\"', "
                  "'\"MedicationStatement\"', '\"Condition\"'")
#: An Observation with a usable id: the lines whose code may decide they are dropped. An
#: escaped or odd form does not match and the line goes to the raw store, which decides.
_OBS_WITH_ID = ("(x[1] = '\"Observation\"' AND json_type(x[2]) = 'VARCHAR' "
                "AND length(x[2]->>'$') BETWEEN 1 AND 64)")


class DuckUnreadable(Exception):
    """DuckDB cannot read the file as NDJSON; the caller loads it the Python way."""


class DuckScanFailed(RuntimeError):
    """DuckDB failed while lines were being stored: the file's transaction must roll back."""


@dataclass
class DuckLoad:
    """What loading one file did."""

    lines: int  # non-blank lines read (the Python path's count)
    kept: int  # lines handed to the raw store
    counted: int  # Observations recorded as code counts only


@contextmanager
def duck_connection() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with bounded memory and threads, closed afterwards."""
    spill = tempfile.mkdtemp(prefix="cohort-duckdb-")
    con = duckdb.connect(config={"threads": THREADS, "memory_limit": MEMORY_LIMIT,
                                 "temp_directory": spill,
                                 "preserve_insertion_order": True})
    con.execute("SET enable_progress_bar = false")  # DuckDB's own bar would tear the CLI's
    try:
        yield con
    finally:
        con.close()
        _remove_tree(spill)


def _remove_tree(folder: str) -> None:
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(folder)


def ndjson_source(path: Path) -> str:
    """``read_ndjson_objects`` over one file; the path is quoted as an SQL literal."""
    literal = str(path).replace("'", "''")
    return (f"read_ndjson_objects('{literal}', compression='auto', "
            f"maximum_object_size={MAX_LINE_BYTES})")


#: What the first scan reads: x[1..3] as in ``_FIELDS``, x[4] subject.reference,
#: x[5] status, x[6..10] the day fields of connector/extract/contact.py.
_SCAN_FIELDS = ("json_extract(json, ['$.resourceType', '$.id', '$.code', "
                "'$.subject.reference', '$.status', '$.effectiveDateTime', "
                "'$.effectiveInstant', '$.issued', '$.effectivePeriod.start', "
                "'$.effectivePeriod.end'])")


def _day_of(i: int) -> str:
    """x[i] as a day (its first ten characters) when it starts with one no later than
    today, else NULL: the SQL twin of ``contact._day`` with the ``<= today`` test."""
    value = f"x[{i}]->>'$'"
    return (f"CASE WHEN regexp_matches({value}, '^\\d{{4}}-\\d{{2}}-\\d{{2}}') "
            f"AND left({value}, 10) <= $today THEN left({value}, 10) END")


def observation_scan(con: duckdb.DuckDBPyConnection, path: Path, today: str
                     ) -> tuple[int, dict[str, int]]:
    """(non-blank lines, {code JSON text: Observations with a valid id and that code}).

    One pass over the file also leaves, per (code, subject reference), the latest day of
    those Observations (``contact.contact_of``'s rule) in the table ``obs_days``, so the
    contacts of the Observations that turn out to be only counted need no second scan
    of the file (``observation_contacts``). The table has one row per code and patient,
    not per line, and DuckDB spills it to disk beyond its memory limit.

    Raises ``DuckUnreadable`` when DuckDB cannot read the file."""
    sql = (f"CREATE OR REPLACE TABLE obs_days AS SELECT code, ref, count(*) AS n, "  # noqa: S608
           f"max(day) AS day FROM (SELECT CASE WHEN {_OBS_WITH_ID} THEN x[3]::VARCHAR END "
           f"AS code, CASE WHEN {_OBS_WITH_ID} AND coalesce(x[5]->>'$', '') <> "
           f"'entered-in-error' THEN x[4]->>'$' END AS ref, "
           f"greatest({', '.join(_day_of(i) for i in range(6, 11))}) AS day "
           f"FROM (SELECT {_SCAN_FIELDS} AS x FROM {ndjson_source(path)})) GROUP BY ALL")
    try:
        con.execute(sql, {"today": today})
    except duckdb.Error as exc:
        raise DuckUnreadable(str(exc).splitlines()[0][:300]) from None
    rows = con.execute("SELECT code, sum(n) FROM obs_days GROUP BY code").fetchall()
    lines = sum(int(n) for _, n in rows)
    return lines, {str(code): int(n) for code, n in rows if code is not None}


def observation_codes(con: duckdb.DuckDBPyConnection, path: Path
                      ) -> tuple[int, dict[str, int]]:
    """``observation_scan`` without the days (for callers that want the counts only)."""
    return observation_scan(con, path, today_text())


def observation_contacts(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(subject reference, latest day) of the scanned file's Observations with an unused
    code: the SQL twin of ``contact.contact_of`` for the Observations the loader only
    counts. Needs the ``obs_days`` table of ``observation_scan`` and the ``unused`` one."""
    sql = ("SELECT ref, max(day) FROM obs_days WHERE code IN (SELECT v FROM unused) "
           "AND ref <> '' AND day IS NOT NULL GROUP BY ref")
    return [(str(ref), str(day)) for ref, day in con.execute(sql).fetchall()]


def unused_codes(codes: dict[str, int], trim: ObservationTrim) -> dict[str, dict]:
    """The code texts no study lab maps, parsed: {text: code object}.

    Judged by the raw store's own test, so a code counted here is exactly one the
    Python path would have stored trimmed; a ``code`` that is not an object is kept
    whole (the map stage quarantines it)."""
    out: dict[str, dict] = {}
    for text in codes:
        try:
            code = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(code, dict) and not trim.is_study_lab(code):
            out[text] = code
    return out


def _stored_observation_ids(conn: Connection, site: str) -> list[str]:
    return list(conn.execute(
        select(RawResource.resource_id).where(RawResource.site == site,
                                              RawResource.resource_type == "Observation")
    ).scalars())


def _register(con: duckdb.DuckDBPyConnection, name: str, values: list[str]) -> None:
    # a plain table of the in-memory database: the scanning cursor is another connection
    con.execute(f"CREATE OR REPLACE TABLE {name} (v VARCHAR)")
    for start in range(0, len(values), 50_000):
        chunk = values[start:start + 50_000]
        con.execute(f"INSERT INTO {name} SELECT unnest(?::VARCHAR[])", [chunk])  # noqa: S608


def _classified(path: Path, *, has_stored: bool, cohort: bool) -> str:
    """Every line with what the filter decided: (line, x, dropped, stored, outside).

    ``dropped``: an Observation with a usable id whose code no lab maps; ``stored``: its
    id is in the raw store already; ``outside``: a line of a patient outside the cohort
    (only with a cohort table). A NULL never counts as a decision to drop."""
    stored = "coalesce(x[2]->>'$' IN (SELECT v FROM stored), false)" if has_stored \
        else "false"
    outside = (f"coalesce(x[1] IN ({_PATIENT_TYPES}) AND pid <> '' AND "  # noqa: S608
               f"pid NOT IN (SELECT v FROM cohort), false)") if cohort else "false"
    return (f"SELECT line, x, dropped, {stored} AS stored, {outside} AS outside FROM ("  # noqa: S608
            f"SELECT line, x, {_PATIENT_OF} AS pid, coalesce({_OBS_WITH_ID} AND "
            f"x[3]::VARCHAR IN (SELECT v FROM unused), false) AS dropped FROM ("
            f"SELECT json::VARCHAR AS line, {_FIELDS} AS x FROM {ndjson_source(path)}))")


def kept_lines(con: duckdb.DuckDBPyConnection, path: Path, *, has_stored: bool,
               cohort: bool = False) -> Iterator[tuple[str, str | None]]:
    """(line, code text when it is an unused-code Observation the store already holds)."""
    sql = (f"SELECT line, CASE WHEN dropped AND stored THEN x[3]::VARCHAR END "  # noqa: S608
           f"FROM ({_classified(path, has_stored=has_stored, cohort=cohort)}) "
           f"WHERE NOT outside AND (NOT dropped OR stored)")
    yield from _prefetched(con, sql)


def cohort_counts(con: duckdb.DuckDBPyConnection, path: Path, *, has_stored: bool
                  ) -> tuple[Counter, Counter]:
    """(unused codes counted of the cohort's Observations, lines outside the cohort by type)."""
    sql = (f"SELECT outside, CASE WHEN outside THEN x[1]->>'$' ELSE x[3]::VARCHAR END, "  # noqa: S608
           f"count(*) FROM ({_classified(path, has_stored=has_stored, cohort=True)}) "
           f"WHERE outside OR (dropped AND NOT stored) GROUP BY ALL")
    codes, outside = Counter(), Counter()
    for is_outside, key, n in con.execute(sql).fetchall():
        (outside if is_outside else codes)[str(key)] += int(n)
    return codes, outside


def _prefetched(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[Any]:
    """Rows of ``sql``, fetched in a thread so DuckDB reads ahead while Python stores.

    DuckDB releases the GIL while it scans; the queue holds two batches at most."""
    batches: Queue = Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            cursor = con.cursor()
            result = cursor.execute(sql)
            while not stop.is_set():
                rows = result.fetchmany(FETCH_ROWS)
                batches.put(rows)
                if not rows:
                    break
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer)
            batches.put(exc)

    worker = threading.Thread(target=produce, name="duckdb-scan", daemon=True)
    worker.start()
    try:
        while True:
            item = batches.get()
            if isinstance(item, BaseException):
                raise DuckScanFailed(f"DuckDB failed while reading: {type(item).__name__}")
            if not item:
                return
            yield from item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            if batches.empty():
                worker.join(timeout=0.05)
            else:
                batches.get_nowait()


def load_ndjson_duck(store: RawStore, path: Path, *, site: str, source: str,
                     file_key: str, cohort: set[str] | None = None) -> DuckLoad:
    """Load one NDJSON file into ``store`` (its connection's transaction).

    Raises ``DuckUnreadable`` before anything is written when DuckDB cannot read
    the file; the caller then loads it the Python way. ``file_key`` names the file
    for its code counts (a reload replaces them). With ``cohort`` (patient ids, see
    connector/extract/duckscreen.py) lines of other patients are left out and counted
    per type (``StoreCounts.outside``).
    """
    trim = store.trim
    if trim is None:  # every body kept whole (COHORT_KEEP_ALL_BODIES): nothing to filter
        raise DuckUnreadable("every body is to be kept whole")
    with duck_connection() as con:
        lines, codes = observation_scan(con, path, today_text())
        unused = unused_codes(codes, trim)
        _register(con, "unused", list(unused))
        contacts = observation_contacts(con) if unused else []
        stored_ids = _stored_observation_ids(store.conn, site) if unused else []
        if stored_ids:
            _register(con, "stored", stored_ids)
        if cohort is not None:
            _register(con, "cohort", sorted(cohort))
            counts, outside = cohort_counts(con, path, has_stored=bool(stored_ids))
            store.counts.outside.update(outside)
        else:
            counts = Counter({text: codes[text] for text in unused})
        kept = 0
        for line, routed_code in kept_lines(con, path, has_stored=bool(stored_ids),
                                            cohort=cohort is not None):
            if cohort is None and routed_code is not None and routed_code in counts:
                counts[routed_code] -= 1  # stored before: the raw store decides again
            store.add_raw(line, site=site, source=source)
            kept += 1
    counted = write_code_counts(store, counts, unused, site=site, source=source,
                                file_key=file_key, digest=trim.digest)
    book: dict[tuple[str, str], str] = {}
    for ref, day in contacts:
        merge_day(book, site, ref, day)
    write_contacts(store.conn, book)
    return DuckLoad(lines=lines, kept=kept, counted=counted)


def load_file_duck(store: RawStore, path: Path, *, site: str, source: str,
                   file_key: str, cohort: set[str] | None = None) -> int:
    """Load one file of a folder: NDJSON through DuckDB, anything else (and any file
    DuckDB cannot read) the Python way. Returns the number of entries read."""
    from connector.extract.folder import NDJSON_SUFFIXES, load_file

    if path.name.endswith(NDJSON_SUFFIXES):
        try:
            return load_ndjson_duck(store, path, site=site, source=source,
                                    file_key=file_key, cohort=cohort).lines
        except DuckUnreadable:
            log.info("%s: not read by DuckDB; loading it line by line", path.name)
    return load_file(store, path, site=site, source=source)


def write_code_counts(store: RawStore, counts: Counter, codes: dict[str, dict], *,
                      site: str, source: str, file_key: str, digest: str) -> int:
    """Replace the file's code counts; returns how many Observations they count."""
    conn = store.conn
    conn.execute(delete(RawCodeCount).where(RawCodeCount.site == site,
                                            RawCodeCount.file == file_key))
    by_body: Counter = Counter()
    for text, n in counts.items():
        if n > 0:
            body = orjson.dumps({"code": codes[text], "resourceType": "Observation"},
                                option=orjson.OPT_SORT_KEYS).decode()
            by_body[body] += n
    if by_body:
        conn.execute(insert(RawCodeCount), [
            {"site": site, "file": file_key, "source": source, "resource_type": "Observation",
             "trimmed": digest, "n": n, "body": body, "loaded_at": store._fetched_at}
            for body, n in sorted(by_body.items())])
    total = sum(by_body.values())
    if total:
        store.counts.counted["Observation"] += total
    return total
