"""The study's patients of a folder or export, found in SQL before anything is loaded.

``--scope cohort`` with the DuckDB loader keeps only the patients with a CAR-T
record, as a REST run's default screen does (``connector/extract/remote.py``,
the same ``car_t_screen_terms``, connector/codes/screen.py): a MedicationAdministration
whose medication (coded, referenced or contained) or a Procedure whose code
carries a CAR-T code or name. A hospital's whole export then costs one extra
DuckDB scan, and only the cohort's resources reach the raw store.

Each distinct code object is judged once in Python (codes without system, in the
case written, lower or upper, as the REST screen sends them; names as substrings
of the text or a display, lower case), so the SQL only groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import orjson

from connector.extract.duck import DuckUnreadable, ndjson_source

#: What the screen reads of each line, parsed once: resourceType, id, Procedure.code /
#: Medication.code, MedicationAdministration.medicationCodeableConcept, the medication
#: reference, the subject reference, contained resources.
_SCREEN_FIELDS = ("json_extract(json, ['$.resourceType', '$.id', '$.code', "
                  "'$.medicationCodeableConcept', '$.medicationReference.reference', "
                  "'$.subject.reference', '$.contained'])")
#: A patient reference, relative or absolute: the id, as the REST screen reads it.
PATIENT_REF = r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
_PATIENT = re.compile(PATIENT_REF)
_MEDICATION = re.compile(r"(?:^|/)Medication/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


class CarTCodes:
    """The screen terms as a test on one code object (CodeableConcept)."""

    def __init__(self, codes: Iterable[str], texts: Iterable[str]) -> None:
        self.codes = frozenset(codes)
        self.texts = tuple(t.lower() for t in texts if t)
        self._memo: dict[str, bool] = {}

    def hit_text(self, text: str | None) -> bool:
        """Whether the JSON text of a code object names a CAR-T product (memoized)."""
        if not text:
            return False
        if text not in self._memo:
            try:
                self._memo[text] = self.hit(orjson.loads(text))
            except orjson.JSONDecodeError:
                self._memo[text] = False
        return self._memo[text]

    def hit(self, code: Any) -> bool:
        if not isinstance(code, dict):
            return False
        names = [code.get("text")]
        for coding in code.get("coding") or []:
            if isinstance(coding, dict):
                if isinstance(coding.get("code"), str) and coding["code"] in self.codes:
                    return True
                names.append(coding.get("display"))
        return any(isinstance(n, str) and any(t in n.lower() for t in self.texts)
                   for n in names)


def screen_rows(con: duckdb.DuckDBPyConnection, path: Path) -> list[tuple]:
    """(type, id, code, medication concept, medication ref, subject ref, contained, n) of
    the file's administrations, procedures and medications, grouped."""
    sql = (f"SELECT x[1]->>'$', CASE WHEN x[1] = '\"Medication\"' THEN x[2]->>'$' END, "  # noqa: S608
           f"x[3]::VARCHAR, x[4]::VARCHAR, x[5]->>'$', x[6]->>'$', x[7]::VARCHAR, count(*), "
           f"CASE WHEN x[1] = '\"Bundle\"' THEN line END "
           f"FROM (SELECT {_SCREEN_FIELDS} AS x, json::VARCHAR AS line "
           f"FROM {ndjson_source(path)}) "
           f"WHERE x[1] IN ('\"MedicationAdministration\"', '\"Procedure\"', '\"Medication\"', "
           f"'\"Bundle\"') GROUP BY ALL")
    try:
        found = con.execute(sql).fetchall()
    except duckdb.Error as exc:
        raise DuckUnreadable(str(exc).splitlines()[0][:300]) from None
    rows: list[tuple] = []
    for *row, bundle in found:
        if bundle is None:
            rows.append(tuple(row))
        else:  # a Bundle on one line: its entries are loaded, so they are screened too
            try:
                rows += bundle_rows(orjson.loads(bundle))
            except orjson.JSONDecodeError:
                continue
    return rows


_SCREENED = ("MedicationAdministration", "Procedure", "Medication")


