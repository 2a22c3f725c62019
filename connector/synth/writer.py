"""NDJSON output: OUT/<site>/<ResourceType>.ndjson, streamed, plus ground_truth.json."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from connector.synth.fhir import Emitted

RESOURCE_TYPES = ("Patient", "MedicationAdministration", "MedicationRequest",
                  "MedicationDispense", "MedicationStatement", "Procedure", "Observation",
                  "Condition")


class NdjsonWriter:
    """One open file per site and resource type; re-sent resources go last."""

    def __init__(self, out_dir: Path, sites: list[str]) -> None:
        self.files: dict[tuple[str, str], IO[bytes]] = {}
        self.deferred: dict[tuple[str, str], list[bytes]] = {}
        self.counts: dict[str, int] = dict.fromkeys(RESOURCE_TYPES, 0)
        for site in sites:
            folder = out_dir / site
            folder.mkdir(parents=True, exist_ok=True)
            for rtype in RESOURCE_TYPES:
                self.files[(site, rtype)] = (folder / f"{rtype}.ndjson").open(
                    "wb", buffering=1 << 20)
                self.deferred[(site, rtype)] = []

    def write(self, site: str, emitted: list[Emitted]) -> None:
        batches: dict[str, list[bytes]] = {}
        dumps = orjson.dumps
        for rtype, resource, later in emitted:
            line = dumps(resource)
            if later:
                self.deferred[(site, rtype)].append(line)
            else:
                batches.setdefault(rtype, []).append(line)
            self.counts[rtype] += 1
        for rtype, lines in batches.items():
            self.files[(site, rtype)].write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        for key, fh in self.files.items():
            lines = self.deferred[key]
            if lines:
                fh.write(b"\n".join(lines) + b"\n")
            fh.close()

    def __enter__(self) -> NdjsonWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_truth(path: Path, truth: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
