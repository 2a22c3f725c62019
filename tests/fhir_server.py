"""A real FHIR R4 server for tests: sekmet-fhir, in-process, on a free loopback port.

A plain module (not a conftest) so that every test folder can import it: the REST
extraction tests, the client tests and, later, the bulk-export tests.

``start_server()`` serves ``sekmet.main.create_app`` with uvicorn in a daemon thread
on a socket we bind first (port 0, so no race for the port), with an in-memory store
(a fresh store per server), no traffic log and no simulator. ``public_url`` lets a
fault proxy sit in front: the server then builds every link (next pages, token
endpoint) with the proxy's address, so clients that follow links stay behind it.

``load_resources()`` loads resources through transaction Bundles of ``PUT Type/id``
so ids are kept. The server assigns its own ``versionId`` and ``lastUpdated``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

FHIR_JSON = "application/fhir+json"


def free_socket() -> socket.socket:
    """A listening-ready TCP socket bound to a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class FhirServer:
    """A running sekmet server. ``base_url`` is what clients use (the proxy's, if any)."""

    base_url: str
    direct_url: str
    port: int
    app: Any
    _server: Any
    _thread: threading.Thread
    extra: dict = field(default_factory=dict)

    @property
    def ctx(self) -> Any:
        """sekmet's AppContext: its store, settings and service, for white-box changes."""
        return self.app.state.ctx

    @property
    def root_url(self) -> str:
        return self.base_url.rsplit("/fhir", 1)[0]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    # -- white-box helpers (go straight to the store, not through HTTP) ----------

    def put(self, resource: dict) -> dict:
        """Create or update one resource in the store; returns it with the new meta."""
        res, _created = self.ctx.store.update(resource, origin="internal")
        return res

    def delete(self, resource_type: str, resource_id: str) -> bool:
        return self.ctx.store.delete(resource_type, resource_id, origin="internal")

    def read(self, resource_type: str, resource_id: str) -> dict | None:
        return self.ctx.store.read(resource_type, resource_id)

    def count(self, resource_type: str) -> int:
        return self.ctx.store.counts().get(resource_type, 0)


def start_server(*, public_url: str | None = None, auth: dict | None = None,
                 validation: str = "off", token_lifetime: int = 3600) -> FhirServer:
    """Start sekmet on a free loopback port; ready when ``/fhir/metadata`` answers.

    ``auth`` is sekmet's ``server_auth`` block, e.g. ``{"types": ["bearer"],
    "tokens": ["t0k"]}`` or ``{"types": ["smart"], "smart_clients": [...]}``.
    Inbound validation is off by default so that the noisy records a real extract
    contains (and that the folder source keeps) load as they are.
    """
    import uvicorn
    from sekmet.config import Settings
    from sekmet.main import create_app

    sock = free_socket()
    port = sock.getsockname()[1]
    direct = f"http://127.0.0.1:{port}/fhir"
    base = public_url.rstrip("/") if public_url else direct
    server_auth = dict(auth or {"types": ["none"]})
    server_auth.setdefault("token_lifetime", token_lifetime)
    settings = Settings.model_validate({
        "base_url": base, "host": "127.0.0.1", "port": port, "db_path": ":memory:",
        "log_inbound": False, "simulator": {"enabled": False, "delay_seconds": 0},
        "validation": {"inbound": validation}, "server_auth": server_auth,
        "own_private_key_path": "/nonexistent/sekmet_private.pem",
    })
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                            access_log=False, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"sekmet-{port}")
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sekmet did not start")
        time.sleep(0.01)
    handle = FhirServer(base_url=base, direct_url=direct, port=port, app=app,
                        _server=server, _thread=thread)
    r = requests.get(f"{direct}/metadata", timeout=10)
    r.raise_for_status()
    return handle


def start_behind_proxy(*, auth: dict | None = None, token_lifetime: int = 3600,
                       **proxy_options: Any) -> tuple[FhirServer, Any]:
    """A server whose every link points at a fault proxy in front of it.

    Returns (server, proxy); ``server.base_url`` is the proxy's. The proxy starts
    fault-free unless ``rate`` is given; tests may change ``proxy.rate`` at any time.
    """
    from fault_proxy import FaultProxy

    proxy = FaultProxy(0, **proxy_options)
    port = proxy.reserve()
    server = start_server(public_url=f"http://127.0.0.1:{port}/fhir", auth=auth,
                          token_lifetime=token_lifetime)
    proxy.upstream_port = server.port
    proxy.start()
    return server, proxy


