"""F1 as an `evaluate` module over scikit-learn (offline; shipped with bortify)."""

import evaluate
from sklearn.metrics import f1_score

from bortify.metrics._common import metric_info

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall) (sklearn.metrics.f1_score)."
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): gold labels.
    average (str): "binary" (default; the class `pos_label`), "micro", "macro" or "weighted".
    pos_label (int): the positive class for average="binary" (default 1).
    labels (list of int): optional label set for the multi-class averages.
Returns:
    {"f1": float}
"""


class F1(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS, "scikit-learn: Pedregosa et al., JMLR 12, 2011.",
                           "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html", "int64")

    def _compute(self, predictions, references, average="binary", pos_label=1, labels=None, sample_weight=None):
        score = f1_score(references, predictions, average=average, pos_label=pos_label, labels=labels,
                         sample_weight=sample_weight, zero_division=0)
        return {"f1": float(score)}
