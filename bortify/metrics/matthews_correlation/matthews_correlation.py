"""Matthews correlation coefficient as an `evaluate` module over scikit-learn (offline; shipped with bortify)."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

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
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Matthews, B. W. (1975). Biochimica et Biophysica Acta 405(2).",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"],
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}
