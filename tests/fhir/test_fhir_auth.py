"""Authentication against a server configured for it: basic, bearer, client credentials
and SMART Backend Services (RS384 and ES384), renewal, re-authentication on 401."""

from __future__ import annotations

import json
import logging
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhir_server import load_resources, start_server, tiny_cohort
from jwt.algorithms import ECAlgorithm

from connector.fhir.auth import SmartBackendAuth, TokenAuth, build_auth, load_signing_key
from connector.fhir.client import FhirClient
from connector.fhir.config import AuthConfig
from connector.fhir.errors import AuthError, SiteConfigError
from connector.fhir.retry import RetryPolicy

STATIC_TOKEN = "static-token-5d1c9e0b7a"
CLIENT_SECRET = "client-secret-8f2e4a6c1b"
BASIC_PASSWORD = "basic-pass-3a7d9c2e"


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    paths = {"rsa": d / "rsa.pem", "ec": d / "ec.pem", "wrong": d / "wrong.pem",
             "rsa_pub": d / "rsa_pub.pem"}
    paths["rsa"].write_bytes(_pem(rsa_key))
    paths["ec"].write_bytes(_pem(ec_key))
    paths["wrong"].write_bytes(_pem(other))
    paths["rsa_pub"].write_bytes(rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    return {**{k: str(v) for k, v in paths.items()}, "ec_jwk": ec_jwk}


@pytest.fixture(scope="module")
def auth_server(keys):
    server = start_server(auth={
        "types": ["smart", "bearer", "basic"],
        "tokens": [STATIC_TOKEN],
        "users": {"reader": BASIC_PASSWORD},
        "smart_clients": [
            {"client_id": "rs-client", "public_key_path": keys["rsa_pub"],
             "scopes": "system/*.rs"},
            {"client_id": "es-client", "jwks": {"keys": [keys["ec_jwk"]]},
             "scopes": "system/*.rs"},
            {"client_id": "cc-client", "client_secret": CLIENT_SECRET, "scopes": "system/*.rs"},
        ]})
    load_resources(server, tiny_cohort(6, observations=2)["resources"],
                   headers={"Authorization": f"Bearer {STATIC_TOKEN}"})
    yield server
    server.stop()


def _client(server, cfg: AuthConfig) -> FhirClient:
    client = FhirClient(server.base_url, retry=RetryPolicy(max_attempts=3, backoff_initial=0.01))
    client.auth = build_auth(cfg, base_url=server.base_url, session=client.session, timeout=10)
    if hasattr(client.auth, "retry_runner"):
        client.auth.retry_runner = client._retrying
    return client


def _patients(client: FhirClient) -> int:
    return sum(len(p.resources) for p in client.search("Patient"))


def test_without_credentials_the_server_refuses_clearly(auth_server):
    client = FhirClient(auth_server.base_url)
    with pytest.raises(AuthError, match=r"refused \(HTTP 401\).*Authentication required"):
        client.count("Patient")


def test_basic_and_static_bearer(auth_server, monkeypatch, tmp_path):
    monkeypatch.setenv("T_BASIC_PW", BASIC_PASSWORD)
    basic = _client(auth_server, AuthConfig(type="basic", username="reader",
                                            password_env="T_BASIC_PW"))
    assert _patients(basic) == 6
    token_file = tmp_path / "token"
    token_file.write_text(STATIC_TOKEN + "\n")
    bearer = _client(auth_server, AuthConfig(type="bearer", token_file=str(token_file)))
    assert _patients(bearer) == 6
    token_file.write_text("not-the-token")
    wrong = _client(auth_server, AuthConfig(type="bearer", token_file=str(token_file)))
    with pytest.raises(AuthError, match="HTTP 401"):
        wrong.count("Patient")


def test_static_token_is_read_again_after_a_401(auth_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("expired-token")
    client = _client(auth_server, AuthConfig(type="bearer", token_file=str(token_file)))
    token_file.write_text(STATIC_TOKEN)  # rotated by some other process
    assert client.count("Patient") == 6
    assert client.stats.reauths == 1


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_with_a_secret(auth_server, monkeypatch, method):
    monkeypatch.setenv("T_CC_SECRET", CLIENT_SECRET)
    client = _client(auth_server, AuthConfig(
        type="client_credentials", client_id="cc-client", client_secret_env="T_CC_SECRET",
        client_auth_method=method, scope="system/Patient.rs"))
    assert _patients(client) == 6
    monkeypatch.setenv("T_CC_SECRET", "wrong")
    bad = _client(auth_server, AuthConfig(type="client_credentials", client_id="cc-client",
                                          client_secret_env="T_CC_SECRET"))
    with pytest.raises(AuthError, match="invalid_client"):
        bad.count("Patient")


@pytest.mark.parametrize(("client_id", "key", "alg"), [("rs-client", "rsa", "RS384"),
                                                       ("es-client", "ec", "ES384")])
def test_smart_backend_services(auth_server, keys, client_id, key, alg):
    client = _client(auth_server, AuthConfig(type="smart", client_id=client_id,
                                             private_key_file=keys[key], alg=alg))
    assert _patients(client) == 6
    assert client.count("Observation") == 12
    auth = client.auth
    assert isinstance(auth, SmartBackendAuth) and auth.tokens_fetched == 1
    assert auth.token_url() == f"{auth_server.root_url}/auth/token"  # discovered


def test_smart_assertion_claims(keys):
    import jwt

    key, kid = load_signing_key(open(keys["rsa"]).read(), "RS384", "rsa.pem")
    auth = SmartBackendAuth(client_id="c1", key=key, alg="RS384", kid=kid, jku=None,
                            key_source="rsa.pem", token_url="https://t/token",
                            base_url="https://t/fhir", scope=None, session=None, timeout=1)
    one, two = auth.assertion("https://t/token"), auth.assertion("https://t/token")
    header = jwt.get_unverified_header(one)
    claims = jwt.decode(one, key.public_key(), algorithms=["RS384"], audience="https://t/token")
    assert header["alg"] == "RS384" and header["kid"] == kid and header["typ"] == "JWT"
    assert claims["iss"] == claims["sub"] == "c1"
    assert 0 < claims["exp"] - time.time() <= 300
    assert claims["jti"] != jwt.decode(two, options={"verify_signature": False})["jti"]


def test_token_is_renewed_before_it_expires(keys):
    server = start_server(token_lifetime=2, auth={"types": ["smart"], "smart_clients": [
        {"client_id": "rs-client", "public_key_path": keys["rsa_pub"], "scopes": "system/*.rs"}]})
    try:
        client = _client(server, AuthConfig(type="smart", client_id="rs-client",
                                            private_key_file=keys["rsa"],
                                            token_url=f"{server.root_url}/auth/token"))
        client.count("Patient")
        time.sleep(1.7)  # past 80% of the 2 s lifetime, before expiry
        client.count("Patient")
        assert client.auth.tokens_fetched == 2
        assert client.stats.reauths == 0
    finally:
        server.stop()


def test_a_refused_token_leads_to_one_reauthentication(auth_server, keys):
    client = _client(auth_server, AuthConfig(type="smart", client_id="rs-client",
                                             private_key_file=keys["rsa"]))
    assert client.count("Patient") == 6
    store = auth_server.ctx.store
    old = store.kv_get("jwt_secret")
    store.kv_set("jwt_secret", "rotated-server-secret-" + "x" * 40)  # every token now invalid
    try:
        assert client.count("Patient") == 6
        assert client.stats.reauths == 1 and client.auth.tokens_fetched == 2
    finally:
        store.kv_set("jwt_secret", old)


def test_wrong_key_gives_a_clear_error(auth_server, keys):
    client = _client(auth_server, AuthConfig(type="smart", client_id="rs-client",
                                             private_key_file=keys["wrong"]))
    with pytest.raises(AuthError) as err:
        client.count("Patient")
    message = str(err.value)
    assert "refused" in message and "invalid_client" in message
    assert "signature" in message.lower()
    assert keys["wrong"] in message and "rs-client" in message


def test_key_that_does_not_fit_the_algorithm(keys, tmp_path):
    with pytest.raises(SiteConfigError, match="not a P-384 EC private key"):
        load_signing_key(open(keys["rsa"]).read(), "ES384", "rsa.pem")
    with pytest.raises(SiteConfigError, match="not an RSA private key"):
        load_signing_key(open(keys["ec"]).read(), "RS384", "ec.pem")
    with pytest.raises(SiteConfigError, match="not an unencrypted PEM"):
        load_signing_key("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----",
                         "RS384", "bad.pem")


def test_private_jwk_and_thumbprint_kid(keys):
    from jwt.algorithms import RSAAlgorithm

    pem_key, pem_kid = load_signing_key(open(keys["rsa"]).read(), "RS384", "rsa.pem")
    jwk = json.loads(RSAAlgorithm.to_jwk(pem_key))
    key, kid = load_signing_key(json.dumps({"keys": [jwk]}), "RS384", "rsa.json")
    assert kid == pem_kid and len(kid) == 43  # RFC 7638 thumbprint, base64url of SHA-256
    jwk["kid"] = "my-kid"
    assert load_signing_key(json.dumps(jwk), "RS384", "k.json")[1] == "my-kid"


def test_missing_secret_names_the_variable_not_a_value(monkeypatch):
    monkeypatch.delenv("T_NOT_SET", raising=False)
    with pytest.raises(SiteConfigError, match="T_NOT_SET is not set"):
        build_auth(AuthConfig(type="bearer", token_env="T_NOT_SET"), base_url="http://x",
                   session=None, timeout=1)


def test_no_secret_reaches_the_logs(auth_server, keys, monkeypatch, caplog):
    monkeypatch.setenv("T_CC_SECRET", CLIENT_SECRET)
    caplog.set_level(logging.DEBUG)
    smart = _client(auth_server, AuthConfig(type="smart", client_id="rs-client",
                                            private_key_file=keys["rsa"]))
    smart.count("Patient")
    cc = _client(auth_server, AuthConfig(type="client_credentials", client_id="cc-client",
                                         client_secret_env="T_CC_SECRET"))
    cc.count("Patient")
    secrets = [CLIENT_SECRET, *smart.auth.secrets(), *cc.auth.secrets(),
               *[line for line in open(keys["rsa"]).read().splitlines()[1:-1]]]
    assert isinstance(smart.auth, TokenAuth) and smart.auth.secrets()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records  # something was logged at DEBUG (urllib3 at least)
    for secret in secrets:
        assert secret not in text
