"""Site configuration for REST extraction: one TOML file per FHIR server.

Everything about a site lives in its file: the base URL, how to authenticate,
what to fetch and how gently. Secrets never do: the file names an environment
variable (``*_env``) or a file (``*_file``) that holds each secret, and a value
written into the config is refused, so configs can be committed and shared.

```toml
name = "site_a"
base_url = "https://fhir.hospital.example/R4"
scope = "cohort"            # cohort | all | patients
page_size = 200
concurrency = 4
rate_limit = 10             # requests per second on average (0 = no limit)

[auth]
type = "smart"              # none | basic | bearer | client_credentials | smart
client_id = "mm-cohort"
private_key_file = "keys/site_a.pem"
alg = "RS384"

[quirks]
observation_categories = ["laboratory"]   # the server needs a category on Observation searches
```
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connector.fhir.config_model import check_types, strict_model
from connector.fhir.errors import SiteConfigError
from connector.fhir.limits import Limits
from connector.fhir.retry import RetryPolicy
from connector.sitename import site_name_problem

#: The resource types the study reads, in the order a cohort run fetches them.
#: Oral drugs (lenalidomide, pomalidomide, selinexor...) mostly come as a request, a dispense
#: or a statement rather than an administration (connector/mapping/orders.py).
ORDER_TYPES = ("MedicationRequest", "MedicationDispense", "MedicationStatement")
#: Condition carries the baseline covariates of Table 1 (high-risk cytogenetics,
#: extramedullary disease; connector/mapping/conditions.py).
DEFAULT_RESOURCE_TYPES = ("Patient", "MedicationAdministration", *ORDER_TYPES, "Procedure",
                          "Observation", "Condition",
                          "Medication")
#: Resources that may name their drug by a reference to a Medication.
MEDICATION_USERS = frozenset({"MedicationAdministration", *ORDER_TYPES})
PATIENT_TYPES = ("Patient", "MedicationAdministration", *ORDER_TYPES, "Procedure",
                 "Observation", "Condition")
SCOPES = ("cohort", "all", "patients")
AUTH_TYPES = ("none", "basic", "bearer", "client_credentials", "smart")

#: Keys that would hold a secret's value; the config must name where it is instead.
_SECRET_KEYS = {"password": "password", "token": "token", "client_secret": "client_secret",
                "private_key": "private_key", "access_token": "token", "secret": "client_secret"}


@dataclass
class AuthConfig:
    """How to authenticate. Secrets are referenced (env var or file), never stored here."""

    type: str = "none"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    client_auth_method: str = "client_secret_basic"  # or client_secret_post
    private_key_file: str | None = None
    private_key_env: str | None = None
    alg: str = "RS384"
    kid: str | None = None
    jku: str | None = None
    scope: str | None = None
    token_url: str | None = None  # default: from .well-known/smart-configuration


@dataclass
class RetryConfig(RetryPolicy):
    """How requests are retried (``RetryPolicy``'s settings), and how often in a whole run."""

    budget: int = 500  # retries for the whole run


@dataclass
class Quirks:
    """What a particular server needs that the standard does not say."""

    observation_categories: list[str] = field(default_factory=list)
    patient_param: str | None = None  # "patient" or "subject"; default from the CapabilityStatement
    strict_search: bool = True  # send Prefer: handling=strict so ignored parameters are errors
    text_search: bool = True  # screen with code:text too
    chained_search: bool = True  # screen MedicationAdministration by medication.code
    elements: bool = True  # ask only for subject when screening (_elements)
    verify_paging: bool = True  # re-read a multi-page search whose result set changed meanwhile
    incremental: bool = True  # false for servers without _lastUpdated: every run reads all


@dataclass
class SiteConfig:
    name: str
    base_url: str
    auth: AuthConfig = field(default_factory=AuthConfig)
    resource_types: tuple[str, ...] = DEFAULT_RESOURCE_TYPES
    scope: str = "cohort"
    patient_ids_file: str | None = None  # scope = "patients": one Patient id a line
    #: ``_count`` of every search, never exceeded; None (the default): the largest the server
    #: states or accepts, up to 1,000, chosen once a run (connector/fhir/pagesize.py)
    page_size: int | None = None
    patients_per_request: int = 20
    #: Length budget of the id list in one change check (``_lastUpdated`` search of known
    #: patients); ~3,500 characters keeps the whole URL well under the 8 KB many servers
    #: and proxies accept.
    max_query_chars: int = 3500
    #: The politeness limits (docs/fhir-sources.md): searches in flight at once, and requests
    #: a second on average (a bucket of two seconds of it, connector/fhir/ratelimit.py)
    concurrency: int = 4
    rate_limit: float = 10.0
    timeout: float = 60.0
    connect_timeout: float = 10.0
    overlap_seconds: float = 5.0
    #: Bounds against a server that never stops (connector.fhir.limits; docs/operations.md)
    request_deadline: float = 300.0  # seconds for one request, its whole answer included
    run_deadline: float = 86400.0  # seconds for a whole run
    max_body_mb: float = 100.0  # largest answer read into memory
    max_pages: int = 100_000  # pages of one search when the server gives no Bundle.total
    detect_deletes: bool = True
    verify_tls: bool | str = True
    retry: RetryConfig = field(default_factory=RetryConfig)
    quirks: Quirks = field(default_factory=Quirks)
    path: Path | None = None  # the file it came from

    def validate(self) -> SiteConfig:
        """Raise SiteConfigError for values a run cannot work with; returns self."""
        problems: list[str] = []
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.name or ""):
            problems.append(f"name {self.name!r}: use letters, digits, '_', '-', '.'")
        elif site_name_problem(self.name):
            problems.append(f"name {self.name!r}: {site_name_problem(self.name)}")
        parts = urlsplit(self.base_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append("base_url must be an http(s) URL")
        if parts.username or parts.password:
            problems.append("base_url must not contain credentials; use [auth]")
        if parts.query or parts.fragment:
            problems.append("base_url must not have a query or fragment")
        if self.scope not in SCOPES:
            problems.append(f"scope must be one of {', '.join(SCOPES)}")
        if self.scope == "patients" and not self.patient_ids_file:
            problems.append('scope = "patients" needs patient_ids_file')
        unknown = [t for t in self.resource_types if t not in DEFAULT_RESOURCE_TYPES]
        if unknown:
            problems.append(f"resource_types: unsupported {', '.join(unknown)}")
        if "Patient" not in self.resource_types:
            problems.append("resource_types must include Patient")
        for name in ("page_size", "patients_per_request", "concurrency"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                problems.append(f"{name} must be at least 1")
        if int(self.max_query_chars) < 64:
            problems.append("max_query_chars must be at least 64")
        if self.rate_limit < 0 or self.timeout <= 0 or self.connect_timeout <= 0:
            problems.append("rate_limit must be >= 0, timeouts > 0")
        if self.request_deadline <= 0 or self.run_deadline <= 0 or self.max_body_mb <= 0:
            problems.append("request_deadline, run_deadline and max_body_mb must be > 0")
        if int(self.max_pages) < 1:
            problems.append("max_pages must be at least 1")
        if self.overlap_seconds < 0:
            problems.append("overlap_seconds must be >= 0")
        if self.retry.max_attempts < 1 or self.retry.budget < 0:
            problems.append("retry.max_attempts must be >= 1 and retry.budget >= 0")
        if self.quirks.patient_param not in (None, "patient", "subject"):
            problems.append('quirks.patient_param must be "patient" or "subject"')
        problems += _auth_problems(self.auth)
        if problems:
            where = f" in {self.path}" if self.path else ""
            raise SiteConfigError(f"site config{where}: " + "; ".join(problems))
        return self

    def limits(self) -> Limits:
        """The run's bounds (request and run deadlines, body size, pages per search)."""
        return Limits(request_deadline=float(self.request_deadline),
                      run_deadline=float(self.run_deadline),
                      max_body_mb=float(self.max_body_mb), max_pages=int(self.max_pages))


#: The types a site config file's values must have: the settings above, strictly typed
#: (``resource_types`` is a list in TOML; ``path`` is where the file was, not a setting).
SITE_MODEL = strict_model(SiteConfig, types={"resource_types": list[str] | None},
                          skip=frozenset({"path"}))


def _auth_problems(auth: AuthConfig) -> list[str]:
    if auth.type not in AUTH_TYPES:
        return [f"auth.type must be one of {', '.join(AUTH_TYPES)}"]
    need: dict[str, list[tuple[str, ...]]] = {
        "none": [],
        "basic": [("username",), ("password_env", "password_file")],
        "bearer": [("token_env", "token_file")],
        "client_credentials": [("client_id",), ("client_secret_env", "client_secret_file")],
        "smart": [("client_id",), ("private_key_file", "private_key_env")],
    }
    problems = []
    for options in need[auth.type]:
        if not any(getattr(auth, o) for o in options):
            problems.append(f"auth.type = {auth.type!r} needs auth.{' or auth.'.join(options)}")
    if auth.type == "smart" and auth.alg not in ("RS384", "ES384"):
        problems.append("auth.alg must be RS384 or ES384")
    if auth.client_auth_method not in ("client_secret_basic", "client_secret_post"):
        problems.append("auth.client_auth_method must be client_secret_basic or client_secret_post")
    return problems


# ------------------------------------------------------------------ loading


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and check a site's TOML file. Relative file paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise SiteConfigError(f"site config not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SiteConfigError(f"site config {path} is not valid TOML: {exc}") from None
    config = config_from_dict(data, where=str(path))
    config.path = path
    base = path.resolve().parent
    auth = config.auth
    for name in ("password_file", "token_file", "client_secret_file", "private_key_file"):
        value = getattr(auth, name)
        if value and not Path(value).expanduser().is_absolute():
            setattr(auth, name, str(base / value))
    if config.patient_ids_file and not Path(config.patient_ids_file).is_absolute():
        config.patient_ids_file = str(base / config.patient_ids_file)
    return config.validate()


def config_from_dict(data: dict[str, Any], *, where: str = "site config") -> SiteConfig:
    """The config ``data`` (a parsed TOML file) describes; SiteConfigError names each key
    that is unknown, missing, a secret's value, or of the wrong type (``config_model``)."""
    given = data
    data = dict(data)
    auth = _section(data.pop("auth", {}), AuthConfig, f"{where} [auth]", secrets=True)
    retry = _section(data.pop("retry", {}), RetryConfig, f"{where} [retry]")
    quirks = _section(data.pop("quirks", {}), Quirks, f"{where} [quirks]")
    known = {f.name for f in dataclasses.fields(SiteConfig)} - {"auth", "retry", "quirks", "path"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SiteConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    for key in ("name", "base_url"):
        if not data.get(key):
            raise SiteConfigError(f"{where}: '{key}' is required")
    check_types(given, where, SITE_MODEL)
    if "resource_types" in data:
        data["resource_types"] = tuple(data["resource_types"])
    data["base_url"] = str(data["base_url"]).rstrip("/")
    return SiteConfig(auth=auth, retry=retry, quirks=quirks, **data)


def _section(raw: Any, cls: type, where: str, *, secrets: bool = False) -> Any:
    if not isinstance(raw, dict):
        raise SiteConfigError(f"{where} must be a table")
    if secrets:
        for key, kind in _SECRET_KEYS.items():
            if key in raw:
                raise SiteConfigError(
                    f"{where}: '{key}' would put a secret into the config file; name where it "
                    f"is instead, with {kind}_env (an environment variable) or {kind}_file "
                    "(a file readable only by this account)")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise SiteConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    return cls(**raw)


def config_for_url(url: str, site: str | None = None) -> SiteConfig:
    """A config for ``--source URL``: unauthenticated, defaults for everything else."""
    url = url.rstrip("/")
    return SiteConfig(name=site or site_name_for_url(url), base_url=url).validate()


def site_name_for_url(url: str) -> str:
    """``127.0.0.1_8080`` for ``http://127.0.0.1:8080/fhir``; the host alone without a port."""
    parts = urlsplit(url)
    host = parts.hostname or "site"
    name = f"{host}_{parts.port}" if parts.port else host
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:64]


def with_options(config: SiteConfig, options: dict[str, Any]) -> SiteConfig:
    """``config`` with run options applied (``scope="all"``, ``page_size=50``, ...)."""
    config = dataclasses.replace(config)
    top = {f.name for f in dataclasses.fields(SiteConfig)} - {"path"}
    for key, value in options.items():
        if value is None:
            continue
        if key in top:
            setattr(config, key, tuple(value) if key == "resource_types" else value)
        elif key in {f.name for f in dataclasses.fields(Quirks)}:
            config.quirks = dataclasses.replace(config.quirks, **{key: value})
        else:
            raise SiteConfigError(f"unknown extraction option {key!r}")
    return config.validate()


# ------------------------------------------------------------------ secrets


def read_secret(env: str | None, file: str | None, what: str) -> str:
    """A secret from the environment variable or the file named in the config.

    The error names the variable or file, never a value.
    """
    if env:
        value = os.environ.get(env)
        if value:
            return value.strip()
        if not file:
            raise SiteConfigError(f"{what}: environment variable {env} is not set")
    if file:
        p = Path(file).expanduser()
        try:
            value = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SiteConfigError(f"{what}: cannot read {p}: {exc.strerror}") from None
        if not value:
            raise SiteConfigError(f"{what}: {p} is empty")
        return value
    raise SiteConfigError(f"{what}: no environment variable or file configured")
