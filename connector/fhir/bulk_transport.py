"""How a Bulk export talks to the server: one request at a time over a ``FhirClient``.

The ``$export`` exchanges (``bulk.py``) judge answers by their status and headers, so
they cannot use ``request_json``; this base class gives them the client's session,
auth (one re-authentication on 401), rate limit, retry policy and budget and its
counters, the errors a refusal becomes (with the server's OperationOutcome text),
and the checks that keep credentials on the server's own origin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import requests

from connector.fhir.client import USER_AGENT, FhirClient, outcome_text
from connector.fhir.errors import AuthError, HttpError
from connector.fhir.export import BulkExportError, BulkJobGone, PollPolicy
from connector.fhir.limits import bounded_response
from connector.fhir.redact import describe_url
from connector.fhir.retry import is_retryable_status
from connector.fhir.urls import UnsafeUrl, check_form, follow

_TRANSIENT_CODES = frozenset({"transient", "throttled", "timeout", "lock-error", "no-store",
                              "incomplete"})


class BulkTransport:
    """Requests for one server's Bulk export, over a ``FhirClient``."""

    def __init__(self, client: FhirClient, *, policy: PollPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.policy = policy or PollPolicy()
        self.sleep = sleep
        self.clock = clock

    def send(self, method: str, url: str, *, params: list[tuple[str, str]] | None = None,
             headers: dict[str, str] | None = None, data: bytes | None = None,
             stream: bool = False, auth: bool = True, redirects: bool = False,
             ) -> requests.Response:
        """One request through the client's session, rate limit and auth, with one
        re-authentication on 401; the status is not judged here."""
        client = self.client
        what = f"{method} {describe_url(url, client.base_url)}"

        def once() -> requests.Response:
            client.clock.check(what)
            client.limiter.acquire()
            client.stats.add(requests=1)
            send_headers = {"User-Agent": USER_AGENT, **(headers or {}),
                            **(client.auth.headers() if auth else {})}
            started = time.monotonic()
            r = client.session.request(method, url, params=params, headers=send_headers,
                                       data=data, timeout=client.timeout, stream=True,
                                       allow_redirects=redirects)
            # files stream to disk; every other answer is read whole, within bounds
            return r if stream else bounded_response(r, client.limits, what, started)

        r = once()
        if r.status_code == 401 and auth and client.auth.invalidate():
            client.stats.add(reauths=1)
            r.close()
            r = once()
        return r

    def request(self, method: str, url: str, *, what: str,
                params: list[tuple[str, str]] | None = None,
                headers: dict[str, str] | None = None, data: bytes | None = None,
                ) -> requests.Response:
        """``send`` with retries for transient failures and errors for refusals."""
        def attempt() -> requests.Response:
            r = self.send(method, url, params=params, headers=headers, data=data)
            if r.status_code != 405:
                self.raise_for_status(r, what)
            return r

        return self.retrying(attempt, what)

    def raise_for_status(self, r: requests.Response, what: str, *, gone: bool = False) -> None:
        """Errors for refusals; a retryable status raises ``TransientError``. With ``gone``,
        404/410 raise ``BulkJobGone`` (an expired file), else ``HttpError``."""
        status = r.status_code
        if status < 400:
            return
        _, text = outcome_of(r)
        if status == 401:
            raise AuthError(f"{what} was refused (HTTP 401){colon(text)}. Check [auth] in "
                            f"the site config ({self.client.auth.kind}).")
        if is_retryable_status(status):
            raise self.client.transient(r, text)
        if status == 403:
            raise AuthError(f"{what} was forbidden (HTTP 403){colon(text)}. Check the scopes "
                            "granted to this client (bulk export needs system/*.read or "
                            "system/*.rs for the exported types).")
        if gone and status in (404, 410):
            raise BulkJobGone(f"{what}: gone (HTTP {status}){colon(text)}")
        raise HttpError(f"{what} failed: HTTP {status}{colon(text)}", status=status)

    def retrying(self, attempt: Callable[[], Any], what: str) -> Any:
        """Run ``attempt`` under the client's retry policy and the run's retry budget."""
        return self.client.retrying(attempt, what, sleep=self.sleep)

    def check_origin(self, url: str, what: str) -> str:
        """``url`` if it is on the server's own origin (it will get our credentials)."""
        try:
            return follow(url, self.client.base_url, what=f"export {what}")
        except UnsafeUrl as exc:
            raise BulkExportError(str(exc)) from None

    def check_file_url(self, url: str, *, with_token: bool) -> None:
        """An output file URL: never a deceptive shape; on our origin when it needs the
        token (``requiresAccessToken: false`` files may live elsewhere, and get no token)."""
        if with_token:
            self.check_origin(url, "output file URL")
            return
        try:
            check_form(url)
        except UnsafeUrl as exc:
            raise BulkExportError(f"an export output file URL: {exc}") from None


def outcome_of(r: requests.Response) -> tuple[dict | None, str]:
    """The OperationOutcome of an error answer (or None) and its text."""
    try:
        body = orjson.loads(r.content)
    except (orjson.JSONDecodeError, requests.RequestException):
        return None, ""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None, ""
    return body, outcome_text(body)


def is_transient_outcome(outcome: dict) -> bool:
    """Whether an OperationOutcome's issue codes say "try again later"."""
    codes = {str(i.get("code") or "") for i in outcome.get("issue") or [] if isinstance(i, dict)}
    return bool(codes & _TRANSIENT_CODES)


def colon(text: str) -> str:
    """``": text"`` to append to a message, or nothing when there is no text."""
    return f": {text}" if text else ""
