"""Issue 15 item 6: investigational and newer products, by name or trial code text."""

from __future__ import annotations

import pytest

from connector.codes.codesets import load_codesets
from connector.mapping.match import match_drug

CODESETS = load_codesets()


@pytest.mark.parametrize(("text", "ingredient", "drug_class"), [
    ("orva-cel (JCARH125) infusion", "orvacabtagene autoleucel", "bcma_car_t"),
    ("bb21217 CAR-T", "bb21217", "bcma_car_t"),
    ("anitocabtagene autoleucel", "anitocabtagene autoleucel", "bcma_car_t"),
    ("CART-ddBCMA", "anitocabtagene autoleucel", "bcma_car_t"),
    ("CT103A CAR T cells", "equecabtagene autoleucel", "bcma_car_t"),
    ("eque-cel", "equecabtagene autoleucel", "bcma_car_t"),
    ("zevor-cel (CT053)", "zevorcabtagene autoleucel", "bcma_car_t"),
    ("MCARH109 GPRC5D CAR T", "mcarh109", "other_car_t"),
    ("arlocabtagene autoleucel (BMS-986393)", "arlocabtagene autoleucel", "other_car_t"),
    ("alnuctamab 10 mg", "alnuctamab", "bcma_bispecific"),
    ("CC-93269", "alnuctamab", "bcma_bispecific"),
    ("ABBV-383 60 mg IV", "etentamig", "bcma_bispecific"),
    ("etentamig", "etentamig", "bcma_bispecific"),
    ("TNB-383B", "etentamig", "bcma_bispecific"),
    ("forimtamig (RG6234)", "forimtamig", "gprc5d_bispecific"),
    ("REGN5458 200 mg", "linvoseltamab", "bcma_bispecific"),
    ("PF-06863135", "elranatamab", "bcma_bispecific"),
    ("JNJ-64407564 0.4 mg/kg SC", "talquetamab", "gprc5d_bispecific"),
    ("BFCR4350A", "cevostamab", "fcrh5_bispecific"),
    ("AMG 701", "pavurutamab", "bcma_bispecific"),
    ("AMG701 study drug", "pavurutamab", "bcma_bispecific"),
])
def test_names_and_trial_codes_map_to_ingredient_and_class(text, ingredient, drug_class):
    found = match_drug(CODESETS, [{"text": text}])
    assert [(m.ingredient, m.drug_class) for m in found] == [(ingredient, drug_class)]

