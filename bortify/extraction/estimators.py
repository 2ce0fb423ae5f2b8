"""Error estimators ê(ξ) for the FPTAS (docs/methods/01-extraction.md §1 "Surrogates": ê = error after a truncated training
run, best over a small hyperparameter set Θ, weight clipping on).

An estimator is any callable `estimate(shape) -> {"error": float > 0, ...}` (or a bare float); tests
inject deterministic ones. `prepare()` loads data and models before the search starts, so bad input fails
before any long work. `fingerprint()` names the settings that change ê: partial results of a resumed run
are reused only under the same fingerprint.

- `none`        ê = 1: ranks by p and i only ("smallest wins"); instant.
- `mlm`         the paper's estimator: a from-scratch BertForMaskedLM trained n steps with the Trainer on a
                text corpus, ê = held-out masked-LM loss (logits at masked positions only). Meaningful with GPU
                budgets; on 2 CPU cores it does NOT separate candidates (docs/methods/01-extraction.md §1 "Measured here").
- `sliced-task` ours: the candidate is initialised by slicing the source model (bortify.slicing,
                Minitron-style activation importance), fine-tuned n steps with a mean-pooling classifier
                head on a labelled task (default: the embedded Rotten Tomatoes sentiment task; embeddings
                frozen) and ê = dev error rate. An error rate has a floor
                far from 0 for hard-enough tasks, so W = f/ê cannot explode next to the maximum point.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from bortify.extraction.costs import Shape, bert_config
from bortify.pretraining.losses import IGNORE_INDEX, masked_cross_entropy
from bortify.trainer import run_arguments

ESTIMATORS = ("none", "mlm", "sliced-task")


class EstimatorError(ValueError):
    """The estimator cannot run with these settings/inputs; the message says what to change."""


class ErrorEstimator(Protocol):
    name: str

    def prepare(self) -> None: ...

    def fingerprint(self) -> dict: ...

    def __call__(self, shape: Shape) -> dict: ...


# ------------------------------------------------------------------------------------------ pure maths
def masked_lm_loss(sequence_output: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """Cross-entropy of the MLM head at masked positions only (labels != -100; pretraining.losses.masked_cross_entropy).

    Same value as BertForMaskedLM's loss, but the V-way output layer runs on the ~15% masked tokens
    instead of every position (docs/methods/01-extraction.md §1 "Measured here": that layer dominates CPU time, ~7x saving).
    """
    mask = labels != IGNORE_INDEX
    if not bool(mask.any()):
        return sequence_output.sum() * 0.0
    return masked_cross_entropy(head(sequence_output[mask]), labels[mask])


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states over real (mask = 1) tokens: the sentence-transformers pooling that
    all-MiniLM-L6-v2 was trained with (its [CLS]/pooler output is untrained)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def error_rate(predictions: np.ndarray, labels: np.ndarray, floor: float) -> float:
    """1 − accuracy, never below `floor` (W divides by ê; docs/methods/01-extraction.md §1 warns against estimates near 0)."""
    if len(labels) == 0:
        raise EstimatorError("empty dev set")
    return max(float(np.mean(predictions != labels)), floor)


# ----------------------------------------------------------------------------------- Trainer plumbing
class WeightClipCallback(TrainerCallback):
    """Clamp every weight matrix to [−c, c] after each optimiser step (the OSE paper's weight clipping,
    one of the conditions for the ABnC error ordering; docs/methods/01-extraction.md §1). Biases and LayerNorms untouched."""

    def __init__(self, clip_value: float):
        self.clip_value = clip_value

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self.clip_value > 0:
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() >= 2:
                        p.clamp_(-self.clip_value, self.clip_value)


class MeanPoolClassifier(torch.nn.Module):
    """A BERT encoder + mean pooling + linear head, for the sliced-task estimator.

    Measured here (MiniLM slices, 40 steps, 2 cores): with BertForSequenceClassification's [CLS]-pooler head
    every candidate up to 4 layers stayed at the majority-class error (0.40-0.41); with mean pooling the
    errors separate (0.37 for D1 H128 -> 0.29 D2 H192 -> 0.25 D4 H384).
    """

    def __init__(self, encoder: torch.nn.Module, hidden_size: int, num_labels: int):
        super().__init__()
        self.bert = encoder
        self.classifier = torch.nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        logits = self.classifier(mean_pool(hidden, attention_mask))
        out = {"logits": logits}
        if labels is not None:
            out = {"loss": F.cross_entropy(logits.float(), labels), **out}
        return out


class MaskedPositionsMLMTrainer(Trainer):
    """Trainer whose loss is `masked_lm_loss` (MLM head applied at masked positions only)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        hidden = model.bert(**inputs).last_hidden_state
        loss = masked_lm_loss(hidden, labels, model.cls)
        return (loss, {"loss": loss}) if return_outputs else loss


