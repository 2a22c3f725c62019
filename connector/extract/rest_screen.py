"""Screening of a REST run: which patients have a CAR-T record, before any is read.

``scope = "cohort"`` reads only those patients. The screen asks for the CAR-T
MedicationAdministrations and Procedures by the codes and names of ``mappings/``
(``connector.codes.screen``), only their ``subject`` where the server allows ``_elements``;
a server that refuses chained search (``medication.code``) is screened in two steps,
the CAR-T Medications first, then who was given them. ``scope = "patients"`` takes
a list of ids from a file instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from connector.codes.screen import ScreenTerms
from connector.extract.rest_jobs import (
    administration_jobs,
    medication_screen_jobs,
    screen_jobs,
)
from connector.fhir.config import SiteConfig
from connector.fhir.errors import SiteConfigError

log = logging.getLogger(__name__)

#: Runs searches concurrently: ``phase(name, jobs, found=set, collect=fn) -> refused``,
#: adding what ``collect`` picks of each resource (default: its patient) to ``found``.
Phase = Callable[..., bool]


def screen(phase: Phase, config: SiteConfig, terms: ScreenTerms, since: str | None,
           chained: bool) -> set[str]:
    """Patients with a CAR-T record (changed since ``since``, when given)."""
    elements = [("_elements", "subject")] if config.quirks.elements else []
    found: set[str] = set()
    refused = phase("screen", screen_jobs(config, terms, since, chained, elements),
                    found=found)
    if refused or not chained:  # CAR-T Medication ids first, then who was given them
        medication_ids: set[str] = set()
        phase("screen", medication_screen_jobs(config, terms), found=medication_ids,
              collect=lambda r: r.get("id"))
        phase("screen", administration_jobs(config, medication_ids, since, elements),
              found=found)
    log.info("screen: %d patients with a CAR-T record (%s)", len(found),
             "changes only" if since else "full")
    return found


def listed_patients(path: Path) -> set[str]:
    """``scope = "patients"``: the ids of ``patient_ids_file``, one a line (``#`` comments)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SiteConfigError(f"cannot read patient_ids_file {path}: {exc.strerror}") from None
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}
