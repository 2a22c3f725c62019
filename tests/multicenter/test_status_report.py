"""``cohort status``: runs, counts, watermarks, failures, and interrupted runs."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import insert
from typer.testing import CliRunner

from connector.cli import EXIT_FAILED, EXIT_USAGE, app
from connector.db import get_engine, init_db, models
from connector.lock import site_lock
from connector.status import collect_status, format_status, status_dict

T = models.SQLModel.metadata.tables
UTC = dt.UTC


def _t(hour: int) -> dt.datetime:
    return dt.datetime(2025, 3, 1, hour, tzinfo=UTC)


def _seed(engine) -> None:
    counts = json.dumps({"Patient": {"new": 10, "unchanged": 2},
                         "Observation": {"new": 300, "updated": 4}})
    with engine.begin() as conn:
        runs = [
            dict(site="site_a", source="https://fhir.example/r4", mode="rest", started_at=_t(1),
                 finished_at=_t(2), status="ok", counts_json=counts, retries=3, errors=0,
                 message=""),
            dict(site="site_a", source="https://fhir.example/r4", mode="rest", started_at=_t(3),
                 finished_at=_t(4), status="failed", counts_json="{}", retries=9, errors=1,
                 message="source unreachable: ConnectError after 9 retries"),
            dict(site="site_a", source="https://fhir.example/r4", mode="rest", started_at=_t(5),
                 finished_at=None, status="running", counts_json="{}", retries=0, errors=0,
                 message=""),
            dict(site="site_b", source="/data/b", mode="folder", started_at=_t(1),
                 finished_at=_t(1).replace(minute=5), status="ok", counts_json=counts,
                 retries=0, errors=2, message=""),
        ]
        for run in runs:
            conn.execute(insert(T["extract_run"]).values(**run))
        conn.execute(insert(T["sync_state"]).values(
            site="site_a", resource_type="Observation", mode="rest",
            watermark="2025-03-01T01:59:00.000Z", updated_at=_t(2)))
        conn.execute(insert(T["cohort_patient"]).values(
            site="site_b", source_id="x", patient_key="k", in_cohort=True))
        if "bulk_job" in T:
            conn.execute(insert(T["bulk_job"]).values(
                site="site_a", state="polling", created_at=_t(5), updated_at=_t(6),
                message="server busy: Retry-After 120"))
        conn.execute(insert(T["cohort_patient"]).values(
            site="site_b", source_id="y", patient_key="k2", in_cohort=False,
            exclusion_reason="no_car_t"))


def test_status_lists_runs_watermarks_counts_and_failures(engine):
    _seed(engine)
    a, b = collect_status(engine)
    assert (a.site, b.site) == ("site_a", "site_b")
    assert [r.status for r in a.runs] == ["interrupted", "failed", "ok"]  # no lock held
    assert not a.active and not a.healthy and b.healthy
    assert a.runs[2].counts == {"new": 310, "unchanged": 2, "updated": 4}
    assert a.runs[2].retries == 3 and a.runs[2].duration_s == 3600
    assert [r.status for r in a.failures] == ["interrupted", "failed"]
    assert a.watermarks[0]["watermark"] == "2025-03-01T01:59:00.000Z"
    assert b.rows["cohort_patient"] == 2 and b.in_cohort == 1
    text = format_status([a, b])
    assert "last run INTERRUPTED" in text and "ConnectError after 9 retries" in text
    assert "watermark rest Observation: 2025-03-01T01:59:00.000Z" in text
    assert "cohort 1/2" in text
    if "bulk_job" in T:
        assert a.bulk_jobs[0]["state"] == "polling"
        assert "bulk export #1 polling, updated 2025-03-01T06:00:00Z" in text


def test_a_running_run_under_its_lock_is_live(engine):
    _seed(engine)
    with site_lock(engine, "site_a"):
        (a,) = collect_status(engine, sites=["site_a"])
    assert a.active and a.runs[0].status == "running" and a.healthy
    assert [r.status for r in a.failures] == ["failed"]


def test_status_json_and_exit_codes(db_url):
    engine = get_engine(db_url)
    init_db(engine)
    _seed(engine)
    runner = CliRunner()
    result = runner.invoke(app, ["status", "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    site_a = data["sites"][0]
    assert site_a["site"] == "site_a" and site_a["healthy"] is False
    assert site_a["runs"][1]["started_at"] == "2025-03-01T03:00:00Z"
    assert site_a["runs"][1]["duration_s"] == 3600
    assert data == json.loads(json.dumps(status_dict(collect_status(engine))))
    failing = runner.invoke(app, ["status", "--db", db_url, "--fail-on-error",
                                  "--site", "site_a"])
    assert failing.exit_code == EXIT_FAILED
    fine = runner.invoke(app, ["status", "--db", db_url, "--fail-on-error", "--site", "site_b"])
    assert fine.exit_code == 0 and "site site_b: idle" in fine.output
    missing = runner.invoke(app, ["status", "--db", db_url + ".absent"])
    assert missing.exit_code == EXIT_USAGE
    engine.dispose()


def test_status_of_a_merged_database_shows_provenance(engine, tmp_path):
    with engine.begin() as conn:
        conn.execute(insert(T["site"]).values(
            name="site_a", loaded_at=_t(1), pseudonymized=True, key_fingerprint="ab" * 8,
            date_shift_days=30, merged_at=_t(6)))
        # the merge brings the site's quarantine as counts, not rows
        conn.execute(insert(T["quarantine_count"]).values(
            [dict(site="site_a", stage="map", resource_type="Observation", n=3),
             dict(site="site_a", stage="extract", resource_type="", n=2)]))
    (a,) = collect_status(engine)
    assert a.merge["keyed"] and a.merge["date_shift_days"] == 30
    assert a.rows["quarantine"] == 5 and "quarantine 5," in format_status([a])
    assert "merged 2025-03-01T06:00:00Z (keyed: yes, date shift ±30 d)" in format_status([a])
