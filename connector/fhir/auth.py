"""Authentication for FHIR servers: none, basic, static bearer, OAuth2 client credentials,
and SMART Backend Services (a signed JWT client assertion).

An ``Auth`` gives the headers for the next request and, when the server answers
401, ``invalidate()`` says whether a fresh credential can be had (the client then
retries that request once). Token-based schemes renew the token before it expires
(at 80% of its lifetime), under a lock, so concurrent threads fetch one token, not
one each. Secret values are read from the environment or files at construction
and kept only in memory; ``secrets()`` lists them so a log filter can blank them.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from connector.fhir.config import AuthConfig, read_secret
from connector.fhir.errors import AuthError, SiteConfigError
from connector.fhir.retry import (
    RetryBudget,
    RetryPolicy,
    TransientError,
    call_with_retries,
    describe_exception,
    is_retryable_status,
    transient_for_response,
)

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART v2 read+search scopes for what the study reads.
DEFAULT_SMART_SCOPE = " ".join(
    f"system/{t}.rs" for t in ("Patient", "MedicationAdministration", "MedicationRequest",
                               "MedicationDispense", "MedicationStatement", "Procedure",
                               "Observation", "Condition", "Medication"))
RENEW_AT = 0.8  # renew when this fraction of the token's lifetime has passed
ASSERTION_LIFETIME = 240  # seconds; SMART allows at most 300


def _default_runner(attempt: Callable[[], Any]) -> Any:
    return call_with_retries(attempt, policy=RetryPolicy(max_attempts=4, retry_after_cap=30),
                             budget=RetryBudget(10))


class Auth:
    """No authentication."""

    kind = "none"

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> bool:
        """The server refused the credential: can a fresh one be obtained?"""
        return False

    def secrets(self) -> list[str]:
        return []


class BasicAuth(Auth):
    kind = "basic"

    def __init__(self, username: str, password: str) -> None:
        self._header = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._password = password

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._header}

    def secrets(self) -> list[str]:
        return [self._password, self._header.split(" ", 1)[1]]


class BearerAuth(Auth):
    """A static token. On 401 it is read again from its source, in case it was rotated."""

    kind = "bearer"

    def __init__(self, read_token: Callable[[], str]) -> None:
        self._read = read_token
        self._token = read_token()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> bool:
        fresh = self._read()
        changed = fresh != self._token
        self._token = fresh
        return changed

    def secrets(self) -> list[str]:
        return [self._token]


class TokenAuth(Auth):
    """An OAuth2 access token from a token endpoint, renewed before it expires."""

    kind = "oauth2"

    def __init__(self, *, token_url: str | None, base_url: str, scope: str | None,
                 session: requests.Session, timeout: float) -> None:
        self._token_url = token_url
        self._base_url = base_url.rstrip("/")
        self.scope = scope
        self._session = session
        self._timeout = timeout
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._issued: list[str] = []
        self.tokens_fetched = 0
        #: Runs one token request with retries; the client sets its own (policy and budget).
        self.retry_runner: Callable[[Callable[[], Any]], Any] = _default_runner

    # -- Auth ---------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._current()}"}

    def invalidate(self) -> bool:
        with self._lock:
            self._token = None
            self._renew_at = 0.0
        return True

    def secrets(self) -> list[str]:
        return list(self._issued)

    # -- tokens -------------------------------------------------------------

    def _current(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def token_url(self) -> str:
        """The token endpoint: configured, or discovered from .well-known/smart-configuration."""
        if self._token_url:
            return self._token_url
        url = f"{self._base_url}/.well-known/smart-configuration"
        r, doc = self._json_exchange(
            lambda: self._session.get(url, timeout=self._timeout,
                                      headers={"Accept": "application/json"}),
            "answer is not JSON",
            lambda reason: f"cannot read {url} to find the token endpoint ({reason}); "
                           "set auth.token_url")
        if r.status_code != 200:
            raise AuthError(f"{url} answered HTTP {r.status_code}; the server does not "
                            "advertise a token endpoint: set auth.token_url in the site config")
        endpoint = doc.get("token_endpoint") if isinstance(doc, dict) else None
        if not endpoint:
            raise AuthError(f"{url} has no token_endpoint; set auth.token_url")
        self._token_url = str(endpoint)
        return self._token_url

    def _token_request(self) -> tuple[dict[str, str], dict[str, str]]:
        """Form fields and headers of one token request."""
        raise NotImplementedError

    def _fetch(self) -> None:
        url = self.token_url()

        def send() -> requests.Response:
            form, headers = self._token_request()  # a fresh assertion (new jti) each time
            return self._session.post(url, data=form, timeout=self._timeout, headers={
                "Accept": "application/json", **headers})

        r, body = self._json_exchange(
            send, "token response is not JSON",
            lambda reason: f"the token endpoint {url} did not answer ({reason})")
        self._accept(r, body if isinstance(body, dict) else {}, url)

    def _json_exchange(self, send: Callable[[], requests.Response], not_json: str,
                       failed: Callable[[str], str]) -> tuple[requests.Response, Any]:
        """One JSON exchange with the authorization server under the retry runner: a
        retryable status, or a 200 whose body is not JSON (``not_json``), is asked again;
        an answer that never comes is an AuthError worded by ``failed(reason)``. The body
        is None when a refusal is not JSON."""
        def attempt() -> tuple[requests.Response, Any]:
            r = send()
            if is_retryable_status(r.status_code):
                raise transient_for_response(r)
            try:
                return r, r.json()
            except ValueError:
                if r.status_code == 200:
                    raise TransientError(not_json) from None
                return r, None

        try:
            return self.retry_runner(attempt)
        except (TransientError, requests.RequestException) as exc:
            raise AuthError(failed(describe_exception(exc))) from None

    def _accept(self, r: requests.Response, body: dict, url: str) -> None:
        if r.status_code != 200 or not body.get("access_token"):
            error, desc = body.get("error", ""), body.get("error_description", "")
            detail = ": ".join(x for x in (str(error), str(desc)) if x) or "no access_token"
            raise AuthError(f"the token endpoint {url} refused the {self.kind} credentials "
                            f"(HTTP {r.status_code}: {detail}). {self._hint()}")
        token = str(body["access_token"])
        try:
            lifetime = float(body.get("expires_in") or 300)
        except (TypeError, ValueError):
            lifetime = 300.0
        self._token = token
        self._issued.append(token)
        self._renew_at = time.monotonic() + max(1.0, lifetime * RENEW_AT)
        self.tokens_fetched += 1
        log.debug("obtained an access token (%s), valid %.0f s", self.kind, lifetime)

    def _hint(self) -> str:
        return "Check the client id and secret in the site config."


class ClientCredentialsAuth(TokenAuth):
    """OAuth2 client credentials with a client secret (client_secret_basic or _post)."""

    kind = "client_credentials"

    def __init__(self, *, client_id: str, secret: str, method: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.client_id = client_id
        self._secret = secret
        self._method = method

    def _token_request(self) -> tuple[dict[str, str], dict[str, str]]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self._method == "client_secret_post":
            return {**form, "client_id": self.client_id, "client_secret": self._secret}, {}
        pair = f"{self.client_id}:{self._secret}".encode()
        return form, {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    def secrets(self) -> list[str]:
        pair = base64.b64encode(f"{self.client_id}:{self._secret}".encode()).decode()
        return [self._secret, pair, *super().secrets()]


class SmartBackendAuth(TokenAuth):
    """SMART Backend Services: a JWT client assertion signed with the site's private key."""

    kind = "SMART backend services"

    def __init__(self, *, client_id: str, key: Any, alg: str, kid: str, jku: str | None,
                 key_source: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.client_id = client_id
        self._key = key
        self.alg = alg
        self.kid = kid
        self._jku = jku
        self._key_source = key_source

    def assertion(self, audience: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience,
                  "iat": now, "exp": now + ASSERTION_LIFETIME, "jti": uuid.uuid4().hex}
        headers = {"kid": self.kid, "typ": "JWT"}
        if self._jku:
            headers["jku"] = self._jku
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)

    def _token_request(self) -> tuple[dict[str, str], dict[str, str]]:
        url = self.token_url()
        form = {"grant_type": "client_credentials", "scope": self.scope or DEFAULT_SMART_SCOPE,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(url)}
        return form, {}

    def _hint(self) -> str:
        return (f"Check that the public key registered for client '{self.client_id}' at the "
                f"server matches the private key in {self._key_source} (kid {self.kid}, "
                f"{self.alg}), and that the requested scopes are granted.")


