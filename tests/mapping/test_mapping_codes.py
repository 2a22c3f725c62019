"""The code sets: every code that codes.md gives maps to its class, names and units match."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mapping_fhir import ATC, CPT, HCPCS, ICD10PCS, LOINC, NDC, RXNORM, SNOMED, concept

from connector.codes.codesets import (
    DEFAULT_DIR,
    CodeSetError,
    load_codesets,
    ndc_product,
    normalize_system,
)
from connector.mapping.match import (
    IGNORED,
    match_coded_value,
    match_drug,
    match_lab,
    match_procedure,
    unit_rule,
)

# Every drug code of /work/shared/reference/codes.md §1 (confirmed and "weak"), copied here
# by hand so the test does not depend on a file outside the repository.
CODES_MD_DRUGS: list[tuple[str, str, str, str]] = [
    # (system, code, ingredient, class)
    (HCPCS, "Q2055", "idecabtagene vicleucel", "bcma_car_t"),
    (ATC, "L01XL07", "idecabtagene vicleucel", "bcma_car_t"),
    (RXNORM, "2594780", "ciltacabtagene autoleucel", "bcma_car_t"),
    (HCPCS, "Q2056", "ciltacabtagene autoleucel", "bcma_car_t"),
    (ATC, "L01XL05", "ciltacabtagene autoleucel", "bcma_car_t"),
    (RXNORM, "2619432", "teclistamab", "bcma_bispecific"),
    (RXNORM, "2619438", "teclistamab", "bcma_bispecific"),
    (RXNORM, "2619441", "teclistamab", "bcma_bispecific"),
    (RXNORM, "2619444", "teclistamab", "bcma_bispecific"),
    (HCPCS, "J9380", "teclistamab", "bcma_bispecific"),
    (ATC, "L01FX24", "teclistamab", "bcma_bispecific"),
    (HCPCS, "J1323", "elranatamab", "bcma_bispecific"),
    (HCPCS, "J3055", "talquetamab", "gprc5d_bispecific"),
    (ATC, "L01FX29", "talquetamab", "gprc5d_bispecific"),
    (HCPCS, "C9307", "linvoseltamab", "bcma_bispecific"),
    (RXNORM, "1721947", "daratumumab", "anti_cd38"),
    (RXNORM, "1721952", "daratumumab", "anti_cd38"),
    (HCPCS, "J9145", "daratumumab", "anti_cd38"),
    (ATC, "L01FC01", "daratumumab", "anti_cd38"),
    (RXNORM, "2372199", "daratumumab", "anti_cd38"),
    (RXNORM, "2375130", "daratumumab", "anti_cd38"),
    (RXNORM, "2375137", "daratumumab", "anti_cd38"),
    (RXNORM, "2375136", "daratumumab", "anti_cd38"),
    (RXNORM, "2375141", "daratumumab", "anti_cd38"),
    (HCPCS, "J9144", "daratumumab", "anti_cd38"),
    (HCPCS, "J9227", "isatuximab", "anti_cd38"),
    (ATC, "L01FC02", "isatuximab", "anti_cd38"),
    (RXNORM, "1726104", "elotuzumab", "anti_slamf7"),
    (RXNORM, "1726111", "elotuzumab", "anti_slamf7"),
    (HCPCS, "J9176", "elotuzumab", "anti_slamf7"),
    (ATC, "L01FX08", "elotuzumab", "anti_slamf7"),
    (HCPCS, "J9037", "belantamab mafodotin", "bcma_adc"),
    (ATC, "L01FX15", "belantamab mafodotin", "bcma_adc"),
    (RXNORM, "342369", "lenalidomide", "imid"),
    (RXNORM, "337535", "lenalidomide", "imid"),
    (ATC, "L04AX04", "lenalidomide", "imid"),
    (RXNORM, "1369713", "pomalidomide", "imid"),
    (ATC, "L04AX06", "pomalidomide", "imid"),
    (RXNORM, "10432", "thalidomide", "imid"),
    (RXNORM, "220239", "thalidomide", "imid"),
    (ATC, "L04AX02", "thalidomide", "imid"),
    (RXNORM, "358258", "bortezomib", "pi"),
    (RXNORM, "356733", "bortezomib", "pi"),
    (HCPCS, "J9041", "bortezomib", "pi"),
    (HCPCS, "J9044", "bortezomib", "pi"),
    (HCPCS, "J9046", "bortezomib", "pi"),
    (HCPCS, "J9048", "bortezomib", "pi"),
    (HCPCS, "J9049", "bortezomib", "pi"),
    (ATC, "L01XG01", "bortezomib", "pi"),
    (RXNORM, "1302966", "carfilzomib", "pi"),
    (RXNORM, "1302971", "carfilzomib", "pi"),
    (HCPCS, "J9047", "carfilzomib", "pi"),
    (ATC, "L01XG02", "carfilzomib", "pi"),
    (RXNORM, "1723735", "ixazomib", "pi"),
    (RXNORM, "1723758", "ixazomib", "pi"),
    (ATC, "L01XG03", "ixazomib", "pi"),
    (ATC, "L01XX66", "selinexor", "xpo1_inhibitor"),
    (RXNORM, "1747556", "venetoclax", "bcl2_inhibitor"),
    (ATC, "L01XX52", "venetoclax", "bcl2_inhibitor"),
    (RXNORM, "6718", "melphalan", "alkylator"),
    (RXNORM, "151325", "melphalan", "alkylator"),
    (RXNORM, "1745086", "melphalan", "alkylator"),
    (HCPCS, "J9245", "melphalan", "alkylator"),
    (HCPCS, "J9246", "melphalan", "alkylator"),
    (ATC, "L01AA03", "melphalan", "alkylator"),
    (RXNORM, "3002", "cyclophosphamide", "alkylator"),
    (HCPCS, "J9070", "cyclophosphamide", "alkylator"),
    (HCPCS, "J9071", "cyclophosphamide", "alkylator"),
    (ATC, "L01AA01", "cyclophosphamide", "alkylator"),
    (RXNORM, "134547", "bendamustine", "alkylator"),
    (RXNORM, "741098", "bendamustine", "alkylator"),
    (RXNORM, "1726098", "bendamustine", "alkylator"),
    (HCPCS, "J9033", "bendamustine", "alkylator"),
    (HCPCS, "J9034", "bendamustine", "alkylator"),
    (HCPCS, "J9036", "bendamustine", "alkylator"),
    (HCPCS, "J9056", "bendamustine", "alkylator"),
    (HCPCS, "J9058", "bendamustine", "alkylator"),
    (HCPCS, "J9059", "bendamustine", "alkylator"),
    (ATC, "L01AA09", "bendamustine", "alkylator"),
    (RXNORM, "3264", "dexamethasone", "steroid"),
    (HCPCS, "J1100", "dexamethasone", "steroid"),
    (ATC, "H02AB02", "dexamethasone", "steroid"),
    (RXNORM, "2555", "cisplatin", "platinum"),
    (HCPCS, "J9060", "cisplatin", "platinum"),
    (ATC, "L01XA01", "cisplatin", "platinum"),
    (RXNORM, "4179", "etoposide", "topoisomerase_inhibitor"),
    (HCPCS, "J9181", "etoposide", "topoisomerase_inhibitor"),
    (ATC, "L01CB01", "etoposide", "topoisomerase_inhibitor"),
    (RXNORM, "3639", "doxorubicin", "anthracycline"),
    (HCPCS, "J9000", "doxorubicin", "anthracycline"),
    (ATC, "L01DB01", "doxorubicin", "anthracycline"),
    (RXNORM, "24698", "fludarabine", "lymphodepletion"),
    (HCPCS, "J9185", "fludarabine", "lymphodepletion"),
    (NDC, "57894-449", "teclistamab", "bcma_bispecific"),
    (NDC, "57894-111", "ciltacabtagene autoleucel", "bcma_car_t"),
    (NDC, "57894-503", "daratumumab", "anti_cd38"),
]

CODES_MD_PROCEDURES: list[tuple[str, str, str, str]] = [
    # (system, code, category, product)
    (CPT, "0537T", "car_t_harvest", ""),
    (CPT, "0540T", "car_t_administration", ""),
    (CPT, "38225", "car_t_harvest", ""),
    (CPT, "38228", "car_t_administration", ""),
    (ICD10PCS, "XW033K7", "car_t_administration", "idecabtagene vicleucel"),
    (ICD10PCS, "XW043K7", "car_t_administration", "idecabtagene vicleucel"),
    (ICD10PCS, "XW033A7", "car_t_administration", "ciltacabtagene autoleucel"),
    (ICD10PCS, "XW043A7", "car_t_administration", "ciltacabtagene autoleucel"),
    (HCPCS, "Q2055", "car_t_administration", "idecabtagene vicleucel"),
    (HCPCS, "Q2056", "car_t_administration", "ciltacabtagene autoleucel"),
    (HCPCS, "Q2041", "car_t_administration", "axicabtagene ciloleucel"),
    (HCPCS, "Q2042", "car_t_administration", "tisagenlecleucel"),
    (SNOMED, "1156961008", "car_t_administration", ""),
    (SNOMED, "234336002", "auto_transplant", ""),
    (SNOMED, "53438000", "radiation", ""),
    (CPT, "38241", "auto_transplant", ""),
    (CPT, "38240", "allo_transplant", ""),
    (CPT, "38206", "apheresis", ""),
    (CPT, "38205", "apheresis", ""),
    (CPT, "38232", "apheresis", ""),
    *[(CPT, c, "radiation", "") for c in ("77385", "77386", "77402", "77407", "77412",
                                          "77373", "77427", "77261", "77262", "77263")],
]

CODES_MD_LABS: list[tuple[str, str]] = [
    ("33358-3", "serum_m_protein"), ("42482-0", "urine_m_protein"),
    ("32730-5", "urine_m_protein"), ("36916-5", "kappa_flc"), ("33944-0", "lambda_flc"),
    ("48378-4", "flc_ratio"), ("25700-6", "serum_ife"), ("11118-7", "marrow_plasma_cells"),
    ("97509-4", "disease_status"), ("2465-3", "igg"), ("2458-8", "iga"), ("2472-9", "igm"),
    ("2532-0", "ldh"), ("14804-9", "ldh"), ("1952-1", "b2m"), ("1751-7", "albumin"),
    ("2862-1", "albumin"), ("2160-0", "creatinine"), ("17861-6", "calcium"),
    ("718-7", "hemoglobin"),
]


@pytest.fixture(scope="module")
def cs():
    return load_codesets()


@pytest.mark.parametrize(("system", "code", "ingredient", "drug_class"), CODES_MD_DRUGS)
def test_every_codes_md_drug_code_maps_to_its_class(cs, system, code, ingredient, drug_class):
    matches = match_drug(cs, [concept(system, code)])
    assert [(m.ingredient, m.drug_class) for m in matches] == [(ingredient, drug_class)]


@pytest.mark.parametrize(("system", "code", "category", "product"), CODES_MD_PROCEDURES)
def test_every_codes_md_procedure_code_maps(cs, system, code, category, product):
    match = match_procedure(cs, concept(system, code))
    assert match is not None and (match.category, match.product) == (category, product)


@pytest.mark.parametrize(("code", "analyte"), CODES_MD_LABS)
def test_every_codes_md_lab_code_maps(cs, code, analyte):
    hit = match_lab(cs, concept(LOINC, code))
    assert hit is not None and hit[0] == analyte


def test_car_t_steps_that_are_not_events_are_recognised_but_ignored(cs):
    for code in ("0538T", "0539T", "38226", "38227"):
        assert match_procedure(cs, concept(CPT, code)) is IGNORED


def test_confirmed_and_unconfirmed_codes_are_marked_in_the_files():
    import csv

    rows = list(csv.DictReader((DEFAULT_DIR / "drug_codes.csv").open()))
    status = {(r["system"], r["code"]): r["status"] for r in rows}
    assert status[("hcpcs", "Q2055")] == "confirmed"
    assert status[("hcpcs", "Q2041")] == "unconfirmed"  # axi-cel: not in codes.md
    assert status[("hcpcs", "Q2042")] == "unconfirmed"
    assert status[("rxnorm", "1369713")] == "unconfirmed"  # weak in codes.md
    labs = {r["code"]: r["status"] for r in csv.DictReader((DEFAULT_DIR / "labs.csv").open())}
    assert labs["42482-0"] == labs["32730-5"] == "unconfirmed"
    assert labs["33358-3"] == "confirmed"
    for name in ("drug_codes", "drug_names", "drug_classes", "procedures", "labs", "units",
                 "analytes", "statuses", "coded_values", "systems", "limits"):
        header = (DEFAULT_DIR / f"{name}.csv").open().readline()
        assert "source" in header.strip().split(","), name


@pytest.mark.parametrize(("text", "ingredient"), [
    ("Abecma", "idecabtagene vicleucel"),
    ("ide-cel", "idecabtagene vicleucel"),
    ("IDE-CEL infusion", "idecabtagene vicleucel"),
    ("Carvykti", "ciltacabtagene autoleucel"),
    ("cilta-cel", "ciltacabtagene autoleucel"),
    ("Darzalex Faspro", "daratumumab"),
    ("DARZALEX FASPRO®", "daratumumab"),
    ("daratumumab and hyaluronidase-fihj", "daratumumab"),
    ("daratumumab + hyaluronidase 1800 MG/15ML", "daratumumab"),
    ("Tecvayli", "teclistamab"),
    ("teclistamab-cqyv 10 mg/mL", "teclistamab"),
    ("Talvey", "talquetamab"),
    ("Elrexfio", "elranatamab"),
    ("Lynozyfic", "linvoseltamab"),
    ("Kyprolis", "carfilzomib"),
    ("Velcade", "bortezomib"),
    ("Pomalyst 4 mg capsule", "pomalidomide"),
    ("REVLIMID", "lenalidomide"),
    ("Xpovio", "selinexor"),
    ("Venclexta", "venetoclax"),
    ("Blenrep", "belantamab mafodotin"),
    ("belantamab mafodotin-blmf", "belantamab mafodotin"),
    ("Sarclisa", "isatuximab"),
    ("Empliciti", "elotuzumab"),
    ("Alkeran", "melphalan"),
    ("Evomela", "melphalan"),
    ("Treanda", "bendamustine"),
    ("Yescarta", "axicabtagene ciloleucel"),
    ("Kymriah", "tisagenlecleucel"),
    ("cevostamab (investigational)", "cevostamab"),
    ("iberdomide", "iberdomide"),
    ("mezigdomide", "mezigdomide"),
    ("fludarabine phosphate injection", "fludarabine"),
])
def test_names_match_text_only_local_codes(cs, text, ingredient):
    by_text = match_drug(cs, [{"text": text}])
    by_display = match_drug(cs, [concept("http://hospital.example/formulary", "X1", text)])
    assert [m.ingredient for m in by_text] == [ingredient]
    assert [m.ingredient for m in by_display] == [ingredient]


def test_classes_of_name_only_drugs(cs):
    assert match_drug(cs, [{"text": "cevostamab"}])[0].drug_class == "fcrh5_bispecific"
    assert match_drug(cs, [{"text": "iberdomide"}])[0].drug_class == "imid"
    assert match_drug(cs, [{"text": "axi-cel"}])[0].drug_class == "other_car_t"


def test_unrelated_text_does_not_match(cs):
    assert match_drug(cs, [{"text": "acetaminophen 500 mg"}]) == []
    assert match_drug(cs, [{"text": "hyaluronidase"}]) == []
    assert match_drug(cs, [concept(RXNORM, "161")]) == []


def test_a_code_wins_over_a_misleading_display(cs):
    matches = match_drug(cs, [concept(RXNORM, "342369", "Velcade")])
    assert [m.ingredient for m in matches] == ["lenalidomide"]


@pytest.mark.parametrize("system", [
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "https://www.nlm.nih.gov/research/umls/rxnorm",
    "http://www.nlm.nih.gov/research/umls/rxnorm/",
    "http://www.nlm.nih.gov/research/umls/rxnorm|2024-01",
    "HTTP://WWW.NLM.NIH.GOV/research/umls/rxnorm",
    "urn:oid:2.16.840.1.113883.6.88",
])
def test_system_uri_variants_match(cs, system):
    assert [m.ingredient for m in match_drug(cs, [concept(system, "2619432")])] == [
        "teclistamab"]


def test_normalize_system():
    assert normalize_system("https://loinc.org/|2.74") == "http://loinc.org"


def test_cpt_code_filed_under_hcpcs_uri_still_maps(cs):
    assert match_procedure(cs, concept(HCPCS, "0540T")).category == "car_t_administration"
    assert match_procedure(cs, concept(CPT, "Q2056")).product == "ciltacabtagene autoleucel"


@pytest.mark.parametrize(("raw", "product"), [
    ("57894-449-01", "57894-0449"), ("57894044901", "57894-0449"),
    ("57894-0449-01", "57894-0449"), ("57894-111", "57894-0111"),
])
def test_ndc_forms(raw, product):
    assert ndc_product(raw) == product


def test_ndc_package_code_maps(cs):
    assert match_drug(cs, [concept(NDC, "57894-503-01")])[0].ingredient == "daratumumab"


def test_procedure_product_from_other_coding_and_from_text(cs):
    both = {"coding": [{"system": CPT, "code": "0540T"},
                       {"system": ICD10PCS, "code": "XW043A7"}]}
    assert match_procedure(cs, both).product == "ciltacabtagene autoleucel"
    named = {"coding": [{"system": CPT, "code": "0540T"}], "text": "CAR-T infusion (Abecma)"}
    assert match_procedure(cs, named).product == "idecabtagene vicleucel"
    assert match_procedure(cs, {"text": "Autologous stem cell transplant"}).category == (
        "auto_transplant")
    assert match_procedure(cs, {"text": "knee arthroscopy"}) is None


@pytest.mark.parametrize(("analyte", "unit", "factor"), [
    ("serum_m_protein", "g/dL", 1), ("serum_m_protein", "g/dl", 1),
    ("serum_m_protein", "G/DL", 1), ("serum_m_protein", "g/L", 0.1),
    ("serum_m_protein", "mg/dL", 0.001), ("kappa_flc", "mg/L", 1), ("kappa_flc", "mg/l", 1),
    ("lambda_flc", "mg/dL", 10), ("urine_m_protein", "mg/24h", 1),
    ("urine_m_protein", "mg/(24.h)", 1), ("urine_m_protein", "g/24h", 1000),
    ("urine_m_protein", "g/(24.h)", 1000), ("marrow_plasma_cells", "%", 1),
    ("flc_ratio", "{ratio}", 1), ("igg", "g/L", 100), ("creatinine", "umol/L", 0.011312),
])
def test_unit_conversions(cs, analyte, unit, factor):
    rule = unit_rule(cs, analyte, unit)
    assert rule is not None and rule[0] == pytest.approx(factor)
    assert rule[1] == cs.analytes[analyte].canonical_unit


def test_unknown_units_are_not_guessed(cs):
    assert unit_rule(cs, "serum_m_protein", "mg/L") is None
    assert unit_rule(cs, "serum_m_protein", "furlongs") is None
    assert unit_rule(cs, "kappa_flc", "umol/L") is None  # molar units only where listed


def test_coded_values(cs):
    assert match_coded_value(cs, "serum_ife", concept(SNOMED, "260385009")) == "negative"
    assert match_coded_value(cs, "serum_ife", {"text": "No monoclonal protein detected"}) == (
        "negative")
    assert match_coded_value(cs, "serum_ife", {"text": "POSITIVE"}) == "positive"
    assert match_coded_value(cs, "disease_status", concept(SNOMED, "271299001")) == "271299001"
    assert match_coded_value(cs, "serum_ife", {"text": "maybe"}) is None


def _copy_mappings(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(DEFAULT_DIR, target)
    return target


def test_a_drug_without_class_fails_loudly(tmp_path):
    folder = _copy_mappings(tmp_path)
    with (folder / "drug_names.csv").open("a") as fh:
        fh.write("madeupumab,Madeup,brand,unconfirmed,test\n")
    with pytest.raises(CodeSetError, match="no class"):
        load_codesets(folder)


def test_a_bad_status_or_missing_source_fails_loudly(tmp_path):
    folder = _copy_mappings(tmp_path)
    with (folder / "labs.csv").open("a") as fh:
        fh.write("loinc,1234-5,igg,x,maybe,test\n")
    with pytest.raises(CodeSetError, match="confirmed or unconfirmed"):
        load_codesets(folder)
    folder2 = tmp_path / "m2"
    shutil.copytree(DEFAULT_DIR, folder2)
    text = (folder2 / "units.csv").read_text().replace(",source", ",origin", 1)
    (folder2 / "units.csv").write_text(text)
    with pytest.raises(CodeSetError, match="source"):
        load_codesets(folder2)


def test_a_new_local_code_can_be_added_as_data(tmp_path):
    folder = _copy_mappings(tmp_path)
    with (folder / "drug_codes.csv").open("a") as fh:
        fh.write("teclistamab,http://hospital.example/formulary,TEC-42,local,Tec,"
                 "unconfirmed,site formulary\n")
    cs = load_codesets(folder)
    found = match_drug(cs, [concept("https://hospital.example/formulary/", "tec-42")])
    assert [m.ingredient for m in found] == ["teclistamab"]
