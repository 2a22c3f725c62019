"""A fault-injecting HTTP proxy for tests: put it in front of a FHIR server.

``FaultProxy(upstream_port, rate=0.2, seed=1).start()`` listens on a free loopback
port and forwards every request to ``127.0.0.1:upstream_port``. A fraction ``rate``
of requests gets a fault instead, chosen from ``kinds`` by a seeded random
generator, so a failing test can be replayed:

- ``429``: Too Many Requests with ``Retry-After`` (seconds, or an HTTP date for
  ``429-date``), not forwarded;
- ``503``: Service Unavailable with ``Retry-After``, not forwarded;
- ``500``: an OperationOutcome, not forwarded;
- ``reset``: the connection is dropped with a TCP reset, no answer at all;
- ``truncate``: forwarded, then only half of the body is sent under the full
  ``Content-Length`` and the connection closed;
- ``slow``: forwarded after ``slow_seconds`` (longer than the client's read timeout);
- ``drip``: forwarded, the body sent ``drip_bytes`` at a time every ``drip_interval``
  seconds (each read of the client finishes within its timeout), the rest at once after
  ``drip_limit`` seconds so that a test of code without a deadline still ends;
- ``huge``: not forwarded; a 200 whose body is ``huge_bytes`` long (a Bundle opening,
  then spaces), with a ``Content-Length`` or chunked (``huge_chunked``). ``bytes_sent``
  counts what the client accepted before it hung up.

Hostile servers: ``rewrite(method, path, status, headers, content)`` may replace any
forwarded answer (returning ``(status, headers, content)``, or None to keep it). The
helpers below build rewrites: next links turned into another host's
(``rewrite_links``), dropped (``drop_next``) or new on every page (``endless_next``),
OperationOutcomes with a chosen diagnostics text (``outcome_answer``), redirects
(``redirect_answer``) and Bulk manifests and status answers with changed URLs
(``rewrite_manifest``, ``rewrite_header``).

``hook(method, path_and_query, status)`` is called for every forwarded answer just
before it is sent on,
for tests that change the server at a precise moment (e.g. between two pages).
``only`` restricts faults to paths containing that text. ``script`` lists the
faults (or None) of the next requests, before the random ones apply. ``refuse``
answers 400 to any path containing one of its strings, as a server does for a
search parameter it does not support. ``count_cap`` makes the server behind look as if
it served pages of at most that many: a larger ``_count`` is lowered to it before the
request is forwarded (``count_over_cap = "clamp"``, as HAPI and sekmet do at their own
maximum, so the answer's links carry the lowered value) or refused with a 400
(``"reject"``). ``log`` lists ``("in", path)`` when a request arrives and ``("out",
path)`` when its answer has been sent whole, in the order they happened.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host",
              "content-encoding"}
ALL_KINDS = ("429", "503", "500", "reset", "truncate", "slow")
Answer = tuple[int, list[tuple[str, str]], bytes]


class FaultProxy:
    def __init__(self, upstream_port: int, *, rate: float = 0.0, seed: int = 1,
                 kinds: tuple[str, ...] = ALL_KINDS, retry_after: str = "1",
                 slow_seconds: float = 2.0, only: str | None = None,
                 hook: Callable[[str, str, int], None] | None = None,
                 script: list[str | None] | None = None,
                 refuse: tuple[str, ...] = (),
                 count_cap: int | None = None, count_over_cap: str = "clamp",
                 rewrite: Callable[[str, str, int, list[tuple[str, str]], bytes],
                                   Answer | None] | None = None) -> None:
        self.upstream_port = upstream_port
        self.rewrite = rewrite
        self.drip_bytes, self.drip_interval, self.drip_limit = 8, 0.02, 20.0
        self.huge_bytes, self.huge_chunked = 50 << 20, True
        self.bytes_sent = 0
        self.refuse = refuse
        self.count_cap, self.count_over_cap = count_cap, count_over_cap
        self.log: list[tuple[str, str]] = []
        self.script = list(script or [])
        self.rate = rate
        self.kinds = kinds
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.only = only
        self.hook = hook
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.faults: Counter = Counter()
        self.requests = 0
        self.paths: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def reserve(self) -> int:
        """Bind the listening socket now (so the server can be told our URL first)."""
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        return self._server.server_address[1]

    def start(self) -> FaultProxy:
        if self._server is None:
            self.reserve()
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fault-proxy")
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- decisions -------------------------------------------------------------

    def decide(self, path: str) -> str | None:
        with self.lock:
            self.requests += 1
            self.paths.append(path)
            if self.script:
                kind = self.script.pop(0)
                if kind:
                    self.faults[kind] += 1
                return kind
            roll = self.rng.random()
            kind = self.rng.choice(self.kinds) if self.kinds else None
            if self.only and self.only not in path:
                return None
            if roll < self.rate and kind:
                self.faults[kind] += 1
                return kind
            return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence
        return

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with proxy.lock:
            proxy.log.append(("in", self.path))
        if any(text in self.path for text in proxy.refuse):
            self._reply(400, {}, _outcome("search parameter not supported by this server",
                                          code="not-supported"))
            return
        kind = proxy.decide(self.path)
        asked = _asked_count(self.path)
        if proxy.count_cap is not None and asked is not None and asked > proxy.count_cap:
            if proxy.count_over_cap == "reject":
                self._reply(400, {}, _outcome(f"_count may not exceed {proxy.count_cap}",
                                              code="invalid"))
                return
            self.path = re.sub(r"([?&])_count=\d+", rf"\g<1>_count={proxy.count_cap}",
                               self.path)
        if kind in ("429", "429-date", "503"):
            status = 503 if kind == "503" else 429
            after = proxy.retry_after
            if kind == "429-date":
                after = email.utils.formatdate(time.time() + float(after), usegmt=True)
            self._reply(status, {"Retry-After": after}, _outcome(f"injected {status}"))
            return
        if kind == "500":
            self._reply(500, {}, _outcome("injected internal error"))
            return
        if kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if kind == "slow":
            time.sleep(proxy.slow_seconds)
        if kind == "huge":
            self._huge()
            return
        try:
            status, headers, content = self._forward(body)
        except OSError:
            self._reply(502, {}, _outcome("upstream unreachable"))
            return
        if kind == "truncate" and len(content) > 1:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content[: len(content) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if proxy.hook is not None:  # before the answer goes out: the client cannot be faster
            proxy.hook(self.command, self.path, status)
        if proxy.rewrite is not None:
            changed = proxy.rewrite(self.command, self.path, status, headers, content)
            if changed is not None:
                status, headers, content = changed
        try:
            if kind == "drip":
                self._drip(status, headers, content)
                return
            self._reply_raw(status, headers, content)
        except OSError:  # the client gave up (slow answers)
            self.close_connection = True

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.owner.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            path = re.sub(r"&_again=\d+", "", self.path)  # endless_next's marker
            conn.request(self.command, path, body=body or None, headers=headers)
            r = conn.getresponse()
            content = r.read()
            out = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP
                   and k.lower() not in ("date", "server")]
            return r.status, out, content
        finally:
            conn.close()

    def _drip(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        proxy = self.owner
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.flush()
        start, sent = time.monotonic(), 0
        while sent < len(content) and time.monotonic() - start < proxy.drip_limit:
            self.wfile.write(content[sent:sent + proxy.drip_bytes])
            self.wfile.flush()
            sent += proxy.drip_bytes
            time.sleep(proxy.drip_interval)
        self.wfile.write(content[sent:])
        self.wfile.flush()
        self._sent()

    def _sent(self) -> None:
        with self.owner.lock:
            self.owner.log.append(("out", self.path))

    def _huge(self) -> None:
        proxy = self.owner
        head = b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        if proxy.huge_chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(proxy.huge_bytes))
        self.end_headers()
        block = b" " * (1 << 16)
        left = proxy.huge_bytes - len(head)
        try:
            self._write_counted(head, proxy.huge_chunked)
            while left > 0:
                piece = block[:left]
                self._write_counted(piece, proxy.huge_chunked)
                left -= len(piece)
            if proxy.huge_chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up, as it should
            pass
        self.close_connection = True

    def _write_counted(self, data: bytes, chunked: bool) -> None:
        if chunked:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            self.wfile.write(data)
        with self.owner.lock:
            self.owner.bytes_sent += len(data)

    def _reply(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self._reply_raw(status, [("Content-Type", "application/fhir+json"), *headers.items()],
                        content)

    def _reply_raw(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
        self.wfile.flush()
        self._sent()


def _asked_count(path: str) -> int | None:
    match = re.search(r"[?&]_count=(\d+)", path)
    return int(match.group(1)) if match else None


def _outcome(text: str, code: str = "transient") -> bytes:
    return json.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": text}]}).encode()


# ------------------------------------------------------------ hostile rewrites


def _json(content: bytes) -> dict | None:
    try:
        body = json.loads(content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _with_body(status: int, headers: list[tuple[str, str]], body: dict) -> Answer:
    return status, [(k, v) for k, v in headers if k.lower() != "content-length"], \
        json.dumps(body).encode()


def rewrite_links(change: Callable[[str], str], where: str = "") -> Callable[..., Answer | None]:
    """Every ``next`` link of Bundles answered for paths containing ``where`` becomes
    ``change(link)``."""
    def rewrite(method: str, path: str, status: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        body = _json(content)
        if where not in path or body is None or body.get("resourceType") != "Bundle":
            return None
        for link in body.get("link") or []:
            if link.get("relation") == "next":
                link["url"] = change(link["url"])
        return _with_body(status, headers, body)
    return rewrite


def drop_next(where: str, *, page: int | None = None) -> Callable[..., Answer | None]:
    """Bundles answered for paths containing ``where`` lose their ``next`` link (only the
    ``page``-th such Bundle when given, 1 = the first), as a server that ends a search
    early does; the total stays."""
    seen = {"n": 0}

    def rewrite(method: str, path: str, status: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        body = _json(content)
        if where not in path or body is None or body.get("resourceType") != "Bundle":
            return None
        seen["n"] += 1
        if page is not None and seen["n"] != page:
            return None
        body["link"] = [lk for lk in body.get("link") or [] if lk.get("relation") != "next"]
        return _with_body(status, headers, body)
    return rewrite


def endless_next(where: str) -> Callable[..., Answer | None]:
    """Bundles for paths containing ``where`` always get a next link, new every time (the
    first page again with a counter, ``&_again=N``, which the proxy removes before
    forwarding), so a client that only skips repeated links never ends."""
    counter = {"n": 0}

    def rewrite(method: str, path: str, status: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        body = _json(content)
        if where not in path or body is None or body.get("resourceType") != "Bundle":
            return None
        counter["n"] += 1
        links = [lk for lk in body.get("link") or [] if lk.get("relation") != "next"]
        first = next((lk["url"] for lk in links if lk.get("relation") in ("self", "first")),
                     None)
        if first is None:
            return None
        sep = "&" if "?" in first else "?"
        links.append({"relation": "next", "url": f"{first}{sep}_again={counter['n']}"})
        body["link"] = links
        return _with_body(status, headers, body)
    return rewrite


def outcome_answer(where: str, status: int, diagnostics: str) -> Callable[..., Answer | None]:
    """Answers for paths containing ``where`` become an OperationOutcome error."""
    def rewrite(method: str, path: str, status_: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        if where not in path:
            return None
        return status, [("Content-Type", "application/fhir+json")], \
            _outcome(diagnostics, code="exception")
    return rewrite


def redirect_answer(where: str, location: Callable[[str], str], status: int = 301,
                    ) -> Callable[..., Answer | None]:
    """Answers for paths containing ``where`` become a redirect to ``location(path)``."""
    def rewrite(method: str, path: str, status_: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        if where not in path:
            return None
        return status, [("Location", location(path)), ("Content-Type", "text/html")], \
            b"<html>Moved</html>"
    return rewrite


def rewrite_manifest(change: Callable[[dict], None]) -> Callable[..., Answer | None]:
    """A completed Bulk manifest (a 200 with ``output``) is changed in place by ``change``."""
    def rewrite(method: str, path: str, status: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        body = _json(content)
        if status != 200 or body is None or not isinstance(body.get("output"), list):
            return None
        change(body)
        return _with_body(status, headers, body)
    return rewrite


def rewrite_header(name: str, change: Callable[[str], str]) -> Callable[..., Answer | None]:
    """The header ``name`` of any answer that has it becomes ``change(value)``."""
    def rewrite(method: str, path: str, status: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        if not any(k.lower() == name.lower() for k, _ in headers):
            return None
        return status, [(k, change(v) if k.lower() == name.lower() else v)
                        for k, v in headers], content
    return rewrite


def chain(*rewrites: Callable[..., Answer | None]) -> Callable[..., Answer | None]:
    """Apply several rewrites in order."""
    def rewrite(method: str, path: str, status: int, headers: list[tuple[str, str]],
                content: bytes) -> Answer | None:
        answer: Answer | None = None
        for one in rewrites:
            changed = one(method, path, status, headers, content)
            if changed is not None:
                answer = changed
                status, headers, content = changed
        return answer
    return rewrite
