"""The bad-input corpus through every stage: damaged files and lines next to a clean cohort.

The clean cohort's sites must come out exactly as without the damage (normalized and
derived tables), every bad item must be quarantined once with its reason (no patient
identifier in any reason), the report must be written, and a second run must change
nothing.
"""

from __future__ import annotations

import gzip
import importlib
import shutil
import sys
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from reliability_db import DERIVED_TABLES, MAPPED_TABLES, diff, snapshot

from connector import pipeline
from connector.synth import synthesize

MAPPING_TESTS = Path(__file__).resolve().parents[1] / "mapping"

#: (line, the extract stage's reason for it, or None when it is not bad input)
DAMAGED_LINES: list[tuple[bytes, str | None]] = [
    (b'{"resourceType": "Observation", "id": "cut-', "invalid JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'"just a string"', "not a JSON object"),
    (b"null", "not a JSON object"),
    (orjson.dumps({"id": "no-type", "status": "final"}), "missing resourceType"),
    (orjson.dumps({"resourceType": 7, "id": "num-type"}), "missing resourceType"),
    (orjson.dumps({"resourceType": "Observation", "status": "final"}), "missing or invalid id"),
    (orjson.dumps({"resourceType": "Observation", "id": "x" * 65}), "missing or invalid id"),
    (orjson.dumps({"resourceType": "Observation", "id": 12345}), "missing or invalid id"),
    (b"[" * 5000 + b"]" * 5000, "invalid JSON"),
    (b"\xff\xfe\x00\x01 binary", "invalid JSON"),
    (orjson.dumps({"resourceType": "Encounter", "id": "enc-1"}), None),  # skipped, not bad
    (b"   ", None),  # blank: ignored
]


def _mapping_corpus() -> tuple[list, list]:
    """The map stage's corpus of bad resources (tests/mapping), one per kind of problem."""
    if str(MAPPING_TESTS) not in sys.path:
        sys.path.insert(0, str(MAPPING_TESTS))
    module = importlib.import_module("test_mapping_bad_input")
    return module.bad_corpus(), module.valid_corpus()


def _damage(folder: Path, bad: list, valid: list) -> dict[str, int]:
    """Add the damage next to the clean sites; returns the expected extract reasons."""
    site = folder / "site_a"
    with (site / "Observation.ndjson").open("ab") as fh:  # bad lines among good ones
        for line, _reason in DAMAGED_LINES:
            fh.write(line + b"\r\n")
    good = [orjson.loads(x) for x in (site / "Patient.ndjson").read_bytes().splitlines()[:1]]
    (site / "extra.ndjson").write_bytes(  # a byte order mark, CRLF: still read
        b"\xef\xbb\xbf" + b"\r\n".join(orjson.dumps(r) for r in good) + b"\r\n")
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"gz-{i}"}) for i in range(400)]
    packed = gzip.compress(b"\n".join(lines))
    (folder / "site_damaged").mkdir()
    (folder / "site_damaged" / "cut.ndjson.gz").write_bytes(packed[: len(packed) // 2])
    (folder / "site_damaged" / "broken.json").write_bytes(b'{"resourceType": "Bundle", "en')
    (folder / "site_damaged" / "bundle.json").write_bytes(orjson.dumps({
        "resourceType": "Bundle", "type": "collection",
        "entry": [7, {"fullUrl": "urn:x"}, {"resource": {"resourceType": "Patient",
                                                          "id": "in-bundle"}}]}))
    (folder / "site_bad").mkdir()
    (folder / "site_bad" / "corpus.ndjson").write_bytes(b"\n".join(
        orjson.dumps(r) for r in [*valid, *[res for _, res, _ in bad]]) + b"\n")
    expected: dict[str, int] = {}
    for _line, reason in DAMAGED_LINES:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    for reason in ("damaged compressed file", "invalid JSON file",
                   "Bundle entry is not an object", "Bundle entry without resource"):
        expected[reason] = expected.get(reason, 0) + 1
    return expected


def _run_all(folder: Path, db: Path, out: Path) -> sa.Engine:
    engine = pipeline.open_db(f"sqlite:///{db}")
    pipeline.extract(engine, str(folder))
    pipeline.map_(engine)
    pipeline.derive(engine)
    pipeline.analyze(engine, out)
    return engine


def _only_sites(snap: dict[str, list[tuple]], sites: set[str]) -> dict[str, list[tuple]]:
    return {name: [r for r in rows if r[0] in sites] for name, rows in snap.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    clean = base / "clean"
    synthesize(5, 2, 51, clean)
    (clean / "ground_truth.json").unlink()
    dirty = base / "dirty"
    shutil.copytree(clean, dirty)
    bad, valid = _mapping_corpus()
    expected = _damage(dirty, bad, valid)
    a = _run_all(clean, base / "clean.db", base / "clean-report")
    b = _run_all(dirty, base / "dirty.db", base / "dirty-report")
    return {"clean": a, "dirty": b, "expected": expected, "bad": bad, "base": base,
            "folder": dirty}


def _reasons(engine, stage: str) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT site, reason, resource_id FROM quarantine WHERE stage = :s"), {"s": stage})]


def test_the_clean_sites_come_out_as_without_the_damage(runs):
    tables = MAPPED_TABLES[:-1] + DERIVED_TABLES
    clean, dirty = snapshot(runs["clean"], tables), snapshot(runs["dirty"], tables)
    assert clean["patient"] and clean["cohort_patient"] and clean["therapy_line"]
    kept = _only_sites(dirty, {"site_a", "site_b"})
    assert not diff(clean, kept), diff(clean, kept)
    assert (runs["base"] / "dirty-report" / "results.json").is_file()
    # what was readable in the damaged files is kept
    with runs["dirty"].connect() as conn:
        ids = {r[0] for r in conn.execute(sa.text(
            "SELECT resource_id FROM raw_resource WHERE site = 'site_damaged'"))}
    assert "in-bundle" in ids and "gz-0" in ids


def test_every_bad_line_and_file_is_quarantined_once_with_its_reason(runs):
    got: dict[str, int] = {}
    for _site, reason, _rid in _reasons(runs["dirty"], "extract"):
        key = next((k for k in sorted(runs["expected"], key=len, reverse=True)
                    if reason.startswith(k)), reason)
        got[key] = got.get(key, 0) + 1
    assert got == runs["expected"]


def test_every_bad_resource_is_quarantined_by_the_map_stage(runs):
    reasons = {rid: reason for site, reason, rid in _reasons(runs["dirty"], "map")
               if site == "site_bad"}
    for rid, _res, fragment in runs["bad"]:
        assert rid in reasons, rid
        assert fragment in reasons[rid], (rid, reasons[rid])
    assert len(reasons) == len(runs["bad"])


def test_no_reason_names_a_patient(runs):
    with runs["dirty"].connect() as conn:
        patients = conn.execute(sa.text("SELECT source_id FROM patient")).scalars().all()
        reasons = conn.execute(sa.text("SELECT reason FROM quarantine")).scalars().all()
    assert patients and reasons
    for reason in reasons:
        assert not any(pid in reason for pid in patients), reason


def test_a_second_run_over_the_same_damage_changes_nothing(runs):
    engine = runs["dirty"]
    tables = ("raw_resource", "quarantine") + MAPPED_TABLES[:-1] + DERIVED_TABLES
    before = snapshot(engine, tables)
    pipeline.extract(engine, str(runs["folder"]))
    pipeline.map_(engine)
    pipeline.derive(engine)
    after = snapshot(engine, tables)
    assert not diff(before, after), diff(before, after)


def test_the_duckdb_loader_gives_the_same_tables_and_quarantine(runs, tmp_path):
    """The same damage through the DuckDB load path (connector/extract/duck.py): files it
    cannot read go line by line, bad resources still reach quarantine, and the normalized
    and derived tables, the quarantine and the unmapped counts equal the Python path's."""
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'duck.db'}")
    extracted = pipeline.extract(engine, str(runs["folder"]), loader="duckdb")
    mapped = pipeline.map_(engine)
    pipeline.derive(engine)
    tables = MAPPED_TABLES + DERIVED_TABLES
    want, got = snapshot(runs["dirty"], tables), snapshot(engine, tables)
    assert not diff(want, got), diff(want, got)
    assert sorted(_reasons(engine, "extract")) == sorted(_reasons(runs["dirty"], "extract"))
    assert extracted.read > 0 and mapped.quarantined == len(runs["bad"])
    with runs["dirty"].connect() as a, engine.connect() as b:
        count = "SELECT count(*) FROM raw_resource WHERE trimmed IS NULL AND deleted = 0"
        assert a.execute(sa.text(count)).scalar() == b.execute(sa.text(count)).scalar()
