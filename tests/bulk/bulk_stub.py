"""A scripted HTTP server for bulk-protocol tests: answers what a test queues, records requests.

sekmet covers the ordinary export; this covers what sekmet does not do (gzip, partial
and paged manifests, requiresAccessToken false, job failures with particular
OperationOutcomes, GET refused with 405). ``StubServer.route(method, path, *answers)``
queues answers for a path (the last one repeats); each answer is ``(status, headers,
body)`` with a dict body sent as JSON. ``requests`` lists ``(method, path, headers,
body)`` as received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, str], Any]


class StubServer:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Answer | Callable[[], Answer]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route(self, method: str, path: str, *answers: Answer | Callable[[], Answer]) -> None:
        with self.lock:
            self.routes[(method, path)] = list(answers)

    def hits(self, method: str, path: str) -> list[tuple[str, str, dict[str, str], bytes]]:
        return [r for r in self.requests if r[0] == method and r[1].split("?")[0] == path]

    def answer(self, method: str, path: str) -> Answer:
        with self.lock:
            queue = self.routes.get((method, path.split("?")[0]))
            if not queue:
                return 404, {}, {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "not-found", "diagnostics": "no route"}]}
            item = queue.pop(0) if len(queue) > 1 else queue[0]
        return item() if callable(item) else item


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: StubServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        stub = self.owner
        with stub.lock:
            stub.requests.append((self.command, self.path, dict(self.headers.items()), body))
        status, headers, content = stub.answer(self.command, self.path)
        if isinstance(content, dict | list):
            data = json.dumps(content).encode()
            headers = {"Content-Type": "application/fhir+json", **headers}
        elif isinstance(content, str):
            data = content.encode()
        else:
            data = content or b""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _handle  # noqa: N815


def capability(levels: tuple[str, ...] = ("system", "patient", "group")) -> dict:
    """A CapabilityStatement advertising $export at ``levels``."""
    op = [{"name": "export", "definition":
           "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]
    resources = [{"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}],
                  "searchParam": [{"name": "_id", "type": "token"}]}
                 for t in ("Patient", "Group", "Medication", "MedicationAdministration",
                           "Procedure", "Observation")]
    for res in resources:
        if res["type"] == "Patient" and "patient" in levels:
            res["operation"] = op
        if res["type"] == "Group" and "group" in levels:
            res["operation"] = op
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [
        {"mode": "server", "resource": resources,
         "operation": op if "system" in levels else []}]}