def _training_args(out_dir: str, lr: float, budget: "TrainingBudget") -> TrainingArguments:
    """One candidate's truncated run: bortify's quiet in-memory run (bortify.trainer.run_arguments) with the
    budget's steps, batch size and seed, AdamW weight decay 0.01, linear warm-up over `warmup_ratio` of the steps
    (rounded to whole steps) and decay, clipping at 1.0; evaluation in batches of 64."""
    return run_arguments(out_dir, batch_size=budget.batch_size, learning_rate=lr, weight_decay=0.01,
                         warmup=max(0, int(round(budget.warmup_ratio * budget.steps))), epochs=1,
                         seed=budget.seed, max_steps=budget.steps,
                         extra={"per_device_eval_batch_size": 64, "max_grad_norm": 1.0})


def _best_learning_rate(budget: "TrainingBudget", error_at: Callable[[float], float]) -> dict:
    """ê = the lowest error over the budget's learning rates (Θ), each run from the same seed."""
    per_theta, start = {}, time.perf_counter()
    for lr in budget.learning_rates:
        set_seed(budget.seed)
        error = error_at(lr)
        per_theta[str(lr)] = error if math.isfinite(error) else None  # null: this θ's short run diverged (NaN loss)
    finite = [k for k, v in per_theta.items() if v is not None]
    if not finite:
        raise EstimatorError(f"Every learning rate of the error estimator's budget {list(budget.learning_rates)} "
                             "diverged (NaN/inf held-out loss) on a candidate: lower them (the extract stage's --learning_rates).")
    best = min(finite, key=per_theta.get)
    return {"error": per_theta[best], "theta": {"learning_rate": float(best)}, "per_theta": per_theta,
            "seconds": round(time.perf_counter() - start, 2)}


@dataclass
class TrainingBudget:
    steps: int = 40
    batch_size: int = 16
    learning_rates: tuple[float, ...] = (6e-4, 1e-3)  # Θ
    max_seq_length: int = 48
    clip_value: float = 10.0
    warmup_ratio: float = 0.1
    seed: int = 0

    @classmethod
    def from_settings(cls, settings) -> "TrainingBudget":
        """The budget that `settings` (an `EstimatorArguments`: train_steps, train_batch_size, ...) describes."""
        return cls(steps=settings.train_steps, batch_size=settings.train_batch_size,
                   learning_rates=tuple(settings.learning_rates), max_seq_length=settings.max_seq_length,
                   clip_value=settings.clip_value, seed=settings.seed)

    def check(self) -> None:
        """The one validation of the estimator's training settings (EstimatorArguments runs it when parsed)."""
        if self.steps < 1 or self.batch_size < 1 or self.max_seq_length < 8:
            raise EstimatorError(f"--train_steps and --train_batch_size must be >= 1 and --max_seq_length >= 8 (got "
                                 f"{self.steps}, {self.batch_size}, {self.max_seq_length}).")
        if not self.learning_rates or any(not (lr > 0) for lr in self.learning_rates):
            raise EstimatorError(f"--learning_rates (Θ) must be a non-empty list of positive numbers; got "
                                 f"{list(self.learning_rates)}.")
        if self.clip_value < 0:
            raise EstimatorError(f"--clip_value must be >= 0 (0 disables clipping); got {self.clip_value}.")


# --------------------------------------------------------------------------------------- estimators
class NoneEstimator:
    """ê = 1 for every candidate: W = f ranks by size and cost alone."""

    name = "none"

    def prepare(self) -> None:
        pass

    def fingerprint(self) -> dict:
        return {"error_estimator": "none"}

    def __call__(self, shape: Shape) -> dict:
        return {"error": 1.0}


