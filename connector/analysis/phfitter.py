"""lifelines' Cox model without the work the analysis never reads.

Every Cox fit of the analysis reads only ``summary`` (coefficients, standard errors,
confidence intervals, p-values). lifelines' semi-parametric fit also describes the
training data, stratum by stratum and column by column (``describe()``), to keep
"central values": the default covariates of its predictions and partial-effect
plots, which the analysis never makes. With 20 site strata that was about a quarter
of each fit at 10,000 patients (~6 s of the analysis over 16 fits). ``PHFitter``
skips it and nothing else: the Newton-Raphson steps, variances and summary are
lifelines' own, so the estimates are the same to the last bit
(tests/analysis/test_analysis_phfitter.py compares them with ``CoxPHFitter``'s).
"""

from __future__ import annotations

from typing import Any

from lifelines import CoxPHFitter, utils
from lifelines.fitters.coxph_fitter import SemiParametricPHFitter


class _SummaryOnlyModel(SemiParametricPHFitter):
    """The Breslow-baseline model of ``CoxPHFitter`` with no central values (None):
    a prediction that needs them fails loudly instead of using made-up defaults."""

    def _compute_central_values_of_raw_training_data(self, df: Any, strata: Any = None,
                                                     name: str = "baseline") -> None:
        return None


class PHFitter(CoxPHFitter):
    """``CoxPHFitter`` for estimates only (Breslow baseline, lifelines' default)."""

    def _fit_model_breslow(self, *args: Any, **kwargs: Any) -> SemiParametricPHFitter:
        # lifelines' own method (0.29-0.30), with the model class above in place of its own
        if not utils.CensoringType.is_right_censoring(self):
            raise ValueError("the semi-parametric Cox model takes right-censored data only")
        model = _SummaryOnlyModel(penalizer=self.penalizer, l1_ratio=self.l1_ratio,
                                  strata=self.strata, alpha=self.alpha, label=self._label)
        model.fit(*args, **kwargs)
        return model