def reset_proxy(proxy: Any) -> None:
    """Put a shared (module-scoped) fault proxy back to fault-free with cleared counters,
    as ``FaultProxy`` starts, so no test sees the faults or counts of the one before."""
    from fault_proxy import ALL_KINDS

    proxy.rate, proxy.script, proxy.hook, proxy.only = 0.0, [], None, None
    proxy.rewrite, proxy.refuse, proxy.bytes_sent = None, (), 0
    proxy.count_cap, proxy.count_over_cap = None, "clamp"
    proxy.log.clear()
    proxy.drip_bytes, proxy.drip_interval, proxy.drip_limit = 8, 0.02, 20.0
    proxy.huge_bytes, proxy.huge_chunked = 50 << 20, True
    proxy.kinds = ALL_KINDS
    proxy.retry_after, proxy.slow_seconds = "1", 2.0
    proxy.faults.clear()
    proxy.requests = 0
    proxy.paths.clear()
    proxy.__dict__.pop("decide", None)  # a test's patched decide() does not outlive it


@contextmanager
def serving(resources: Iterable[dict], *, bulk_root: Path | None = None) -> Iterator[FhirServer]:
    """A server of its own holding ``resources``, stopped on leaving the block.

    ``bulk_root``: where the server writes $export files (sekmet's default is ./data/bulk).
    """
    server = start_server()
    try:
        _load(server, resources, bulk_root)
        yield server
    finally:
        server.stop()


@contextmanager
def serving_behind_proxy(resources: Iterable[dict], *,
                         bulk_root: Path | None = None) -> Iterator[tuple[FhirServer, Any]]:
    """As ``serving``, behind a fault-free proxy: (server, proxy), both stopped on leaving."""
    server, proxy = start_behind_proxy()
    try:
        _load(server, resources, bulk_root)
        yield server, proxy
    finally:
        proxy.stop()
        server.stop()


def _load(server: FhirServer, resources: Iterable[dict], bulk_root: Path | None) -> None:
    if bulk_root is not None:
        server.ctx.bulk.root = bulk_root
    load_resources(server, resources)


# ---------------------------------------------------------------- loading


