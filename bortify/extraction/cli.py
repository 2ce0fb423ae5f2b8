"""`bortify extract`: thin shell over `bortify.extraction.extract`."""

from __future__ import annotations

import sys

from bortify.extraction.arguments import EstimatorArguments, ExtractionArguments
from bortify.extraction.constraints import ConstraintError
from bortify.extraction.estimators import EstimatorError
from bortify.extraction.run import extract, summary_lines
from bortify.extraction.space import SpaceError
from bortify.recipes import RecipeError, parse_stage_args
from bortify.slicing import SlicingError
from bortify.utils import OutputExistsError

DESCRIPTION = (
    "Optimal subarchitecture extraction (Bort FPTAS, de Wynter 2020): search depth D, heads A, hidden size H and "
    "intermediate size I around a source BERT for the largest W = ((p(T)-p)/p(T))·((i(T)-i)/i(T))/ê, with "
    "approximation parameter ε. Or choose the size yourself: --max_error_increase δ (the cheapest candidate whose ê "
    "is within δ of the source's) or --latency_budget_ms B (the lowest-ê candidate measured at <= B ms on this CPU); "
    "each option's help states its ε-guarantee. Writes the winner's config.json (a plain BertConfig), report.json "
    "with every candidate, and pareto.png. Re-running with the same --output_dir resumes."
)
USER_ERRORS = (SpaceError, EstimatorError, SlicingError, RecipeError, OutputExistsError, ConstraintError, ValueError)


def main(argv: list[str] | None = None) -> int:
    try:
        args, est_args = parse_stage_args(
            (ExtractionArguments, EstimatorArguments), argv, stage="extract", prog="bortify extract",
            description=DESCRIPTION,
        )
        report = extract(args, est_args)
    except USER_ERRORS as exc:
        print(f"bortify extract: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report, args.output_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
