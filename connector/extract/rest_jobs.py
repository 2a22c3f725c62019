"""Job planning for a REST run: which searches to send, a few patients or codes each.

Pure: a plan depends on the site config, the watermarks (``since``) and what the run
found so far, never on the network, so each rule here can be read on its own. Here and
in every search of a run, ``_lastUpdated`` goes first: some servers evaluate parameters
in the order given, and on a rerun it is by far the most selective.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

from connector.codes.screen import ScreenTerms
from connector.fhir.config import SiteConfig
from connector.fhir.redact import describe_params, sensitive_values

CHUNK_TOKENS = 30  # codes per screening request (keeps URLs short)

Params = list[tuple[str, str]]


@dataclass
class Job:
    """One logical search (possibly many pages)."""

    rtype: str
    params: Params
    store: bool = True  # False: a screening search, read for its references only
    chained: bool = False  # uses a chained parameter a server may refuse
    optional: bool = False  # a refusal (HTTP 400) is a warning, not a failure (code:text)

    @property
    def label(self) -> str:
        return f"{self.rtype}?{describe_params(self.params)}"

    def hidden_values(self) -> list[str]:
        """The values of this search that may identify a patient (for scrubbing messages)."""
        return sensitive_values(f"{self.rtype}?{urlencode(self.params)}")


def escape(value: str) -> str:
    """A search value with FHIR's special characters escaped (``,`` ``|`` ``$`` ``\\``)."""
    return re.sub(r"([,|$\\])", r"\\\1", value)


