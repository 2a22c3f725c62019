"""Obviously synthetic names and addresses, made from syllables.

They look like identifying data (so the privacy checks have something to catch)
but belong to nobody.
"""

from __future__ import annotations

import random

_ONSETS = ("b", "br", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s",
           "t", "v", "w", "z", "th", "st", "gr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "n", "r", "l", "s", "th", "nd", "rk", "tt", "m")
_STREET_TYPES = ("Street", "Avenue", "Road", "Lane", "Court", "Way", "Place")
_STATES = ("NY", "NJ", "CT", "PA", "MA")


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
             for _ in range(syllables)]
    return "".join(parts).capitalize()


def person_name(rng: random.Random) -> tuple[str, str]:
    """(given, family)."""
    return _word(rng, rng.randint(1, 2)), _word(rng, 2)


def address(rng: random.Random) -> dict[str, object]:
    return {
        "use": "home",
        "line": [f"{rng.randint(1, 9899)} {_word(rng, 2)} {rng.choice(_STREET_TYPES)}"],
        "city": _word(rng, 2) + rng.choice(("ville", "ton", " Falls", " Park", "field")),
        "state": rng.choice(_STATES),
        "postalCode": f"{rng.randint(10, 99)}{rng.randint(0, 999):03d}",
        "country": "US",
    }
