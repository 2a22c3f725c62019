"""One request to a FHIR server done right: the session, auth, retries, bounds, errors.

- One ``requests.Session`` for every request of a run (connection reuse; a pool as
  large as the run's concurrency), and a (connect, read) timeout on every request.
- Every answer is read under the run's bounds (``limits.py``): a deadline per request
  and per run, a maximum body size.
- A redirect is reported as one (with where to point ``base_url``), never parsed as a
  body: a bearer token must not ride it.
- Transient failures are retried (``retry.py``) under the run's retry budget, and a
  server asking to slow down pauses the whole run's rate limiter; a 401 leads to one
  re-authentication; other errors raise with the server's OperationOutcome text,
  scrubbed of the ids the request carried.

What the requests are for (searches, paging, capabilities) is ``client.py``'s part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

from connector.fhir.auth import Auth
from connector.fhir.config import SiteConfig
from connector.fhir.errors import AuthError, HttpError, RetryExhausted
from connector.fhir.limits import Limits, RunClock, Watch, bounded_response
from connector.fhir.ratelimit import RateLimiter
from connector.fhir.redact import (
    describe_url,
    install_log_redaction,
    scrub,
    scrub_server_text,
    sensitive_values,
)
from connector.fhir.results import ClientStats, outcome_text
from connector.fhir.retry import (
    RetryBudget,
    RetryPolicy,
    TransientError,
    call_with_retries,
    describe_exception,
    is_retryable_status,
    transient_for_response,
)
from connector.fhir.urls import describe_origin

log = logging.getLogger(__name__)

#: ``page_size`` when neither the config nor a probe sets one.
DEFAULT_PAGE_SIZE = 200

FHIR_JSON = "application/fhir+json"
USER_AGENT = "mm-cart-connector/0.1 (FHIR R4 cohort extraction)"


class Transport:
    """One FHIR server's HTTP for one run. Thread-safe: workers share it."""

    def __init__(self, base_url: str, *, auth: Auth | None = None, timeout: float = 60.0,
                 connect_timeout: float = 10.0, retry: RetryPolicy | None = None,
                 budget: RetryBudget | None = None, rate_limiter: RateLimiter | None = None,
                 page_size: int = 200, strict: bool = True, verify: bool | str = True,
                 pool_size: int = 4, session: requests.Session | None = None,
                 limits: Limits | None = None) -> None:
        install_log_redaction()
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        # two connections a worker (a page being read while the next is asked for), and
        # a few for the run's own requests (paging checks, clock)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=2 * max(1, pool_size) + 2,
                              max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.verify = verify
        self.session.trust_env = False  # no proxies or .netrc credentials from the environment
        self.auth = auth or Auth()
        if hasattr(self.auth, "retry_runner"):
            self.auth.retry_runner = self._retrying  # type: ignore[attr-defined]
        self.timeout = (connect_timeout, timeout)
        self.retry = retry or RetryPolicy()
        self.budget = budget or RetryBudget(500)
        self.limiter = rate_limiter or RateLimiter(0)
        self.page_size = page_size
        self.strict = strict
        self.stats = ClientStats()
        self.limits = limits or Limits()
        self.clock = RunClock(self.limits.run_deadline)

    @classmethod
    def for_site(cls, config: SiteConfig) -> Self:
        """A client set up from a site config: auth, timeouts, retries, rate limit, pool."""
        from connector.fhir.auth import build_auth

        session = requests.Session()
        session.verify = config.verify_tls
        session.trust_env = False
        auth = build_auth(config.auth, base_url=config.base_url, session=session,
                          timeout=config.timeout)
        r = config.retry
        return cls(config.base_url, auth=auth, timeout=config.timeout,
                   connect_timeout=config.connect_timeout,
                   retry=RetryPolicy(max_attempts=r.max_attempts, backoff_initial=r.backoff_initial,
                                     backoff_max=r.backoff_max, retry_after_cap=r.retry_after_cap),
                   budget=RetryBudget(r.budget),
                   rate_limiter=RateLimiter.for_run(config.rate_limit, config.concurrency),
                   page_size=config.page_size or DEFAULT_PAGE_SIZE,
                   strict=config.quirks.strict_search,
                   verify=config.verify_tls, pool_size=config.concurrency, session=session,
                   limits=config.limits())

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def get_json(self, url: str, params: Sequence[tuple[str, str]] | None = None,
                 headers: dict[str, str] | None = None, *,
                 watch: Watch | None = None) -> tuple[dict, requests.Response]:
        """GET a JSON answer with retries; errors carry the OperationOutcome text.
        ``watch`` sees a successful answer's bytes as they arrive (``limits.read_body``)."""
        return self.request_json("GET", url, params=params, headers=headers, watch=watch)

    def request_json(self, method: str, url: str, *,
                     params: Sequence[tuple[str, str]] | None = None,
                     headers: dict[str, str] | None = None,
                     data: Any = None, watch: Watch | None = None,
                     ) -> tuple[dict, requests.Response]:
        full = requests.Request(method, url, params=list(params or [])).prepare().url or url
        what = f"{method} {describe_url(full, self.base_url)}"
        hidden = sensitive_values(full)
        state = SimpleNamespace(reauthed=False, watch=watch)

        def attempt() -> tuple[dict, requests.Response]:
            return self._attempt(method, url, params, headers or {}, data, what, hidden, state)

        return self.retrying(attempt, what)

    def retrying(self, attempt: Callable[[], Any], what: str, *,
                 sleep: Callable[[float], None] = time.sleep) -> Any:
        """Run ``attempt`` under the client's retry policy and the run's retry budget; when
        they run out, raise ``RetryExhausted`` naming ``what`` and the last reason."""
        try:
            return self._retrying(attempt, what=what, sleep=sleep)
        except TransientError as exc:
            raise RetryExhausted(self._gave_up(what, exc.reason, exc.detail),
                                 status=exc.status) from None
        except requests.RequestException as exc:
            raise RetryExhausted(self._gave_up(what, describe_exception(exc), "")) from None

    def _retrying(self, attempt: Any, what: str = "token request", *,
                  sleep: Callable[[float], None] = time.sleep) -> Any:
        def on_retry(exc: BaseException, number: int, wait: float) -> None:
            reason = describe_exception(exc)
            self.stats.retried(reason)
            log.info("retrying %s after %s (attempt %d of %d, waiting %.1f s)",
                     what, reason, number, self.retry.max_attempts, wait)

        return call_with_retries(attempt, policy=self.retry, budget=self.budget,
                                 on_retry=on_retry, sleep=sleep)

    def _gave_up(self, what: str, reason: str, detail: str) -> str:
        why = ("the run's retry budget is used up" if self.budget.exhausted
               else f"{self.retry.max_attempts} attempts")
        return f"{what} failed ({why}): {reason}" + (f": {detail}" if detail else "")

    def _attempt(self, method: str, url: str, params: Sequence[tuple[str, str]] | None,
                 headers: dict[str, str], data: Any, what: str, hidden: list[str],
                 state: SimpleNamespace) -> tuple[dict, requests.Response]:
        r = self._send(method, url, params, headers, data, watch=state.watch)
        if r.status_code == 401 and not state.reauthed:
            state.reauthed = True
            if self.auth.invalidate():
                self.stats.add(reauths=1)
                log.info("%s: HTTP 401, authenticating again (once)", what)
                r = self._send(method, url, params, headers, data, watch=state.watch)
        status = r.status_code
        if status == 401:
            raise AuthError(f"{what} was refused (HTTP 401){self._detail(r, hidden)}. "
                            f"Check [auth] in the site config ({self.auth.kind}).")
        if is_retryable_status(status):
            raise self.transient(r, self._detail(r, hidden).lstrip(": "))
        if status == 403:
            raise AuthError(f"{what} was forbidden (HTTP 403){self._detail(r, hidden)}. "
                            "Check the scopes granted to this client.")
        if status >= 400:
            raise HttpError(f"{what} failed: HTTP {status}{self._detail(r, hidden)}",
                            status=status)
        if 300 <= status < 400:
            raise redirect_error(what, r, self.base_url)
        try:
            body = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise TransientError("response body is not valid JSON (cut short?)",
                                 status=status) from None
        if not isinstance(body, dict):
            raise HttpError(f"{what}: the answer is not a JSON object", status=status)
        return body, r

    def transient(self, r: requests.Response, detail: str = "") -> TransientError:
        """The retryable error for ``r`` (its status ``is_retryable_status``). A server that
        asks to slow down (429 or 503 with Retry-After) also pauses the run's rate limiter,
        so the other threads wait too instead of each being refused in turn."""
        exc = transient_for_response(r, detail)
        if exc.retry_after is not None and exc.status in (429, 503):
            self.limiter.pause(min(exc.retry_after, self.retry.retry_after_cap))
        return exc

    def _send(self, method: str, url: str, params: Sequence[tuple[str, str]] | None,
              headers: dict[str, str], data: Any, *,
              watch: Watch | None = None) -> requests.Response:
        """One request, its answer read whole under the request deadline and size limit."""
        what = f"{method} {describe_url(url, self.base_url)}"
        self.clock.check(what)
        self.limiter.acquire()
        self.stats.add(requests=1)
        send_headers = {"Accept": FHIR_JSON, "User-Agent": USER_AGENT, **headers,
                        **self.auth.headers()}
        started = time.monotonic()
        r = self.session.request(method, url, params=params, headers=send_headers,
                                 data=data, timeout=self.timeout, allow_redirects=False,
                                 stream=True)
        return bounded_response(r, self.limits, what, started, watch)

    @staticmethod
    def _detail(r: requests.Response, hidden: list[str]) -> str:
        text = ""
        try:
            text = outcome_text(orjson.loads(r.content))
        except (orjson.JSONDecodeError, requests.RequestException):
            pass
        if not text:
            text = scrub_server_text(" ".join(r.text[:200].split())) if r.content and \
                "json" not in (r.headers.get("Content-Type") or "") else ""
        return f": {scrub(text, hidden)}" if text else ""


def redirect_error(what: str, r: requests.Response, base_url: str) -> HttpError:
    """A redirect answer as an error that says where to, and what to change.

    Not followed: a bearer token must not ride a redirect, and a server that moved
    (often to https) should be named by its new address in the site config."""
    location = r.headers.get("Location") or ""
    target = urljoin(r.url or base_url, location) if location else ""
    where = describe_origin(target) if target else "an address it did not give"
    hint = ""
    if target and describe_origin(target) != describe_origin(base_url):
        hint = (f" Set base_url to the server's own address (it redirects to {where}; "
                f"e.g. {where}{urlsplit(base_url).path}).")
    return HttpError(f"{what}: the server answered with a redirect (HTTP {r.status_code}) to "
                     f"{where}; redirects are not followed.{hint}", status=r.status_code)
