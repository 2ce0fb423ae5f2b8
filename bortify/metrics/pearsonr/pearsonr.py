"""Pearson correlation as an `evaluate` module over scipy (offline; shipped with bortify)."""

import evaluate
from scipy.stats import pearsonr

from bortify.metrics._common import correlation, metric_info

_DESCRIPTION = "Pearson correlation coefficient between predictions and references (scipy.stats.pearsonr); GLUE STS-B."
_KWARGS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): gold scores.
Returns:
    {"pearsonr": float}  (0.0 when either side is constant: the correlation is undefined)
"""


class Pearsonr(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS, "Pearson, K. (1895). Proceedings of the Royal Society of London 58.",
                           "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html", "float64")

    def _compute(self, predictions, references):
        return {"pearsonr": correlation(pearsonr, predictions, references)}
