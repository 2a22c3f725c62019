"""Drugs with their real codes, dosing schedules and the regimen catalog.

Codes come from /work/shared/reference/codes.md: a drug gets an RxNorm code where
codes.md gives one (including the "weak" ones it lists) and a HCPCS code where it
gives one; a drug with neither (selinexor, cevostamab) is sent as text only, which
is what a local formulary entry looks like. Ingredient names and classes follow
docs/design.md so that ground truth and the mapping stage speak the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


# ------------------------------------------------------------------------ schedules


@dataclass(frozen=True)
class Cyclic:
    """Doses on fixed days of repeating cycles; phases are (number of cycles, days).

    ``None`` as the number of cycles means "every remaining cycle".
    """

    cycle_days: int
    phases: tuple[tuple[int | None, tuple[int, ...]], ...]


@dataclass(frozen=True)
class StepUp:
    """Bispecific dosing: step-up doses, weekly treatment doses, then less often."""

    step_days: tuple[int, ...]
    weekly_from: int
    weekly_until: int
    later_every: int


@dataclass(frozen=True)
class Oral:
    """Self-administered drug recorded once per cycle as a period (days 1-21)."""

    cycle_days: int = 28
    period_days: int = 21


Schedule = Cyclic | StepUp | Oral

HORIZON_DAYS = 4000  # longer than any line can last before the cutoff


@cache
def dose_offsets(schedule: Schedule) -> tuple[int, ...]:
    """Day offsets (from the line start) of every dose or oral period start."""
    out: list[int] = []
    if isinstance(schedule, Oral):
        return tuple(range(0, HORIZON_DAYS, schedule.cycle_days))
    if isinstance(schedule, StepUp):
        out.extend(schedule.step_days)
        out.extend(range(schedule.weekly_from, schedule.weekly_until, 7))
        out.extend(range(schedule.weekly_until, HORIZON_DAYS, schedule.later_every))
        return tuple(out)
    cycle = 0
    for n_cycles, days in schedule.phases:
        stop = HORIZON_DAYS // schedule.cycle_days + 1 if n_cycles is None else cycle + n_cycles
        while cycle < stop:
            out.extend(cycle * schedule.cycle_days + d for d in days)
            cycle += 1
    return tuple(o for o in out if o < HORIZON_DAYS)


WEEKLY = Cyclic(28, ((None, (0, 7, 14, 21)),))
D1_8_15 = Cyclic(28, ((None, (0, 7, 14)),))
D1_TO_4 = Cyclic(28, ((None, (0, 1, 2, 3)),))
D1_2 = Cyclic(28, ((None, (0, 1)),))
Q3W = Cyclic(21, ((None, (0,)),))
DARA = Cyclic(28, ((2, (0, 7, 14, 21)), (4, (0, 14)), (None, (0,))))
ISA = Cyclic(28, ((1, (0, 7, 14, 21)), (None, (0, 14))))
ELO = Cyclic(28, ((2, (0, 7, 14, 21)), (None, (0,))))
BORTEZOMIB_PACE = Cyclic(28, ((None, (0, 3, 7, 10)),))
ONCE = Cyclic(HORIZON_DAYS, ((1, (0,)),))
ORAL = Oral()


# -------------------------------------------------------------------------- drugs


@dataclass(frozen=True)
class Drug:
    """One medication as a site would record it."""

    key: str
    ingredient: str  # docs/design.md vocabulary
    drug_class: str  # docs/design.md vocabulary
    text: str
    route: str  # iv | sc | oral
    rxnorm: str | None = None
    hcpcs: str | None = None
    dose: tuple[float, str] | None = None  # per administration, UCUM unit


def _drug(key: str, ingredient: str, drug_class: str, text: str, route: str,
          rxnorm: str | None = None, hcpcs: str | None = None,
          dose: tuple[float, str] | None = None) -> Drug:
    return Drug(key, ingredient, drug_class, text, route, rxnorm, hcpcs, dose)


DRUGS: dict[str, Drug] = {d.key: d for d in (
    _drug("ide_cel", "idecabtagene vicleucel", "bcma_car_t",
          "idecabtagene vicleucel (Abecma)", "iv", hcpcs="Q2055"),
    _drug("cilta_cel", "ciltacabtagene autoleucel", "bcma_car_t",
          "ciltacabtagene autoleucel (Carvykti)", "iv", rxnorm="2594780", hcpcs="Q2056"),
    _drug("axi_cel", "axicabtagene ciloleucel", "other_car_t",
          "axicabtagene ciloleucel (Yescarta)", "iv", hcpcs="Q2041"),
    _drug("teclistamab", "teclistamab", "bcma_bispecific", "teclistamab (Tecvayli)", "sc",
          rxnorm="2619432", hcpcs="J9380", dose=(105.0, "mg")),
    _drug("elranatamab", "elranatamab", "bcma_bispecific", "elranatamab (Elrexfio)", "sc",
          hcpcs="J1323", dose=(76.0, "mg")),
    _drug("linvoseltamab", "linvoseltamab", "bcma_bispecific",
          "linvoseltamab (Lynozyfic)", "iv", hcpcs="C9307", dose=(200.0, "mg")),
    _drug("talquetamab", "talquetamab", "gprc5d_bispecific", "talquetamab (Talvey)", "sc",
          hcpcs="J3055", dose=(28.0, "mg")),
    _drug("cevostamab", "cevostamab", "fcrh5_bispecific",
          "cevostamab (investigational anti-FcRH5 bispecific)", "iv", dose=(160.0, "mg")),
    _drug("dara_iv", "daratumumab", "anti_cd38", "daratumumab (Darzalex) IV", "iv",
          rxnorm="1721947", hcpcs="J9145", dose=(1200.0, "mg")),
    _drug("dara_sc", "daratumumab", "anti_cd38",
          "daratumumab and hyaluronidase-fihj (Darzalex Faspro)", "sc",
          rxnorm="2372199", hcpcs="J9144", dose=(1800.0, "mg")),
    _drug("isatuximab", "isatuximab", "anti_cd38", "isatuximab (Sarclisa)", "iv",
          hcpcs="J9227", dose=(750.0, "mg")),
    _drug("elotuzumab", "elotuzumab", "anti_slamf7", "elotuzumab (Empliciti)", "iv",
          rxnorm="1726104", hcpcs="J9176", dose=(750.0, "mg")),
    _drug("belantamab", "belantamab mafodotin", "bcma_adc",
          "belantamab mafodotin (Blenrep)", "iv", hcpcs="J9037", dose=(175.0, "mg")),
    _drug("lenalidomide", "lenalidomide", "imid", "lenalidomide (Revlimid) 10 mg capsule",
          "oral", rxnorm="342369", dose=(10.0, "mg")),
    _drug("pomalidomide", "pomalidomide", "imid", "pomalidomide (Pomalyst) 4 mg capsule",
          "oral", rxnorm="1369713", dose=(4.0, "mg")),
    _drug("thalidomide", "thalidomide", "imid", "thalidomide (Thalomid) 100 mg capsule",
          "oral", rxnorm="10432", dose=(100.0, "mg")),
    _drug("bortezomib", "bortezomib", "pi", "bortezomib (Velcade) SC", "sc",
          rxnorm="358258", hcpcs="J9041", dose=(2.3, "mg")),
    _drug("carfilzomib", "carfilzomib", "pi", "carfilzomib (Kyprolis)", "iv",
          rxnorm="1302966", hcpcs="J9047", dose=(100.0, "mg")),
    _drug("selinexor", "selinexor", "xpo1_inhibitor", "selinexor (Xpovio) 20 mg tablet",
          "oral", dose=(100.0, "mg")),
    _drug("venetoclax", "venetoclax", "bcl2_inhibitor",
          "venetoclax (Venclexta) 100 mg tablet", "oral", rxnorm="1747556",
          dose=(800.0, "mg")),
    _drug("melphalan", "melphalan", "alkylator", "melphalan HCl for injection (Alkeran)",
          "iv", rxnorm="6718", hcpcs="J9245", dose=(360.0, "mg")),
    _drug("cyclo_iv", "cyclophosphamide", "alkylator", "cyclophosphamide injection", "iv",
          rxnorm="3002", hcpcs="J9070", dose=(540.0, "mg")),
    _drug("cyclo_oral", "cyclophosphamide", "alkylator", "cyclophosphamide 50 mg tablet",
          "oral", rxnorm="3002", dose=(400.0, "mg")),
    _drug("bendamustine", "bendamustine", "alkylator", "bendamustine (Bendeka)", "iv",
          rxnorm="134547", hcpcs="J9034", dose=(160.0, "mg")),
    _drug("dexamethasone", "dexamethasone", "steroid", "dexamethasone 4 mg tablet", "oral",
          rxnorm="3264", dose=(40.0, "mg")),
    _drug("cisplatin", "cisplatin", "platinum", "cisplatin injection", "iv",
          rxnorm="2555", hcpcs="J9060", dose=(18.0, "mg")),
    _drug("etoposide", "etoposide", "topoisomerase_inhibitor", "etoposide injection", "iv",
          rxnorm="4179", hcpcs="J9181", dose=(72.0, "mg")),
    _drug("doxorubicin", "doxorubicin", "anthracycline", "doxorubicin HCl injection", "iv",
          rxnorm="3639", hcpcs="J9000", dose=(18.0, "mg")),
    _drug("fludarabine", "fludarabine", "lymphodepletion", "fludarabine phosphate injection",
          "iv", rxnorm="24698", hcpcs="J9185", dose=(54.0, "mg")),
)}

CAR_T_PRODUCTS = {"idecabtagene vicleucel": "ide_cel", "ciltacabtagene autoleucel": "cilta_cel"}


# ------------------------------------------------------------------------ regimens


@dataclass(frozen=True)
class Component:
    drug: str  # key in DRUGS
    schedule: Schedule


@dataclass(frozen=True)
class Regimen:
    """A planned treatment; ``kind`` says how the timeline lays it out."""

    key: str
    label: str
    kind: str  # cyclic | car_t | asct
    components: tuple[Component, ...]

    @property
    def ingredients(self) -> frozenset[str]:
        return frozenset(DRUGS[c.drug].ingredient for c in self.components)

    @property
    def is_tce(self) -> bool:
        return self.kind == "car_t" or any(
            DRUGS[c.drug].drug_class.endswith("_bispecific") for c in self.components)


def _reg(key: str, label: str, *parts: tuple[str, Schedule], kind: str = "cyclic") -> Regimen:
    return Regimen(key, label, kind, tuple(Component(d, s) for d, s in parts))


DEX = ("dexamethasone", ORAL)
POM = ("pomalidomide", ORAL)

#: T-cell engaging salvage regimens (the key "car_t" stands for the other BCMA product).
TCE_REGIMENS: dict[str, Regimen] = {r.key: r for r in (
    _reg("teclistamab", "teclistamab",
         ("teclistamab", StepUp((0, 2, 4), 11, 172, 14))),
    _reg("elranatamab", "elranatamab",
         ("elranatamab", StepUp((0, 3), 7, 168, 14))),
    _reg("linvoseltamab", "linvoseltamab",
         ("linvoseltamab", StepUp((0, 7), 14, 98, 14))),
    _reg("talquetamab", "talquetamab",
         ("talquetamab", StepUp((0, 2, 4), 11, 172, 14))),
    _reg("cevostamab", "cevostamab",
         ("cevostamab", StepUp((0, 7), 14, 14, 21))),
)}

NON_TCE_REGIMENS: dict[str, Regimen] = {r.key: r for r in (
    _reg("dara_pom_dex", "daratumumab-pomalidomide-dexamethasone", ("dara_sc", DARA), POM, DEX),
    _reg("isa_pom_dex", "isatuximab-pomalidomide-dexamethasone", ("isatuximab", ISA), POM, DEX),
    _reg("kpd", "carfilzomib-pomalidomide-dexamethasone", ("carfilzomib", D1_8_15), POM, DEX),
    _reg("pd", "pomalidomide-dexamethasone", POM, DEX),
    _reg("elo_pom_dex", "elotuzumab-pomalidomide-dexamethasone", ("elotuzumab", ELO), POM, DEX),
    _reg("svd", "selinexor-bortezomib-dexamethasone", ("selinexor", ORAL),
         ("bortezomib", WEEKLY), DEX),
    _reg("sd", "selinexor-dexamethasone", ("selinexor", ORAL), DEX),
    _reg("ven_dex", "venetoclax-dexamethasone", ("venetoclax", ORAL), DEX),
    _reg("belantamab", "belantamab mafodotin", ("belantamab", Q3W)),
    _reg("dcep", "DCEP", DEX, ("cyclo_iv", D1_TO_4), ("etoposide", D1_TO_4),
         ("cisplatin", D1_TO_4)),
    _reg("vdt_pace", "VDT-PACE", ("bortezomib", BORTEZOMIB_PACE), DEX, ("thalidomide", ORAL),
         ("cisplatin", D1_TO_4), ("doxorubicin", D1_TO_4), ("cyclo_iv", D1_TO_4),
         ("etoposide", D1_TO_4)),
    _reg("benda_dex", "bendamustine-dexamethasone", ("bendamustine", D1_2), DEX),
    _reg("cyclo_pom_dex", "cyclophosphamide-pomalidomide-dexamethasone",
         ("cyclo_oral", ORAL), POM, DEX),
    _reg("asct", "high-dose melphalan and autologous transplant", ("melphalan", ONCE),
         kind="asct"),
)}

#: Recorded regimens before the index CAR-T, and bridging between apheresis and infusion.
PRIOR_REGIMENS: tuple[str, ...] = ("dara_pom_dex", "kpd", "elo_pom_dex", "isa_pom_dex", "pd")
BRIDGING = {r.key: r for r in (
    _reg("kd", "carfilzomib-dexamethasone", ("carfilzomib", D1_8_15), DEX),
    _reg("dcep", "DCEP", DEX, ("cyclo_iv", D1_TO_4), ("etoposide", D1_TO_4),
         ("cisplatin", D1_TO_4)),
)}

LYMPHODEPLETION = (("cyclo_iv", "cyclophosphamide"), ("fludarabine", "fludarabine"))


def car_t_regimen(product_key: str) -> Regimen:
    """A CAR-T line: lymphodepletion (days -5..-3) then the product on day 0."""
    drug = DRUGS[product_key]
    return Regimen(f"car_t:{product_key}", drug.ingredient, "car_t",
                   (Component("cyclo_iv", ONCE), Component("fludarabine", ONCE),
                    Component(product_key, ONCE)))


# ------------------------------------------------------------------ classification

_SUBCLASS_ORDER: tuple[tuple[str, frozenset[str]], ...] = (
    ("bcma_bispecific", frozenset({"bcma_bispecific"})),
    ("gprc5d_bispecific", frozenset({"gprc5d_bispecific"})),
    ("fcrh5_bispecific", frozenset({"fcrh5_bispecific"})),
)
_AFTER_TRANSPLANT: tuple[tuple[str, frozenset[str]], ...] = (
    ("bcma_adc", frozenset({"bcma_adc"})),
    ("xpo1_inhibitor", frozenset({"xpo1_inhibitor"})),
    ("bcl2_inhibitor", frozenset({"bcl2_inhibitor"})),
    ("anti_cd38", frozenset({"anti_cd38"})),
    ("anti_slamf7", frozenset({"anti_slamf7"})),
    ("chemotherapy", frozenset({"alkylator", "anthracycline", "platinum",
                                "topoisomerase_inhibitor"})),
    ("imid_pi", frozenset({"imid", "pi"})),
)

INGREDIENT_CLASS: dict[str, str] = {d.ingredient: d.drug_class for d in DRUGS.values()}


def subclass_of(ingredients: frozenset[str] | set[str], transplant: bool) -> str:
    """The line's subclass: the first rule of docs/design.md that applies."""
    classes = {INGREDIENT_CLASS[i] for i in ingredients}
    if classes & {"bcma_car_t", "other_car_t"}:
        return "car_t"
    for name, wanted in _SUBCLASS_ORDER:
        if classes & wanted:
            return name
    if transplant:
        return "autologous_transplant"
    for name, wanted in _AFTER_TRANSPLANT:
        if classes & wanted:
            return name
    return "other"


def therapy_class_of(ingredients: frozenset[str] | set[str]) -> str:
    """``tce`` for any bispecific or CAR-T, else ``non_tce`` (docs/design.md)."""
    classes = {INGREDIENT_CLASS[i] for i in ingredients}
    tce = any(c.endswith("_bispecific") or c.endswith("_car_t") for c in classes)
    return "tce" if tce else "non_tce"
