"""The pipeline's fine-tuning stage: `run_stage(config, overwrite=...)` for `bortify run` (see pipeline.py)."""

from __future__ import annotations

from bortify.finetuning.arguments import ARGUMENT_CLASSES
from bortify.recipes import args_from_dict


def run_stage(config: dict, *, overwrite: bool = False) -> dict:
    from bortify.finetuning.cli import summary_lines
    from bortify.finetuning.finetune import finetune

    config = dict(config)
    if overwrite:
        config["overwrite"] = True
    model_args, data_args, grid_args, agora_args, distill_args = args_from_dict(
        ARGUMENT_CLASSES, config, where="recipe [finetune]")
    report = finetune(model_args, data_args, grid_args, agora_args, distill_args)
    metric = report["metric"]
    return {
        "model_dir": model_args.output_dir,
        "mode": report["mode"],
        "metric": metric,
        "dev": report["dev"][metric],
        "test": report["test"][metric],
        "examples_added": [r["examples_added"] for r in report["rounds"]],
        "summary_lines": summary_lines(report, model_args.output_dir),
    }
