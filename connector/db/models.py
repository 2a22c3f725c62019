"""Table definitions for the three layers of the cohort database.

Raw layer (written by ``connector.extract``): the FHIR resources as fetched,
with provenance, one row per (site, type, id) holding the newest version.

Normalized layer (written by ``connector.mapping``): one row per clinical event
in study terms (an exposure to an ingredient, a procedure, a lab value in its
canonical unit). Each row keeps its provenance and a natural uniqueness key, so
a load can be repeated without creating duplicates.

Derived layer (written by ``connector.cohort``): the study's units of analysis,
one row per patient and one per line of therapy after CAR-T progression.

Dates are ``datetime.date`` (day precision is what the study needs); instants
from servers are kept as the text the server sent.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from connector.db.clock import utcnow as _utcnow

# --------------------------------------------------------------------------- raw


class RawResource(SQLModel, table=True):
    """A FHIR resource as received, newest version only."""

    __tablename__ = "raw_resource"
    __table_args__ = (
        UniqueConstraint("site", "resource_type", "resource_id"),
        # what the map stage reads (whole bodies, not deleted) and what it counts
        # (trimmed), found in the index and read in storage order
        Index("ix_raw_resource_kept", "site", "resource_type", "trimmed", "deleted"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site: str
    resource_type: str
    resource_id: str
    version_id: str | None = None
    last_updated: str | None = None
    fetched_at: dt.datetime = Field(default_factory=_utcnow)
    content_hash: str
    source: str = ""
    deleted: bool = False
    #: Set when only the resource's code was kept (an Observation no lab code set maps; see
    #: connector/codes/labfilter.py): the digest of the lab code sets that decided it. NULL
    #: for a whole body. ``content_hash`` is always that of the whole resource.
    trimmed: str | None = None
    body: str = Field(sa_column=Column(Text, nullable=False))


class RawContact(SQLModel, table=True):
    """The latest day of each patient's Observations that are stored as their code only.

    Written by the extract (connector/extract/contact.py) for the Observations it trims or,
    with the DuckDB loader, only counts; read by the map stage into the last contact.
    ``patient_ref`` is the Observation's ``subject.reference`` as sent.
    """

    __tablename__ = "raw_contact"
    __table_args__ = (UniqueConstraint("site", "patient_ref"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str
    patient_ref: str
    last_day: str  # YYYY-MM-DD


class RawCodeCount(SQLModel, table=True):
    """Observations no lab code maps, loaded by the DuckDB path: one count per code and file.

    The DuckDB load (``connector/extract/duck.py``) does not write a row for each such
    Observation, only how many of a file's Observations carry each code. ``body`` is
    the same trimmed body ``raw_resource`` would hold (``{"code", "resourceType"}``),
    so the unmapped-code report and the map stage's counts read both alike. A file
    loaded again replaces its counts.
    """

    __tablename__ = "raw_code_count"
    __table_args__ = (UniqueConstraint("site", "file", "body"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str
    #: the file the counts come from (relative to the source root), which a reload replaces
    file: str
    source: str = ""
    resource_type: str = "Observation"
    #: the digest of the lab code sets that decided these codes were not study labs
    trimmed: str
    n: int
    body: str = Field(sa_column=Column(Text, nullable=False))
    loaded_at: dt.datetime = Field(default_factory=_utcnow)


class Quarantine(SQLModel, table=True):
    """Input that could not be used, kept whole with the reason, never dropped."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("site", "stage", "content_hash", "reason"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    stage: str  # extract | map | derive
    resource_type: str | None = None
    resource_id: str | None = None
    reason: str
    source: str = ""
    content_hash: str
    raw: str = Field(sa_column=Column(Text, nullable=False))
    created_at: dt.datetime = Field(default_factory=_utcnow)


