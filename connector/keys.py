"""Pseudonymous patient keys, resource keys and per-patient date shifts.

A patient key is HMAC-SHA256 over ``site|source_id`` with a site secret, so the
key is stable across runs yet reveals nothing of the source identifier to
anyone without the secret. Source ids are guessable (often sequential), so the
secret is what protects them: it must be long and random, and it never leaves
the site. It comes from the file named by ``COHORT_KEY_SECRET_FILE`` (or, for
tests and notebooks, from ``COHORT_KEY_SECRET``), never from the command line,
where it would show in ``ps`` and shell history.

Without a secret an unkeyed hash is used. That is fine for a site's own reports
but anyone can recompute it from a guessed id, so ``cohort merge`` refuses such
keys unless ``--allow-unkeyed`` (see docs/operations.md).

The same secret drives two more derivations, each under its own label so the
outputs are unrelated: a key for each source resource id, and an optional date
offset per patient (``date_offset``), the same for every row of that patient,
so intervals, and with them every result of the study, are unchanged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from pathlib import Path

_UNKEYED = b"unkeyed-local-only"
#: Shortest secret accepted from a file: 128 bits, as from ``openssl rand -hex 32``.
MIN_SECRET_BYTES = 16


class SecretError(ValueError):
    """The configured secret cannot be used (missing file, empty, too short)."""


def load_secret() -> bytes | None:
    """The site's key secret from the environment, or None when none is set."""
    path = os.environ.get("COHORT_KEY_SECRET_FILE")
    if path:
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as exc:
            raise SecretError(f"COHORT_KEY_SECRET_FILE cannot be read: "
                              f"{type(exc).__name__}") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise SecretError(f"the secret in COHORT_KEY_SECRET_FILE is shorter than "
                              f"{MIN_SECRET_BYTES} bytes; make one with "
                              f"`openssl rand -hex 32 > FILE`")
        return secret
    value = os.environ.get("COHORT_KEY_SECRET")
    return value.encode() if value else None


def _digest(secret: bytes | None, message: str) -> bytes:
    return hmac.new(secret or _UNKEYED, message.encode(), hashlib.sha256).digest()


def patient_key(site: str, source_id: str, secret: bytes | None = None) -> str:
    """A 32-hex-digit pseudonymous key for one patient at one site."""
    return _digest(secret, f"{site}|{source_id}").hex()[:32]


def is_keyed(site: str, source_id: str, key: str, secret: bytes | None) -> bool:
    """Whether ``key`` was made from this patient with exactly this secret (None: unkeyed)."""
    return hmac.compare_digest(key, patient_key(site, source_id, secret))


def resource_key(site: str, resource_type: str, resource_id: str,
                 secret: bytes | None = None) -> str:
    """A 32-hex-digit key for a source resource id, unlinkable to the patient key."""
    return _digest(secret, f"resource|{site}|{resource_type}|{resource_id}").hex()[:32]


def key_fingerprint(secret: bytes | None) -> str | None:
    """A short public tag of the secret: equal tags, same secret. None when unkeyed.

    Lets the central database tell whether two loads of a site used the same
    secret (so its keys line up) without holding the secret.
    """
    if not secret:
        return None
    return _digest(secret, "fingerprint").hex()[:16]


def date_offset(site: str, source_id: str, secret: bytes | None, max_days: int) -> int:
    """The patient's date shift in days, uniform in [-max_days, max_days]; 0 when off.

    Needs the secret: an offset anyone could recompute would undo itself.
    """
    if max_days <= 0:
        return 0
    if not secret:
        raise SecretError("date shifting needs a key secret (COHORT_KEY_SECRET_FILE)")
    value = int.from_bytes(_digest(secret, f"dateshift|{site}|{source_id}")[:8], "big")
    return value % (2 * max_days + 1) - max_days


def shift_date(value: dt.date | None, days: int) -> dt.date | None:
    """``value`` moved by ``days``; None stays None."""
    if value is None or days == 0:
        return value
    return value + dt.timedelta(days=days)
