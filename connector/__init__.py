"""Connector: FHIR R4 → cohort database → outcomes after BCMA CAR-T relapse.

Data flows one way: FHIR source → raw store (``connector.extract``) →
normalized tables (``connector.mapping``) → derived cohort (``connector.cohort``)
→ analysis and report (``connector.analysis``, ``connector.report``).
"""

__version__ = "0.1.0"
