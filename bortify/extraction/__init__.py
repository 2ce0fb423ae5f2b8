"""Optimal subarchitecture extraction (Bort FPTAS): pick a small BERT architecture out of a big one.

    from bortify.extraction import extract, ExtractionArguments, EstimatorArguments
    report = extract(ExtractionArguments(output_dir="out", source="embedded:all-MiniLM-L6-v2", error="none"))

Files: space.py (candidates), costs.py (p, effective p, ops, measured latency), fptas.py (T, W, ε-buckets,
the search loop), constraints.py (--max_error_increase / --latency_budget_ms modes), estimators.py (ê),
report.py (the ExtractReport of bortify.reports, pareto.png), extract.py (extract()); the command and the
pipeline stage are its entry in the stage table (bortify/stages.py).
"""

from bortify.extraction.arguments import EstimatorArguments, ExtractionArguments
from bortify.extraction.costs import (
    Shape,
    effective_parameter_count,
    measure_latency,
    operation_count,
    parameter_count,
)
from bortify.extraction.fptas import epsilon_buckets, run_fptas, w_coefficient
from bortify.extraction.extract import extract

__all__ = [
    "extract", "ExtractionArguments", "EstimatorArguments", "Shape", "parameter_count", "effective_parameter_count",
    "operation_count", "measure_latency", "w_coefficient", "epsilon_buckets", "run_fptas",
]
