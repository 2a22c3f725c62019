"""M-protein results sent as text or below a reporting limit (issue 15, item 7).

Laboratories report an undetectable M-spike as "none detected" / "not detected"
(``valueString``) or as a quantity with a comparator (``<0.1 g/dL``). Rejecting
the first loses the deepest responses; keeping the second as 0.1 turns a
complete disappearance into a small residual. ``mappings/lab_text.csv`` lists,
per analyte, the phrases that mean a value (0) and, as the text ``<``, the value
a below-limit result stands for. The optional file's absence disables both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.codes.text import phrase_tokens

BELOW = "<"
_BELOW_LIMIT_TEXT = re.compile(r"^\s*(<=?|≤)\s*\d+(?:[.,]\d+)?\s*\S*\s*$")


@dataclass
class LabText:
    """Phrases (as token tuples) and below-limit values, per analyte."""

    phrases: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)
    below_limit: dict[str, float] = field(default_factory=dict)

    def add(self, analyte: str, text: str, value: float) -> None:
        if text.strip() == BELOW:
            self.below_limit[analyte] = value
        else:
            self.phrases.setdefault(analyte, {})[phrase_tokens(text)] = value

    def text_value(self, analyte: str, text: str) -> float | None:
        """The value a free-text result stands for, or None when it is not known."""
        known = self.phrases.get(analyte, {}).get(phrase_tokens(text))
        if known is not None:
            return known
        if analyte in self.below_limit and _BELOW_LIMIT_TEXT.match(text):
            return self.below_limit[analyte]
        return None

    def limit_value(self, analyte: str, comparator: Any) -> float | None:
        """The value of a quantity with ``<``/``<=``, for analytes with a below-limit rule."""
        if comparator in ("<", "<=") and analyte in self.below_limit:
            return self.below_limit[analyte]
        return None


def load_lab_text(path: Path, rows: Any) -> LabText:
    """``rows`` is the code-set loader's row reader (checks columns, status and source)."""
    out = LabText()
    if not path.exists():
        return out
    for lineno, row in rows(path, ("analyte", "text", "value", "status")):
        try:
            value = float(row["value"])
        except ValueError:
            from connector.codes.codesets import CodeSetError

            raise CodeSetError(f"{path.name}:{lineno}: value must be a number") from None
        out.add(row["analyte"], row["text"], value)
    return out


def special_value(lab_text: LabText, analyte: str, canonical_unit: str,
                  res: dict) -> dict[str, Any] | None:
    """The lab row of a text or below-limit result, or None to map it the usual way."""
    quantity = res.get("valueQuantity")
    if isinstance(quantity, dict):
        value = lab_text.limit_value(analyte, quantity.get("comparator"))
        if value is None:
            return None
        unit = quantity.get("unit") or quantity.get("code")
        return {"value": value, "unit": canonical_unit, "value_code": None,
                "original_value": f"{quantity.get('comparator')}{quantity.get('value')}",
                "original_unit": unit if isinstance(unit, str) else None}
    text = res.get("valueString")
    if "valueQuantity" in res or not isinstance(text, str):
        return None
    value = lab_text.text_value(analyte, text)
    if value is None:
        return None
    return {"value": value, "unit": canonical_unit, "value_code": None,
            "original_value": text[:200], "original_unit": None}
