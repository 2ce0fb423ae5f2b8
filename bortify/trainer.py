"""Shared Trainer helpers for every stage (below the stage packages: it imports none of them).

`run_arguments`: the `TrainingArguments` of one quiet in-memory run. Fine-tuning's fits, the labeler, task
distillation, congruent fine-tuning (bortify/finetuning/*) and extraction's truncated candidate runs
(bortify/extraction/estimators.py; docs/methods.md §1 "Surrogates") all build theirs with it.
"""

from __future__ import annotations

from transformers import TrainingArguments


def run_arguments(output_dir: str, *, batch_size: int, learning_rate: float, weight_decay: float, warmup: float,
                  epochs: float, seed: int, max_steps: int = -1, keep_columns: bool = False,
                  extra: dict | None = None) -> TrainingArguments:
    """The TrainingArguments of one quiet in-memory run (fine-tuning's fit, the labeler, task distillation,
    congruent fine-tuning; extraction's truncated candidate runs): AdamW with linear warm-up (`warmup` < 1 is a
    ratio of the steps) and decay, seeded data order, nothing saved or logged, the Trainer's bar off (fine-tuning's
    StepBar shows the steps). `keep_columns` keeps dataset columns that are not
    forward() arguments (soft labels, teacher logits) for a custom loss. `extra`: further TrainingArguments fields
    chosen by the user (FinetuneGridArguments.training_arguments: bf16, gradient accumulation, eval/save
    strategy, ...); they override the quiet defaults but never the θ fields above (arguments.py refuses those)."""
    kwargs = dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup,
        lr_scheduler_type="linear",
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps and max_steps > 0 else -1,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        remove_unused_columns=not keep_columns,
    )
    return TrainingArguments(**{**kwargs, **(extra or {})})
