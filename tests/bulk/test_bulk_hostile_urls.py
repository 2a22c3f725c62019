"""Issue 13, item 1 for Bulk export: a status URL or output file URL that urllib3 reads as
another host is refused, with or without requiresAccessToken, and our token never reaches
another origin. Through the fault proxy in front of sekmet (bearer auth)."""

from __future__ import annotations

import pytest
from conftest import FAST
from fault_proxy import rewrite_header, rewrite_manifest
from fhir_server import load_resources, reset_proxy, start_behind_proxy, tiny_cohort
from hostile_env import FOREIGN_ID, OtherHost, deceptive, diff, tables
from sqlalchemy import select
from sqlmodel import Session

from connector import pipeline
from connector.db.models import RawResource
from connector.extract import run_extract
from connector.fhir.bulk import BulkExportError
from connector.fhir.config import AuthConfig

TOKEN = "bulk-bearer-7e57-a11ce"
AUTH = AuthConfig(type="bearer", token_env="COHORT_BULK_HOSTILE_TOKEN")


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    data = tiny_cohort(6, observations=3, seed=17)
    server, proxy = start_behind_proxy(auth={"types": ["bearer"], "tokens": [TOKEN]})
    server.ctx.bulk.root = tmp_path_factory.mktemp("sekmet") / "bulk"
    load_resources(server, data["resources"], headers={"Authorization": f"Bearer {TOKEN}"})
    other = OtherHost()
    yield server, proxy, other
    other.stop()
    proxy.stop()
    server.stop()


@pytest.fixture
def env(secured, monkeypatch, tmp_path):
    server, proxy, other = secured
    reset_proxy(proxy)
    other.requests.clear()
    monkeypatch.setenv("COHORT_BULK_HOSTILE_TOKEN", TOKEN)
    clean = pipeline.open_db(f"sqlite:///{tmp_path / 'clean.db'}")
    _bulk(clean, server)
    yield server, proxy, other, clean
    reset_proxy(proxy)


def _bulk(engine, server):
    return run_extract(engine, server.base_url, site="s", bulk=True, auth=AUTH,
                       work_dir=str(engine.url.database) + ".bulk", **FAST)


def _foreign(engine) -> int:
    with Session(engine) as s:
        return len(s.exec(select(RawResource.id).where(
            RawResource.resource_id == FOREIGN_ID)).all())


def _files_to(change):
    def each(manifest: dict) -> None:
        for item in manifest["output"]:
            item["url"] = change(item["url"])
    return each


def _then_clean_equals(server, proxy, engine, clean) -> None:
    reset_proxy(proxy)
    _bulk(engine, server)
    assert diff(tables(engine), tables(clean)) == ""


def test_a_deceptive_status_url_is_refused(env, tmp_path):
    server, proxy, other, clean = env
    proxy.rewrite = rewrite_header("Content-Location",
                                   lambda url: deceptive(url, proxy.port, other.port))
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db.db'}")
    with pytest.raises(BulkExportError, match="backslash"):
        _bulk(engine, server)
    assert other.requests == [] and other.leaked_auth == []
    _then_clean_equals(server, proxy, engine, clean)


@pytest.mark.parametrize("token_required", [True, False])
def test_deceptive_output_file_urls_are_refused_with_or_without_a_token(env, tmp_path,
                                                                        token_required):
    server, proxy, other, clean = env

    def change(manifest: dict) -> None:
        _files_to(lambda url: deceptive(url, proxy.port, other.port))(manifest)
        manifest["requiresAccessToken"] = token_required

    proxy.rewrite = rewrite_manifest(change)
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db.db'}")
    with pytest.raises(BulkExportError, match="backslash"):
        _bulk(engine, server)
    assert other.requests == [] and other.leaked_auth == []
    assert _foreign(engine) == 0
    _then_clean_equals(server, proxy, engine, clean)


def test_files_on_another_host_get_the_token_never(env, tmp_path):
    server, proxy, other, clean = env
    elsewhere = lambda url: f"http://127.0.0.1:{other.port}/file-{url.rsplit('/', 1)[-1]}"  # noqa: E731
    proxy.rewrite = rewrite_manifest(_files_to(elsewhere))  # requiresAccessToken stays true
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db.db'}")
    with pytest.raises(BulkExportError, match="another host"):
        _bulk(engine, server)
    assert other.requests == []

    def public(manifest: dict) -> None:  # files on storage that needs no token: allowed
        _files_to(elsewhere)(manifest)
        manifest["requiresAccessToken"] = False

    reset_proxy(proxy)
    proxy.rewrite = rewrite_manifest(public)
    other_db = pipeline.open_db(f"sqlite:///{tmp_path / 'other.db'}")
    _bulk(other_db, server)
    assert other.requests, "the files were fetched from where the manifest said"
    assert other.leaked_auth == []
    _then_clean_equals(server, proxy, engine, clean)
