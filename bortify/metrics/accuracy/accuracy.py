"""Accuracy as an `evaluate` module over scikit-learn (offline; shipped with bortify)."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy: the fraction of predictions equal to the references (sklearn.metrics.accuracy_score)."
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): gold labels.
    normalize (bool): return the fraction (default) or the count of correct predictions.
    sample_weight (list of float): optional weights.
Returns:
    {"accuracy": float}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="scikit-learn: Pedregosa et al., JMLR 12, 2011.",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))}