class MLMEstimator:
    """The paper's ê: held-out masked-LM loss of a from-scratch candidate after a short Trainer run."""

    name = "mlm"

    def __init__(self, source_config, tokenizer: str, corpus: str, corpus_config: str | None = None, text_column: str = "text",
                 budget: TrainingBudget | None = None, train_samples: int = 4000, eval_samples: int = 500,
                 mlm_probability: float = 0.15, heldout=None):
        self.source_config, self.tokenizer_name, self.corpus = source_config, tokenizer, corpus
        self.heldout, self.heldout_record = heldout, None  # bortify.heldout.HeldOut: the run's test texts, kept out
        self.corpus_config = corpus_config
        self.text_column, self.budget = text_column, budget or TrainingBudget(learning_rates=(5e-4,))
        self.train_samples, self.eval_samples, self.mlm_probability = train_samples, eval_samples, mlm_probability
        self._prepared = False

    def fingerprint(self) -> dict:
        return {"error_estimator": self.name, "tokenizer": self.tokenizer_name, "corpus": self.corpus,
                "corpus_config": self.corpus_config, "budget": self.budget.__dict__, "train_samples": self.train_samples,
                "eval_samples": self.eval_samples, **_data_key(self.text_column, self.heldout)}

    def prepare(self) -> None:
        from transformers import AutoTokenizer, DataCollatorForLanguageModeling

        from bortify.resources import resolve_model

        self.budget.check()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.tokenizer_name))
        except OSError as exc:
            raise EstimatorError(f"error=mlm needs a tokenizer: could not load {self.tokenizer_name!r} ({exc}). "
                                 "Set `tokenizer` to a checkpoint with one (e.g. embedded:all-MiniLM-L6-v2).") from exc
        if len(self.tokenizer) > self.source_config.vocab_size:
            raise EstimatorError(f"tokenizer {self.tokenizer_name!r} has {len(self.tokenizer)} tokens but the source "
                                 f"vocab_size is {self.source_config.vocab_size}; use the source's tokenizer.")
        ds, self.heldout_record = mlm_corpus_rows(self.corpus, self.text_column, self.corpus_config, self.budget.seed,
                                                  self.train_samples, self.eval_samples, self.heldout)
        n = len(ds)
        if n < 20:
            raise EstimatorError(f"corpus {self.corpus!r} has only {n} non-empty rows; need at least 20.")
        tok = ds.map(lambda b: self.tokenizer(b[self.text_column], truncation=True, max_length=self.budget.max_seq_length,
                                              return_special_tokens_mask=True),
                     batched=True, remove_columns=ds.column_names)
        n_eval = max(10, min(self.eval_samples, n // 5))
        self.eval_ds, self.train_ds = tok.select(range(n_eval)), tok.select(range(n_eval, n))
        self.collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.mlm_probability)
        self._prepared = True

    def __call__(self, shape: Shape) -> dict:
        from transformers import BertForMaskedLM

        if not self._prepared:
            self.prepare()
        config = bert_config(shape, self.source_config)

        def heldout_loss(lr: float) -> float:
            model = BertForMaskedLM(config)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = MaskedPositionsMLMTrainer(
                    model=model, args=_training_args(tmp, lr, self.budget), data_collator=self.collator,
                    train_dataset=self.train_ds, eval_dataset=self.eval_ds,
                    callbacks=[WeightClipCallback(self.budget.clip_value)],
                )
                trainer.args.prediction_loss_only = True
                trainer.train()
                set_seed(self.budget.seed)  # same masks for every candidate's held-out loss
                return float(trainer.evaluate()["eval_loss"])

        return _best_learning_rate(self.budget, heldout_loss)


class SlicedTaskEstimator:
    """Ours: teacher-sliced initialisation + short task fine-tune; ê = dev error rate (floored)."""

    name = "sliced-task"

    def __init__(self, source_config, source: str, task: str = "embedded:rotten-tomatoes", text_column: str = "text",
                 label_column: str = "label", budget: TrainingBudget | None = None, train_samples: int = 2000,
                 eval_samples: int = 500, importance: str = "activation", calibration_samples: int = 64,
                 train_embeddings: bool = False, heldout=None):
        self.source_config, self.source, self.task = source_config, source, task
        self.heldout, self.heldout_record = heldout, None  # bortify.heldout.HeldOut: the run's test texts, kept out
        self.text_column, self.label_column = text_column, label_column
        self.budget = budget or TrainingBudget()
        self.train_samples, self.eval_samples = train_samples, eval_samples
        self.importance, self.calibration_samples = importance, calibration_samples
        self.train_embeddings = train_embeddings
        self._prepared = False

    def fingerprint(self) -> dict:
        return {"error_estimator": self.name, "source": self.source, "task": self.task, "budget": self.budget.__dict__,
                "train_samples": self.train_samples, "eval_samples": self.eval_samples, "importance": self.importance,
                "train_embeddings": self.train_embeddings, **_data_key(self.text_column, self.heldout)}

    def prepare(self) -> None:
        from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding

        from bortify.data import load_any_dataset
        from bortify.resources import resolve_model

        self.budget.check()
        path = resolve_model(self.source)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.teacher = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False).eval()
        except (OSError, ValueError) as exc:
            raise EstimatorError(
                f"error=sliced-task slices the source's weights, but {self.source!r} could not be loaded as a checkpoint "
                f"with safetensors weights and a tokenizer ({exc}). Use a checkpoint source, or error=none / mlm."
            ) from exc
        if self.teacher.config.vocab_size != self.source_config.vocab_size:
            raise EstimatorError(f"source checkpoint vocab_size {self.teacher.config.vocab_size} != the search's "
                                 f"{self.source_config.vocab_size}; drop the inline source_vocab_size override.")
        from bortify.utils import check_finite_weights

        check_finite_weights(self.teacher, f"The source {self.source!r} ({path})")
        ds = load_any_dataset(self.task)["train"]
        for col in (self.text_column, self.label_column):
            if col not in ds.column_names:
                raise EstimatorError(f"task {self.task!r} has no column {col!r}; columns: {ds.column_names}. "
                                     "Set text_column / label_column.")
        labels = ds.features[self.label_column]
        self.num_labels = getattr(labels, "num_classes", None) or len(set(ds[self.label_column]))
        if self.num_labels < 2:
            raise EstimatorError(f"task {self.task!r} has {self.num_labels} label(s); need a classification task.")
        n_rows = len(ds)
        dev, train, self.heldout_record = sliced_task_rows(ds, self.text_column, self.budget.seed, self.train_samples,
                                                           self.eval_samples, self.heldout)
        if len(dev) < 20 or len(train) < self.budget.batch_size:
            raise EstimatorError(f"task {self.task!r} has too few rows ({n_rows}) for {self.eval_samples} dev + training.")

        def encode(batch):
            out = self.tokenizer(batch[self.text_column], truncation=True, max_length=self.budget.max_seq_length)
            out["labels"] = batch[self.label_column]
            return out

        cols = ds.column_names
        self.train_ds = train.map(encode, batched=True, remove_columns=cols)
        self.dev_ds = dev.map(encode, batched=True, remove_columns=cols)
        self.dev_labels = np.asarray(dev[self.label_column])
        calib_text = list(train.select(range(min(self.calibration_samples, len(train))))[self.text_column])
        self.calibration = dict(self.tokenizer(calib_text, truncation=True, max_length=self.budget.max_seq_length,
                                               padding=True, return_tensors="pt"))
        self.collator = DataCollatorWithPadding(self.tokenizer)
        self.floor = 0.5 / len(self.dev_labels)  # half an example: ê > 0 even for a perfect dev score
        self._prepared = True

    def __call__(self, shape: Shape) -> dict:
        from transformers import BertModel

        from bortify.slicing import init_from_teacher

        if not self._prepared:
            self.prepare()
        config = bert_config(shape, self.source_config)

        def dev_error(lr: float) -> float:
            encoder = BertModel(config, add_pooling_layer=False)
            init_from_teacher(encoder, self.teacher, importance=self.importance,
                              calibration=self.calibration if self.importance == "activation" else None)
            if not self.train_embeddings:  # the V x H table dominates the optimiser's CPU time; it is the teacher's
                encoder.embeddings.word_embeddings.weight.requires_grad_(False)
            model = MeanPoolClassifier(encoder, shape.H, self.num_labels)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(
                    model=model, args=_training_args(tmp, lr, self.budget), data_collator=self.collator,
                    train_dataset=self.train_ds, callbacks=[WeightClipCallback(self.budget.clip_value)],
                )
                trainer.train()
                logits = trainer.predict(self.dev_ds).predictions
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            return error_rate(np.asarray(logits).argmax(-1), self.dev_labels, self.floor)

        return _best_learning_rate(self.budget, dev_error)


