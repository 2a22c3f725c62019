"""One page ahead (connector/fhir/prefetch.py): values and errors come back in the caller's
thread, the caller's context goes with the fetch, and no thread outlives the block."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from connector.fhir.prefetch import PagePrefetcher

TAG: contextvars.ContextVar[str] = contextvars.ContextVar("TAG", default="none")


def _prefetch_threads() -> int:
    return sum(t.name == "fhir-prefetch" for t in threading.enumerate())


def test_the_fetch_runs_while_the_caller_works_and_returns_its_value():
    running, go_on = threading.Event(), threading.Event()

    def fetch(offer) -> str:
        running.set()
        assert go_on.wait(5)
        return "page 2"

    with PagePrefetcher[str]() as ahead:
        ahead.start(fetch)
        assert running.wait(5)  # already running before the caller asks for it
        go_on.set()  # the caller's own work happened meanwhile
        assert ahead.result() == "page 2"


def test_errors_are_raised_in_the_caller_and_context_travels():
    TAG.set("run-7")
    seen: list[str] = []

    def fetch(offer) -> None:
        seen.append(TAG.get())
        raise ValueError("the server said no")

    with PagePrefetcher[None]() as ahead:
        ahead.start(fetch)
        with pytest.raises(ValueError, match="said no"):
            ahead.result()
    assert seen == ["run-7"]


def test_leaving_the_block_waits_for_a_running_fetch_and_misuse_is_refused():
    done = threading.Event()

    def fetch(offer) -> None:
        time.sleep(0.1)
        done.set()

    with PagePrefetcher[None]() as ahead:
        ahead.start(fetch)
        with pytest.raises(RuntimeError):
            ahead.start(fetch)
    assert done.is_set()
    with pytest.raises(RuntimeError):
        PagePrefetcher[None]().result()


def test_an_offered_page_starts_only_once_the_caller_waits_for_the_one_before():
    """Page 1's fetch knows page 2 early and offers it; page 2 is not asked for while the
    caller still holds page 0 (one page ahead at most), but as soon as it waits for page
    1, and page 1's answer is then adopted without a second request."""
    offered, release_1 = threading.Event(), threading.Event()
    started: list[str] = []

    def page_2(offer) -> str:
        started.append("page 2")
        return "page 2"

    def page_1(offer) -> str:
        offer("url-2", page_2)
        offer("url-2-again", page_2)  # a retried read offers again: the first counts
        offered.set()
        assert release_1.wait(5)
        return "page 1"

    before = _prefetch_threads()
    with PagePrefetcher[str]() as ahead:
        ahead.start(page_1)
        assert offered.wait(5)
        assert _prefetch_threads() == before + 1 and not started  # only page 1's fetch
        release_1.set()
        assert ahead.result() == "page 1"  # waiting for it let page 2 start
        assert ahead.adopt("url-2")
        assert ahead.result() == "page 2"
    assert started == ["page 2"]


def test_an_offer_the_parsed_page_contradicts_is_dropped():
    """The early fetch was for another page than the parsed page's next link: it is
    waited for and its answer discarded; the caller starts the right one."""
    finished = threading.Event()

    def stray(offer) -> str:
        time.sleep(0.1)
        finished.set()
        return "a page never handed on"

    def page_1(offer) -> str:
        offer("url-stray", stray)
        return "page 1"

    with PagePrefetcher[str]() as ahead:
        ahead.start(page_1)
        assert ahead.result() == "page 1"
        assert not ahead.adopt("url-2")
        assert finished.is_set()  # waited for, not left running
        ahead.start(lambda offer: "page 2")
        assert ahead.result() == "page 2"


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


def _plain_pages(server, rtype: str, size: int) -> list[list[str]]:
    """The ids of each page of ``rtype`` read straight from sekmet, one page at a time."""
    import requests

    pages, url = [], f"{server.direct_url}/{rtype}?_count={size}"
    while url:
        body = requests.get(url, timeout=30).json()
        pages.append([e["resource"]["id"] for e in body.get("entry", [])])
        url = next((lk["url"] for lk in body.get("link", []) if lk["relation"] == "next"),
                   None)
        if url:
            url = url.replace(server.base_url, server.direct_url)
    return pages


