"""One fine-tuning run through the `Trainer`, batched prediction, and scoring with the shipped metrics.

Nothing here is Agora-specific: plain fine-tuning, the labeler and every Agora round use these functions.
"""

from __future__ import annotations

import copy
import math
import tempfile

import datasets
import numpy as np
from tqdm.auto import tqdm
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainerCallback, TrainingArguments)
from transformers.utils import logging as hf_logging

from bortify.finetuning.losses import soft_cross_entropy
from bortify.trainer import run_arguments  # noqa: F401  (its home is bortify/trainer.py; imported from here too)
from bortify.metrics import compute_metrics
from bortify.resources import resolve_model
from bortify.trainer import FiniteGuard
from bortify.utils import check_finite_weights, check_sequence_length


class ModelLoadError(ValueError):
    pass


ENCODER_SHAPE = ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size")


def check_encoder(config, tokenizer, name: str) -> None:
    """Refuse, before any training, a model bortify cannot describe or batch: the card and the compression stages
    read the BERT shape (D, A, H, I) from the config, and batches are padded. A decoder such as GPT-2 lacks
    intermediate_size and a pad token; fine-tuning it would work but the result would be mis-described (D=None)."""
    missing = [a for a in ENCODER_SHAPE if getattr(config, a, None) is None]
    if missing:
        raise ModelLoadError(f"{name!r} ({config.model_type}) is not a BERT-shaped encoder: its config lacks "
                             f"{missing}. bortify fine-tunes BERT-family encoders (bert, roberta, electra, MiniLM, "
                             "...); give such a checkpoint, e.g. the pretraining stage's output.")
    if tokenizer.pad_token is None:
        raise ModelLoadError(f"The tokenizer of {name!r} has no pad token, so batches cannot be padded; bortify "
                             "fine-tunes BERT-family encoders, whose tokenizers have one ([PAD] / <pad>).")


def fitted_max_length(model_args) -> int:
    """--max_length for a fine-tuning run on `model_args.model` (utils.fit_sequence_length): the default shortened
    to the model's position table, an explicit longer value refused before any work. An unreadable config is left to
    load_classifier_with_note, which names the problem."""
    import dataclasses

    from bortify.utils import fit_sequence_length

    default = next(f.default for f in dataclasses.fields(model_args) if f.name == "max_length")
    try:
        config = AutoConfig.from_pretrained(resolve_model(model_args.model), trust_remote_code=False)
    except Exception:  # noqa: BLE001 - reported with its cause when the model is loaded
        return model_args.max_length
    return fit_sequence_length(model_args.max_length, default, [(config, f"the model {model_args.model!r}")],
                               "--max_length")


def describe_load(info: dict) -> str:
    """One line for the keys transformers did not load from a checkpoint (instead of its load-report table):
    the expected ones (fresh classifier head, dropped MLM/pooler-less heads) are named, anything else counted."""
    missing, unexpected = list(info.get("missing_keys", ())), list(info.get("unexpected_keys", ()))
    mismatched = list(info.get("mismatched_keys", ()))
    parts = []
    head = [k for k in missing if k.startswith(("classifier", "score", "pre_classifier"))]
    pooler = [k for k in missing if ".pooler." in f".{k}" and k not in head]
    other_missing = [k for k in missing if k not in head and k not in pooler]
    if head or mismatched:
        parts.append("classifier head initialised fresh" + (" (label count changed)" if mismatched else ""))
    if pooler:
        parts.append("pooler initialised fresh (the checkpoint has none)")
    mlm = [k for k in unexpected if k.startswith(("cls.", "lm_head", "generator_", "vocab_", "mlm"))]
    if mlm:
        parts.append("MLM head dropped")
    others_unused = [k for k in unexpected if k not in mlm]
    if others_unused:
        parts.append(f"{len(others_unused)} other checkpoint tensor(s) unused, e.g. {others_unused[:2]}")
    if other_missing:
        parts.append(f"WARNING: {len(other_missing)} encoder tensor(s) not in the checkpoint and initialised at "
                     f"random, e.g. {other_missing[:2]}")
    return "; ".join(parts) or "all weights loaded"


def load_classifier(name_or_path: str, label_names: list[str], regression: bool):
    """(model, tokenizer): `load_classifier_with_note` without the note."""
    model, tokenizer, _ = load_classifier_with_note(name_or_path, label_names, regression)
    return model, tokenizer


