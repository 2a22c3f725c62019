"""The map stage: raw FHIR resources → normalized study tables, using ``mappings/``."""

from connector.codes.codesets import CodeSetError, CodeSets, load_codesets
from connector.mapping.run import MapSummary, run_map
from connector.mapping.unmapped import write_unmapped

__all__ = ["CodeSetError", "CodeSets", "MapSummary", "load_codesets", "run_map",
           "write_unmapped"]