# --------------------------------------------------------------------- keys


def load_signing_key(text: str, alg: str, source: str, kid: str | None = None) -> tuple[Any, str]:
    """The private key (PEM, or a JWK / JWKS with the private part) and its kid.

    The kid is the configured one, the JWK's own, or the RFC 7638 thumbprint of the
    public key, which is what most registration pages show.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key: Any = None
    jwk_kid: str | None = None
    stripped = text.strip()
    if stripped.startswith("{"):
        key, jwk_kid = _key_from_jwk(stripped, alg, source, kid)
    else:
        try:
            key = serialization.load_pem_private_key(stripped.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise SiteConfigError(f"{source} is not an unencrypted PEM private key "
                                  f"({type(exc).__name__})") from None
    if alg == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise SiteConfigError(f"{source} is not an RSA private key, but auth.alg is RS384")
    if alg == "ES384":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
            raise SiteConfigError(f"{source} is not a P-384 EC private key, but auth.alg is ES384")
    return key, kid or jwk_kid or _thumbprint(key)


def _key_from_jwk(text: str, alg: str, source: str, kid: str | None) -> tuple[Any, str | None]:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    try:
        doc = json.loads(text)
    except ValueError:
        raise SiteConfigError(f"{source} is neither PEM nor JSON") from None
    keys = doc.get("keys", [doc]) if isinstance(doc, dict) else []
    wanted = "RSA" if alg.startswith("RS") else "EC"
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") != wanted or "d" not in jwk:
            continue
        if kid and jwk.get("kid") not in (None, kid):
            continue
        algo = RSAAlgorithm if wanted == "RSA" else ECAlgorithm
        try:
            return algo.from_jwk(json.dumps(jwk)), jwk.get("kid")
        except Exception:  # noqa: BLE001 - any parse failure means an unusable key
            raise SiteConfigError(f"{source}: the {wanted} JWK cannot be read") from None
    raise SiteConfigError(f"{source} holds no private {wanted} key"
                          + (f" with kid {kid}" if kid else ""))


def _thumbprint(private_key: Any) -> str:
    import hashlib

    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    public = private_key.public_key()
    try:
        jwk = json.loads(RSAAlgorithm.to_jwk(public))
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    except Exception:  # noqa: BLE001 - not RSA: EC
        jwk = json.loads(ECAlgorithm.to_jwk(public))
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


# ------------------------------------------------------------------ factory


def build_auth(cfg: AuthConfig, *, base_url: str, session: requests.Session,
               timeout: float) -> Auth:
    """The ``Auth`` for a site's ``[auth]`` table; reads its secrets now, so errors come early."""
    kind = cfg.type
    if kind == "none":
        return Auth()
    if kind == "basic":
        password = read_secret(cfg.password_env, cfg.password_file, "auth password")
        return BasicAuth(cfg.username or "", password)
    if kind == "bearer":
        return BearerAuth(lambda: read_secret(cfg.token_env, cfg.token_file, "auth token"))
    common = {"token_url": cfg.token_url, "base_url": base_url, "scope": cfg.scope,
              "session": session, "timeout": timeout}
    if kind == "client_credentials":
        secret = read_secret(cfg.client_secret_env, cfg.client_secret_file, "auth client secret")
        return ClientCredentialsAuth(client_id=cfg.client_id or "", secret=secret,
                                     method=cfg.client_auth_method, **common)
    if kind == "smart":
        source = (str(Path(cfg.private_key_file)) if cfg.private_key_file
                  else f"environment variable {cfg.private_key_env}")
        text = read_secret(cfg.private_key_env, cfg.private_key_file, "auth private key")
        key, kid = load_signing_key(text, cfg.alg, source, cfg.kid)
        return SmartBackendAuth(client_id=cfg.client_id or "", key=key, alg=cfg.alg, kid=kid,
                                jku=cfg.jku, key_source=source, **common)
    raise SiteConfigError(f"unknown auth.type {kind!r}")
