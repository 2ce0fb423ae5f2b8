"""Matthews correlation coefficient as an `evaluate` module over scikit-learn (offline; shipped with bortify)."""

import evaluate
from sklearn.metrics import matthews_corrcoef

from bortify.metrics._common import metric_info

_DESCRIPTION = (
    "Matthews correlation coefficient (MCC), in [-1, 1]; 0 is chance, also for constant predictions "
    "(sklearn.metrics.matthews_corrcoef). GLUE's metric for CoLA."
)
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): gold labels.
Returns:
    {"matthews_correlation": float}
"""


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS, "Matthews, B. W. (1975). Biochimica et Biophysica Acta 405(2).",
                           "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html", "int64")

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}
