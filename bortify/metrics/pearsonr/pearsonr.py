"""Pearson correlation as an `evaluate` module over scipy (offline; shipped with bortify)."""

import math

import datasets
import evaluate
from scipy.stats import pearsonr

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
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Pearson, K. (1895). Proceedings of the Royal Society of London 58.",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references):
        if len(set(predictions)) < 2 or len(set(references)) < 2:
            return {"pearsonr": 0.0}
        value = float(pearsonr(references, predictions)[0])
        return {"pearsonr": 0.0 if math.isnan(value) else value}
