"""The report's "Unmapped codes" section, rendered from the mapping stage's CSV.

The pipeline writes unmapped_codes.csv (``connector.mapping.write_unmapped``) and hands
the file here; this module only turns it into words and a table, so a data team knows
which codes to add to mappings/.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from connector.report.document import Section

TITLE = "Unmapped codes"
SHOWN = 30  # the most frequent codes shown in the report; the CSV holds them all


def unmapped_section(path: Path, n: int) -> Section:
    """The section for the ``n`` codes listed in ``path`` (the most frequent first)."""
    if not n:
        return Section(TITLE, ["Every code seen in the extracted resources is mapped or known."])
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).head(SHOWN)
    frame.columns = [str(c).replace("_", " ") for c in frame.columns]  # words, not codes
    text = (f"{n} {'code' if n == 1 else 'codes'} seen in the extracted resources "
            f"{'is' if n == 1 else 'are'} not in the mapping files "
            f"(all of them in {path.name}; the {SHOWN} most frequent below). "
            "Add the ones that matter to the study to the code sets, with a source.")
    return Section.from_frame(TITLE, frame, text)
