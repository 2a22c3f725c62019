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
