"""What the shipped `evaluate` modules share: their MetricInfo shape and the correlation guard.

Each module stays a standalone `evaluate` script (loaded by path); it imports these helpers from the installed
bortify package like any other library.
"""

from __future__ import annotations

import math
from typing import Callable

import datasets
import evaluate


def metric_info(description: str, inputs: str, citation: str, url: str, dtype: str) -> evaluate.MetricInfo:
    """MetricInfo for a metric over two equal-length columns `predictions` / `references` of `dtype`."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs,
        features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
        reference_urls=[url],
    )


def correlation(statistic: Callable, predictions, references) -> float:
    """`statistic(references, predictions)[0]`, or 0.0 where it is undefined (a constant side, NaN)."""
    if len(set(predictions)) < 2 or len(set(references)) < 2:
        return 0.0
    value = float(statistic(references, predictions)[0])
    return 0.0 if math.isnan(value) else value
