"""``cohort merge``: load site databases into one cohort database, pseudonymized.

What leaves a site is the normalized layer (site, patient, medication_exposure,
procedure_event, lab_result, condition_record), the derived layer (cohort_patient,
therapy_line, patient_baseline) and the site's data-quality counts
(``SITE_COUNT_TABLES``): never the raw resources, the quarantined input or the run
records. On the way, every row is pseudonymized (``pseudonymize_row``):

* every column naming the patient (``patient.source_id``, ``*.patient_source_id``,
  ``cohort_patient.source_id``, ``therapy_line.source_id``,
  ``patient_baseline.source_id`` and the ``patient_key`` columns) becomes the
  patient's keyed pseudonym, the ``patient_key``;
* resource ids (``*.source_id`` of exposures, procedures, labs, conditions) become
  keyed hashes of site, type and id (``connector.keys.resource_key``);
* text that may carry free text or local identifiers (``display``,
  ``original_value``, ``original_unit``, ``version_id``) is emptied, and so is any
  text column this module does not know (a column added later is dropped until
  someone decides it is safe: see ``POLICIES``);
* with ``date_shift_days=N``, every date of a patient moves by that patient's own
  secret offset in [-N, N], so intervals, and the study's results, are unchanged
  (``birth_year`` is kept, so an age in whole years can move by one);
* the quarantine travels as counts by stage and resource type (``quarantine_count``),
  the unmapped codes as codes and counts (no display, no free-text name), so the
  merged report's data completeness equals the sites' own (``site_counts``).

A merged database records in its ``site`` rows that they are pseudonymized, the
fingerprint of the secret and the shift, so it can itself be merged on (a site
writes a small SQLite "share" file, the center merges the share files) without
hashing twice.

Modules: ``policy`` (what each column becomes), ``counts`` (the data-quality counts
that travel), ``plan`` (whether a site may leave as asked), ``copying`` (one
transaction per site).
"""

from connector.merge.copying import CHUNK, copy_site, merge_sites
from connector.merge.counts import SITE_COUNT_TABLES, SITE_COUNT_TEXT, UNCODED, site_counts
from connector.merge.plan import (
    MergeRefused,
    SiteMerge,
    SitePlan,
    db_url_of,
    display_url,
    plan_site,
    sites_in,
)
from connector.merge.policy import (
    MERGED_TABLES,
    POLICIES,
    SiteKeys,
    TablePolicy,
    column_kinds,
    pseudonymize_row,
    sanitize_row,
    table,
)

__all__ = [
    "CHUNK", "MERGED_TABLES", "POLICIES", "SITE_COUNT_TABLES", "SITE_COUNT_TEXT", "UNCODED",
    "MergeRefused", "SiteKeys", "SiteMerge", "SitePlan", "TablePolicy", "column_kinds",
    "copy_site", "db_url_of", "display_url", "merge_sites", "plan_site", "pseudonymize_row",
    "sanitize_row", "site_counts", "sites_in", "table",
]