def load_classifier_with_note(name_or_path: str, label_names: list[str], regression: bool, *,
                              max_length: int | None = None, flag: str = "--max_length"):
    """(model, tokenizer, load note): any BERT-family checkpoint as AutoModelForSequenceClassification with the
    task's labels.

    An MLM head (or none, for a bare encoder) is dropped and a fresh classifier initialised; a checkpoint that
    is already a classifier for a different label count is re-headed (`ignore_mismatched_sizes`). Weights are
    loaded as safetensors only, and never with remote code. A model that is not a BERT-shaped encoder with a pad
    token is refused (`check_encoder`) before its weights are read. transformers' load-report table is replaced by
    one line (`describe_load`). Seed before calling (transformers.set_seed): the fresh head is drawn here.
    `max_length` (the run's `flag`) above the model's position table is refused from the config, before the weights
    are read; weights holding NaN/inf are refused once loaded (utils.check_finite_weights)."""
    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"Cannot load a tokenizer from {name_or_path!r} ({exc}). The model directory must hold "
                             "tokenizer files (tokenizer.json / vocab.txt), e.g. the pretraining stage's output.") from exc
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"Cannot read the config of {name_or_path!r}: {exc}") from exc
    check_encoder(config, tokenizer, name_or_path)
    check_sequence_length(max_length, config, flag, f"the model {name_or_path!r}")
    kwargs = {"num_labels": 1, "problem_type": "regression"} if regression else {
        "num_labels": len(label_names), "problem_type": "single_label_classification",
        "id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the expected missing/unexpected keys are summarised by describe_load
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, ignore_mismatched_sizes=True,
            output_loading_info=True, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"Cannot load {name_or_path!r} as a sequence classifier with safetensors weights: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    check_finite_weights(model, f"The model {name_or_path!r}" + (f" ({path})" if str(path) != name_or_path else ""))
    return model, tokenizer, describe_load(info)


def log_progress(message: str) -> None:
    """One progress line on stdout that does not break the tqdm bars."""
    tqdm.write(f"bortify finetune: {message}")


def tokenizer_for_saving(tokenizer):
    """The tokenizer without run-specific truncation/padding: a fast tokenizer keeps the last call's truncation
    (max_length) in its backend, and tokenizer.json would ship it. Users choose per call, as for any checkpoint.
    The leftovers of the calls that loaded it (`is_local`, `local_files_only`, `max_length`, `stride`, ...,
    bortify.hygiene.TOKENIZER_CALL_KEYS) are dropped from what tokenizer_config.json will hold."""
    from bortify.hygiene import TOKENIZER_CALL_KEYS

    init_kwargs = getattr(tokenizer, "init_kwargs", None)
    if isinstance(init_kwargs, dict):
        for key in TOKENIZER_CALL_KEYS:
            init_kwargs.pop(key, None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    return tokenizer


def tokenize(ds: datasets.Dataset, tokenizer, text_columns: list[str], max_length: int) -> datasets.Dataset:
    """input_ids/attention_mask(/token_type_ids) + labels (+ soft_labels when the rows carry a `soft_label`
    distribution, see losses.py); padding is done per batch by the collator."""
    def encode(batch):
        texts = [batch[c] for c in text_columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        if "soft_label" in batch:
            enc["soft_labels"] = batch["soft_label"]
        return enc
    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc=None)


def examples_seen(n_train: int, batch_size: int, epochs: float, max_steps: int) -> int:
    """Training examples processed by one run (what the benchmark equalises between plain and Agora)."""
    if max_steps and max_steps > 0:
        steps_per_epoch = math.ceil(n_train / batch_size)
        full, rest = divmod(max_steps, steps_per_epoch)
        return full * n_train + min(rest * batch_size, n_train)
    return int(round(epochs * n_train))


class StepBar(TrainerCallback):
    """A tqdm bar over the optimiser steps of one fine-tuning run (the Trainer's own bar is off: `desc` names the
    run, e.g. the θ or 'labeler'); closed when the run ends."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step", leave=False, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class BestEpoch(TrainerCallback):
    """Scores the model on dev after every epoch and keeps the best epoch's weights (restored at the end):
    early stopping by dev, so a long schedule costs nothing where a short one was better."""

    def __init__(self, dev_score_of):
        self.dev_score_of, self.scores, self.best, self.state = dev_score_of, [], None, None

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        value = float(self.dev_score_of(model))
        model.train(was_training)
        self.scores.append(round(value, 4))
        if self.best is None or value > self.best:
            self.best = value
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def restore(self, model):
        if self.state is not None:
            model.load_state_dict(self.state)
        return model

    @property
    def best_epoch(self) -> int:
        return int(np.argmax(self.scores)) + 1 if self.scores else 0


def theta_text(theta: dict) -> str:
    """A short θ for progress bars: 'lr 1e-03 wd 0.01 wu 0.1 bs 16'."""
    return (f"lr {float(theta['learning_rate']):.0e} wd {float(theta['weight_decay']):g} "
            f"wu {float(theta['warmup_ratio']):g} bs {int(theta['batch_size'])}")


class SoftTargetTrainer(Trainer):
    """Trainer whose loss is the cross-entropy against per-row target distributions (`soft_labels`:
    one-hot for gold rows, the labeler's distribution for Agora's generated rows; losses.soft_cross_entropy).
    Batches without `soft_labels` (the dev set, when an eval_strategy evaluates it) get the model's own loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "soft_labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        targets = inputs.pop("soft_labels")
        inputs.pop("labels", None)
        outputs = model(**inputs)
        loss = soft_cross_entropy(outputs.logits, targets)
        return (loss, outputs) if return_outputs else loss


def theta_guard(theta: dict, run: str = "the fine-tuning run", fix: str | None = None) -> FiniteGuard:
    """The FiniteGuard of one fine-tuning run: a diverged run stops with an error naming its θ."""
    named = ", ".join(f"{k} {theta[k]!r}" for k in ("learning_rate", "weight_decay", "warmup_ratio", "batch_size")
                      if k in theta)
    return FiniteGuard(f"{run} with θ = ({named})",
                       fix or "drop that learning rate from --learning_rates or lower it (e.g. 1e-5 to 1e-3)")


def fit(model0, tokenizer, train_tok: datasets.Dataset, theta: dict, *, epochs: float, max_steps: int = -1,
        seed: int = 42, desc: str | None = None, training: dict | None = None,
        eval_tok: datasets.Dataset | None = None, guard: FiniteGuard | None = None):
    """Fine-tune a copy of `model0` on `train_tok` with hyperparameters θ; returns the trained model (model0 is
    left untouched: Agora restarts every round from the same initial model, docs/methods/03-agora.md §3 `copy(model0)`).

    `training`: extra TrainingArguments fields (run_arguments' `extra`); `eval_tok` is the Trainer's
    eval_dataset, read only when `training` sets an eval_strategy (e.g. with load_best_model_at_end). A run whose
    loss or weights become NaN/inf stops with DivergedError (`guard`, default theta_guard(θ))."""
    model = copy.deepcopy(model0)
    soft = "soft_labels" in train_tok.column_names
    evaluates = (training or {}).get("eval_strategy", "no") != "no"
    with tempfile.TemporaryDirectory(prefix="bortify-ft-") as tmp:
        args = run_arguments(tmp, batch_size=int(theta["batch_size"]), learning_rate=float(theta["learning_rate"]),
                             weight_decay=float(theta["weight_decay"]), warmup=float(theta["warmup_ratio"]),
                             epochs=epochs, max_steps=max_steps, seed=seed,
                             keep_columns=soft,  # keep `soft_labels` (not a forward() argument) for the loss
                             extra=training)
        trainer = (SoftTargetTrainer if soft else Trainer)(
            model=model, args=args, train_dataset=train_tok, eval_dataset=eval_tok if evaluates else None,
            data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
            callbacks=[StepBar(desc or theta_text(theta)), guard or theta_guard(theta)])
        trainer.train()
    model.eval()
    return model


def predict(model, tokenizer, ds_tok: datasets.Dataset, batch_size: int = 64) -> np.ndarray:
    """Raw outputs (logits; a vector for regression) over a tokenised dataset, in order: `Trainer.predict` with
    the padding collator (labels dropped, so no loss is computed; nothing written or logged)."""
    inputs = ds_tok.remove_columns([c for c in ("labels", "soft_labels") if c in ds_tok.column_names])
    if len(inputs) == 0:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="bortify-predict-") as tmp:
        # remove_unused_columns off: the inputs are the tokenizer's columns already, and a wrapped forward(*args,
        # **kwargs) (e.g. a counting wrapper) has no signature for the Trainer to match them against
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size, report_to="none",
                                 disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
                                 save_strategy="no", logging_strategy="no", remove_unused_columns=False)
        trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))
        logits = trainer.predict(inputs).predictions
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float32)
    finite = np.isfinite(logits).reshape(len(logits), -1).all(axis=1)
    if not finite.all():  # argmax over NaN is class 0: every score would look like a result
        from bortify.utils import DivergedError

        raise DivergedError(f"The model's outputs hold NaN or inf for {int((~finite).sum())} of {len(logits)} rows: "
                            "its weights overflow (a diverged training run or a broken checkpoint). Lower the "
                            "learning rate, or give another checkpoint.")
    return logits


def to_predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits.reshape(-1) if regression else logits.argmax(-1)


def score(predictions, references, metrics: list[str], num_labels: int) -> dict[str, float]:
    """The task's metrics; F1 is binary for two classes and macro-averaged otherwise."""
    average = "binary" if num_labels == 2 else "macro"
    return compute_metrics(metrics, list(np.asarray(predictions).tolist()), list(np.asarray(references).tolist()),
                           average=average)
