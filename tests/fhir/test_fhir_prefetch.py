"""One page ahead (connector/fhir/prefetch.py): values and errors come back in the caller's
thread, the caller's context goes with the fetch, and no thread outlives the block."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from connector.fhir.prefetch import PagePrefetcher

TAG: contextvars.ContextVar[str] = contextvars.ContextVar("TAG", default="none")


def test_the_fetch_runs_while_the_caller_works_and_returns_its_value():
    started = threading.Event()

    def fetch() -> str:
        started.set()
        time.sleep(0.2)
        return "page 2"

    with PagePrefetcher[str]() as ahead:
        t0 = time.monotonic()
        ahead.start(fetch)
        assert started.wait(1.0)  # already running before the caller asks for it
        time.sleep(0.2)  # the caller's own work, overlapping the fetch
        assert ahead.result() == "page 2"
        assert time.monotonic() - t0 < 0.38  # not 0.2 + 0.2 one after the other


def test_errors_are_raised_in_the_caller_and_context_travels():
    TAG.set("run-7")
    seen: list[str] = []

    def fetch() -> None:
        seen.append(TAG.get())
        raise ValueError("the server said no")

    with PagePrefetcher[None]() as ahead:
        ahead.start(fetch)
        with pytest.raises(ValueError, match="said no"):
            ahead.result()
    assert seen == ["run-7"]


def test_leaving_the_block_waits_for_a_running_fetch_and_misuse_is_refused():
    done = threading.Event()

    def fetch() -> None:
        time.sleep(0.1)
        done.set()

    with PagePrefetcher[None]() as ahead:
        ahead.start(fetch)
        with pytest.raises(RuntimeError):
            ahead.start(fetch)
    assert done.is_set()
    with pytest.raises(RuntimeError):
        PagePrefetcher[None]().result()


def test_a_search_asks_for_the_next_page_while_the_caller_handles_this_one(proxied):
    """Through the proxy: page 2's request has reached the server before the caller is
    done with page 1, and the pages and their order are those of plain paging."""
    from connector.fhir.client import FhirClient

    server, proxy = proxied
    with FhirClient(server.base_url, page_size=7) as client:
        pages = client.search("Observation")
        first = next(pages)
        deadline = time.monotonic() + 5
        while len(proxy.paths) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the caller "working" on page 1
        assert len(proxy.paths) == 2 and "_offset" in proxy.paths[1]
        rest = list(pages)
    ids = [r["id"] for p in [first, *rest] for r in p.resources]
    assert len(ids) == len(set(ids)) == first.total
    assert len(proxy.paths) == 1 + len(rest)  # one request a page, none extra


def test_a_caller_that_stops_early_leaves_no_thread_behind(proxied):
    from connector.fhir.client import FhirClient

    server, _proxy = proxied
    before = {t.name for t in threading.enumerate()}
    with FhirClient(server.base_url, page_size=5) as client:
        pages = client.search("Observation")
        next(pages)
        pages.close()  # the prefetched page is waited for and dropped
    assert not [t for t in threading.enumerate()
                if t.name == "fhir-prefetch" and t.name not in before]
