"""Mutated resources: every element replaced by values of the wrong type, deep nesting.

Each mutant must end mapped, excluded, unmapped or quarantined with a specific
reason; none may stop the run or fall through to the catch-all "unexpected error".
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from mapping_fhir import CPT, RXNORM, concept, load, med_admin, observation, patient, procedure

from connector.db.models import RawResource
from connector.mapping import run_map

ODD_VALUES: list[Any] = [None, 7, "x", [], {}, True, -1e308, "2022-99", [{"a": 1}], {"b": []}]


def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("resourceType", "id"):  # the extract stage checks these
                yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _set(node: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def mutants() -> list[dict]:
    seeds = [
        med_admin("m", "p1", concept(RXNORM, "342369"),
                  effectivePeriod={"start": "2022-01-01", "end": "2022-01-21"}),
        med_admin("c", "p1", None, medicationReference={"reference": "#med1"},
                  contained=[{"resourceType": "Medication", "id": "med1",
                              "code": {"text": "Kyprolis"}}]),
        procedure("pr", "p1", concept(CPT, "0540T")),
        observation("o", "p1", "33358-3", value=1.5),
        observation("i", "p1", "25700-6", valueCodeableConcept={"text": "negative"}),
    ]
    out = copy.deepcopy(seeds)  # the unmutated seeds must map
    for seed in seeds:
        for n, path in enumerate(_paths(seed)):
            for k, value in enumerate(ODD_VALUES):
                mutant = copy.deepcopy(seed)
                _set(mutant, path, copy.deepcopy(value))
                mutant["id"] = f"{seed['id']}-{n}-{k}"
                out.append(mutant)
    return out


def test_mutants_never_reach_the_catch_all(engine):
    resources = mutants()
    assert len(resources) > 500
    load(engine, [patient("p1")] + resources)
    summary = run_map(engine)
    with engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(sa.text("SELECT reason FROM quarantine"))]
    assert not [r for r in reasons if r.startswith("unexpected")]
    assert summary.quarantined > 300
    with engine.connect() as conn:
        kept = {r[0] for t in ("medication_exposure", "procedure_event", "lab_result")
                for r in conn.execute(sa.text(f"SELECT source_id FROM {t}"))}
    assert {"m", "c", "pr", "o", "i"} <= kept


def _insert_raw(engine, rid: str, body: str) -> None:
    """A raw row written directly: the raw store's own serializer stops at 254 levels."""
    with engine.begin() as conn:
        conn.execute(sa.insert(RawResource).values(
            site="site_a", resource_type="Observation", resource_id=rid, content_hash=rid,
            body=body, deleted=False, source="test"))


@pytest.mark.parametrize("depth", [200, 450, 2000])
def test_deeply_nested_resource_does_not_stop_the_run(engine, depth):
    load(engine, [patient("p1"), observation("ok", "p1", "33358-3", value=1.2,
                                             date="2022-04-01")])
    head = orjson.dumps(observation("deep", "p1", "33358-3", value=1.5))[:-1].decode()
    nested = '{"url": "http://example.org/x", "extension": [' * depth
    nested += '{"url": "http://example.org/x", "valueString": "leaf"}' + "]}" * depth
    _insert_raw(engine, "deep", f'{head}, "extension": [{nested}]}}')
    summary = run_map(engine)
    with engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(sa.text("SELECT reason FROM quarantine"))]
        labs = {r[0] for r in conn.execute(sa.text("SELECT source_id FROM lab_result"))}
    assert "ok" in labs
    assert summary.rows["lab_result"] + summary.quarantined == 2
    assert not [r for r in reasons if r.startswith("unexpected")]
