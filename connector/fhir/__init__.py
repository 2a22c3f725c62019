"""FHIR transport: HTTP session, auth, retries, rate limit, paging, capability checks.

``FhirClient.for_site(load_site_config("site.toml"))`` gives a client for one
server; ``connector.extract.remote`` uses it to fill the raw store.
"""

from connector.fhir.client import Capabilities, FhirClient, Page
from connector.fhir.config import SiteConfig, config_for_url, load_site_config
from connector.fhir.errors import (
    AuthError,
    CapabilityError,
    FhirSourceError,
    HttpError,
    RetryExhausted,
    SiteConfigError,
)

__all__ = ["AuthError", "Capabilities", "CapabilityError", "FhirClient", "FhirSourceError",
           "HttpError", "Page", "RetryExhausted", "SiteConfig", "SiteConfigError",
           "config_for_url", "load_site_config"]