def test_the_next_page_is_asked_for_before_the_current_one_has_arrived_whole(proxied):
    """The proxy drips page 1's answer slowly; its links come first (FHIR's element
    order), so page 2's request reaches the proxy while page 1 is still on its way, and
    the pages are those of plain paging, in order."""
    from connector.fhir.client import FhirClient

    server, proxy = proxied
    proxy.script = ["drip"]  # the first request: page 1
    proxy.drip_bytes, proxy.drip_interval = 64, 0.02  # ~2 s for a page of 7 Observations
    with FhirClient(server.base_url, page_size=7) as client:
        pages = [[r["id"] for r in p.resources] for p in client.search("Observation")]
    assert pages == _plain_pages(server, "Observation", 7)
    page_1, page_2 = proxy.paths[0], proxy.paths[1]
    assert "_offset=7" in page_2
    assert proxy.log.index(("in", page_2)) < proxy.log.index(("out", page_1))


def test_an_early_link_the_parsed_page_contradicts_is_not_followed(proxied):
    """A hostile page whose answer starts with a decoy Bundle.link (a duplicate key, so
    the parsed Bundle keeps the real one): a decoy on the same server may be asked for
    early but its page is dropped; one on another origin is never asked for. Either
    way the search yields the real pages, in order, each once."""
    from fault_proxy import FaultProxy

    from connector.fhir.client import FhirClient

    server, proxy = proxied
    elsewhere = FaultProxy(server.port).start()  # another origin that counts its requests
    try:
        for decoy in (f"{server.base_url}/Observation?_count=7&_offset=35",
                      f"http://127.0.0.1:{elsewhere.port}/fhir/Observation?_count=7&elsewhere"):
            proxy.paths.clear()
            proxy.rewrite = _decoy_first(decoy)
            with FhirClient(server.base_url, page_size=7) as client:
                pages = [[r["id"] for r in p.resources] for p in client.search("Observation")]
            assert pages == _plain_pages(server, "Observation", 7)
            asked = sum(decoy.endswith(p) for p in proxy.paths)
            assert asked == 0 if "elsewhere" in decoy else asked >= 2  # early, then its turn
        assert elsewhere.requests == 0
    finally:
        elsewhere.stop()


def _decoy_first(url: str):
    """A rewrite: every searchset answer opens with ``"link": [next = url]``; its own
    links follow later in the same object (JSON parsers keep the last of a duplicate)."""
    import json

    def rewrite(method, path, status, headers, content):
        if b'"searchset"' not in content:
            return None
        decoy = json.dumps([{"relation": "next", "url": url}]).encode()
        body = content.replace(b"{", b'{"link":' + decoy + b",", 1)
        return status, [(k, v) for k, v in headers if k.lower() != "content-length"], body
    return rewrite


@pytest.mark.parametrize("seed", [3, 11, 19])
def test_pages_come_in_order_and_whole_under_faults(proxied, seed):
    """30% of requests faulted (429, 503, 500, resets, answers cut short after their
    links arrived): every page once, in the order of plain paging."""
    from connector.fhir.client import FhirClient
    from connector.fhir.retry import RetryPolicy

    server, proxy = proxied
    proxy.rate, proxy.kinds, proxy.retry_after = 0.3, ("429", "503", "500", "reset",
                                                      "truncate"), "0"
    proxy.rng.seed(seed)
    policy = RetryPolicy(max_attempts=12, backoff_initial=0.01, backoff_max=0.05)
    with FhirClient(server.base_url, page_size=9, retry=policy) as client:
        pages = [[r["id"] for r in p.resources] for p in client.search("Observation")]
    assert pages == _plain_pages(server, "Observation", 9)
    assert proxy.faults["truncate"] + proxy.faults["reset"] > 0
