"""The Bulk Data Access ``$export`` protocol (FHIR async pattern) over a ``FhirClient``.

``BulkClient`` wraps a ``FhirClient`` and uses its session, auth (with one
re-authentication on 401), rate limit, retry policy, retry budget and counters
(``bulk_transport.py``), so a bulk run is as gentle and as observable as a REST
run. It does not parse bodies as ``request_json`` does, because here the status code
and the headers are the answer: ``202`` + ``Content-Location`` at kick-off, ``202`` +
``X-Progress`` + ``Retry-After`` while the job runs, ``200`` + a manifest when it is done.

- Kick-off: ``GET`` (query parameters) or ``POST`` (a ``Parameters`` body) at system,
  ``Patient`` or ``Group/[id]`` level, with ``Prefer: respond-async``. A 429 or 5xx is
  retried like any request (Retry-After honoured, capped).
- Polling: ``wait_for`` polls until the manifest arrives, honouring ``Retry-After`` up
  to a cap (exponential backoff without one) and a total time limit. A 429, 503,
  502, 504 or a 5xx whose OperationOutcome says ``transient`` means "ask again
  later"; any other 4xx/5xx means the job failed, and the error carries the
  server's OperationOutcome text. 404/410 mean the server no longer knows the job.
- Partial and paged manifests: a ``202`` carrying a manifest body, or a manifest with
  ``link[next]``, hands its files over at once (``on_manifest``), so they can be
  downloaded while the server still works.
- Downloads stream to ``<name>.part`` and are renamed when complete; a body cut
  short is retried from the start. Gzip is kept compressed on disk when the server
  sends it (``Content-Encoding: gzip`` or a ``.gz`` file). The token is sent only
  when the manifest says ``requiresAccessToken`` and only to the server's own
  origin, judged as the HTTP library will connect (``urls.py``); a file URL with a
  backslash, user info or control characters is refused with or without a token, and
  redirects are followed one hop at a time under the same rules.
- Status and manifest answers are read under the run's bounds (``limits.py``).

Nothing here logs a URL with its query or a patient id; errors name the operation,
the HTTP status and the server's own OperationOutcome text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import orjson
import requests
import urllib3.exceptions

from connector.fhir.bulk_transport import (
    BulkTransport,
    colon,
    is_transient_outcome,
    outcome_of,
)
from connector.fhir.errors import AuthError, CapabilityError, HttpError, RetryExhausted
from connector.fhir.export import (
    LEVELS,
    NDJSON,
    BulkExportError,
    BulkJobGone,
    BulkTimeout,
    Downloaded,
    ExportRequest,
    Manifest,
    ManifestFile,
    PollPolicy,
    PollResult,
)
from connector.fhir.redact import describe_url
from connector.fhir.retry import (
    TransientError,
    describe_exception,
    is_retryable_exception,
    is_retryable_status,
    parse_retry_after,
)
from connector.fhir.transport import FHIR_JSON
from connector.fhir.urls import UnsafeUrl, check_form, same_origin

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per write while downloading
MAX_REDIRECTS = 5  # hops followed for one export file
#: Statuses that mean "not now" while polling, whatever the body says.
_BUSY = frozenset({429, 502, 503, 504})


# ------------------------------------------------------------------- client


class BulkClient(BulkTransport):
    """Kick-off, poll, download and delete for one server, over a ``FhirClient``."""

    # -- capability ---------------------------------------------------------

    def export_levels(self) -> set[str] | None:
        """Levels the CapabilityStatement advertises ``export`` at; None if it lists no
        operations at all (then only the server's answer can tell)."""
        statement = self.client.capabilities().statement
        rests = [r for r in statement.get("rest") or [] if isinstance(r, dict)]
        listed = False
        levels: set[str] = set()
        for rest in rests:
            ops = [o for o in rest.get("operation") or [] if isinstance(o, dict)]
            listed = listed or bool(ops)
            if any(_is_export(o) for o in ops):
                levels.add("system")
            for res in rest.get("resource") or []:
                if not isinstance(res, dict):
                    continue
                rops = [o for o in res.get("operation") or [] if isinstance(o, dict)]
                listed = listed or bool(rops)
                if any(_is_export(o) for o in rops):
                    if res.get("type") == "Patient":
                        levels.add("patient")
                    elif res.get("type") == "Group":
                        levels.add("group")
        return levels if listed else None

    def check_level(self, level: str) -> None:
        levels = self.export_levels()
        if levels is not None and level not in levels:
            offered = ", ".join(sorted(levels)) or "none"
            raise CapabilityError(
                f"the FHIR server at {self.client.base_url} does not offer $export at "
                f"{level} level (its CapabilityStatement lists: {offered}); choose another "
                "level (--group ID for a Group) or the REST extraction (no --bulk)")

    # -- kick-off -------------------------------------------------------------

    def kickoff(self, request: ExportRequest) -> str:
        """Start an export; returns the status URL. Refused ``allowPartialManifests``,
        ``_typeFilter`` and ``_type`` are dropped (in that order) and the kick-off sent
        again: the export is then wider, never narrower, and the raw store skips the
        types the study does not read."""
        current = request
        while True:
            try:
                return self._kickoff(current)
            except HttpError as exc:
                if exc.status not in (400, 422) or isinstance(exc, RetryExhausted):
                    raise
                if current.partial_manifests:
                    log.info("the server refused the export with allowPartialManifests (%s); "
                             "asking again without it", exc)
                    current = current.without("allowPartialManifests")
                elif current.type_filters:
                    log.warning("the server refused the export with _typeFilter (%s); "
                                "asking again without it", exc)
                    current = current.without("_typeFilter")
                elif current.types:
                    log.warning("the server refused the export with _type (%s); asking "
                                "again for every type", exc)
                    current = current.without("_type")
                else:
                    raise

    def _kickoff(self, request: ExportRequest) -> str:
        url = self.client.url(request.path)
        headers = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
        what = f"{request.method} {request.path}"
        if request.method == "POST":
            body = orjson.dumps(request.parameters_resource())
            r = self.request("POST", url, headers={**headers, "Content-Type": FHIR_JSON},
                             data=body, what=what)
        else:
            r = self.request("GET", url, params=request.params(), headers=headers, what=what)
            if r.status_code == 405:
                log.info("the server does not take a GET kick-off; sending it as POST")
                from dataclasses import replace

                return self._kickoff(replace(request, method="POST"))
        location = r.headers.get("Content-Location")
        if r.status_code != 202 or not location:
            raise BulkExportError(
                f"{what}: the server did not start an asynchronous export (HTTP "
                f"{r.status_code}{', no Content-Location' if not location else ''})")
        return self.check_origin(urljoin(url, location), "status URL")

    # -- polling ---------------------------------------------------------------

    def poll_once(self, status_url: str) -> PollResult:
        """One GET of the status URL, classified. Raises for a failed or unknown job;
        a "try later" answer raises ``TransientError`` (with the server's Retry-After)."""
        r = self.send("GET", status_url, headers={"Accept": "application/json"})
        status = r.status_code
        retry_after = parse_retry_after(r.headers.get("Retry-After"))
        if status == 202:
            manifest = None
            if r.content.strip():
                try:
                    body = orjson.loads(r.content)
                except orjson.JSONDecodeError:
                    body = None
                if isinstance(body, dict) and isinstance(body.get("output"), list):
                    manifest = Manifest.parse(body, status_url)
            return PollResult(done=False, manifest=manifest, retry_after=retry_after,
                              progress=(r.headers.get("X-Progress") or "").strip()[:100] or None)
        if status == 200:
            try:
                body = orjson.loads(r.content)
            except orjson.JSONDecodeError:
                raise TransientError("the manifest is not valid JSON (cut short?)",
                                     status=status) from None
            return PollResult(done=True, manifest=Manifest.parse(body, status_url))
        outcome, text = outcome_of(r)
        what = "export status"
        if status in (401, 403):
            raise AuthError(f"{what}: refused (HTTP {status}){colon(text)}")
        if status in (404, 410):
            raise BulkJobGone(f"{what}: the server no longer knows this export (HTTP {status})"
                              f"{colon(text)}")
        if status in _BUSY or status == 408 or (is_retryable_status(status) and (
                outcome is None or is_transient_outcome(outcome))):
            raise TransientError(f"HTTP {status}", status=status, retry_after=retry_after,
                                 detail=text)
        raise BulkExportError(f"the export failed on the server (HTTP {status})"
                              f"{colon(text or 'no OperationOutcome')}")

    def wait_for(self, status_url: str, *,
                 on_progress: Callable[[str | None], None] | None = None,
                 on_manifest: Callable[[Manifest], None] | None = None) -> Manifest:
        """Poll until the export is complete; returns the (final) manifest.

        Partial manifests seen on the way are handed to ``on_manifest`` first. The
        time limit counts from this call, so a resumed run gets a full allowance.
        """
        policy = self.policy
        deadline = self.clock() + policy.timeout
        backoff = policy.initial
        last_progress: str | None = None
        while True:
            try:
                result = self.poll_once(status_url)
            except (TransientError, requests.RequestException) as exc:
                if not is_retryable_exception(exc):
                    raise
                reason = describe_exception(exc)
                if not self.client.budget.take():
                    raise RetryExhausted(f"polling the export failed and the run's retry "
                                         f"budget is used up: {reason}") from None
                self.client.stats.retried(reason)
                log.info("export status: %s; asking again later", reason)
                wait = getattr(exc, "retry_after", None)
            else:
                if result.done:
                    assert result.manifest is not None
                    return result.manifest
                if result.manifest is not None and on_manifest is not None:
                    on_manifest(result.manifest)
                if result.progress != last_progress:
                    last_progress = result.progress
                    if result.progress:
                        log.info("export in progress: %s", result.progress)
                if on_progress is not None:
                    on_progress(result.progress)
                wait = result.retry_after
            if wait is None:
                wait, backoff = backoff, min(policy.max_wait, backoff * 2)
            wait = min(max(wait, policy.min_wait), policy.max_wait)
            if self.clock() + wait > deadline:
                raise BulkTimeout(
                    f"the export did not finish within {policy.timeout:.0f} s (last progress: "
                    f"{last_progress or 'none reported'}); it is kept on the server and the "
                    "next run continues polling it")
            self.sleep(wait)

    # -- files -------------------------------------------------------------------

    def download(self, url: str, dest: Path, *, with_token: bool,
                 on_bytes: Callable[[int], None] | None = None) -> Downloaded:
        """Stream ``url`` to ``dest`` (``dest.gz`` when gzip), via ``<name>.part``.

        A body cut short, a reset or a 5xx is retried from the start of the file.
        """
        self.check_file_url(url, with_token=with_token)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        what = f"GET {describe_url(url, self.client.base_url)}"

        def attempt() -> tuple[int, bool]:
            r = self._get_file(url, with_token=with_token)
            try:
                self.raise_for_status(r, what, gone=True)
                gz = ("gzip" in (r.headers.get("Content-Encoding") or "").lower()
                      or "gzip" in (r.headers.get("Content-Type") or "").lower()
                      or urlsplit(url).path.endswith(".gz"))
                size = 0
                with part.open("wb") as fh:
                    try:
                        for chunk in r.raw.stream(CHUNK, decode_content=False):
                            self.client.clock.check(what)
                            fh.write(chunk)
                            size += len(chunk)
                            if on_bytes is not None:
                                on_bytes(len(chunk))
                    except (urllib3.exceptions.ProtocolError,
                            urllib3.exceptions.ReadTimeoutError,
                            urllib3.exceptions.DecodeError) as exc:
                        raise TransientError("response body cut short",
                                             detail=type(exc).__name__) from None
                    fh.flush()
                    os.fsync(fh.fileno())
                return size, gz
            finally:
                r.close()

        size, gz = self.retrying(attempt, what)
        final = dest.with_name(dest.name + ".gz") if gz and not dest.name.endswith(".gz") \
            else dest
        os.replace(part, final)
        return Downloaded(path=final, bytes=size, gzip=gz)

    def _get_file(self, url: str, *, with_token: bool) -> requests.Response:
        """GET an output file, following redirects one hop at a time: each hop is checked
        as a file URL, and the token goes only to hops on the server's own origin."""
        headers = {"Accept": NDJSON, "Accept-Encoding": "gzip"}
        for _hop in range(MAX_REDIRECTS + 1):
            token = with_token and same_origin(url, self.client.base_url)
            r = self.send("GET", url, headers=headers, stream=True, auth=token)
            location = r.headers.get("Location")
            if r.status_code not in (301, 302, 303, 307, 308) or not location:
                return r
            r.close()
            url = urljoin(url, location)
            try:
                check_form(url)
            except UnsafeUrl as exc:
                raise BulkExportError(f"an export file redirects: {exc}") from None
        raise BulkExportError(f"an export file redirects more than {MAX_REDIRECTS} times")

    def delete(self, status_url: str) -> bool:
        """Tell the server we are done with (or abandon) the export; never raises."""
        try:
            r = self.send("DELETE", status_url, headers={"Accept": FHIR_JSON})
        except requests.RequestException as exc:
            log.info("could not delete the export job on the server: %s", describe_exception(exc))
            return False
        ok = r.status_code in (200, 202, 204, 404, 410)
        if not ok:
            log.info("the server answered HTTP %d to deleting the export job", r.status_code)
        return ok


# ------------------------------------------------------------------- helpers


def _is_export(op: dict) -> bool:
    """Whether a CapabilityStatement operation is ``$export``."""
    name = str(op.get("name") or "").lstrip("$")
    definition = str(op.get("definition") or "")
    return name == "export" or "export" in definition.rsplit("/", 1)[-1]


#: The export vocabulary lives in export.py; callers import it from here too.
__all__ = ["LEVELS", "BulkClient", "BulkExportError", "BulkJobGone", "BulkTimeout",
           "Downloaded", "ExportRequest", "Manifest", "ManifestFile", "PollPolicy",
           "PollResult"]
