"""The CAR-T screen: the codes and names that mark a patient's CAR-T record.

A cohort-scoped REST run (connector/extract/remote.py) and the DuckDB loader's screen
(connector/extract/duckscreen.py) keep only patients with a CAR-T administration,
procedure or harvest. What counts is the map stage's own vocabulary: the ingredients of
the CAR-T drug classes (rules.toml ``[car_t]``) with their codes and names from the code
sets, and the procedure codes and names of the categories rules.toml screens for. So a
new CAR-T product or class is screened as soon as ``mappings/`` knows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from connector.codes.codesets import CodeSets, load_codesets
from connector.codes.rulesfile import StudyTerms, study_terms


@dataclass(frozen=True)
class ScreenTerms:
    """What marks a CAR-T record: token codes and names for ``code:text``."""

    medication_codes: tuple[str, ...]
    procedure_codes: tuple[str, ...]
    texts: tuple[str, ...]
    source: str

    def digest(self) -> str:
        text = "|".join([*self.medication_codes, "#", *self.procedure_codes, "#", *self.texts])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def car_t_screen_terms(mappings_dir: Path | None = None, *, codesets: CodeSets | None = None,
                       terms: StudyTerms | None = None) -> ScreenTerms:
    """The CAR-T codes and names to screen with, from the code sets and rules.toml.

    Codes are searched without a system (a server's system URIs vary more than the
    codes) as the files write them, in that case, lower case and upper case; names in
    lower case. A missing or broken mapping file fails loudly (CodeSetError): a screen
    from a guessed list would silently drop patients.
    """
    cs = codesets or load_codesets(mappings_dir)
    rules = terms or study_terms()
    ingredients = {ingredient for ingredient, drug_class in cs.drug_class.items()
                   if drug_class in rules.car_t_classes}
    categories = set(rules.screen_categories)
    written = cs.written
    med_codes = [code for ingredient, code in written.drug_codes if ingredient in ingredients]
    proc_codes = [code for category, code in written.procedure_codes if category in categories]
    texts = [name for ingredient, name in written.drug_names if ingredient in ingredients]
    texts += [text for category, text in written.procedure_names if category in categories]
    return ScreenTerms(medication_codes=_variants(med_codes), procedure_codes=_variants(proc_codes),
                       texts=tuple(sorted({t.strip().lower() for t in texts if t.strip()})),
                       source=str(cs.directory))


def _variants(codes: Iterable[str]) -> tuple[str, ...]:
    out: set[str] = set()
    for code in codes:
        code = (code or "").strip()
        if code:
            out.update({code, code.lower(), code.upper()})
    return tuple(sorted(out))
