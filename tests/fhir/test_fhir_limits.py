"""Issue 13, items 2 and 3: a search that ends short of its Bundle.total fails and keeps
the watermark; a next link new on every page, an answer dripped byte by byte, a huge
body and a run past its deadline each stop with a clear message. Through the fault
proxy in front of sekmet; after each, a clean rerun equals a clean run's tables."""

from __future__ import annotations

import time

import pytest
from fault_proxy import drop_next, endless_next
from fhir_server import reset_proxy, serving_behind_proxy, tiny_cohort
from hostile_env import diff, tables
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from connector import pipeline
from connector.cli import EXIT_SOURCE, app
from connector.db.models import ExtractRun, SyncState
from connector.extract import run_extract
from connector.fhir.config import RetryConfig
from connector.fhir.errors import ExtractError, FhirSourceError
from connector.fhir.limits import RunDeadlineExceeded, SearchTally

RUN = {"rate_limit": 0, "page_size": 5, "patients_per_request": 3, "overlap_seconds": 0,
       "retry": RetryConfig(max_attempts=2, backoff_initial=0.01, budget=50)}


@pytest.fixture
def clean(proxied, tmp_path):
    """A clean run's database (scope all), to compare with."""
    server, proxy = proxied
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'clean.db'}")
    run_extract(engine, server.base_url, site="s", scope="all", **RUN)
    reset_proxy(proxy)
    return engine


def _last_run(engine) -> ExtractRun:
    with Session(engine) as s:
        return s.exec(select(ExtractRun).order_by(ExtractRun.id.desc())).scalars().first()


def _marks(engine) -> dict[str, str]:
    with Session(engine) as s:
        return {r.resource_type: r.watermark for r in s.exec(select(SyncState)).scalars()}


def _rerun_equals_clean(server, proxy, engine, clean) -> None:
    reset_proxy(proxy)
    run_extract(engine, server.base_url, site="s", scope="all", **RUN)
    assert diff(tables(engine), tables(clean)) == ""


def test_tally_bounds_pages_by_total_and_flags_a_shortfall():
    tally = SearchTally("Observation", max_pages=1000)
    tally.add(200, 4959)
    assert tally.allowed_pages() == 27
    tally.finish.__self__  # noqa: B018 - the object exists; finish is checked below
    with pytest.raises(FhirSourceError, match="announced 4959 matches but its pages held 200"):
        tally.finish()
    unknown = SearchTally("Observation", max_pages=3)
    unknown.add(5, None)
    unknown.add(5, None)
    unknown.check_next()
    unknown.add(5, None)
    with pytest.raises(FhirSourceError, match="max_pages"):
        unknown.check_next()


def _cli_extract(site_toml: str, db_url: str):
    return CliRunner().invoke(app, ["extract", "--source", site_toml, "--db", db_url,
                                    "--quiet"], catch_exceptions=False)


def test_a_page_without_its_next_link_fails_the_search_and_keeps_the_watermark(tmp_path):
    data = tiny_cohort(6, observations=8, seed=21)
    site = tmp_path / "site.toml"
    with serving_behind_proxy(data["resources"]) as (server, proxy):
        site.write_text(f'name = "s"\nbase_url = "{server.base_url}"\nscope = "all"\n'
                        'page_size = 5\nrate_limit = 0\noverlap_seconds = 0\n')
        db_url = f"sqlite:///{tmp_path / 'db.db'}"
        assert _cli_extract(str(site), db_url).exit_code == 0
        engine = pipeline.open_db(db_url)
        before = _marks(engine)
        assert before and len(set(before.values())) == 1
        subject = {"reference": f"Patient/{data['patients'][0]}"}
        for k in range(12):  # new results: the next run's Observation search has 3 pages
            server.put({"resourceType": "Observation", "id": f"late-{k}", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "33358-3"}]},
                        "subject": subject, "effectiveDateTime": "2023-01-10",
                        "valueQuantity": {"value": 1.5, "unit": "g/dL"}})
        time.sleep(1.1)  # the next run's t0 differs from the first's
        proxy.rewrite = drop_next("/Observation?")  # the server ends the search after page 1
        result = _cli_extract(str(site), db_url)
        assert result.exit_code == EXIT_SOURCE, result.output
        assert "announced 12 matches but its pages held 5" in result.output
        assert "Traceback" not in result.output
        assert _marks(engine) == before  # the loss is not made permanent
        assert _last_run(engine).status == "failed"

        proxy.rewrite = None
        assert _cli_extract(str(site), db_url).exit_code == 0
        clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
        assert _cli_extract(str(site), clean_url).exit_code == 0
        clean = pipeline.open_db(clean_url)
        assert diff(tables(engine), tables(clean)) == ""


def test_a_next_link_new_on_every_page_is_not_followed_forever(proxied, clean, tmp_path):
    server, proxy = proxied
    proxy.rewrite = endless_next("/Patient?")
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db.db'}")
    with pytest.raises(ExtractError, match="next links go on past"):
        run_extract(engine, server.base_url, site="s", scope="all", **RUN)
    patients = sum("/Patient?" in p for p in proxy.paths)
    assert patients < 40, f"{patients} Patient pages requested"
    _rerun_equals_clean(server, proxy, engine, clean)


def test_an_answer_dripped_byte_by_byte_stops_at_the_request_deadline(proxied, clean,
                                                                       tmp_path):
    server, proxy = proxied
    proxy.only, proxy.kinds, proxy.rate = "/Observation?", ("drip",), 1.0
    proxy.drip_bytes, proxy.drip_interval, proxy.drip_limit = 4, 0.05, 15.0
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db.db'}")
    started = time.monotonic()
    with pytest.raises(FhirSourceError, match="took longer than 1 s"):
        run_extract(engine, server.base_url, site="s", scope="all", request_deadline=1,
                    timeout=0.5, **RUN)
    assert time.monotonic() - started < 10  # 2 attempts of 1 s, not a drip's 15 s each
    assert _marks(engine) == {}
    _rerun_equals_clean(server, proxy, engine, clean)


@pytest.mark.parametrize("chunked", [True, False])
def test_a_huge_body_is_refused_without_being_read_whole(proxied, clean, tmp_path, chunked):
    server, proxy = proxied
    proxy.only, proxy.kinds, proxy.rate = "/Observation?", ("huge",), 1.0
    proxy.huge_bytes, proxy.huge_chunked = 60 << 20, chunked
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db.db'}")
    with pytest.raises(ExtractError, match="larger than 1 MB"):
        run_extract(engine, server.base_url, site="s", scope="all", max_body_mb=1, **RUN)
    assert proxy.bytes_sent < 20 << 20, proxy.bytes_sent  # streamed and stopped, not loaded
    assert "max_body_mb" in _last_run(engine).message
    _rerun_equals_clean(server, proxy, engine, clean)


def test_a_run_past_its_deadline_stops_and_keeps_what_it_stored(proxied, clean, tmp_path):
    server, proxy = proxied
    proxy.only, proxy.kinds, proxy.rate, proxy.slow_seconds = "/Observation", ("slow",), 1.0, 0.3
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db.db'}")
    with pytest.raises(RunDeadlineExceeded, match="run_deadline"):
        run_extract(engine, server.base_url, site="s", scope="all", run_deadline=1.5,
                    **RUN)
    run = _last_run(engine)
    assert run.status == "failed" and "time limit" in run.message
    assert _marks(engine) == {}
    _rerun_equals_clean(server, proxy, engine, clean)
