"""Errors of the FHIR transport, kept free of heavy imports so the CLI can catch them cheaply.

Every message names resource types, HTTP statuses and the server's own
OperationOutcome text, never a patient id, a token or a secret: they end up on a
terminal and in the run record.
"""

from __future__ import annotations


class SiteConfigError(ValueError):
    """The site configuration is unusable (CLI exit code 2)."""


class FhirSourceError(Exception):
    """The FHIR source could not be used as needed (CLI exit code 3)."""


class HttpError(FhirSourceError):
    """A request failed with a status that is not worth retrying (or no longer)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(FhirSourceError):
    """Credentials were refused, or no token could be obtained."""


class CapabilityError(FhirSourceError):
    """The server does not support a resource type or search parameter the run needs."""


class RetryExhausted(HttpError):
    """Transient failures went on past the attempts or the run's retry budget."""


class PagingError(HttpError):
    """A search could not be paged to its end (an expired or looping next link)."""


class ExtractError(FhirSourceError):
    """Some searches of a run failed; the data fetched so far is kept, no watermark moves."""
