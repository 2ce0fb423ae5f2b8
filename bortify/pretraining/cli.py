"""`bortify pretrain`: distil a BERT student from a teacher through the Trainer (thin shell over `pretrain`).

Examples::

    bortify pretrain --student_config runs/demo/extract --teacher embedded:all-MiniLM-L6-v2 --output_dir out/student
    bortify pretrain --config recipes/demo.yaml --student_config runs/demo/extract --output_dir out/student
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m bortify.cli pretrain --config recipes/bort.yaml ...
"""

from __future__ import annotations

import sys

from bortify.data import DataError
from bortify.recipes import RecipeError, parse_stage_args
from bortify.utils import OutputExistsError

DESCRIPTION = (
    "Pretrain a BERT student by knowledge distillation (Bort, docs/methods.md §2): logit KD from a masked-LM teacher "
    "(w_mlm·CE + w_kd·T²·KL on masked tokens) or representation KD from an encoder teacher (hidden-state MSE "
    "through a learned projection + MiniLMv2 attention relations + the student's own MLM loss). Writes a "
    "standard BertForMaskedLM checkpoint, the training log and report.json. An unfinished run in --output_dir "
    "resumes from its newest complete checkpoint (--overwrite starts again). All Trainer options "
    "(TrainingArguments) apply as well."
)


def main(argv: list[str] | None = None) -> int:
    from bortify.pretraining.arguments import DataArguments, DistillationArguments, ModelArguments
    from bortify.pretraining.pretrain import PretrainError, pretrain

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        model_args, data_args, training_args = parse_stage_args(
            (ModelArguments, DataArguments, DistillationArguments), argv, stage="pretrain", prog="bortify pretrain",
            description=DESCRIPTION)
        out = pretrain(model_args, data_args, training_args)
    except (RecipeError, DataError, PretrainError, OutputExistsError, ValueError) as exc:
        print(f"bortify pretrain: error: {exc}", file=sys.stderr)
        return 2
    if training_args.process_index == 0:
        print(f"[bortify pretrain] student written to {out} (report.json, trainer_state.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
