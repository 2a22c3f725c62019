"""Which URLs a server may send us to, judged by where the HTTP library will really connect.

A FHIR server hands us URLs to follow: ``Bundle.link[next]``, the Bulk status URL
(``Content-Location``), manifest links and output file URLs, redirects. Python's
``urlsplit`` and urllib3 disagree on some of them: for
``http://evil.example\\@127.0.0.1:8080/x`` ``urlsplit`` sees the host ``127.0.0.1``
while urllib3 (like a browser) ends the authority at the backslash and connects to
``evil.example``. A same-host check made with ``urlsplit`` then passes and our bearer
token goes to the other host. So every URL a server gives us is

- refused outright when it carries a backslash, a control character or user info
  (``user:pass@``), or is not http(s): no honest FHIR server sends those; and
- compared by the origin requests/urllib3 will connect to (the prepared URL parsed by
  ``urllib3.util.parse_url``), which must also agree with ``urlsplit``'s reading.

Credentials go only to the base URL's own origin (scheme, host and port).
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.util

from connector.fhir.errors import FhirSourceError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeUrl(FhirSourceError):
    """A URL from the server that we will not follow (or not with our credentials)."""


def origin(url: str) -> str:
    """``scheme://host:port`` of the host the HTTP library connects to for ``url``.

    Raises ``UnsafeUrl`` for a URL that is malformed or read differently by ``urlsplit``
    and urllib3 (the trick behind a backslash or an ``@`` in the authority)."""
    check_form(url)
    try:
        prepared = requests.Request("GET", url).prepare().url or ""
        parsed = urllib3.util.parse_url(prepared)
        split = urlsplit(url)
        split_port = split.port
    except (ValueError, requests.RequestException, urllib3.exceptions.HTTPError):
        raise UnsafeUrl("a URL from the server is malformed") from None
    scheme = (parsed.scheme or "").lower()
    host = (parsed.host or "").lower().strip("[]")
    port = parsed.port or _DEFAULT_PORTS.get(scheme, 0)
    split_host = (split.hostname or "").lower()
    if (split.scheme.lower(), split_host, split_port or _DEFAULT_PORTS.get(scheme, 0)) != (
            scheme, host, port):
        raise UnsafeUrl("a URL from the server names one host to some readers and another "
                        "to others; not following it")
    return f"{scheme}://{host}:{port}"


def check_form(url: str) -> str:
    """``url`` if it has none of the shapes that fool host checks, else ``UnsafeUrl``."""
    if _CONTROL.search(url):
        raise UnsafeUrl("a URL from the server contains control characters; not following it")
    if "\\" in url:
        raise UnsafeUrl("a URL from the server contains a backslash (read as a different "
                        "host by different libraries); not following it")
    parts = urlsplit(url)
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        raise UnsafeUrl(f"a URL from the server is not http(s) ({parts.scheme or 'relative'}); "
                        "not following it")
    if "@" in parts.netloc:
        raise UnsafeUrl("a URL from the server carries user info (user@host); not following it")
    if not parts.hostname:
        raise UnsafeUrl("a URL from the server has no host; not following it")
    return url


def same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` connects to the base URL's own scheme, host and port."""
    return origin(url) == origin(base_url)


def follow(link: str, base_url: str, *, what: str, relative_to: str | None = None) -> str:
    """The absolute form of a server's ``link`` if it stays on the base URL's origin.

    ``relative_to`` is where the link was found (default: the base URL). Anything else
    raises ``UnsafeUrl`` naming ``what`` (never the URL itself: it can carry ids)."""
    url = urljoin(relative_to or base_url.rstrip("/") + "/", link)
    try:
        here = origin(url)
    except UnsafeUrl as exc:
        raise UnsafeUrl(f"the server's {what}: {exc}") from None
    if here != origin(base_url):
        raise UnsafeUrl(f"the server's {what} is on another host ({here}); not following it "
                        "with our credentials. Set base_url to the address the server calls "
                        "itself.")
    return url


def describe_origin(url: str) -> str:
    """``scheme://host:port`` for messages, without path or query (which can carry ids)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
