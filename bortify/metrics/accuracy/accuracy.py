"""Accuracy as an `evaluate` module over scikit-learn (offline; shipped with bortify)."""

import evaluate
from sklearn.metrics import accuracy_score

from bortify.metrics._common import metric_info

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
        return metric_info(_DESCRIPTION, _KWARGS, "scikit-learn: Pedregosa et al., JMLR 12, 2011.",
                           "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html", "int64")

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))}
