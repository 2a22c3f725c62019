"""The types a site config's values must have, checked before a run uses any of them.

TOML gives strings, integers, floats, booleans and lists; an operator who writes
``page_size = "abc"`` or ``concurrency = 2.5`` should hear which key is wrong and
what it must be, not see a traceback from deep inside the client. These pydantic
models mirror the dataclasses of ``connector.fhir.config`` field by field (a test
keeps the two in step) and are strict: no silent rounding of 2.5 to 2, no "5"
read as 5. A float setting accepts an integer (``rate_limit = 5``).

Only types are checked here; ranges and combinations (``page_size`` at least 1,
``auth.type`` needing its secret) stay in ``SiteConfig.validate``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from connector.fhir.errors import SiteConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class AuthModel(_Strict):
    type: str = "none"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    client_auth_method: str = "client_secret_basic"
    private_key_file: str | None = None
    private_key_env: str | None = None
    alg: str = "RS384"
    kid: str | None = None
    jku: str | None = None
    scope: str | None = None
    token_url: str | None = None


class RetryModel(_Strict):
    max_attempts: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_after_cap: float = 120.0
    budget: int = 500


class QuirksModel(_Strict):
    observation_categories: list[str] = []
    patient_param: str | None = None
    strict_search: bool = True
    text_search: bool = True
    chained_search: bool = True
    elements: bool = True
    verify_paging: bool = True
    incremental: bool = True


class SiteConfigModel(_Strict):
    name: str
    base_url: str
    auth: AuthModel = AuthModel()
    resource_types: list[str] | None = None
    scope: str = "cohort"
    patient_ids_file: str | None = None
    page_size: int | None = None
    patients_per_request: int = 20
    max_query_chars: int = 3500
    concurrency: int = 4
    rate_limit: float = 10.0
    timeout: float = 60.0
    connect_timeout: float = 10.0
    overlap_seconds: float = 5.0
    request_deadline: float = 300.0
    run_deadline: float = 86400.0
    max_body_mb: float = 100.0
    max_pages: int = 100_000
    detect_deletes: bool = True
    verify_tls: bool | str = True
    retry: RetryModel = RetryModel()
    quirks: QuirksModel = QuirksModel()


#: What each kind of value must be, in the words of a config file's reader.
_EXPECTED = {"int": "a whole number", "float": "a number", "bool": "true or false",
             "str": "a string in quotes", "list": "a list", "dict": "a table",
             "none": "absent", "literal": "one of the allowed values"}


def check_types(data: dict[str, Any], where: str) -> None:
    """Raise SiteConfigError naming every key of ``data`` whose value has the wrong type.

    The message names the key (``page_size``, ``retry.budget``), what it must be and
    the type it has, never the value itself: a value in the wrong key may be a secret.
    """
    try:
        SiteConfigModel.model_validate(data)
    except ValidationError as exc:
        needs: dict[str, list[str]] = {}
        got: dict[str, str] = {}
        for error in exc.errors():
            key, need, kind = _problem(error)
            needs.setdefault(key, [])
            if need not in needs[key]:
                needs[key].append(need)
            got[key] = kind
        problems = [f"{key} must be {' or '.join(need)}, not {got[key]}"
                    if got[key] else f"{key}: {need[0]}" for key, need in needs.items()]
        raise SiteConfigError(f"{where}: " + "; ".join(problems)) from None


def _problem(error: Any) -> tuple[str, str, str]:
    """(key, what it must be, the type it has) of one pydantic error; the type is empty
    when the error is not about a type (a missing or unknown key)."""
    loc = [str(p) for p in error.get("loc", ())]
    # a union (int | None, bool | str) reports each member under the member's name
    while loc and (loc[-1] in _MEMBERS or loc[-1].startswith("list[")):
        loc.pop()
    key = _key(loc)
    kind = error.get("type", "")
    if kind == "missing":
        return key, "is required", ""
    if kind == "extra_forbidden":
        return key, "unknown setting", ""
    name = type(error.get("input")).__name__
    return key, _need(kind), _TOML_NAMES.get(name, name)


_MEMBERS = {"int", "float", "bool", "str", "list", "none", "dict"}


def _key(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "config"


def _need(kind: str) -> str:
    for prefix, words in _EXPECTED.items():
        if kind.startswith(prefix):
            return words
    return "of another type"


_TOML_NAMES = {"str": "a string", "int": "a whole number", "float": "a decimal number",
               "bool": "a boolean", "list": "a list", "dict": "a table",
               "datetime": "a date-time", "date": "a date", "time": "a time"}
