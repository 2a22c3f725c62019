"""Keep patient identifiers and credentials out of logs and error messages.

Search URLs carry patient ids (``Observation?patient=123,456``) and paths carry
resource ids (``Patient/123``). Everything we log or raise goes through
``describe_url``, which keeps the resource type and the parameter names and
replaces values by their count, except for a few parameters whose values say
nothing about a patient. urllib3 logs request lines at DEBUG level; a filter on
its logger rewrites them the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

#: Parameters whose values identify nobody; shown as they are in logs.
SHOWN_PARAMS = frozenset({
    "_count", "_summary", "_elements", "_sort", "_lastUpdated", "_since", "_total",
    "_format", "_offset", "_getpagesoffset", "category", "code", "code:text", "status",
    "medication.code", "medication.code:text", "_type", "_outputFormat", "grant_type",
})

_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]+$")
_PLAIN_SEGMENTS = frozenset({"metadata", "smart-configuration", "auth", "token"})


def describe_url(url: str, base_url: str | None = None) -> str:
    """``Observation?patient=<3 values>&_count=200`` for a search URL; no ids, no host."""
    parts = urlsplit(url)
    path = parts.path
    if base_url:
        base_path = urlsplit(base_url).path.rstrip("/")
        if base_path and path.startswith(base_path):
            path = path[len(base_path):]
    shown: list[str] = []
    seen_type = False
    for seg in (s for s in path.split("/") if s):
        if _TYPE_RE.match(seg) or seg.startswith(("$", "_", ".")) or seg in _PLAIN_SEGMENTS:
            seen_type = seen_type or bool(_TYPE_RE.match(seg))
            shown.append(seg)
        else:
            # before the first resource type come base-path parts (fhir, baseR4);
            # after it, anything else is a resource id or version
            shown.append("<id>" if seen_type else seg)
    out = "/".join(shown) or "/"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if query:
        out += "?" + "&".join(_describe_param(k, v) for k, v in query)
    return out


def _describe_param(key: str, value: str) -> str:
    if key in SHOWN_PARAMS:
        return f"{key}={value}"
    n = len([v for v in value.split(",") if v]) if value else 0
    return f"{key}=<{n} value{'s' if n != 1 else ''}>"


def describe_params(params: Iterable[tuple[str, str]]) -> str:
    return "&".join(_describe_param(k, v) for k, v in params)


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every occurrence of ``values`` (ids, tokens) replaced by ``<redacted>``."""
    for value in sorted({v for v in values if v and len(v) >= 3}, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text


def sensitive_values(url: str) -> list[str]:
    """The values in a URL that may identify a patient: hidden parameter values and path ids."""
    parts = urlsplit(url)
    values: list[str] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in SHOWN_PARAMS:
            for v in value.split(","):
                values.append(v)
                if "/" in v:
                    values.append(v.rsplit("/", 1)[-1])
    segments = [s for s in parts.path.split("/") if s]
    for i, seg in enumerate(segments):
        if i > 0 and _TYPE_RE.match(segments[i - 1]) and not seg.startswith(("$", "_")):
            values.append(seg)
    return values


class _UrllibFilter(logging.Filter):
    """Rewrites urllib3's request lines (``"GET /fhir/Patient?_id=… HTTP/1.1"``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.msg, str) and "?" in record.msg:
            record.msg = _redact_arg(record.msg)
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str) and (arg.startswith("/") or "://" in arg):
        return describe_url(arg)
    return arg


_installed = False


def install_log_redaction() -> None:
    """Attach the filter to the urllib3 loggers that print URLs (idempotent)."""
    global _installed
    if _installed:
        return
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.response",
                 "urllib3.connection", "urllib3.poolmanager"):
        logging.getLogger(name).addFilter(_UrllibFilter())
    _installed = True


# ------------------------------------------------------------ server text

#: ``Patient/123``, ``Observation/ob-1/_history/2``: a typed reference, whatever the id.
_TYPED_REF = re.compile(r"\b([A-Z][A-Za-z]{2,})/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]+)?")
#: ``Patient 34a95157``, ``Patient id abc-1``, ``Patient: 'x7'``: a type word then an id.
_TYPED_WORD = re.compile(
    r"\b(Patient|Person|RelatedPerson|Practitioner|Encounter|Observation|Condition|Procedure|"
    r"Medication(?:Administration|Request|Statement|Dispense)?|DiagnosticReport|Specimen|"
    r"Group|Account|Coverage|Claim|Immunization|AllergyIntolerance|CarePlan|Resource)"
    r"(\s+(?:with\s+)?(?:id|ID|Id)?\s*[:=#]?\s*|\s*[:=#]\s*)(['\"]?)"
    r"([A-Za-z0-9][A-Za-z0-9\-._]{0,63})\3")
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(\.[\w\-]+)+")
_TOKEN = re.compile(r"(?<![\w\-.])[A-Za-z0-9][A-Za-z0-9._:\-]*[A-Za-z0-9](?![\w\-])")
_KEEP_TOKEN = re.compile(r"(HAPI-\d{1,5}|HTTP/\d(\.\d)?|UTF-\d+|[Rr][45]B?|ISO-8859-\d+|"
                         r"[Hh][Tt][Tt][Pp][Ss]?)")


def _id_like(token: str) -> bool:
    """A token that may be an identifier: an id, MRN, date, UUID; not a word or a status."""
    if _KEEP_TOKEN.fullmatch(token):
        return False
    digits = sum(c.isdigit() for c in token)
    return digits > 0 and len(token) >= 5


def scrub_server_text(text: str) -> str:
    """Server-written text (OperationOutcome diagnostics, error pages) without anything
    identifier-shaped: resource ids after a type, e-mail addresses, and every token of five
    or more characters that has a digit (ids, MRNs, dates, UUIDs). We cannot know which
    ids the server chose to quote, so everything that looks like one goes; error codes
    such as ``HAPI-0389`` and HTTP versions stay."""
    text = _EMAIL.sub("<redacted>", text)
    text = _TYPED_REF.sub(lambda m: f"{m.group(1)}/<id>", text)

    def typed_word(m: re.Match[str]) -> str:
        value, between = m.group(4), m.group(2)
        marked = bool(m.group(3)) or any(c in between for c in ":=#") or "id" in between.lower()
        if value.isalpha() and not marked:  # "Patient resource", "Resource Observation"
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}{m.group(3)}<id>{m.group(3)}"

    text = _TYPED_WORD.sub(typed_word, text)
    return _TOKEN.sub(lambda m: "<redacted>" if _id_like(m.group(0)) else m.group(0), text)