class QuarantineCount(SQLModel, table=True):
    """How many resources a site quarantined, by stage and resource type, written by
    ``cohort merge`` in place of the quarantine itself: a merged database reports the
    site's quarantine (data completeness) without the bodies, ids or reasons, which may
    quote the input. Empty in a site's own database."""

    __tablename__ = "quarantine_count"
    __table_args__ = (UniqueConstraint("site", "stage", "resource_type"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    stage: str  # extract | map | derive
    resource_type: str = ""  # a FHIR type name; "" when the input had none
    n: int


class ExtractRun(SQLModel, table=True):
    """One extraction run: when, from where, what it fetched, what went wrong."""

    __tablename__ = "extract_run"

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    source: str  # folder path or base URL; never credentials
    mode: str = "folder"  # folder | rest | bulk
    started_at: dt.datetime = Field(default_factory=_utcnow)
    finished_at: dt.datetime | None = None
    status: str = "running"  # running | ok | failed
    counts_json: str = "{}"  # {"Patient": {"read": n, "new": n, "updated": n, ...}, ...}
    retries: int = 0
    errors: int = 0
    message: str = ""


class SyncState(SQLModel, table=True):
    """Incremental-extraction watermark per site, resource type and mode."""

    __tablename__ = "sync_state"
    __table_args__ = (UniqueConstraint("site", "resource_type", "mode"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str
    resource_type: str
    mode: str = "rest"
    watermark: str  # the server's own instant, as text
    updated_at: dt.datetime = Field(default_factory=_utcnow)


class BulkJob(SQLModel, table=True):
    """One Bulk Data ``$export`` job: what a rerun needs to resume it (connector.extract.bulk)."""

    __tablename__ = "bulk_job"

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    request_key: str = ""  # level, group, types, filters: a rerun resumes only the same request
    kickoff_url: str = ""
    kickoff_method: str = "GET"
    kickoff_params: str = "[]"  # JSON [[name, value], ...] as sent; never credentials
    since: str | None = None  # the _since sent, if any
    status_url: str | None = None
    next_url: str | None = None  # the next manifest page still to read, if the server pages
    transaction_time: str | None = None
    manifest_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    state: str = "kickoff"  # kickoff | polling | downloading | loaded | done | failed | abandoned
    message: str = ""
    run_id: int | None = None  # the extract_run that started it
    created_at: dt.datetime = Field(default_factory=_utcnow)
    updated_at: dt.datetime = Field(default_factory=_utcnow)


class BulkFile(SQLModel, table=True):
    """One file of an export's manifest and whether it is in the raw store yet."""

    __tablename__ = "bulk_file"
    __table_args__ = (UniqueConstraint("job_id", "url"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="bulk_job.id", index=True)
    kind: str = "output"  # output | error | deleted
    resource_type: str = ""
    url: str
    expected_count: int | None = None  # the manifest's count, when it gives one
    lines_loaded: int = 0
    bytes_downloaded: int = 0
    done: bool = False  # set in the same transaction that stored its lines
    loaded_at: dt.datetime | None = None


# -------------------------------------------------------------------- normalized


class Site(SQLModel, table=True):
    __tablename__ = "site"

    name: str = Field(primary_key=True)
    loaded_at: dt.datetime = Field(default_factory=_utcnow)
    # Set by ``cohort merge`` (connector.merge) on the rows it writes:
    pseudonymized: bool = False  # source ids replaced by keys; safe to leave the site
    key_fingerprint: str | None = None  # of the site secret; None = unkeyed
    date_shift_days: int = 0  # dates shifted per patient within ±N days; 0 = not shifted
    merged_at: dt.datetime | None = None


class UnmappedCode(SQLModel, table=True):
    """A code seen in a study resource type that no code set maps, counted by the map stage.

    ``cohort map --unmapped`` and the report's unmapped section read these counts
    (connector/mapping/unmapped.py), so they never read the raw store. A map of the
    site replaces its rows. A coding without a code is counted by its normalized
    ``text``; ``display`` is one way the site spelled it.
    """

    __tablename__ = "unmapped_code"

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    resource_type: str
    system: str
    code: str
    text: str
    display: str
    n: int


class UnmappedCount(SQLModel, table=True):
    """Per site, at its last map: resources of study types whose code matched nothing, and
    of them the Observations the raw store keeps as their code only (or only counts)."""

    __tablename__ = "unmapped_count"

    site: str = Field(primary_key=True)
    resources: int
    stored_as_code: int
    mapped_at: dt.datetime = Field(default_factory=_utcnow)


class Patient(SQLModel, table=True):
    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("site", "source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    source_id: str  # FHIR Patient id at the site; stays at the site
    patient_key: str = Field(index=True)  # pseudonymous, see connector.keys
    birth_year: int | None = None
    sex: str | None = None  # FHIR administrative gender
    death_date: dt.date | None = None
    deceased: bool = False
    version_id: str | None = None
    #: the latest day of any resource of the patient the map stage read, mapped or not
    #: (an unmapped drug, a procedure the study ignores...): last contact is not only labs
    last_record_date: dt.date | None = None


class MedicationExposure(SQLModel, table=True):
    """One administration (or dispensed course) of one ingredient."""

    __tablename__ = "medication_exposure"
    __table_args__ = (
        UniqueConstraint("site", "patient_source_id", "ingredient", "start_date"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    patient_source_id: str = Field(index=True)
    source_type: str  # MedicationAdministration | MedicationStatement | ...
    source_id: str
    version_id: str | None = None
    ingredient: str  # lower-case generic name, e.g. "teclistamab"
    drug_class: str  # see mappings/drug_classes.csv, e.g. "bcma_bispecific"
    start_date: dt.date
    end_date: dt.date | None = None
    status: str | None = None
    code_system: str | None = None
    code: str | None = None
    display: str | None = None


class ProcedureEvent(SQLModel, table=True):
    """A procedure in study terms: CAR-T infusion, apheresis, transplant, radiation."""

    __tablename__ = "procedure_event"
    __table_args__ = (
        UniqueConstraint("site", "patient_source_id", "category", "performed_date", "product"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    patient_source_id: str = Field(index=True)
    source_type: str = "Procedure"
    source_id: str
    version_id: str | None = None
    category: str  # car_t_administration | apheresis | auto_transplant | allo_transplant | ...
    product: str = ""  # ingredient when the code names it (e.g. "idecabtagene vicleucel"), else ""
    performed_date: dt.date
    end_date: dt.date | None = None
    status: str | None = None
    code_system: str | None = None
    code: str | None = None
    display: str | None = None


class LabResult(SQLModel, table=True):
    """A lab value in its analyte's canonical unit, with the value as sent."""

    __tablename__ = "lab_result"
    __table_args__ = (
        UniqueConstraint("site", "patient_source_id", "analyte", "effective_date"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    patient_source_id: str = Field(index=True)
    source_id: str
    version_id: str | None = None
    analyte: str  # see mappings/labs.csv, e.g. "serum_m_protein"
    effective_date: dt.date
    value: float | None = None  # canonical unit
    unit: str | None = None  # canonical unit
    value_code: str | None = None  # coded results: IFE "negative"/"positive", disease status
    original_value: str | None = None
    original_unit: str | None = None


class ConditionRecord(SQLModel, table=True):
    """A Condition in study terms: a baseline finding (high-risk cytogenetics,
    extramedullary disease) as the site recorded it (mappings/conditions.csv)."""

    __tablename__ = "condition_record"
    __table_args__ = (
        UniqueConstraint("site", "patient_source_id", "finding", "onset_date", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    patient_source_id: str = Field(index=True)
    source_type: str = "Condition"
    source_id: str
    version_id: str | None = None
    finding: str  # del_17p | t_4_14 | t_14_16 | gain_1q | extramedullary
    status: str  # present | absent (verificationStatus refuted) | uncertain
    onset_date: dt.date  # onset, else the date recorded
    code_system: str | None = None
    code: str | None = None
    display: str | None = None


# ----------------------------------------------------------------------- derived


class CohortPatient(SQLModel, table=True):
    """Every patient seen, with why they are in or out of the study cohort."""

    __tablename__ = "cohort_patient"
    __table_args__ = (UniqueConstraint("site", "source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    source_id: str
    patient_key: str
    in_cohort: bool
    exclusion_reason: str | None = None  # no_car_t | non_bcma_car_t | no_progression | ...
    index_product: str | None = None
    index_date: dt.date | None = None
    progression_date: dt.date | None = None
    progression_basis: str | None = None  # imwg_labs | disease_status | new_line_fallback
    death_date: dt.date | None = None
    last_contact_date: dt.date | None = None
    birth_year: int | None = None
    sex: str | None = None
    deceased: bool = False  # death known: a date, or Patient.deceasedBoolean without one


class TherapyLine(SQLModel, table=True):
    """One line of therapy after progression on BCMA CAR-T."""

    __tablename__ = "therapy_line"
    __table_args__ = (UniqueConstraint("site", "source_id", "line"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    source_id: str
    patient_key: str
    line: int
    start_date: dt.date
    end_date: dt.date | None = None
    drugs: str  # ";"-separated lower-case ingredients, sorted
    therapy_class: str  # tce | non_tce
    subclass: str
    best_response: str  # sCR CR VGPR PR MR SD PD NE
    response_note: str = ""  # e.g. "CR not determinable: no immunofixation"
    pfs_event_date: dt.date | None = None
    pfs_censor_date: dt.date | None = None
    ttnt_event_date: dt.date | None = None  # next line's start, or death
    ttnt_censor_date: dt.date | None = None  # last contact when neither


class PatientBaseline(SQLModel, table=True):
    """Table 1 covariates of one in-cohort patient at progression after CAR-T.

    ``None`` means not recorded: nothing is guessed. Findings are "present",
    "absent" (a refuted Condition) or None.
    """

    __tablename__ = "patient_baseline"
    __table_args__ = (UniqueConstraint("site", "source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    source_id: str
    prior_lines: int | None = None  # regimens recorded before the CAR-T apheresis
    del_17p: str | None = None
    t_4_14: str | None = None
    t_14_16: str | None = None
    gain_1q: str | None = None
    extramedullary: str | None = None
    riss_stage: str | None = None  # I | II | III
    ldh: float | None = None  # U/L, the last value in the window before progression
    ldh_elevated: bool | None = None  # above the upper limit of normal in mappings/rules.toml
    #: median days between successive M-protein or free-light-chain results from
    #: progression on (data completeness); None with fewer than two such dates
    lab_interval_days: float | None = None
