"""Hand-built timelines for the derive tests: days are offsets from D0 (day 0 = index)."""

from __future__ import annotations

import datetime as dt

from connector.cohort import Exposure, Lab, PatientInfo, Procedure, derive_patient, load_rules

D0 = dt.date(2022, 3, 1)
RULES = load_rules()

CLASS = {
    "idecabtagene vicleucel": "bcma_car_t", "ciltacabtagene autoleucel": "bcma_car_t",
    "axicabtagene ciloleucel": "other_car_t", "tisagenlecleucel": "other_car_t",
    "teclistamab": "bcma_bispecific", "elranatamab": "bcma_bispecific",
    "talquetamab": "gprc5d_bispecific", "cevostamab": "fcrh5_bispecific",
    "daratumumab": "anti_cd38", "isatuximab": "anti_cd38", "elotuzumab": "anti_slamf7",
    "belantamab mafodotin": "bcma_adc", "lenalidomide": "imid", "pomalidomide": "imid",
    "thalidomide": "imid", "bortezomib": "pi", "carfilzomib": "pi", "ixazomib": "pi",
    "selinexor": "xpo1_inhibitor", "venetoclax": "bcl2_inhibitor", "melphalan": "alkylator",
    "cyclophosphamide": "alkylator", "bendamustine": "alkylator", "dexamethasone": "steroid",
    "cisplatin": "platinum", "etoposide": "topoisomerase_inhibitor",
    "doxorubicin": "anthracycline", "fludarabine": "lymphodepletion",
}


def d(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def drug(ingredient: str, start: int, end: int | None = None) -> Exposure:
    return Exposure(ingredient, CLASS[ingredient], d(start), d(end) if end is not None else None)


def course(ingredients: list[str], start: int, end: int, every: int = 28) -> list[Exposure]:
    """Doses of each ingredient every ``every`` days from ``start`` to ``end``."""
    return [drug(i, day) for day in range(start, end + 1, every) for i in ingredients]


def proc(category: str, day: int, product: str = "") -> Procedure:
    return Procedure(category, d(day), product)


def lab(analyte: str, day: int, value: float | None = None, code: str | None = None,
        unit: str | None = None) -> Lab:
    return Lab(analyte, d(day), value, unit, code)


def serum(*points: tuple[int, float]) -> list[Lab]:
    return [lab("serum_m_protein", day, v, unit="g/dL") for day, v in points]


def urine(*points: tuple[int, float]) -> list[Lab]:
    return [lab("urine_m_protein", day, v, unit="mg/24h") for day, v in points]


def flc(*points: tuple[int, float, float]) -> list[Lab]:
    """(day, kappa, lambda) in mg/L."""
    out = []
    for day, k, lam in points:
        out += [lab("kappa_flc", day, k, unit="mg/L"), lab("lambda_flc", day, lam, unit="mg/L")]
    return out


def index_cilta(day: int = 0) -> tuple[list[Exposure], list[Procedure]]:
    """A cilta-cel infusion with fludarabine/cyclophosphamide on days -5..-3."""
    exposures = [drug(i, day + k) for k in (-5, -4, -3)
                 for i in ("fludarabine", "cyclophosphamide")]
    exposures.append(drug("ciltacabtagene autoleucel", day))
    return exposures, [proc("car_t_administration", day, "ciltacabtagene autoleucel")]


# serum M-protein after CAR-T: response, nadir 0.2, confirmed PD on day 150 (0.8) and 180 (1.1)
RELAPSE_SERUM = serum((-7, 3.0), (30, 1.0), (60, 0.3), (90, 0.2), (120, 0.2), (150, 0.8),
                      (180, 1.1))


def patient(death: int | None = None, site: str = "site_a", source_id: str = "p1") -> PatientInfo:
    return PatientInfo(site, source_id, "key-" + source_id, 1955, "female",
                       d(death) if death is not None else None)


def run(exposures=(), procedures=(), labs=(), death=None, rules=RULES):  # noqa: ANN001, ANN201
    return derive_patient(patient(death), list(exposures), list(procedures), list(labs), rules)
