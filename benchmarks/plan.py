"""Sizes of a full run and of a quick one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestCohort:
    label: str
    patients: int | None  # None: the committed default cohort (fixtures/cohort)
    seed: int = 2023


@dataclass(frozen=True)
class Plan:
    name: str
    rest_cohorts: tuple[RestCohort, ...]
    folder_sizes: tuple[int, ...]  # resources, lab-heavy
    validate_sample: int  # resources validated for the baseline rate
    many_patients: int  # (d)
    template_patients: int  # (d): cohort synth patients copied up to many_patients
    export_bytes: int  # (e)
    scope_all_rounds: int = 5  # (a) --scope all: rounds of baseline and extraction


FULL = Plan(
    name="full",
    rest_cohorts=(RestCohort("default cohort", None),
                  RestCohort("2,000-patient cohort", 2000, seed=7)),
    folder_sizes=(10_000, 100_000, 1_000_000),
    validate_sample=30_000,
    many_patients=10_000,
    template_patients=500,
    export_bytes=1_000_000_000,
)

QUICK = Plan(
    name="quick",
    rest_cohorts=(RestCohort("default cohort (quick: 3 patients)", 3, seed=2023),
                  RestCohort("2,000-patient cohort (quick: 6 patients)", 6, seed=7)),
    folder_sizes=(3_000, 6_000, 12_000),
    validate_sample=500,
    many_patients=60,
    template_patients=10,
    export_bytes=2_000_000,
    scope_all_rounds=1,
)
