"""Exports for researchers: Parquet/CSV tables with a data dictionary, and OMOP CDM 5.4.

A stage after derive that reads the normalized and derived tables (and the analysis
layer for the analysis-ready tables). What it writes leaves the site, so it applies
``cohort merge``'s pseudonymization: patient keys, never source ids.
"""

from __future__ import annotations

from connector.export.omop_run import export_omop
from connector.export.run import FILE_FORMATS, ExportSummary, export_files

__all__ = ["FILE_FORMATS", "ExportSummary", "export_files", "export_omop"]
