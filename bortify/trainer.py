"""Shared Trainer helpers for every stage (below the stage packages: it imports none of them).

`run_arguments`: the `TrainingArguments` of one quiet in-memory run. Fine-tuning's fits, the labeler, task
distillation, congruent fine-tuning (bortify/finetuning/*) and extraction's truncated candidate runs
(bortify/extraction/estimators.py; docs/methods/01-extraction.md §1 "Surrogates") all build theirs with it.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback, TrainingArguments


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


class FiniteGuard(TrainerCallback):
    """Stops a training run whose loss or weights became NaN/inf (DivergedError, a user error naming the run).

    A diverged run (e.g. `--learning_rates inf`, or a rate large enough to overflow) otherwise trains on,
    predicts one class everywhere (argmax over NaN logits) and is reported, compressed and carded like a result.
    The weights are checked after steps 1, 2, 4, 8, ... (a rate that diverges does so in the first steps, and the
    check reads every weight once) and at the end; every logged loss, and the run's mean training loss, too.
    `what` names the run with its hyperparameters (the θ); `fix` says what to change. `weights=False` checks the
    losses only (sharded runs: FSDP / ZeRO-3 ranks hold parts of the weights; the logged loss is gathered)."""

    def __init__(self, what: str, fix: str = "lower the learning rate", *, weights: bool = True):
        self.what, self.fix, self.weights = what, fix, weights
        self._next_check = 1

    def _fail(self, problem: str, step: int):
        from bortify.utils import DivergedError

        raise DivergedError(f"Training diverged in {self.what}: {problem} at step {step}. The model is unusable and "
                            f"nothing was written from it; {self.fix}.")

    def _check_weights(self, model, step: int) -> None:
        from bortify.utils import non_finite_tensors

        if self.weights and model is not None:
            bad, total = non_finite_tensors(model)
            if bad:
                self._fail(f"{len(bad)} of {total} weight tensors hold NaN or inf (e.g. {bad[:2]})", step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step >= self._next_check:
            self._next_check = 2 * state.global_step
            self._check_weights(model, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "train_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._fail(f"the training loss is {value}", state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._check_weights(model, state.global_step)