def _data_key(text_column: str, heldout) -> dict:
    """The fingerprint's part for the data read: a text column other than `text`, and the held-out texts kept out
    (ê measured on other data must not be reused); empty by default, so older caches still match."""
    return {**({"text_column": text_column} if text_column != "text" else {}),
            **({"heldout": heldout.digest} if heldout is not None else {})}


def sliced_task_rows(ds, text_column: str, seed: int, train_samples: int, eval_samples: int, heldout=None):
    """(dev, train, held-out record) of the sliced-task estimator: the held-out test texts of the run dropped
    (docs/methods/09-heldout.md §9), then a seeded shuffle; dev = the first min(eval_samples, n/5) rows, train the next
    train_samples. The task's own test split is never read."""
    from bortify.heldout import drop_from_dataset

    ds, record = drop_from_dataset(ds, text_column, heldout, "the extraction estimator's task rows")
    ds = ds.shuffle(seed=seed)
    n_eval = min(eval_samples, len(ds) // 5)
    n_train = max(0, min(train_samples, len(ds) - n_eval))
    return ds.select(range(n_eval)), ds.select(range(n_eval, n_eval + n_train)), record


def mlm_corpus_rows(corpus: str, text_column: str, corpus_config, seed: int, train_samples: int, eval_samples: int,
                    heldout=None):
    """(the corpus lines the mlm estimator reads, held-out record): held-out test texts dropped (docs/methods/09-heldout.md
    §9), a seeded shuffle, the first train_samples + eval_samples lines."""
    from bortify.data import load_text_corpus
    from bortify.heldout import drop_from_dataset

    ds = load_text_corpus(corpus, text_column, config=corpus_config)
    ds, record = drop_from_dataset(ds, text_column, heldout, "the extraction estimator's corpus lines")
    ds = ds.shuffle(seed=seed)
    return ds.select(range(min(len(ds), train_samples + eval_samples))), record


def estimator_texts(settings: dict) -> list[str] | None:
    """The texts an extraction's estimator trained and measured on, re-derived from its report's
    `estimator_settings` (to count test texts among them when the run kept none out); [] for `none`, None when
    they cannot be re-derived offline."""
    from bortify.data import load_any_dataset

    kind = settings.get("error_estimator")
    if kind == "none":
        return []
    budget, column = settings.get("budget") or {}, settings.get("text_column", "text")
    try:
        if kind == "sliced-task":
            ds = load_any_dataset(settings["task"])["train"]
            dev, train, _ = sliced_task_rows(ds, column, budget.get("seed", 0), settings["train_samples"],
                                             settings["eval_samples"])
            return list(dev[column]) + list(train[column])
        if kind == "mlm":
            ds, _ = mlm_corpus_rows(settings["corpus"], column, settings.get("corpus_config"), budget.get("seed", 0),
                                    settings["train_samples"], settings["eval_samples"])
            return list(ds[column])
    except Exception:  # e.g. a Hub dataset without the Hub: the overlap is then "not measured"
        return None
    return None


def make_estimator(name: str, source_config, source: str, settings) -> ErrorEstimator:
    """bortify's one estimator factory: estimator `name` (one of ESTIMATORS) for a search over `source`
    (`source_config`, its config), configured by `settings` (an `EstimatorArguments`)."""
    if name not in ESTIMATORS:
        raise EstimatorError(f"Unknown error estimator {name!r}; choose one of {ESTIMATORS}.")
    if name == "none":
        return NoneEstimator()
    from bortify.heldout import load_heldout

    budget = TrainingBudget.from_settings(settings)
    common = dict(text_column=settings.text_column, budget=budget, train_samples=settings.train_samples,
                  eval_samples=settings.eval_samples, heldout=load_heldout(getattr(settings, "heldout", None)))
    if name == "mlm":
        return MLMEstimator(source_config, tokenizer=settings.tokenizer or source, corpus=settings.corpus,
                            corpus_config=settings.corpus_config, **common)
    return SlicedTaskEstimator(source_config, source=source, task=settings.task, label_column=settings.label_column,
                               importance=settings.importance, train_embeddings=settings.train_embeddings, **common)
