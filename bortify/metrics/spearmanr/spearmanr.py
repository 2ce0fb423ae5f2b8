"""Spearman rank correlation as an `evaluate` module over scipy (offline; shipped with bortify)."""

import math

import datasets
import evaluate
from scipy.stats import spearmanr

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
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Spearman, C. (1904). American Journal of Psychology 15(1).",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references):
        if len(set(predictions)) < 2 or len(set(references)) < 2:
            return {"spearmanr": 0.0}
        value = float(spearmanr(references, predictions)[0])
        return {"spearmanr": 0.0 if math.isnan(value) else value}
