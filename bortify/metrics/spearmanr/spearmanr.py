"""Spearman rank correlation as an `evaluate` module over scipy (offline; shipped with bortify)."""

import evaluate
from scipy.stats import spearmanr

from bortify.metrics._common import correlation, metric_info

_DESCRIPTION = "Spearman rank correlation between predictions and references (scipy.stats.spearmanr); GLUE STS-B."
_KWARGS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): gold scores.
Returns:
    {"spearmanr": float}  (0.0 when either side is constant: the correlation is undefined)
"""


class Spearmanr(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS, "Spearman, C. (1904). American Journal of Psychology 15(1).",
                           "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html", "float64")

    def _compute(self, predictions, references):
        return {"spearmanr": correlation(spearmanr, predictions, references)}
