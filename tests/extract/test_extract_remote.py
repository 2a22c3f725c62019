"""REST extraction from a real FHIR server: scope, equality with the folder source,
incremental runs, deletions, paging without snapshot, faults, privacy of the logs."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import requests
from fhir_server import FHIR_JSON
from sqlalchemy import select
from sqlmodel import Session

from connector.codes import CodeSetError
from connector.codes.screen import car_t_screen_terms
from connector.db.models import ExtractRun, RawResource, SyncState
from connector.extract import run_extract
from connector.extract.remote import extract_remote
from connector.fhir.client import FhirClient
from connector.fhir.config import RetryConfig
from connector.fhir.errors import CapabilityError

#: No rate limit and no overlap: fast, and "nothing changed" means nothing fetched.
FAST = {"rate_limit": 0, "page_size": 50, "overlap_seconds": 0}


def _raw(engine) -> dict[tuple[str, str], RawResource]:
    with Session(engine) as s:
        rows = s.exec(select(RawResource)).scalars().all()
        for r in rows:
            s.expunge(r)
    return {(r.resource_type, r.resource_id): r for r in rows}


def _runs(engine) -> list[ExtractRun]:
    with Session(engine) as s:
        return list(s.exec(select(ExtractRun).order_by(ExtractRun.id)).scalars())


def _fetched(run: ExtractRun) -> dict[str, int]:
    return {t: c.get("fetched", 0) for t, c in json.loads(run.counts_json).items()}


def _without_server_meta(body: str) -> dict:
    """A stored body without what the server adds (meta.versionId, meta.lastUpdated)."""
    doc = orjson.loads(body)
    meta = {k: v for k, v in (doc.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    doc.pop("meta", None)
    if meta:
        doc["meta"] = meta
    return doc


def _ids(data: dict, rtype: str, patients: list[str] | None = None) -> set[str]:
    out = set()
    for r in data["resources"]:
        if r["resourceType"] != rtype:
            continue
        if patients is not None:
            ref = (r.get("subject") or {}).get("reference", f"Patient/{r['id']}")
            if ref.split("/")[-1] not in patients:
                continue
        out.add(r["id"])
    return out


# --------------------------------------------------------------- cohort scope


def test_cohort_scope_fetches_only_car_t_patients(loaded_server, cohort_data, make_engine):
    engine = make_engine()
    summary = extract_remote(engine, loaded_server.base_url, site="s1", **FAST)
    raw = _raw(engine)
    car_t = cohort_data["car_t"]
    assert summary.sites == ["s1"]
    for rtype in ("Patient", "MedicationAdministration", "Procedure", "Observation"):
        got = {rid for (t, rid) in raw if t == rtype}
        assert got == _ids(cohort_data, rtype, car_t), rtype
    # referenced Medications are fetched; contained ones and unreferenced ones are not
    assert {rid for (t, rid) in raw if t == "Medication"} == {"med-cilta", "med-dex"}
    (run,) = _runs(engine)
    assert run.status == "ok" and run.mode == "rest" and run.source == loaded_server.base_url
    assert _fetched(run)["Observation"] == 10 * len(car_t)
    assert "10 patients screened" in run.message
    with Session(engine) as s:
        marks = {m.resource_type: m for m in s.exec(select(SyncState)).scalars()}
    assert {"Patient", "Observation", "Medication"} <= set(marks)
    assert any(k.startswith("screen:") for k in marks)
    assert all(m.mode == "rest:cohort" and m.watermark.endswith("Z") for m in marks.values())


def test_screen_terms_come_from_the_mapping_files(tmp_path):
    terms = car_t_screen_terms()
    assert "Q2055" in terms.medication_codes and "q2055" in terms.medication_codes
    assert "XW033K7" in terms.procedure_codes and "0540T" in terms.procedure_codes
    assert "abecma" in terms.texts and "carvykti" in terms.texts
    assert "38225" in terms.procedure_codes  # the CAR-T harvest: screened too
    assert "38241" not in terms.procedure_codes  # an autologous transplant is not
    assert not any("daratumumab" in t for t in terms.texts)
    with pytest.raises(CodeSetError, match="missing"):  # no files: no guessed list
        car_t_screen_terms(tmp_path)


def test_patients_per_request_and_quirks(fresh_server, cohort_data, make_engine, tmp_path):
    server, proxy = fresh_server
    engine = make_engine()
    extract_remote(engine, server.base_url, site="s1", patients_per_request=4,
                   observation_categories=["laboratory"], text_search=False,
                   chained_search=False, **FAST)
    obs = [p for p in proxy.paths if p.startswith("/fhir/Observation?") and "_summary" not in p]
    assert len(obs) == 2  # 8 CAR-T patients found without text search, 4 a request
    assert all("category=laboratory" in p for p in obs)
    assert not any("3Atext" in p or ":text" in p for p in proxy.paths)
    # without chained search, the CAR-T Medication is looked up first
    assert any(p.startswith("/fhir/Medication?code=") for p in proxy.paths)
    text_only = {cohort_data["patients"][i] for i in (4, 10)}  # only "Abecma infusion"
    got = {rid for (t, rid) in _raw(engine) if t == "Patient"}
    assert got == set(cohort_data["car_t"]) - text_only


def test_a_server_without_text_or_chained_search(fresh_server, cohort_data, make_engine,
                                                 caplog):
    server, proxy = fresh_server
    proxy.refuse = ("%3Atext", "medication.code")  # ":text" as it goes on the wire
    engine = make_engine()
    with caplog.at_level(logging.INFO):
        extract_remote(engine, server.base_url, site="s1", **FAST)
    text_only = {cohort_data["patients"][i] for i in (4, 10)}
    got = {rid for (t, rid) in _raw(engine) if t == "Patient"}
    assert got == set(cohort_data["car_t"]) - text_only  # found by codes, via Medication
    assert any(p.startswith("/fhir/MedicationAdministration?medication=Medication")
               for p in proxy.paths)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "refused a search by text" in messages and "chained search" in messages
    assert _runs(engine)[-1].status == "ok"


def test_a_server_without_summary_count_or_last_updated(fresh_server, cohort_data,
                                                        make_engine, caplog):
    server, proxy = fresh_server
    proxy.refuse = ("_summary=count", "_lastUpdated")
    engine = make_engine()
    opts = {**FAST, "site": "s1", "scope": "all", "page_size": 20, "incremental": False}
    with caplog.at_level(logging.WARNING):
        first = extract_remote(engine, server.base_url, **opts)
    assert first.read == len(cohort_data["resources"])
    assert "refuses _summary=count" in " ".join(r.getMessage() for r in caplog.records)
    again = extract_remote(engine, server.base_url, **opts)  # reads all, changes nothing
    assert again.read == first.read and again.counts.stored == 0
    with Session(engine) as s:
        marks = s.exec(select(SyncState)).scalars().all()
    assert marks and all(m.watermark.endswith(".000Z") for m in marks)  # from the Date header


# --------------------------------------------------- all scope = folder source


def test_all_scope_stores_what_the_folder_source_stores(loaded_server, cohort_data,
                                                        make_engine, tmp_path):
    folder = tmp_path / "src" / "site_x"
    folder.mkdir(parents=True)
    by_type: dict[str, list[dict]] = {}
    for r in cohort_data["resources"]:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, items in by_type.items():
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in items))
    from_folder = make_engine("folder")
    run_extract(from_folder, str(tmp_path / "src"))
    from_rest = make_engine("rest")
    summary = run_extract(from_rest, loaded_server.base_url, site="site_x", scope="all", **FAST)
    a, b = _raw(from_folder), _raw(from_rest)
    assert set(a) == set(b) and len(a) == len(cohort_data["resources"])
    assert summary.read == len(a) and summary.counts.stored == len(a)
    for key in a:
        assert a[key].site == b[key].site == "site_x"
        assert _without_server_meta(a[key].body) == _without_server_meta(b[key].body), key
        assert b[key].version_id == "1" and b[key].last_updated


# ------------------------------------------------------------ incremental


def _put(server, resource: dict) -> None:
    r = requests.put(f"{server.direct_url}/{resource['resourceType']}/{resource['id']}",
                     data=orjson.dumps(resource), headers={"Content-Type": FHIR_JSON}, timeout=10)
    assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize("scope", ["cohort", "all"])
def test_incremental_runs_fetch_only_changes(fresh_server, cohort_data, make_engine, scope):
    server, proxy = fresh_server
    engine = make_engine()
    opts = {**FAST, "scope": scope, "site": "s1"}
    first = extract_remote(engine, server.base_url, **opts)
    assert first.read > 0
    before = _raw(engine)

    second = extract_remote(engine, server.base_url, **opts)
    assert second.read == 0 and second.counts.stored == 0
    assert set(_fetched(_runs(engine)[-1]).values()) == {0}
    assert _raw(engine).keys() == before.keys()

    pid = cohort_data["car_t"][0]
    obs = server.read("Observation", f"ob-{pid}-0")
    obs["valueQuantity"]["value"] = 9.99
    patient = server.read("Patient", pid)
    patient["gender"] = "other"
    dex = server.read("MedicationAdministration", f"ma-{pid}-dex")
    dex["status"] = "stopped"
    for res in (obs, patient, dex):
        res.pop("meta")
        _put(server, res)

    third = extract_remote(engine, server.base_url, **opts)
    run = _runs(engine)[-1]
    assert third.read == 3 and sum(third.counts.updated.values()) == 3
    assert {t: n for t, n in _fetched(run).items() if n} == {
        "Observation": 1, "Patient": 1, "MedicationAdministration": 1}
    raw = _raw(engine)
    assert orjson.loads(raw[("Observation", f"ob-{pid}-0")].body)["valueQuantity"]["value"] == 9.99
    assert raw[("Patient", pid)].version_id == "2"
    assert orjson.loads(raw[("MedicationAdministration", f"ma-{pid}-dex")].body)["status"] == \
        "stopped"
    unchanged = [k for k in before if k not in {("Observation", f"ob-{pid}-0"), ("Patient", pid),
                                                ("MedicationAdministration", f"ma-{pid}-dex")}]
    assert all(raw[k].content_hash == before[k].content_hash for k in unchanged)

    # a deletion on the server is recorded; nothing else changes
    r = requests.delete(f"{server.direct_url}/Observation/ob-{pid}-1", timeout=10)
    assert r.status_code == 200
    fourth = extract_remote(engine, server.base_url, **opts)
    raw = _raw(engine)
    assert raw[("Observation", f"ob-{pid}-1")].deleted
    assert fourth.counts.deleted["Observation"] == 1 and fourth.read == 0
    assert sum(r.deleted for r in raw.values()) == 1


def _change_checks(paths: list[str], rtype: str) -> list[str]:
    return [p for p in paths if p.startswith(f"/fhir/{rtype}?") and "_lastUpdated" in p
            and "_summary" not in p and ("patient=" in p or "_id=" in p)]


def test_change_checks_batch_known_patients_within_the_url_budget(fresh_server, cohort_data,
                                                                   make_engine):
    """A rerun asks for changes of many known patients at once (not patients_per_request at
    a time), splits the ids when they exceed max_query_chars, and still sees a change."""
    server, proxy = fresh_server
    engine = make_engine()
    opts = {**FAST, "site": "s1", "patients_per_request": 2}
    extract_remote(engine, server.base_url, **opts)
    known = len(cohort_data["car_t"])
    assert known >= 6

    proxy.paths.clear()
    extract_remote(engine, server.base_url, **opts)
    for rtype in ("Patient", "Observation", "Procedure", "MedicationAdministration"):
        assert len(_change_checks(proxy.paths, rtype)) == 1, rtype

    budget = 64  # the smallest allowed: several searches for this cohort's ids
    pid = cohort_data["car_t"][-1]
    obs = server.read("Observation", f"ob-{pid}-0")
    obs["valueQuantity"]["value"] = 7.77
    obs.pop("meta")
    _put(server, obs)
    proxy.paths.clear()
    third = extract_remote(engine, server.base_url, **opts, max_query_chars=budget)
    checks = _change_checks(proxy.paths, "Observation")
    lists = [parse_qs(urlsplit(p).query)["patient"][0] for p in checks]
    assert len(checks) > 1 and all(len(ids) <= budget for ids in lists)
    assert sorted(i for ids in lists for i in ids.split(",")) == sorted(cohort_data["car_t"])
    assert third.counts.updated.get("Observation") == 1

    proxy.paths.clear()
    extract_remote(engine, server.base_url, **{**opts, "patients_per_request": 1})
    assert len(_change_checks(proxy.paths, "Observation")) == known  # one a search, as asked


def test_overlap_refetches_are_harmless(loaded_server, make_engine):
    engine = make_engine()
    extract_remote(engine, loaded_server.base_url, site="s1", **FAST)
    before = {k: (r.version_id, r.content_hash) for k, r in _raw(engine).items()}
    again = extract_remote(engine, loaded_server.base_url, site="s1",
                           **{**FAST, "overlap_seconds": 3600})
    assert again.read == len(before)  # the hour of overlap covers everything
    assert again.counts.stored == 0 and sum(again.counts.unchanged.values()) == len(before)
    assert {k: (r.version_id, r.content_hash) for k, r in _raw(engine).items()} == before


def test_a_new_car_t_patient_is_fetched_whole(fresh_server, make_engine):
    server, proxy = fresh_server
    engine = make_engine()
    extract_remote(engine, server.base_url, site="s1", **FAST)
    # an old patient with an old lab gets a CAR-T infusion now
    _put(server, {"resourceType": "Patient", "id": "late-cart", "gender": "male"})
    _put(server, {"resourceType": "Observation", "id": "late-ob", "status": "final",
                  "code": {"text": "m-protein"}, "subject": {"reference": "Patient/late-cart"}})
    extract_remote(engine, server.base_url, site="s1", **FAST)
    assert ("Patient", "late-cart") not in _raw(engine)  # no CAR-T yet: not in the cohort
    _put(server, {"resourceType": "Procedure", "id": "late-pr", "status": "completed",
                  "subject": {"reference": "Patient/late-cart"},
                  "code": {"coding": [{"code": "XW033A7"}]}})
    summary = extract_remote(engine, server.base_url, site="s1", **FAST)
    raw = _raw(engine)
    assert {("Patient", "late-cart"), ("Observation", "late-ob"), ("Procedure", "late-pr")} \
        <= set(raw)
    assert summary.read == 3


# ---------------------------------------------------- paging without snapshot


def test_paging_without_snapshot_loses_nothing(fresh_server, cohort_data, make_engine):
    server, proxy = fresh_server
    n_obs = len(_ids(cohort_data, "Observation"))
    state = {"armed": True}

    def change_after_first_page(method: str, path: str, status: int) -> None:
        if state["armed"] and path.startswith("/fhir/Observation?") and "_offset" not in path \
                and "_summary" not in path:
            state["armed"] = False
            first = next(r["id"] for r in cohort_data["resources"]
                         if r["resourceType"] == "Observation")  # on the first page
            res = server.read("Observation", first)
            res.pop("meta")
            server.put({**res, "status": "amended"})  # moves it to the end of the order

    # the server really does skip: plain paging sees one Observation fewer
    proxy.hook = change_after_first_page
    with FhirClient(server.base_url, page_size=20) as client:
        seen = {r["id"] for p in client.search("Observation") for r in p.resources}
    assert len(seen) == n_obs - 1

    state["armed"] = True
    engine = make_engine()
    extract_remote(engine, server.base_url, site="s1", scope="all",
                   **{**FAST, "page_size": 20})
    stored = {rid for (t, rid) in _raw(engine) if t == "Observation"}
    assert stored == _ids(cohort_data, "Observation")
    assert not state["armed"]
    assert "1 re-reads" in _runs(engine)[-1].message


# ------------------------------------------------------------------ faults


def _table(engine) -> set[tuple]:
    return {(r.site, r.resource_type, r.resource_id, r.version_id, r.content_hash, r.deleted)
            for r in _raw(engine).values()}


@pytest.mark.parametrize("scope", ["cohort", "all"])
def test_twenty_percent_faults_change_nothing(fresh_server, make_engine, scope):
    server, proxy = fresh_server
    opts = {**FAST, "scope": scope, "page_size": 5, "patients_per_request": 3, "timeout": 0.5,
            "retry": RetryConfig(backoff_initial=0.01, backoff_max=0.05, budget=1000)}
    clean = make_engine("clean")
    extract_remote(clean, server.base_url, **opts)
    proxy.rate, proxy.retry_after, proxy.slow_seconds = 0.2, "0", 0.8
    proxy.requests = 0
    faulty = make_engine("faulty")
    summary = extract_remote(faulty, server.base_url, **opts)
    assert proxy.requests > 30
    assert sum(proxy.faults.values()) >= 0.1 * proxy.requests and len(proxy.faults) >= 4
    assert _table(faulty) == _table(clean)  # nothing lost
    assert summary.counts.stored == len(_table(clean))  # nothing twice
    run = _runs(faulty)[-1]
    assert run.status == "ok" and run.retries >= sum(proxy.faults.values()) - 1
    assert json.loads(run.counts_json) and run.errors == 0


def test_a_run_that_gives_up_is_recorded_and_moves_no_watermark(fresh_server, make_engine):
    server, proxy = fresh_server
    engine = make_engine()
    proxy.rate, proxy.kinds, proxy.retry_after, proxy.only = 1.0, ("503",), "0", "Observation"
    with pytest.raises(Exception, match="Observation") as err:
        extract_remote(engine, server.base_url, site="s1",
                       retry=RetryConfig(max_attempts=2, backoff_initial=0.01, budget=20), **FAST)
    assert "HTTP 503" in str(err.value)
    (run,) = _runs(engine)
    assert run.status == "failed" and run.errors >= 1 and run.retries >= 1
    assert "HTTP 503" in run.message
    with Session(engine) as s:
        assert not s.exec(select(SyncState)).scalars().all()
    assert any(t == "Patient" for (t, _) in _raw(engine))  # what was fetched is kept


# --------------------------------------------------------- capability, CLI


def test_missing_capability_is_a_clear_error(loaded_server, make_engine, monkeypatch):
    real = FhirClient.capabilities

    def without_procedure_code(self):
        caps = real(self)
        caps.types["Procedure"].params.discard("code")
        return caps

    monkeypatch.setattr(FhirClient, "capabilities", without_procedure_code)
    engine = make_engine()
    with pytest.raises(CapabilityError) as err:
        extract_remote(engine, loaded_server.base_url, site="s1", **FAST)
    assert "Procedure: no search parameter 'code' (to find CAR-T patients)" in str(err.value)
    assert 'scope = "all"' in str(err.value)
    (run,) = _runs(engine)
    assert run.status == "failed" and "Procedure" in run.message
    # with scope = "all" the screen is not needed and the run goes ahead
    extract_remote(engine, loaded_server.base_url, site="s1", scope="all", **FAST)
    assert _runs(engine)[-1].status == "ok"


def test_patients_scope_reads_a_list(loaded_server, cohort_data, make_engine, tmp_path):
    wanted = cohort_data["patients"][:3] + [cohort_data["patients"][5]]  # 5: no CAR-T
    ids = tmp_path / "ids.txt"
    ids.write_text("# study ids\n" + "\n".join(wanted) + "\n")
    site = tmp_path / "site.toml"
    site.write_text(f'name = "listed"\nbase_url = "{loaded_server.base_url}"\n'
                    f'scope = "patients"\npatient_ids_file = "ids.txt"\nrate_limit = 0\n')
    engine = make_engine()
    summary = run_extract(engine, str(site))
    raw = _raw(engine)
    assert summary.sites == ["listed"]
    assert {rid for (t, rid) in raw if t == "Patient"} == set(wanted)
    assert {rid for (t, rid) in raw if t == "Observation"} == _ids(cohort_data, "Observation",
                                                                     wanted)


@pytest.mark.postgres
def test_rest_extraction_into_postgresql(loaded_server, cohort_data, pg_url):
    from connector.db import get_engine, init_db

    engine = get_engine(pg_url)
    init_db(engine)
    try:
        first = extract_remote(engine, loaded_server.base_url, site="pg", **FAST)
        again = extract_remote(engine, loaded_server.base_url, site="pg", **FAST)
        raw = _raw(engine)
        assert first.read == len(raw) > 0 and again.read == 0
        assert {rid for (t, rid) in raw if t == "Patient"} == set(cohort_data["car_t"])
        with Session(engine) as s:
            # nine types (with the oral-drug request, dispense and statement, and Condition),
            # the screen
            # and the Observation filter (connector.codes.labfilter)
            assert len(s.exec(select(SyncState)).scalars().all()) == 11
    finally:
        engine.dispose()
