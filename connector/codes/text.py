"""Normalizing free text: drug names, procedure names, coded-value text, units.

Local formularies send "DARZALEX FASPRO®", "daratumumab and hyaluronidase-fihj
1800 MG/15ML" or "Dara-SC"; comparing token sequences after one normalization
lets a short list of reviewed names match all of these.
"""

from __future__ import annotations

import re

_MARKS = re.compile(r"[®™©]")
# A four-letter FDA biologic suffix ("-fihj", "-cqyv") on a word of 5+ letters.
_BIOLOGIC_SUFFIX = re.compile(r"\b([a-z]{5,})-[a-z]{4}\b")
_NON_WORD = re.compile(r"[^a-z0-9%]+")
#: Words that never decide which study ingredient a product contains.
_DROP_TOKENS = frozenset({"hyaluronidase"})


def phrase_tokens(text: str) -> tuple[str, ...]:
    """Lower case, punctuation as spaces, whitespace collapsed, as a token tuple."""
    text = _MARKS.sub("", text.lower())
    return tuple(t for t in _NON_WORD.split(text) if t)


def name_tokens(text: str) -> tuple[str, ...]:
    """Tokens of a drug name with biologic suffixes and co-formulants removed."""
    text = _BIOLOGIC_SUFFIX.sub(r"\1", _MARKS.sub("", text.lower()))
    return tuple(t for t in _NON_WORD.split(text) if t and t not in _DROP_TOKENS)


class PhraseIndex:
    """Reviewed phrases (token tuples) indexed by first token, for fast scanning."""

    def __init__(self) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], object]]] = {}

    def add(self, phrase: tuple[str, ...], value: object) -> None:
        bucket = self._by_first.setdefault(phrase[0], [])
        bucket[:] = [(p, v) for p, v in bucket if p != phrase]
        bucket.append((phrase, value))
        bucket.sort(key=lambda item: -len(item[0]))

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_first.values())

    def find(self, tokens: tuple[str, ...]) -> list[object]:
        """Values of every phrase occurring as a contiguous token run, in text order."""
        found: list[object] = []
        for i, token in enumerate(tokens):
            for phrase, value in self._by_first.get(token, ()):
                if tokens[i:i + len(phrase)] == phrase and value not in found:
                    found.append(value)
        return found


def normalize_unit(unit: str) -> str:
    """A unit spelling compared case-insensitively, without spaces, µ as u."""
    return unit.strip().replace("µ", "u").replace("μ", "u").replace(" ", "").lower()