def resource_row(res: Any) -> tuple | None:
    """The ``screen_rows`` row of one parsed resource, or None when it is not screened."""
    def text(value: Any) -> str | None:
        return orjson.dumps(value).decode() if value is not None else None

    def ref(value: Any) -> str | None:
        return value.get("reference") if isinstance(value, dict) else None

    if not isinstance(res, dict):
        return None
    rtype = res.get("resourceType")
    if rtype not in _SCREENED:
        return None
    try:
        return (rtype, res.get("id") if rtype == "Medication" else None,
                text(res.get("code")), text(res.get("medicationCodeableConcept")),
                ref(res.get("medicationReference")), ref(res.get("subject")),
                text(res.get("contained")), 1)
    except (TypeError, orjson.JSONEncodeError):
        return None  # the load quarantines it


def bundle_rows(bundle: Any, depth: int = 0) -> list[tuple]:
    """``screen_rows`` rows of the entries of a Bundle (Bundles inside opened as the load
    opens them, connector/extract/bundle.py)."""
    from connector.extract.bundle import MAX_DEPTH

    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    if depth >= MAX_DEPTH or not isinstance(entries, list):
        return []
    rows: list[tuple] = []
    for entry in entries:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Bundle":
            rows += bundle_rows(res, depth + 1)
        elif (row := resource_row(res)) is not None:
            rows.append(row)
    return rows


def cohort_patients(rows: Iterable[tuple], terms: CarTCodes) -> set[str]:
    """The patient ids the screen finds in ``screen_rows`` of every file of a site."""
    rows = list(rows)
    car_t_meds = {rid for rtype, rid, code, *_ in rows
                  if rtype == "Medication" and rid and terms.hit_text(code)}
    found: set[str] = set()
    for rtype, _rid, code, concept, med_ref, subject, contained, _n in rows:
        if rtype == "Medication" or not subject:
            continue
        if rtype == "Procedure":
            hit = terms.hit_text(code)
        else:
            hit = terms.hit_text(concept) or _medication_hit(med_ref, contained, car_t_meds,
                                                             terms)
        if hit:
            m = _PATIENT.search(subject)
            if m:
                found.add(m.group(1))
    return found


def _medication_hit(ref: str | None, contained: str | None, car_t_meds: set[str],
                    terms: CarTCodes) -> bool:
    if not ref:
        return False
    if ref.startswith("#"):
        for res in _contained(contained):
            if res.get("id") == ref[1:] and terms.hit(res.get("code")):
                return True
        return False
    m = _MEDICATION.search(ref)
    return bool(m and m.group(1) in car_t_meds)


def _contained(text: str | None) -> list[dict]:
    if not text:
        return []
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def default_car_t_codes() -> CarTCodes:
    """The REST screen's terms (``mappings/``), as a code test."""
    from connector.codes.screen import car_t_screen_terms

    terms = car_t_screen_terms()
    return CarTCodes([*terms.medication_codes, *terms.procedure_codes], terms.texts)


def screen_rows_python(path: Path) -> list[tuple]:
    """``screen_rows`` for a file DuckDB cannot read: line by line, bad lines skipped (the
    load quarantines them)."""
    import gzip
    import zlib

    from connector.extract.folder import iter_lines

    rows: list[tuple] = []
    try:
        for line in iter_lines(path):
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(res, dict) and res.get("resourceType") == "Bundle":
                rows += bundle_rows(res)
            elif (row := resource_row(res)) is not None:
                rows.append(row)
    except (EOFError, gzip.BadGzipFile, zlib.error):
        pass  # the lines before the cut are screened; the load quarantines the file's end
    return rows


def site_cohort(paths: Iterable[Path], terms: CarTCodes | None = None) -> set[str]:
    """The screened patients of one site's files (NDJSON through DuckDB, unreadable ones
    line by line; a Bundle, on one NDJSON line or in a ``.json`` file, by its entries)."""
    from connector.extract.duck import duck_connection
    from connector.extract.folder import NDJSON_SUFFIXES

    terms = terms or default_car_t_codes()
    rows: list[tuple] = []
    with duck_connection() as con:
        for path in paths:
            if not path.name.endswith(NDJSON_SUFFIXES):
                rows += _json_file_rows(path)
                continue
            try:
                rows += screen_rows(con, path)
            except DuckUnreadable:
                rows += screen_rows_python(path)
    return cohort_patients(rows, terms)


def _json_file_rows(path: Path) -> list[tuple]:
    """``screen_rows`` rows of a ``.json`` file (a Bundle or one resource); a file that is
    not JSON gives none (the load quarantines it)."""
    try:
        doc = orjson.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except (orjson.JSONDecodeError, OSError):
        return []
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        return bundle_rows(doc)
    row = resource_row(doc)
    return [row] if row is not None else []
