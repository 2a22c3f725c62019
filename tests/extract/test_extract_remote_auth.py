"""REST extraction with auth, through the CLI and a site config; no identifier or secret
in the logs at any level."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fhir_server import load_resources, start_behind_proxy
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from connector.cli import EXIT_SOURCE, EXIT_USAGE, app
from connector.db.models import ExtractRun, RawResource
from connector.extract.remote import extract_remote
from connector.fhir.auth import TokenAuth
from connector.fhir.config import AuthConfig, RetryConfig

TOKEN = "bearer-token-c0ffee-7e57"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for name, key in (("good", good), ("wrong", wrong)):
        (d / f"{name}.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    (d / "good_pub.pem").write_bytes(good.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return d


@pytest.fixture(scope="module")
def secured(keys, tiny):
    server, proxy = start_behind_proxy(auth={
        "types": ["bearer", "smart"], "tokens": [TOKEN],
        "smart_clients": [{"client_id": "cohort-client",
                           "public_key_path": str(keys / "good_pub.pem"),
                           "scopes": "system/*.rs"}]})
    load_resources(server, tiny["resources"], headers={"Authorization": f"Bearer {TOKEN}"})
    yield server, proxy
    proxy.stop()
    server.stop()


@pytest.fixture(scope="module")
def tiny():
    from fhir_server import tiny_cohort

    return tiny_cohort(8, observations=6, seed=11)


def _site_toml(path, server, auth: str) -> str:
    path.write_text(f'name = "secure_site"\nbase_url = "{server.base_url}"\nrate_limit = 0\n'
                    f'overlap_seconds = 0\n\n[auth]\n{auth}\n')
    return str(path)


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_bearer_site_config_through_the_cli(secured, tiny, tmp_path, monkeypatch):
    server, _ = secured
    monkeypatch.setenv("COHORT_TEST_TOKEN", TOKEN)
    site = _site_toml(tmp_path / "site.toml", server, 'type = "bearer"\n'
                      'token_env = "COHORT_TEST_TOKEN"')
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = _cli("extract", "--source", site, "--db", db, "--quiet")
    assert result.exit_code == 0, result.output
    assert "secure_site" in result.output
    monkeypatch.setenv("COHORT_TEST_TOKEN", "not-the-token")
    result = _cli("extract", "--source", site, "--db", db, "--quiet")
    assert result.exit_code == EXIT_SOURCE
    assert "HTTP 401" in result.output and "Traceback" not in result.output


def test_smart_backend_services_and_a_wrong_key(secured, tiny, keys, tmp_path):
    server, _ = secured
    good = _site_toml(tmp_path / "good.toml", server, 'type = "smart"\nclient_id = '
                      f'"cohort-client"\nprivate_key_file = "{keys / "good.pem"}"')
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = _cli("extract", "--source", good, "--db", db, "--quiet", "--scope", "all")
    assert result.exit_code == 0, result.output
    bad = _site_toml(tmp_path / "bad.toml", server, 'type = "smart"\nclient_id = '
                     f'"cohort-client"\nprivate_key_file = "{keys / "wrong.pem"}"')
    result = _cli("extract", "--source", bad, "--db", db, "--quiet")
    assert result.exit_code == EXIT_SOURCE
    assert "error: " in result.output and "Traceback" not in result.output
    assert "invalid_client" in result.output and "wrong.pem" in result.output
    broken = _site_toml(tmp_path / "broken.toml", server, 'type = "smart"\nclient_id = "c"\n'
                        'private_key_file = "missing.pem"')
    result = _cli("extract", "--source", broken, "--db", db, "--quiet")
    assert result.exit_code == EXIT_USAGE and "cannot read" in result.output


def test_no_identifier_or_secret_in_the_logs(secured, tiny, keys, tmp_path, caplog,
                                             monkeypatch):
    server, proxy = secured
    caplog.set_level(logging.DEBUG)
    issued: list[str] = []
    accept = TokenAuth._accept

    def keep_tokens(self, r, body, url):
        issued.append(body.get("access_token", ""))
        return accept(self, r, body, url)

    monkeypatch.setattr(TokenAuth, "_accept", keep_tokens)
    from connector.db import get_engine, init_db

    engine = get_engine(f"sqlite:///{tmp_path / 'p.db'}")
    init_db(engine)
    proxy.rate, proxy.retry_after, proxy.kinds = 0.25, "0", ("503", "500", "reset", "truncate")
    try:
        auth = AuthConfig(type="smart", client_id="cohort-client",
                          private_key_file=str(keys / "good.pem"))
        extract_remote(engine, server.base_url, site="p", auth=auth, rate_limit=0,
                       page_size=5, patients_per_request=3,
                       retry=RetryConfig(backoff_initial=0.01, budget=500))
    finally:
        proxy.rate = 0.0
    with Session(engine) as s:
        run = s.exec(select(ExtractRun)).scalars().one()
        sources = set(s.exec(select(RawResource.source)).scalars())
    records = [r for r in caplog.records
               if not r.name.startswith(("sekmet", "uvicorn", "fastapi"))]
    text = "\n".join([r.getMessage() for r in records]
                     + [r.exc_text or "" for r in records] + [run.message, *sources])
    assert run.retries > 0 and any(r.levelno == logging.DEBUG for r in records)
    assert any("retrying" in r.getMessage() for r in records)
    pem_lines = (keys / "good.pem").read_text().splitlines()[1:-1]
    assert issued and all(issued)
    forbidden = [*tiny["patients"], *tiny["identifiers"], TOKEN, *pem_lines, *issued]
    leaks = [value for value in forbidden if value in text]
    assert not leaks