def recent(since: str | None) -> Params:
    """The ``_lastUpdated`` parameter of a change check, or none for a full read."""
    return [("_lastUpdated", f"gt{since}")] if since else []


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def chunks_within(items: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    """Batches whose comma-joined length stays within ``max_chars`` (at least one item).

    Used for the change checks of known patients: those searches return almost nothing,
    and a multi-patient search costs a server about the same whatever it returns, so the
    fewer the better, up to what a URL can safely carry."""
    batch: list[str] = []
    used = 0
    for item in items:
        cost = len(item) + (1 if batch else 0)
        if batch and used + cost > max_chars:
            yield batch
            batch, cost, used = [], len(item), 0
        batch.append(item)
        used += cost
    if batch:
        yield batch


def batches(config: SiteConfig, ids: list[str], *, changes_only: bool) -> Iterator[list[str]]:
    """Full reads go ``patients_per_request`` at a time (their pages carry the data);
    change checks go as many at a time as ``max_query_chars`` allows, unless the server
    takes one patient a search (``patients_per_request = 1``)."""
    if changes_only and config.patients_per_request > 1:
        return chunks_within(ids, config.max_query_chars)
    return chunks(ids, config.patients_per_request)


def category_params(config: SiteConfig, rtype: str) -> list[Params]:
    """One parameter set per Observation category the server needs, else one empty set."""
    cats = config.quirks.observation_categories
    if rtype == "Observation" and cats:
        return [[("category", c)] for c in cats]
    return [[]]


#: The types that hold most of a hospital's resources, largest first: laboratory results
#: and vital signs, then the administrations of every inpatient drug.
LARGEST_TYPES = ("Observation", "MedicationAdministration")


def largest_first(types: Iterable[str]) -> list[str]:
    """``types`` with the usually largest first (``LARGEST_TYPES``), the rest in order.

    With one search a type (``scope = "all"``) a run lasts at least as long as its
    longest search, whose pages follow one another. Started first, it shares the
    server with the short ones; started last, it would run alone at the end, a page at
    a time, while the other workers have nothing left to do."""
    types = list(types)
    return [t for t in LARGEST_TYPES if t in types] + [t for t in types
                                                       if t not in LARGEST_TYPES]


def all_jobs(config: SiteConfig, rtype: str, since: str | None) -> list[Job]:
    """``scope = "all"``: every resource of ``rtype`` (changed since ``since``)."""
    return [Job(rtype, [*recent(since), *extra]) for extra in category_params(config, rtype)]


def patient_jobs(config: SiteConfig, rtype: str, full: set[str], incremental: set[str],
                 since: str | None, patient_param: str) -> list[Job]:
    """Patient-scoped searches of ``rtype``: ``full`` patients whole, ``incremental`` ones
    changed since ``since`` (all of them whole when there is no watermark)."""
    if since is None:
        groups = [(sorted(full | incremental), [])]
    else:
        groups = [(sorted(full), []), (sorted(incremental), recent(since))]
    jobs: list[Job] = []
    for ids, changed in groups:
        refs = ids if rtype == "Patient" or patient_param == "patient" \
            else [f"Patient/{i}" for i in ids]
        for batch in batches(config, refs, changes_only=bool(changed)):
            if rtype == "Patient":
                jobs.append(Job(rtype, [*changed, ("_id", ",".join(batch))]))
                continue
            for cat in category_params(config, rtype):
                jobs.append(Job(rtype, [*changed, (patient_param, ",".join(batch)), *cat]))
    return jobs


def medication_jobs(config: SiteConfig, referenced: set[str], stored: set[str],
                    since: str | None) -> list[Job]:
    """The Medications the run's resources reference and the store lacks, whole; with a
    watermark, also the stored ones' changes."""
    wanted = referenced | (stored if since is None else set())
    new = sorted(wanted - stored) if since is not None else sorted(wanted)
    jobs = [Job("Medication", [("_id", ",".join(b))])
            for b in batches(config, new, changes_only=False)]
    if since is not None:
        jobs += [Job("Medication", [*recent(since), ("_id", ",".join(b))])
                 for b in batches(config, sorted(stored), changes_only=True)]
    return jobs


def screen_jobs(config: SiteConfig, terms: ScreenTerms, since: str | None, chained: bool,
                elements: Params) -> list[Job]:
    """Searches for CAR-T administrations and procedures by code (and by text, and by the
    administered Medication's code where chained search works)."""
    changed = recent(since)
    jobs: list[Job] = []
    for rtype, codes in (("MedicationAdministration", terms.medication_codes),
                         ("Procedure", terms.procedure_codes)):
        for chunk in chunks(codes, CHUNK_TOKENS):
            jobs.append(Job(rtype, [*changed, ("code", ",".join(map(escape, chunk))),
                                    *elements], store=False))
            if rtype == "MedicationAdministration" and chained:
                jobs.append(Job(rtype, [*changed,
                                        ("medication.code", ",".join(map(escape, chunk))),
                                        *elements], store=False, chained=True))
        if config.quirks.text_search and terms.texts:
            text = ",".join(map(escape, terms.texts))
            jobs.append(Job(rtype, [*changed, ("code:text", text), *elements], store=False,
                            optional=True))
            if rtype == "MedicationAdministration" and chained:
                jobs.append(Job(rtype, [*changed, ("medication.code:text", text), *elements],
                                store=False, chained=True, optional=True))
    return jobs


def medication_screen_jobs(config: SiteConfig, terms: ScreenTerms) -> list[Job]:
    """Without chained search, first step: the CAR-T Medications by code and text."""
    jobs = [Job("Medication", [("code", ",".join(map(escape, c)))], store=False)
            for c in chunks(terms.medication_codes, CHUNK_TOKENS)]
    if config.quirks.text_search and terms.texts:
        jobs.append(Job("Medication", [("code:text", ",".join(map(escape, terms.texts)))],
                        store=False, optional=True))
    return jobs


def administration_jobs(config: SiteConfig, medication_ids: set[str], since: str | None,
                        elements: Params) -> list[Job]:
    """Without chained search, second step: who was given those Medications."""
    return [Job("MedicationAdministration",
                [*recent(since), ("medication", ",".join(f"Medication/{i}" for i in chunk)),
                 *elements], store=False)
            for chunk in chunks(sorted(medication_ids), config.patients_per_request)]
