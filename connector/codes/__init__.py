"""The study's vocabulary, below every stage that reads it.

The code sets of ``mappings/*.csv`` (``codesets``), the normalizing of names and units
they are matched with (``text``, ``labtext``), the few lists of ``mappings/rules.toml``
that more than one stage needs (``rulesfile``), the CAR-T screen built from both
(``screen``), and the Observation filter (``labfilter``) that lets the extract keep only
the code of results the map stage would not use. Extract, mapping, derive and analysis
import this package and never each other, so a new drug class is a change to
``mappings/`` alone.
"""

from connector.codes.codesets import CodeSetError, CodeSets, load_codesets
from connector.codes.rulesfile import StudyTerms, study_terms
from connector.codes.screen import ScreenTerms, car_t_screen_terms

__all__ = ["CodeSetError", "CodeSets", "ScreenTerms", "StudyTerms", "car_t_screen_terms",
           "load_codesets", "study_terms"]
