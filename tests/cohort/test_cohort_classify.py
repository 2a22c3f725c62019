"""Therapy class and subclass precedence (docs/design.md, rules.toml [[subclass]])."""

from __future__ import annotations

import pytest
from cohort_builders import CLASS, RULES

from connector.cohort.classify import classify


def _cls(*ingredients: str, procedures: tuple[str, ...] = ()) -> tuple[str, str]:
    return classify({CLASS[i] for i in ingredients}, set(ingredients), set(procedures), RULES)


@pytest.mark.parametrize(("drugs", "procedures", "expected"), [
    (("teclistamab", "daratumumab"), (), ("tce", "bcma_bispecific")),
    (("talquetamab", "pomalidomide"), (), ("tce", "gprc5d_bispecific")),
    (("cevostamab",), (), ("tce", "fcrh5_bispecific")),
    (("teclistamab", "talquetamab"), (), ("tce", "bcma_bispecific")),
    (("cyclophosphamide", "fludarabine", "ciltacabtagene autoleucel"), (), ("tce", "car_t")),
    (("tisagenlecleucel",), (), ("tce", "car_t")),
    ((), ("car_t_administration",), ("tce", "car_t")),
    (("melphalan",), ("auto_transplant",), ("non_tce", "autologous_transplant")),
    (("belantamab mafodotin", "pomalidomide"), (), ("non_tce", "bcma_adc")),
    (("selinexor", "bortezomib", "dexamethasone"), (), ("non_tce", "xpo1_inhibitor")),
    (("venetoclax", "dexamethasone"), (), ("non_tce", "bcl2_inhibitor")),
    (("daratumumab", "pomalidomide", "dexamethasone"), (), ("non_tce", "anti_cd38")),
    (("elotuzumab", "pomalidomide", "dexamethasone"), (), ("non_tce", "anti_slamf7")),
    (("dexamethasone", "cyclophosphamide", "etoposide", "cisplatin"), (),
     ("non_tce", "chemotherapy")),
    (("doxorubicin", "bortezomib"), (), ("non_tce", "chemotherapy")),
    (("carfilzomib", "dexamethasone"), (), ("non_tce", "imid_pi")),
    (("dexamethasone",), (), ("non_tce", "other")),
    (("fludarabine",), (), ("non_tce", "other")),
])
def test_subclass_precedence(drugs, procedures, expected):
    assert _cls(*drugs, procedures=procedures) == expected


def test_precedence_comes_from_the_rules_file():
    subclasses = RULES.classify.subclasses
    swapped = (subclasses[8], subclasses[7]) + subclasses[:7] + subclasses[9:]
    rules = RULES.replace("classify", subclasses=swapped)
    both = {"anti_cd38", "bcl2_inhibitor"}
    assert classify(both, set(), set(), RULES)[1] == "bcl2_inhibitor"
    assert classify(both, set(), set(), rules)[1] == "anti_cd38"
