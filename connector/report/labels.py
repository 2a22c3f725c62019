"""Words the reader sees in place of the codes the data and results.json use.

results.json, the CSVs and the database keep their codes (``non_tce``, ``anti_cd38``,
``no_car_t``); scripts rely on them. The report translates each code into the name a
clinician would write in a paper, here in one place, so report.md, report.html and the
figures use the same words. A code without an entry is shown with its underscores
turned into spaces rather than as a code, so a new subclass never leaks snake_case.
"""

from __future__ import annotations

import re

CLASS_NAMES = {"overall": "all", "tce": "TCE", "non_tce": "non-TCE"}

SUBCLASS_NAMES = {
    "car_t": "CAR-T (any target)",
    "bcma_bispecific": "BCMA bispecific antibody",
    "gprc5d_bispecific": "GPRC5D bispecific antibody",
    "fcrh5_bispecific": "FcRH5 bispecific antibody",
    "autologous_transplant": "autologous stem-cell transplant",
    "bcma_adc": "BCMA antibody–drug conjugate",
    "xpo1_inhibitor": "XPO1 inhibitor",
    "bcl2_inhibitor": "BCL-2 inhibitor",
    "anti_cd38": "anti-CD38 antibody",
    "anti_slamf7": "anti-SLAMF7 antibody",
    "chemotherapy": "cytotoxic chemotherapy",
    "imid_pi": "IMiD and/or proteasome inhibitor",
    "other": "other regimen",
}

TCE_KIND_NAMES = {"bispecific": "bispecific antibody", "car_t": "CAR-T"}

EXCLUSION_NAMES = {
    "no_car_t": "no CAR-T infusion recorded",
    "non_bcma_car_t": "CAR-T of another target only (not BCMA)",
    "no_progression": "no progression after the BCMA CAR-T",
}

PROGRESSION_BASIS_NAMES = {
    "imwg_labs": "IMWG laboratory criteria",
    "disease_status": "clinician-recorded disease status",
    "new_line_fallback": "start of the next line (laboratory values could not date it)",
}

# results.json's "definitions" keys, as the term a reader looks up
TERM_NAMES = {
    "orr": "Overall response rate (ORR)",
    "vgpr_or_better": "≥VGPR rate",
    "cr_or_better": "≥CR rate",
    "orr_all_treated": "ORR, all treated",
    "first_line": "First salvage line",
    "pfs": "Progression-free survival (PFS)",
    "time_to_next_treatment": "Time to next treatment (TTNT)",
    "pfs_switch_as_event": "PFS with a switch as event",
    "deaths_without_date": "Deaths without a date",
    "os": "Overall survival (OS)",
    "median": "Median",
    "rate_ci": "Confidence interval of a rate",
    "months": "Months",
    "os_by_ever_tce": "OS by ever receiving TCE",
}

# code-like phrases inside results.json's definition texts, in the reader's words
PHRASES = {
    "os.landmark": "the landmark analysis",
    "os.tce_time_varying_cox": "the time-varying Cox model",
    " (Patient.deceasedBoolean)": "",
    "null when": "none when",
    ">=": "≥",
    "<=": "≤",
    "same denominator as orr": "same denominator as ORR",
}

SNAKE = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b")


def humanize(code: str) -> str:
    """A code nobody named yet, readable: underscores become spaces."""
    return str(code).replace("_", " ")


def name(code: str, names: dict[str, str]) -> str:
    """The reader's name of ``code`` from ``names``, else the code made readable."""
    return names.get(code, humanize(code))


def site_name(code: str) -> str:
    """A site's configured name as a heading word: "site_a" -> "Site A"."""
    words = humanize(code).split()
    if not words:
        return str(code)
    shown = [w.upper() if len(w) == 1 else w for w in words]
    shown[0] = shown[0][:1].upper() + shown[0][1:]
    return " ".join(shown)


def prose(text: str) -> str:
    """A definition written for results.json, in the reader's words (no code tokens)."""
    for code, words in PHRASES.items():
        text = text.replace(code, words)
    return SNAKE.sub(lambda m: humanize(m.group(0)), text)


def plural(count: int, word: str, many: str | None = None) -> str:
    """"1 site", "2 sites", "0 lines": the count with the right form of the word."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
