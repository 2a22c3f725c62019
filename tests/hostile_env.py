"""What the hostile-server tests share: another host that records what reaches it, and the
comparison of a run's normalized tables with a clean run's.

``OtherHost`` stands for ``evil.example``: a loopback HTTP server on a port of its own
that records every request (with its headers, so a leaked token shows) and answers
with data that is not the site's (a Bundle, or NDJSON for file paths). A URL such as
``http://127.0.0.1:<other>\\@127.0.0.1:<proxy>/fhir/...`` reads as the proxy to
``urlsplit`` and as this host to urllib3, which is the trick under test.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa
from reliability.reliability_db import MAPPED_TABLES, diff, snapshot  # noqa: F401

from connector import pipeline

FOREIGN_ID = "foreign-0b5e55ed"


class OtherHost:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

            def do_GET(self) -> None:  # noqa: N802
                host.requests.append((self.command, self.path, dict(self.headers.items())))
                if ".ndjson" in self.path or "file" in self.path:
                    body = json.dumps(_foreign()).encode() + b"\n"
                    kind = "application/fhir+ndjson"
                else:
                    body = json.dumps({"resourceType": "Bundle", "type": "searchset",
                                       "total": 1, "entry": [{"resource": _foreign(),
                                                              "search": {"mode": "match"}}]}
                                      ).encode()
                    kind = "application/fhir+json"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_DELETE = do_GET  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="other-host").start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def leaked_auth(self) -> list[str]:
        return [h.get("Authorization", "") for _, _, h in self.requests
                if h.get("Authorization")]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _foreign() -> dict:
    return {"resourceType": "Observation", "id": FOREIGN_ID, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "33358-3"}]},
            "subject": {"reference": "Patient/someone-else"},
            "valueQuantity": {"value": 9.9, "unit": "g/dL"}}


def deceptive(url: str, proxy_port: int, other_port: int) -> str:
    """``url`` on the proxy rewritten so that urllib3 connects to the other host."""
    return url.replace(f"http://127.0.0.1:{proxy_port}",
                       f"http://127.0.0.1:{other_port}\\@127.0.0.1:{proxy_port}", 1)


def tables(engine) -> dict[str, list[tuple]]:  # noqa: ANN001
    """The raw store and the normalized tables after mapping, for comparing with a clean run.

    Raw resources are compared by what they hold (type, id, version, content hash), not
    by which search brought them (``source`` differs between a full and a changes-only
    read of the same resource)."""
    pipeline.map_(engine)
    out = snapshot(engine, ("quarantine", *MAPPED_TABLES[:-1]))
    with engine.connect() as conn:
        out["raw_resource"] = sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT site, resource_type, resource_id, version_id, content_hash, deleted "
            "FROM raw_resource")))
    return out
