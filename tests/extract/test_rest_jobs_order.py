"""``scope = "all"`` starts the usually largest types' searches first (rest_jobs.py), so the
longest search does not run alone at the end of a run."""

from __future__ import annotations

from connector.extract.rest_jobs import largest_first
from connector.fhir.config import DEFAULT_RESOURCE_TYPES


def test_the_largest_types_go_first_and_the_rest_keep_their_order():
    ordered = largest_first(DEFAULT_RESOURCE_TYPES)
    assert ordered[:2] == ["Observation", "MedicationAdministration"]
    assert sorted(ordered) == sorted(DEFAULT_RESOURCE_TYPES)
    rest = [t for t in DEFAULT_RESOURCE_TYPES if t not in ordered[:2]]
    assert ordered[2:] == rest
    assert largest_first(["Patient", "Procedure"]) == ["Patient", "Procedure"]
