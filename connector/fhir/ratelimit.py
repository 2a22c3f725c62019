"""A per-site request rate limit shared by all threads of a run.

A token bucket: ``rate`` requests a second on average, bursts of up to ``burst``.
``pause(seconds)`` holds every thread back, which is how a 429 with Retry-After
slows the whole run down rather than only the request that got it.

A run's bucket (``for_run``) holds ``BURST_SECONDS`` of its rate. The limit is about
the load a run puts on a server over seconds, not about the few requests that go
out back to back when a run starts or when one search ends and the next begins:
with a bucket of only ``concurrency`` tokens, the start of every run (capabilities,
clock, page size, the first page of each search) waited on the limit while the
server sat idle. What the server carries at any moment is bounded by
``concurrency`` (requests in flight), not by the bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: Seconds of a run's rate its bucket holds (see the module doc).
BURST_SECONDS = 2.0


class RateLimiter:
    def __init__(self, rate: float, burst: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, self.rate))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._not_before = 0.0
        self._lock = threading.Lock()
        self.waited = 0.0

    @classmethod
    def for_run(cls, rate: float, concurrency: int, *,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> RateLimiter:
        """The limit of a run: ``rate`` requests a second on average, up to
        ``BURST_SECONDS`` of them (and never fewer than ``concurrency``) back to back."""
        return cls(rate, burst=max(1, concurrency, math.ceil(rate * BURST_SECONDS)),
                   clock=clock, sleep=sleep)

    def acquire(self) -> None:
        """Block until one more request may go out.

        Each caller takes its token at once (the bucket may go negative: tokens
        promised to callers already waiting) and sleeps exactly as long as needed, so
        callers are served in order without polling.
        """
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._not_before - now)
            if self.rate > 0:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                self._tokens -= 1
                if self._tokens < 0:
                    wait = max(wait, -self._tokens / self.rate)
            self.waited += wait
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """No request from any thread for ``seconds`` from now."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + max(0.0, seconds))