def transaction_bundles(resources: Iterable[dict], size: int = 200) -> Iterator[dict]:
    """Transaction Bundles of ``PUT Type/id`` entries, ``size`` entries each."""
    entries: list[dict] = []
    for res in resources:
        entries.append({"resource": res, "request": {
            "method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}})
        if len(entries) >= size:
            yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            entries = []
    if entries:
        yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def load_resources(server: FhirServer, resources: Iterable[dict], *, size: int = 200,
                   headers: dict | None = None) -> int:
    """POST ``resources`` to the server (directly, not through a proxy); returns the count."""
    n = 0
    with requests.Session() as session:
        for bundle in transaction_bundles(resources, size):
            r = session.post(server.direct_url, data=orjson.dumps(bundle), timeout=60,
                             headers={"Content-Type": FHIR_JSON, **(headers or {})})
            if r.status_code >= 400:
                raise RuntimeError(f"transaction failed: HTTP {r.status_code}: {r.text[:500]}")
            n += len(bundle["entry"])
    return n


def read_ndjson(folder: Path) -> list[dict]:
    """Every resource of the NDJSON files directly in ``folder`` (one site's fixture)."""
    out: list[dict] = []
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                out.append(orjson.loads(line))
    return out


def stored_resources(engine, site: str) -> list[dict]:
    """The resources a folder extraction kept for ``site`` (newest version of each id).

    Loading these, rather than the raw files, makes the server hold exactly what
    the folder source keeps: duplicates resolved the same way, unusable lines left out.
    """
    from sqlalchemy import select
    from sqlmodel import Session

    from connector.db.models import RawResource

    with Session(engine) as s:
        rows = s.exec(select(RawResource.body).where(
            RawResource.site == site, RawResource.deleted.is_(False))
            .order_by(RawResource.resource_type, RawResource.resource_id)).scalars().all()
    return [orjson.loads(b) for b in rows]


# ------------------------------------------------------------ a tiny cohort

HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"


def tiny_cohort(n_patients: int = 12, *, observations: int = 3, seed: int = 7) -> dict:
    """A small FHIR data set with every way a CAR-T record can look, for REST tests.

    Patient ``i`` has, by ``i % 6``: 0 an administration coded HCPCS Q2055; 1 one that
    references a CAR-T Medication; 2 one with a contained Medication plus a CAR-T
    Procedure; 3 a CAR-T Procedure only; 4 an administration with text only
    ("Abecma"); 5 no CAR-T at all (daratumumab). Everyone gets dexamethasone through
    a Medication reference and ``observations`` M-protein results.

    Returns ``{"resources": [...], "patients": [ids], "car_t": [ids], "identifiers":
    [MRNs and names]}``. Ids are long random-looking strings so a test can search logs
    for them without false hits.
    """
    import random

    rng = random.Random(seed)
    resources: list[dict] = [
        {"resourceType": "Medication", "id": "med-cilta",
         "code": {"coding": [{"system": HCPCS, "code": "Q2056",
                              "display": "Ciltacabtagene autoleucel"}]}},
        {"resourceType": "Medication", "id": "med-dex",
         "code": {"coding": [{"system": RXNORM, "code": "3264", "display": "dexamethasone"}]}},
        {"resourceType": "Medication", "id": "med-unused",
         "code": {"text": "paracetamol"}},
    ]
    patients, car_t, identifiers = [], [], []
    for i in range(n_patients):
        pid = f"pt{rng.getrandbits(64):016x}"
        mrn = f"MRN{rng.getrandbits(40):012d}"
        family = f"Fam{rng.getrandbits(32):08x}"
        patients.append(pid)
        identifiers += [mrn, family]
        resources.append({"resourceType": "Patient", "id": pid, "gender": "female",
                          "birthDate": f"{1950 + i % 20}-0{1 + i % 9}-15",
                          "identifier": [{"system": "urn:oid:1.2.3.4", "value": mrn}],
                          "name": [{"family": family, "given": ["Ann"]}]})
        subject = {"reference": f"Patient/{pid}"}
        kind = i % 6

        def ma(suffix: str, day: str, **med: object) -> dict:
            return {"resourceType": "MedicationAdministration", "id": f"ma-{pid}-{suffix}",
                    "status": "completed", "subject": subject,
                    "effectiveDateTime": f"2022-{day}T10:00:00Z", **med}

        if kind == 0:
            resources.append(ma("cart", "03-01", medicationCodeableConcept={"coding": [
                {"system": HCPCS, "code": "Q2055", "display": "Idecabtagene vicleucel"}]}))
        elif kind == 1:
            resources.append(ma("cart", "03-02",
                                medicationReference={"reference": "Medication/med-cilta"}))
        elif kind == 2:
            med = ma("cart", "03-03", medicationReference={"reference": "#m1"})
            med["contained"] = [{"resourceType": "Medication", "id": "m1",
                                 "code": {"text": "Carvykti"}}]
            resources.append(med)
        if kind in (2, 3):
            resources.append({"resourceType": "Procedure", "id": f"pr-{pid}", "status":
                              "completed", "subject": subject,
                              "performedDateTime": "2022-03-03",
                              "code": {"coding": [{"system": ICD10PCS, "code": "XW033K7"}]}})
        if kind == 4:
            resources.append(ma("cart", "03-04",
                                medicationCodeableConcept={"text": "Abecma infusion"}))
        if kind == 5:
            resources.append(ma("dara", "03-05", medicationCodeableConcept={"coding": [
                {"system": RXNORM, "code": "1721947", "display": "daratumumab"}]}))
        resources.append(ma("dex", "02-20",
                            medicationReference={"reference": "Medication/med-dex"}))
        if kind != 5:
            car_t.append(pid)
        for k in range(observations):
            resources.append({
                "resourceType": "Observation", "id": f"ob-{pid}-{k}", "status": "final",
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory"}]}],
                "code": {"coding": [{"system": LOINC, "code": "33358-3"}]},
                "subject": subject, "effectiveDateTime": f"2022-{1 + k % 12:02d}-10",
                "valueQuantity": {"value": round(rng.uniform(0.1, 3.0), 2), "unit": "g/dL"}})
    return {"resources": resources, "patients": patients, "car_t": car_t,
            "identifiers": identifiers}
