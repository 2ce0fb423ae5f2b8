"""The pipeline's pretrain stage: `run_stage(config, overwrite=...)` for `bortify run RECIPE`."""

from __future__ import annotations

import json
from pathlib import Path

from bortify.recipes import args_from_dict


def run_stage(config: dict, *, overwrite: bool = False) -> dict:
    """Parse the recipe's `pretrain:` section (output_dir and student_config wired by the pipeline) with the
    CLI's dataclasses, run `pretrain`, and summarise report.json."""
    from bortify.pretraining.arguments import DataArguments, DistillationArguments, ModelArguments
    from bortify.pretraining.pretrain import REPORT_NAME, pretrain

    model_args, data_args, training_args = args_from_dict(
        (ModelArguments, DataArguments, DistillationArguments), dict(config), where="recipe [pretrain]")
    out = pretrain(model_args, data_args, training_args, overwrite=overwrite)
    report = json.loads((Path(out) / REPORT_NAME).read_text())
    return {
        "output_dir": str(out),
        "kd_mode": report["kd_mode"],
        "init": report["init"],
        "heldout_mlm_loss_before": report["heldout_mlm_loss_before"],
        "heldout_mlm_loss_after": report["heldout_mlm_loss_after"],
        "summary_lines": [
            f"student BertForMaskedLM, {report['parameters'] / 1e6:.2f}M parameters -> {out}",
            f"{report['kd_mode']} KD from {report['teacher']} ({report['teacher_kind']}), init {report['init']}, "
            f"{report['global_step']} steps x {report['batch_size']} x {report['seq_len']} tokens "
            f"in {report['train_seconds']:.0f} s ({report['tokens_per_second']:.0f} tokens/s)",
            f"held-out MLM loss {report['heldout_mlm_loss_before']:.3f} -> {report['heldout_mlm_loss_after']:.3f}",
        ],
    }
