"""The shape-verdict cache gives exactly the verdicts of plain fhir.resources validation.

Valid resources (the synthetic fixture cohort and hand-made ones with contained
resources, extensions and ``_field`` primitive extensions) teach the cache their
shapes; then ~20,000 mutants — bad dates and codes, empty and whitespace strings,
nulls, wrong types, lists for scalars, extra and missing keys, two ``value[x]``,
odd resource types — go through both the cached gate and the models alone, twice
(the first pass may learn new shapes from mutants the models accept). Verdict and
reason text must be the same for every one.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from mapping_fhir import CPT, RXNORM, concept, med_admin, observation, patient, procedure

from connector.mapping.shapes import MAX_DEPTH, ShapeCache, shape_of
from connector.mapping.validate import full_problem, r4b_problem

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cohort"
MUTANTS = 20000

#: Values put in place of an element: each is invalid (or valid) for some primitive type.
ODD_VALUES: list[Any] = [
    None, "", " ", "\t", "\n", " x", "x ", "a  b", "a\tb", "a\u00a0b", "a\u001cb", "\u2028",
    "x", "ü日本", "2022", "2022-03", "2022-03-01", "2022-13-01", "2022-02-30", "0000-01-01",
    "2022-03-01T10:00:00", "2022-03-01T10:00", "2022-03-01T10:00:00Z", "2022-03-01T24:00:00Z",
    "2016-12-31T23:59:60Z", "2022-03-01T10:00:00+14:00", "2022-03-01T10:00:00+15:00",
    "2022-03-01T10:00:00.123-05:00", "10:00:00", "1e5", "0.10", "-0", "http://x y",
    "urn:oid:1.2.3", "Patient/p1", "#med1", "a" * 70, "b" * 300, "A-b.9", "a_b", "final",
    0, 1, -1, 2**31, -(2**31) - 1, 10**18, 1.5, -0.0, 1e308, -1e308, 1e-300, True, False,
    [], {}, ["x"], [None], [{}], [1, 2], {"a": 1}, {"text": "x"}, {"extension": []},
]


def _seeds_from_fixtures() -> list[dict]:
    """One resource per distinct shape of the fixture cohort."""
    seen: set = set()
    seeds = []
    for path in sorted(FIXTURES.glob("*/*.ndjson")):
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            res = orjson.loads(line)
            key = (res["resourceType"], shape_of(res, []))
            if key not in seen:
                seen.add(key)
                seeds.append(res)
    return seeds


def _hand_made() -> list[dict]:
    ext = [{"url": "http://example.org/x", "valueString": "y"}]
    return [
        med_admin("c", "p1", None, medicationReference={"reference": "#med1"},
                  contained=[{"resourceType": "Medication", "id": "med1",
                              "code": {"text": "Kyprolis"}}]),
        med_admin("m", "p1", concept(RXNORM, "342369"),
                  effectivePeriod={"start": "2022-01-01", "end": "2022-01-21T10:00:00"}),
        procedure("pr", "p1", concept(CPT, "0540T"), _status={"extension": ext},
                  extension=[{"url": "http://example.org/e", "valueDecimal": 1.25,
                              "extension": ext}]),
        observation("o", "p1", "33358-3", value=1.5),
        observation("i", "p1", "25700-6", valueCodeableConcept={"text": "negative"},
                    component=[{"code": {"text": "a"}, "valueInteger": 3},
                               {"code": {"text": "b"}, "valueString": "x"}]),
        patient("p1", name=[{"family": "X", "given": ["A", None], "_given": [None, {
            "extension": ext}]}], deceasedBoolean=False, multipleBirthInteger=2),
        {"resourceType": "Medication", "id": "med2", "code": concept(RXNORM, "1"),
         "ingredient": [{"itemCodeableConcept": {"text": "x"},
                         "strength": {"numerator": {"value": 10, "unit": "mg"},
                                      "denominator": {"value": 1}}}]},
    ]


def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _parent(res: dict, path: tuple) -> Any:
    node: Any = res
    for part in path[:-1]:
        node = node[part]
    return node


def _structural(res: dict, path: tuple, op: str) -> dict | None:
    """``res`` with one structural change at ``path``, or None when it does not apply."""
    out = copy.deepcopy(res)
    parent, last = _parent(out, path), path[-1]
    value = parent[last]
    if op == "delete" and isinstance(parent, dict):
        del parent[last]
    elif op == "wrap":
        parent[last] = [value]
    elif op == "unwrap" and isinstance(value, list) and value:
        parent[last] = value[0]
    elif op == "repeat" and isinstance(value, list) and value:
        value.append(copy.deepcopy(value[0]))
    elif op == "extra" and isinstance(value, dict):
        value["bogus"] = 1
    elif op == "ext" and isinstance(parent, dict) and isinstance(last, str):
        parent["_" + last.lstrip("_")] = {"extension": [{"url": "http://x.org", "valueCode": "a"}]}
    elif op == "empty_ext" and isinstance(parent, dict) and isinstance(last, str):
        parent["_" + last.lstrip("_")] = {}
    elif op == "second_choice" and isinstance(parent, dict) and isinstance(last, str):
        parent["valueString" if last != "valueString" else "valueBoolean"] = "x"
    elif op == "typed" and isinstance(value, dict):
        value["resourceType"] = "Coding"
    elif op == "mistyped" and isinstance(value, dict):
        value["resource_type"] = "Foo"
    elif op == "retype" and isinstance(value, dict) and "resourceType" in value:
        value["resourceType"] = "Patient"
    else:
        return None
    return out


STRUCTURAL = ("delete", "wrap", "unwrap", "repeat", "extra", "ext", "empty_ext",
              "second_choice", "typed", "mistyped", "retype")


Case = tuple[str, dict]  # the stored resource type (it picks the model) and the resource


def mutants(seeds: list[dict], limit: int, rng: random.Random) -> list[Case]:
    """Every structural change and odd value at every element of every seed, sampled."""
    out: list[Case] = []
    for seed in seeds:
        kind = seed["resourceType"]
        for path in _paths(seed):
            for op in STRUCTURAL:
                mutant = _structural(seed, path, op)
                if mutant is not None:
                    out.append((kind, mutant))
            for value in ODD_VALUES:
                mutant = copy.deepcopy(seed)
                _parent(mutant, path)[path[-1]] = copy.deepcopy(value)
                out.append((kind, mutant))
    rng.shuffle(out)
    return out[:limit]


def _body(i: int, res: dict) -> str | None:
    """The stored text for two in three (as in a worker), none for the rest (in-process)."""
    return orjson.dumps(res).decode() if i % 3 else None


def _outcome(validate: Callable[[], str | None]) -> str | None:
    """A verdict, or the exception the models raised (fhir_core raises KeyError for a
    contained resource of an unknown type): the gate must not change that either."""
    try:
        return validate()
    except Exception as exc:  # noqa: BLE001
        return f"raised {type(exc).__name__}"


def _verdicts(cases: list[Case], shapes: ShapeCache) -> list[str | None]:
    return [_outcome(lambda: r4b_problem(kind, res, _body(i, res), shapes=shapes))
            for i, (kind, res) in enumerate(cases)]


def _expected(cases: list[Case]) -> list[str | None]:
    return [_outcome(lambda: full_problem(kind, res, _body(i, res))[0])
            for i, (kind, res) in enumerate(cases)]


def test_cached_gate_gives_the_verdicts_and_reasons_of_the_models():
    seeds = _seeds_from_fixtures() + _hand_made()
    assert len(seeds) > 30
    shapes = ShapeCache()
    assert _verdicts([(s["resourceType"], s) for s in seeds], shapes) == [None] * len(seeds)
    assert sum(shapes.accepts(s["resourceType"], s) is True for s in seeds) > len(seeds) // 2
    corpus = mutants(seeds, MUTANTS, random.Random(17))
    assert len(corpus) == MUTANTS
    expected = _expected(corpus)
    assert sum(e is None for e in expected) > 1000  # valid mutants exercise the fast path
    assert sum(e is not None for e in expected) > 5000
    first = _verdicts(corpus, shapes)
    second = _verdicts(corpus, shapes)
    for verdicts in (first, second):
        wrong = [(m, e, v) for m, e, v in zip(corpus, expected, verdicts, strict=True) if e != v]
        assert not wrong, wrong[:3]
    fast = sum(shapes.accepts(kind, m) is True for kind, m in corpus)
    assert fast >= 0.5 * sum(e is None for e in expected)


def test_the_cache_stays_bounded_and_deep_resources_are_not_cached():
    shapes = ShapeCache(max_shapes=5)
    for n in range(1, 12):
        res = observation("o", "p1", "33358-3", value=1.5,
                          category=[{"text": "x"} for _ in range(n)])
        assert r4b_problem("Observation", res, shapes=shapes) is None
    assert len(shapes) == 5
    deep: dict = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(MAX_DEPTH):
        deep = {"url": "http://example.org/x", "extension": [deep]}
    res = observation("o", "p1", "33358-3", value=1.5, extension=[deep])
    assert r4b_problem("Observation", res, shapes=shapes) is None
    assert shapes.accepts("Observation", res) == ()


def test_a_leaf_failing_its_check_takes_the_full_path_for_the_reason():
    shapes = ShapeCache()
    good = observation("o", "p1", "33358-3", value=1.5, date="2022-03-01T10:00:00Z")
    assert r4b_problem("Observation", good, shapes=shapes) is None
    assert shapes.accepts("Observation", good) is True
    zoneless = observation("o", "p1", "33358-3", value=1.5, date="2022-03-01T10:00:00")
    assert shapes.accepts("Observation", zoneless) == ()
    assert r4b_problem("Observation", zoneless, shapes=shapes) is None  # the leniency holds
    bad = observation("o", "p1", "33358-3", value=1.5, date="2022-03-01T10:00:00X")
    reason = r4b_problem("Observation", bad, shapes=shapes)
    assert reason == full_problem("Observation", bad)[0]
    assert reason and reason.startswith("invalid R4B Observation: effectiveDateTime")
