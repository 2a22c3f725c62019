"""The per-site rate limit: a token bucket with a pause for Retry-After."""

from __future__ import annotations

import threading
import time

from connector.fhir.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_spaces_requests():
    clock = FakeClock()
    limiter = RateLimiter(10, burst=2, clock=clock, sleep=clock.sleep)
    for _ in range(12):
        limiter.acquire()
    # a burst of 2 at once, then one every 0.1 s
    assert abs(clock.now - 1.0) < 1e-6


def test_pause_holds_everyone_back():
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    assert clock.now == 0
    limiter.pause(3)
    limiter.acquire()
    assert clock.now == 3


def test_shared_between_threads():
    limiter = RateLimiter(50, burst=1)
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(5)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start >= (20 - 1) / 50 * 0.9


def test_a_runs_bucket_lets_its_start_through_and_keeps_the_rate_after():
    """for_run: two seconds of the rate back to back (the start of a run: capabilities,
    clock, page size, each search's first page), then the rate itself."""
    clock = FakeClock()
    limiter = RateLimiter.for_run(10, concurrency=4, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        limiter.acquire()
    assert clock.now == 0  # 20 requests: no wait
    for _ in range(30):
        limiter.acquire()
    assert abs(clock.now - 3.0) < 1e-6  # then one every 0.1 s
    assert RateLimiter.for_run(1, concurrency=4).burst == 4  # never below the concurrency
    assert RateLimiter.for_run(0, concurrency=4).rate == 0  # 0: no limit
