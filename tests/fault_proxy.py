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
- ``slow``: forwarded after ``slow_seconds`` (longer than the client's read timeout).

``hook(method, path_and_query, status)`` is called for every forwarded answer just
before it is sent on,
for tests that change the server at a precise moment (e.g. between two pages).
``only`` restricts faults to paths containing that text. ``script`` lists the
faults (or None) of the next requests, before the random ones apply. ``refuse``
answers 400 to any path containing one of its strings, as a server does for a
search parameter it does not support.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
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


class FaultProxy:
    def __init__(self, upstream_port: int, *, rate: float = 0.0, seed: int = 1,
                 kinds: tuple[str, ...] = ALL_KINDS, retry_after: str = "1",
                 slow_seconds: float = 2.0, only: str | None = None,
                 hook: Callable[[str, str, int], None] | None = None,
                 script: list[str | None] | None = None,
                 refuse: tuple[str, ...] = ()) -> None:
        self.upstream_port = upstream_port
        self.refuse = refuse
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
        if any(text in self.path for text in proxy.refuse):
            self._reply(400, {}, _outcome("search parameter not supported by this server",
                                          code="not-supported"))
            return
        kind = proxy.decide(self.path)
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
        try:
            self._reply_raw(status, headers, content)
        except OSError:  # the client gave up (slow answers)
            self.close_connection = True

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.owner.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            r = conn.getresponse()
            content = r.read()
            out = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP
                   and k.lower() not in ("date", "server")]
            return r.status, out, content
        finally:
            conn.close()

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


def _outcome(text: str, code: str = "transient") -> bytes:
    return json.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": text}]}).encode()
