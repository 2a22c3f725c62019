"""Retries for transient failures, with tenacity: backoff, jitter, Retry-After, a budget.

What is transient: 408, 429, 503 and the other 5xx (but 501, which says the
server will never do it), connection failures and resets, read timeouts, and a
2xx whose body is cut short or is not JSON. Everything else (400, 403, 404, 410,
422, ...) is an answer, not an accident, and is not retried. 401 is handled by
the client (re-authentication once), not here.

A ``Retry-After`` header (seconds or an HTTP date) is honoured up to a cap, so a
server asking for five hours cannot stall a run; without one we back off
exponentially with full jitter. Each request has a maximum number of attempts and
the whole run has a retry budget shared by all threads: when many requests fail,
the run stops instead of hammering a sick server.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
import tenacity
from tenacity import RetryCallState

T = TypeVar("T")

NOT_RETRIED_5XX = frozenset({501, 505})


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or (status >= 500 and status not in NOT_RETRIED_5XX)


class TransientError(Exception):
    """One attempt failed in a way worth retrying; ``retry_after`` in seconds if the server said."""

    def __init__(self, reason: str, *, status: int | None = None,
                 retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)
        return max(0.0, seconds)
    except ValueError:
        pass
    when = parse_http_date(value)
    if when is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def parse_http_date(value: str) -> dt.datetime | None:
    """An HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``) as an aware datetime, or None.

    A date without a zone is taken as UTC, as HTTP dates always are.
    """
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when


def transient_for_response(r: requests.Response, detail: str = "") -> TransientError:
    """The ``TransientError`` for an answer whose status ``is_retryable_status``, with the
    server's Retry-After: one wording of the retry reason for every caller."""
    status = r.status_code
    return TransientError(f"HTTP {status}", status=status, detail=detail,
                          retry_after=parse_retry_after(r.headers.get("Retry-After")))


def describe_exception(exc: BaseException) -> str:
    """A short reason without URLs (requests' messages embed the full URL with its query)."""
    if isinstance(exc, TransientError):
        return exc.reason
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "response body cut short"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc)
        if "reset" in text.lower() or "aborted" in text.lower():
            return "connection reset"
        if "refused" in text.lower():
            return "connection refused"
        return "connection error"
    return type(exc).__name__


def is_retryable_exception(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, requests.exceptions.ConnectionError,
                            requests.exceptions.Timeout,
                            requests.exceptions.ChunkedEncodingError,
                            requests.exceptions.ContentDecodingError))


class RetryBudget:
    """Retries left for a whole run, shared by every thread of the run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.total:
                return False
            self.used += 1
            return True

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self.used >= self.total


@dataclass
class RetryPolicy:
    """How one request is retried. Seconds throughout."""

    max_attempts: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_after_cap: float = 120.0

    def wait_seconds(self, exc: BaseException | None, attempt: int,
                     jitter: Callable[[float, float], float]) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.retry_after_cap)
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** max(0, attempt - 1)))
        return jitter(0.0, ceiling)


class _BudgetStop(tenacity.stop.stop_base):
    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.budget.take()


def call_with_retries(
    attempt: Callable[[], T],
    *,
    policy: RetryPolicy,
    budget: RetryBudget,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[float, float], float] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, fails for good, or the attempts or budget run out.

    The last exception is re-raised as it is; the caller turns it into a clear error.
    """
    import random

    jitter = jitter or random.uniform

    def wait(retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return policy.wait_seconds(exc, retry_state.attempt_number, jitter)

    def before_sleep(retry_state: RetryCallState) -> None:
        if on_retry is not None and retry_state.outcome is not None:
            exc = retry_state.outcome.exception()
            seconds = retry_state.next_action.sleep if retry_state.next_action else 0.0
            on_retry(exc, retry_state.attempt_number, seconds)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_retryable_exception),
        stop=tenacity.stop_any(tenacity.stop_after_attempt(policy.max_attempts),
                               _BudgetStop(budget)),
        wait=wait,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    return retrying(attempt)
