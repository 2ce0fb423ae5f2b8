"""The pipeline's extract stage (`bortify run`): the recipe section -> the CLI's dataclasses -> extract()."""

from __future__ import annotations

from bortify.extraction.arguments import EstimatorArguments, ExtractionArguments
from bortify.extraction.run import extract, summary_lines
from bortify.recipes import args_from_dict


def run_stage(config: dict, *, overwrite: bool = False) -> dict:
    config = dict(config)
    config["overwrite"] = bool(config.get("overwrite")) or overwrite
    args, est_args = args_from_dict((ExtractionArguments, EstimatorArguments), config, where="recipe [extract]")
    report = extract(args, est_args)
    w = report["winner"]
    return {
        "summary_lines": summary_lines(report, args.output_dir),
        "winner": {k: w[k] for k in ("D", "A", "H", "I", "parameters", "effective_parameters", "ops", "error", "W")},
        "source_parameters": report["source_parameters"],
        "objective": report["objective"],
        "error_spread": report["error_spread"],
        "config": f"{args.output_dir}/config.json",
        "report": f"{args.output_dir}/report.json",
    }
