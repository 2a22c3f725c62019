"""Every number the synthetic cohort generator uses, in one place.

Each field says whether it is *published* (Van Oekelen et al., Blood 2023, see
/work/shared/reference/study.md) or an *assumption* made so the cohort looks
plausible. docs/synthetic.md lists them all; a test checks that it does. The
values are copied verbatim into ``ground_truth.json["parameters"]``, so a
cohort always carries the settings that made it.

Durations are days unless the name says otherwise. Probabilities are 0..1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def _d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


@dataclass(frozen=True)
class SynthParams:
    """Settings of the generator; the defaults reproduce the committed fixture."""

    # -- calendar (assumptions) -------------------------------------------------------
    #: The study's era: BCMA CAR-T in trials from ~2017, data cutoff in 2022 (published
    #: online Nov 2022). Index dates are uniform in the range, but a study patient must
    #: progress and start a salvage line before the cutoff, so in practice study
    #: patients are infused by ~16 months before it (2020-12). The range start sets
    #: the follow-up: with TCE available mostly late in the era (``tce_availability_*``)
    #: it is calibrated to the published median follow-up of the TCE subgroup, 21.3
    #: months (reverse Kaplan-Meier from progression); the whole cohort is followed
    #: longer (~24 months), which leaves room for the published ~3 lines per patient.
    data_cutoff: dt.date = _d("2022-03-31")
    index_date_min: dt.date = _d("2017-07-01")
    index_date_max: dt.date = _d("2021-06-30")
    #: ICD-10-PCS CAR-T codes exist only from these dates (codes.md [S1]); CPT Cat I
    #: 38225/38228 replaced Cat III 0537T/0540T on this date (codes.md [S2, S12]).
    icd10pcs_ide_cel_from: dt.date = _d("2021-10-01")
    icd10pcs_cilta_cel_from: dt.date = _d("2022-02-28")
    cpt_cat1_from: dt.date = _d("2025-01-01")
    #: Patients still in remission at the cutoff were infused in this last part of the
    #: index range (and at least 180 days before the cutoff).
    no_progression_index_window_days: int = 548

    # -- patients (assumptions) -------------------------------------------------------
    age_at_index_mean: float = 64.0
    age_at_index_sd: float = 5.5
    age_at_index_min: int = 55
    age_at_index_max: int = 75
    p_female: float = 0.42
    p_ide_cel: float = 0.55  # index product split; not published (study.md)
    p_flc_only: float = 0.15  # free-light-chain-only disease
    p_kappa: float = 0.65  # involved light chain is kappa (else lambda)

    # -- before the index CAR-T (assumptions) -------------------------------------------
    p_two_prior_regimens: float = 0.5  # else one recorded prior regimen
    prior_regimen_days: tuple[int, int] = (90, 200)
    p_bridging: float = 0.65
    apheresis_to_infusion_days: tuple[int, int] = (35, 56)
    lymphodepletion_days: tuple[int, ...] = (-5, -4, -3)
    labs_before_index_days: tuple[int, int] = (90, 150)

    # -- response to the index CAR-T and progression (assumptions) ---------------------
    post_car_t_response: dict[str, float] = field(default_factory=lambda: {
        "CR": 0.55, "VGPR": 0.30, "PR": 0.15})
    #: Time from CAR-T infusion to progression: log-normal with this median (about
    #: 9 months) and log-sd; never earlier than the minimum. Not published.
    car_t_to_progression_median_days: float = 274.0
    car_t_to_progression_sigma: float = 0.7
    car_t_to_progression_min_days: int = 90
    p_disease_status_obs: float = 0.20  # mCODE "worsened" Observation at progression

    # -- lab schedule (assumptions; the brief's "every 21-42 days") ----------------------
    assessment_interval_days: tuple[int, int] = (21, 42)
    first_assessment_after_start_days: tuple[int, int] = (21, 35)
    confirm_after_pd_days: tuple[int, int] = (7, 21)
    #: A fresh baseline is drawn on cycle 1 day 1 when the last one is older than this.
    baseline_max_age_days: int = 14
    p_context_labs: float = 0.8  # hemoglobin/creatinine drawn with an assessment
    serum_baseline_g_dl: tuple[float, float] = (1.5, 4.0)
    flc_only_baseline_dflc_mg_l: tuple[float, float] = (350.0, 1500.0)
    serum_floor_at_line_start_g_dl: float = 1.3  # ≥ 1.2 g/dL at every line start
    flc_floor_at_line_start_mg_l: float = 320.0  # involved FLC ≥ 300 mg/L at line start
    marrow_plasma_cells_in_cr_pct: float = 2.0

    # -- salvage lines after progression ------------------------------------------------
    #: Relapsed refractory disease is re-treated promptly (the next regimen is usually
    #: planned while the progression is being confirmed).
    line_start_after_confirm_days: tuple[int, int] = (0, 14)
    min_days_between_line_starts: int = 45  # > the 30-day regimen window
    car_t_manufacturing_days: tuple[int, int] = (30, 50)  # apheresis → lymphodepletion
    transplant_start_after_confirm_days: tuple[int, int] = (14, 45)
    maintenance_start_after_transplant_days: tuple[int, int] = (60, 100)
    p_lenalidomide_maintenance: float = 0.7
    #: Lenalidomide maintenance after the index CAR-T, started in response (no progression)
    #: and given until the progression is confirmed (issue 15: it must not date progression).
    p_post_car_t_maintenance: float = 0.12
    #: A line that reached CR whose immunofixation or marrow was never sent: CR cannot be
    #: confirmed, the truth is VGPR (issue 15 item 7; its own random stream)
    p_cr_evidence_missing: float = 0.25
    #: an antibody (dara, isa, elo) added to Pd 35-55 days into the line, without
    #: progression (one line by IMWG; issue 15 item 5; its own random stream)
    p_drug_added_in_line: float = 0.3
    #: induction (carfilzomib-dexamethasone) before high-dose melphalan + ASCT, one line by
    #: IMWG (issue 15 item 5; its own random stream)
    p_induction_before_asct: float = 0.5
    #: the next line started on the day a PD reading is drawn (before that day's dose), its
    #: confirmation drawn later on the new line (issue 15 item 3: the reading counts for the
    #: line it ends; its own random stream)
    p_next_line_on_pd_reading: float = 0.15
    #: bridging between the apheresis and a salvage CAR-T, part of the CAR-T line (IMWG;
    #: issue 15 item 5; its own random stream)
    p_bridging_salvage_car_t: float = 0.5
    induction_days: tuple[int, int] = (60, 110)
    post_car_t_maintenance_start_days: tuple[int, int] = (60, 150)
    #: A line must start at least this long before the cutoff (so that it has two
    #: assessments); otherwise the patient is followed without a new line.
    min_follow_up_for_new_line_days: int = 90
    max_lines: int = 10  # published range 1-10
    #: After a confirmed progression on a line, the chance of another line (else best
    #: supportive care), for most patients. With the three parameters below, calibrated
    #: so lines per patient have median 2, range 1-10 and a mean near the published
    #: 3.0 (237 lines / 79 patients) with OS ~18 months.
    p_next_line: float = 0.75
    #: Patient-level tolerance of salvage therapy: this fraction of patients is fit
    #: enough to go through line after line (another line after a progression with
    #: ``p_next_line_tolerant``; death hazard on a line times ``tolerant_hazard_ratio``,
    #: 1 = no survival advantage of its own). Makes the long tail of lines per patient
    #: (published range 1-10) without lengthening everyone's survival. Assumption.
    p_lines_tolerant: float = 0.40
    p_next_line_tolerant: float = 0.97
    tolerant_hazard_ratio: float = 1.0
    #: PFS of a non-TCE (or transplant) line shrinks with the line number: its drawn
    #: time to progression is multiplied by this factor for salvage line 1, 2, ...
    #: (last value repeats; line 1 keeps the calibrated first-line PFS). Assumption:
    #: real-world refractory myeloma responds ever more briefly to each later line.
    pfs_line_factor: tuple[float, ...] = (1.0, 0.8, 0.65, 0.55, 0.5)
    #: Chance that a line is T-cell engaging, by line number (last value repeats), when
    #: TCE is fully available (see below). Calibrated to the published 44% of patients
    #: ever receiving TCE and, through the share of TCE first lines, to the first-line
    #: ORR of 43.4%.
    p_tce_by_line: tuple[float, ...] = (0.46, 0.33, 0.25, 0.2)
    #: TCE availability by calendar date: bispecifics and second CAR-T were mostly in
    #: trials from 2019 (teclistamab approved Oct 2022). The chance of a TCE line is
    #: ``p_tce_by_line`` times a factor rising linearly from ``tce_early_factor`` on the
    #: first date to 1 on the second (constant outside). Later lines (and later
    #: patients) get TCE more, so the TCE subgroup has a shorter follow-up than the rest.
    tce_availability_ramp: tuple[dt.date, dt.date] = (_d("2019-07-01"), _d("2021-07-01"))
    tce_early_factor: float = 0.2

    # -- response and PFS per line (class-level values are assumptions) -----------------
    #: Calibrated so first-line ORR ≈ 43% (published 43.4%) and TCE ORR ≈ 90% (published
    #: 91.4%).
    response_probs: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "tce": {"CR": 0.34, "VGPR": 0.32, "PR": 0.25, "MR": 0.02, "SD": 0.04, "PD": 0.03},
        "asct": {"CR": 0.08, "VGPR": 0.27, "PR": 0.35, "MR": 0.07, "SD": 0.13, "PD": 0.10},
        "non_tce": {"CR": 0.01, "VGPR": 0.05, "PR": 0.20, "MR": 0.13, "SD": 0.27,
                    "PD": 0.34},
    })
    #: Median days from line start to progression (log-normal), by class and response.
    #: The assessment schedule adds a floor (a response must hold for two assessments).
    #: Calibrated to the published first-line median PFS of 3.5 months.
    pfs_median_days: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "tce": {"CR": 540, "VGPR": 420, "PR": 240, "MR": 120, "SD": 90, "PD": 0},
        "asct": {"CR": 420, "VGPR": 360, "PR": 240, "MR": 150, "SD": 110, "PD": 0},
        "non_tce": {"CR": 300, "VGPR": 240, "PR": 150, "MR": 100, "SD": 60, "PD": 0},
    })
    pfs_sigma: float = 0.7
    #: Death hazard while on a line, per month, by class (competes with progression).
    #: With best supportive care below, calibrated to the published median OS of ~18
    #: months from progression after CAR-T, and better OS after TCE (not reached).
    death_hazard_per_month: dict[str, float] = field(default_factory=lambda: {
        "tce": 0.008, "asct": 0.015, "non_tce": 0.026})
    #: High tumour burden at a line start (serum M-protein or dFLC at or above these)
    #: multiplies that line's death hazard; keeps values from compounding unrealistically
    #: over many non-responding lines.
    high_burden_serum_g_dl: float = 6.0
    high_burden_dflc_mg_l: float = 3000.0
    high_burden_hazard_ratio: float = 4.0
    #: No marker value exceeds these (serum M-protein, dFLC): untreated disease stops
    #: growing there, progressions are drawn below them, and a line starting so high
    #: that its nadir could not progress clearly below them turns a drawn SD or PD into
    #: MR (or MR into PR; FLC-only disease: PR). Real M-protein rarely exceeds ~10 g/dL,
    #: whereas IMWG progression (+25 % each time) would compound without bound over
    #: many refractory lines.
    burden_ceiling_serum_g_dl: float = 7.5
    burden_ceiling_dflc_mg_l: float = 6000.0
    #: Survival after the last progression when no further line is given.
    bsc_survival_median_days: float = 60.0
    bsc_survival_sigma: float = 0.8

    # -- regimen choice (assumptions) ----------------------------------------------------
    #: Relative weights within each class; a regimen is drawn among those allowed
    #: (not given before, brings a new drug other than dexamethasone).
    tce_weights: dict[str, float] = field(default_factory=lambda: {
        "teclistamab": 0.33, "elranatamab": 0.10, "linvoseltamab": 0.07,
        "talquetamab": 0.20, "cevostamab": 0.08, "car_t": 0.22})
    non_tce_weights: dict[str, float] = field(default_factory=lambda: {
        "dara_pom_dex": 0.09, "isa_pom_dex": 0.06, "kpd": 0.10, "pd": 0.07,
        "elo_pom_dex": 0.07, "svd": 0.08, "sd": 0.05, "ven_dex": 0.05,
        "belantamab": 0.07, "dcep": 0.08, "vdt_pace": 0.06, "benda_dex": 0.05,
        "cyclo_pom_dex": 0.08, "asct": 0.04})
    p_daratumumab_sc: float = 0.6  # Darzalex Faspro rather than IV

    # -- baseline covariates for Table 1 (assumptions; issue 16) ------------------------
    #: Drawn per study patient from their own random stream, independently of the course
    #: (so the calibrated outcomes do not move; subgroup hazard ratios near 1 are expected).
    #: Share of patients whose myeloma FISH panel is on record (as Conditions: confirmed
    #: when found, refuted when looked for and not found); the rest have none (not recorded).
    p_fish_recorded: float = 0.8
    #: Chance of each abnormality when the panel is on record (assumptions of the order
    #: seen in relapsed/refractory myeloma series; not from the study).
    p_del_17p: float = 0.2
    p_t_4_14: float = 0.15
    p_t_14_16: float = 0.05
    p_gain_1q: float = 0.4
    #: Extramedullary disease recorded (ICD-10-CM C90.2x Condition) before progression.
    p_extramedullary: float = 0.25
    #: R-ISS stage at diagnosis recorded (an Observation), and the stage mix when it is.
    p_riss_recorded: float = 0.7
    riss_probs: dict[str, float] = field(default_factory=lambda: {
        "I": 0.25, "II": 0.55, "III": 0.2})
    #: An LDH result within days of progression (lognormal, U/L).
    p_ldh_recorded: float = 0.85
    ldh_median: float = 220.0
    ldh_sigma: float = 0.35

    # -- noise (only with noise=True; assumptions) -------------------------------------
    noise_no_car_t_fraction: float = 0.04  # ~3 of 79
    noise_non_bcma_car_t_fraction: float = 0.0127  # 1 of 79
    noise_no_progression_fraction: float = 0.045  # ~4 of 79
    noise_missing_labs_fraction: float = 0.02  # ~2 of 79, progression by new line
    noise_duplicates_fraction: float = 0.05  # same MedicationAdministration, new id
    noise_corrected_fraction: float = 0.02  # Observation re-sent as version 2
    noise_data_absent_fraction: float = 0.05  # Observation with dataAbsentReason
    noise_entered_in_error_fraction: float = 0.0127  # a phantom teclistamab dose
    noise_not_done_fraction: float = 0.0127  # a dose recorded as not-done
    #: a death sent as Patient.deceasedBoolean = true, without its date
    noise_death_without_date_fraction: float = 0.04

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (dates as ISO text, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = [v.isoformat() if isinstance(v, dt.date) else v for v in value]
            out[f.name] = value
        return out


#: Where each published figure comes from; everything else in SynthParams is assumed.
PUBLISHED: dict[str, str] = {
    "n_patients": "79 patients progressing after BCMA CAR-T (Van Oekelen 2023)",
    "n_sites": "2 centres (Mount Sinai, MSKCC)",
    "max_lines": "salvage lines per patient: range 1-10",
    "p_next_line": "calibrated to 237 lines in 79 patients, median 2",
    "p_lines_tolerant": "calibrated to 237 lines in 79 patients, range 1-10",
    "p_next_line_tolerant": "calibrated to 237 lines in 79 patients, range 1-10",
    "p_tce_by_line": "calibrated to 35/79 (44.3%) ever receiving TCE",
    "index_date_min": "calibrated to the TCE subgroup's median follow-up, 21.3 months",
    "response_probs": "calibrated to first-line ORR 43.4% and TCE ORR 91.4%",
    "pfs_median_days": "calibrated to first-line median PFS 3.5 months",
    "death_hazard_per_month": "calibrated to median OS 17.9 months from relapse",
    "bsc_survival_median_days": "calibrated to median OS 17.9 months from relapse",
}

DEFAULT_PARAMS = SynthParams()
