"""Pseudonymous patient keys.

A patient key is HMAC-SHA256 over ``site|source_id`` with a site secret, so the
key is stable across runs yet reveals nothing of the source identifier to
anyone without the secret. The secret comes from a file named by
``COHORT_KEY_SECRET_FILE`` or from ``COHORT_KEY_SECRET``; without either, an
unkeyed hash is used, which is fine for a single site's own reports but must not
leave the site (``cohort merge`` refuses unkeyed cohorts).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

_UNKEYED = b"unkeyed-local-only"


def load_secret() -> bytes | None:
    """The site's key secret from the environment, or None when none is set."""
    path = os.environ.get("COHORT_KEY_SECRET_FILE")
    if path:
        return Path(path).read_bytes().strip()
    value = os.environ.get("COHORT_KEY_SECRET")
    return value.encode() if value else None


def patient_key(site: str, source_id: str, secret: bytes | None = None) -> str:
    """A 32-hex-digit pseudonymous key for one patient at one site."""
    digest = hmac.new(secret or _UNKEYED, f"{site}|{source_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]
