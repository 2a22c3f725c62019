"""Keys for PostgreSQL advisory locks, shared by the site locks and the migrations.

Both take locks in the same key space, so both must hash names the same way; the
function lives here, below every user, so that db/ never reaches up into lock.py.
"""

from __future__ import annotations

import hashlib


def advisory_key(name: str) -> int:
    """A signed 64-bit key for PostgreSQL advisory locks, stable across processes."""
    digest = hashlib.sha256(f"cohort|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
