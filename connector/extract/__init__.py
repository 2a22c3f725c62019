"""Extraction: bring FHIR resources from a source into the raw store.

Sources: a folder of NDJSON/Bundle files (the embedded default), a FHIR base URL
(REST search), or a site config file (``*.toml``). All feed ``RawStore``.
"""

from connector.extract.run import ExtractSummary
from connector.extract.source import run_extract
from connector.extract.store import RawStore

__all__ = ["ExtractSummary", "RawStore", "run_extract"]
