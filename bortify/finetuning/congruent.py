"""Positive-congruent fine-tuning: focal distillation against the model being replaced (docs/methods/04-updates.md §4).

Yan et al., *Positive-Congruent Training*, CVPR 2021 (arXiv:2011.09161). The new model learns the task and,
on top, stays close to the old model, most of all where the old model was right:

    L = CE(z_new, y) + λ · (1/B) Σ_i [α + β · 1(old right on x_i)] · D(z_new_i, z_old_i)

    D = ½ ‖z_new − z_old‖²                                     ("l2", FD-LM: the paper's better variant)
      | τ² · KL(softmax(z_old / τ) ‖ softmax(z_new / τ))        ("kl", at a high temperature τ; τ² keeps the
                                                                gradient's scale independent of τ, Hinton 2015)

Defaults λ = 1, α = 1, β = 5 (the paper's); α = 1, β = 0 is plain distillation from the old model, α = 0 does not
train (the paper). The Σ is a per-batch mean, as the CE is. Our choice for Agora's generated rows (no gold label):
their CE target is the labeler's label (as in any Agora round), but their focal weight is α only — "old right"
would be judged against the labeler's guess, and a generated text is nobody's deployed example, so it gets no
protection bonus (row column `old_right` = 0).

The old model runs ONCE per training row before training (`with_old_outputs`: dataset columns `old_logits` and
`old_right`, like task distillation's `teacher_logits`); `FocalDistillTrainer` reads them from each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer

DIVERGENCES = ("l2", "kl")


@dataclass
class FocalDistillation:
    """The loss settings (docs/methods/04-updates.md §4); `bortify finetune --old_model` fills them from its pc_* options."""

    lam: float = 1.0
    alpha: float = 1.0
    beta: float = 5.0
    divergence: str = "l2"
    temperature: float = 100.0  # "kl" only

    def __post_init__(self):
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"focal distillation divergence must be one of {DIVERGENCES}, got {self.divergence!r}.")
        for name in ("lam", "alpha", "beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"focal distillation {name} must be >= 0, got {getattr(self, name)}.")
        if self.temperature <= 0:
            raise ValueError(f"focal distillation temperature must be > 0, got {self.temperature}.")


class FocalLoss(NamedTuple):
    loss: torch.Tensor  # CE + λ·FD: what is back-propagated
    ce: torch.Tensor  # the task term (detached)
    fd: torch.Tensor  # the weighted distillation term, before λ (detached)


def divergence(new_logits: torch.Tensor, old_logits: torch.Tensor, kind: str = "l2",
               temperature: float = 100.0) -> torch.Tensor:
    """D per row (shape (B,)): ½‖z_new − z_old‖², or τ²·KL(softmax(z_old/τ) ‖ softmax(z_new/τ))."""
    s, t = new_logits.float(), old_logits.detach().float()
    if kind == "l2":
        return 0.5 * ((s - t) ** 2).sum(-1)
    if kind == "kl":  # in float64: at τ ≈ 100 the KL is ~1e-4 of the log-probabilities, near float32's resolution
        log_p_new = F.log_softmax(s.double() / temperature, dim=-1)
        log_p_old = F.log_softmax(t.double() / temperature, dim=-1)
        return ((log_p_old.exp() * (log_p_old - log_p_new)).sum(-1) * temperature**2).to(s.dtype)
    raise ValueError(f"unknown divergence {kind!r}; use one of {DIVERGENCES}.")


def focal_weights(old_right: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """α + β·1(old right), per row."""
    return alpha + beta * old_right.float()


def focal_distillation_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, old_right: torch.Tensor, *,
                            labels: torch.Tensor | None = None, soft_targets: torch.Tensor | None = None,
                            settings: FocalDistillation | None = None) -> FocalLoss:
    """One batch of the module docstring's L. The task term is CE against `labels` (class ids) or against
    `soft_targets` (row distributions: Agora's soft labels); exactly one must be given. The old model is never
    back-propagated into."""
    if (labels is None) == (soft_targets is None):
        raise ValueError("give exactly one of labels / soft_targets for the task term.")
    if new_logits.shape != old_logits.shape:
        raise ValueError(f"new logits {tuple(new_logits.shape)} and old logits {tuple(old_logits.shape)} differ: old "
                         "and new must have the same label set.")
    if old_right.shape[0] != new_logits.shape[0]:
        raise ValueError(f"{old_right.shape[0]} old_right flags for {new_logits.shape[0]} rows.")
    settings = settings or FocalDistillation()
    s = new_logits.float()
    if labels is not None:
        ce = F.cross_entropy(s, labels.long())
    else:
        ce = -(soft_targets.to(s.dtype) * F.log_softmax(s, dim=-1)).sum(-1).mean()
    d = divergence(s, old_logits, settings.divergence, settings.temperature)
    fd = (focal_weights(old_right.to(s.device), settings.alpha, settings.beta) * d).mean()
    return FocalLoss(ce + settings.lam * fd, ce.detach(), fd.detach())


class OldOutputCache:
    """The old model's logits per training text, computed once: Agora re-trains on the same rows every θ and
    round, so each distinct text (the key: its text columns) goes through the old model only the first time."""

    def __init__(self, old, text_columns: list[str], *, max_length: int = 128, batch_size: int = 64):
        self.old, self.text_columns = old, list(text_columns)  # old: an old_model.TaskClassifier
        self.max_length, self.batch_size = max_length, batch_size
        self.store: dict[tuple, np.ndarray] = {}
        self.computed = 0  # rows that went through the old model (tests check "once per text")

    def _key(self, row: dict) -> tuple:
        return tuple(row[c] for c in self.text_columns)

    def logits_for(self, rows: list[dict]) -> np.ndarray:
        import datasets

        todo = list(dict.fromkeys(self._key(r) for r in rows if self._key(r) not in self.store))
        if todo:
            split = datasets.Dataset.from_dict({**{c: [k[i] for k in todo] for i, c in enumerate(self.text_columns)},
                                                "label": [0] * len(todo)})
            logits = self.old.logits(split, self.text_columns, max_length=self.max_length, batch_size=self.batch_size)
            self.store.update(zip(todo, logits))
            self.computed += len(todo)
        width = len(self.old.id_map)
        return np.stack([self.store[self._key(r)] for r in rows]) if rows else np.zeros((0, width), np.float32)


def old_right_flags(old_logits: np.ndarray, labels, gold: list[bool] | None = None) -> np.ndarray:
    """1.0 where the old model's class (argmax) is the row's gold label, else 0.0; rows with `gold` False
    (Agora's generated rows) are 0.0 whatever the old model says (module docstring)."""
    right = (np.asarray(old_logits).argmax(-1) == np.asarray(labels)).astype(np.float32)
    if gold is not None:
        right *= np.asarray(gold, dtype=np.float32)
    return right


def with_old_outputs(train_tok, old_logits: np.ndarray, old_right: np.ndarray):
    """The tokenised train set plus the cached old-model columns `old_logits` (task label order) and `old_right`."""
    if len(old_logits) != len(train_tok) or len(old_right) != len(train_tok):
        raise ValueError(f"{len(train_tok)} training rows but {len(old_logits)} old-model outputs.")
    ds = train_tok
    for name in ("old_logits", "old_right"):
        if name in ds.column_names:
            ds = ds.remove_columns(name)
    ds = ds.add_column("old_logits", np.asarray(old_logits, np.float32).tolist())
    return ds.add_column("old_right", np.asarray(old_right, np.float32).tolist())


def fit_congruent(model0, tokenizer, train_tok, theta: dict, focal: FocalDistillation, *, epochs: float,
                  max_steps: int = -1, seed: int = 42, desc: str | None = None, training: dict | None = None):
    """trainer.fit with the focal-distillation loss: a copy of `model0` trained on `train_tok` (which carries the
    `old_logits` / `old_right` columns, with_old_outputs) with hyperparameters θ; model0 is left untouched.
    `training`: extra TrainingArguments fields, as trainer.fit takes them."""
    import copy
    import tempfile

    from transformers import DataCollatorWithPadding

    from bortify.finetuning.trainer import StepBar, run_arguments, theta_guard, theta_text

    model = copy.deepcopy(model0)
    with tempfile.TemporaryDirectory(prefix="bortify-pc-") as tmp:
        args = run_arguments(tmp, batch_size=int(theta["batch_size"]), learning_rate=float(theta["learning_rate"]),
                             weight_decay=float(theta["weight_decay"]), warmup=float(theta["warmup_ratio"]),
                             epochs=epochs, max_steps=max_steps, seed=seed,
                             keep_columns=True,  # old_logits / old_right / soft_labels are not forward() arguments
                             **({"extra": training} if training else {}))
        trainer = FocalDistillTrainer(model=model, args=args, train_dataset=train_tok,
                                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                                      callbacks=[StepBar(desc or f"PC {theta_text(theta)}"),
                                                 theta_guard(theta, "the focal-distillation run")], focal=focal)
        trainer.train()
    model.eval()
    return model


class CongruentRuns:
    """What `bortify finetune --old_model` adds to every fine-tuning run (plain θ search or Agora round): the old
    classifier (labels matched by name), its cached logits per text, and the `old_right` flags (0 for rows that
    are not original train rows: Agora's generated rows get α only, module docstring)."""

    def __init__(self, old_model: str, task, focal: FocalDistillation, *, max_length: int = 128,
                 batch_size: int = 64):
        from bortify.finetuning.old_model import load_task_classifier

        self.name, self.focal, self.cols = old_model, focal, list(task.text_columns)
        self.old = load_task_classifier(old_model, task.label_names, "old model")
        self.cache = OldOutputCache(self.old, self.cols, max_length=max_length, batch_size=batch_size)
        self.gold_keys = {tuple(r[c] for c in self.cols) for r in task.train}
        self.old_train_accuracy: float | None = None

    def train_set(self, rows: list[dict], train_tok):
        """`train_tok` (the tokenised `rows`, same order) with the cached old-model columns."""
        logits = self.cache.logits_for(rows)
        gold = [tuple(r[c] for c in self.cols) in self.gold_keys for r in rows]
        right = old_right_flags(logits, [int(r["label"]) for r in rows], gold)
        if self.old_train_accuracy is None:
            self.old_train_accuracy = float(right.sum() / max(1, sum(gold)))
        return with_old_outputs(train_tok, logits, right)

    def describe(self) -> dict:
        """For report.json (finetune's `congruent` key)."""
        f = self.focal
        return {"old_model": self.name, "lambda": f.lam, "alpha": f.alpha, "beta": f.beta, "divergence": f.divergence,
                "temperature": f.temperature if f.divergence == "kl" else None,
                "old_labels_remapped": self.old.remapped,
                "old_rows_computed": self.cache.computed, "old_train_accuracy": self.old_train_accuracy}


class FocalDistillTrainer(Trainer):
    """Trainer whose loss is `focal_distillation_loss`; each batch carries `labels` (or Agora's `soft_labels`) and
    the cached `old_logits` / `old_right` columns (the old model is not run here). Keep those columns: the
    TrainingArguments need remove_unused_columns=False (trainer.run_arguments(keep_columns=True))."""

    def __init__(self, *args, focal: FocalDistillation | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.focal = focal or FocalDistillation()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        old_logits = inputs.pop("old_logits")
        old_right = inputs.pop("old_right")
        soft = inputs.pop("soft_labels", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        parts = focal_distillation_loss(outputs.logits, old_logits, old_right,
                                        labels=None if soft is not None else labels, soft_targets=soft,
                                        settings=self.focal)
        return (parts.loss, outputs) if return_outputs else parts.loss


# --- focal distillation inside task distillation (`bortify finetune --mode distill --old_model`) ---------------
# docs/methods/04-updates.md §4.3. Task distillation (§7) already trains the student towards its fine-tuned teacher on every
# transfer-set row: L = a·CE(gold rows) + (1-a)·mean_i KD_i. When the model being replaced IS that teacher (the
# common case: a small model replaces the big one it was distilled from; `--old_model teacher`, or the --labeler
# path), the focal weights go onto the KD term itself, with no second pass over the transfer set:
#
#     L = a·CE + (1-a) · mean_i [λ·(α + β·1(gold_i ∧ old right on x_i))] · KD_i
#
# λ = α = 1, β = 0 is plain task distillation exactly. Rows without a gold label (augmented variants, the
# unlabelled pool) get λ·α: "old right" needs a gold label, and judging the teacher against its own label would
# make every such row "right" — a uniform bonus, i.e. a larger λ, with no focus on what the old model got right.
# Another old model (a path that is not the teacher) adds the plain-mode focal term against its own cached logits:
#
#     L = a·CE + (1-a)·mean_i KD_i + λ · mean_i [(α + β·1(gold_i ∧ old right))] · D(z_new_i, z_old_i)

OLD_IS_TEACHER = "teacher"  # `--old_model teacher` (distill mode): the run's own fine-tuned teacher


class FocalTaskKDLoss(NamedTuple):
    loss: torch.Tensor  # what is back-propagated
    gold: torch.Tensor  # CE on the gold rows (detached)
    kd: torch.Tensor  # the KD term towards the teacher, weighted when the old model is the teacher (detached)
    fd: torch.Tensor  # the separate focal term against another old model, before λ; 0 when old = teacher


def distill_focal_weights(labels: torch.Tensor, old_right: torch.Tensor, focal: FocalDistillation,
                          ignore_index: int = -100) -> torch.Tensor:
    """α + β·1(gold ∧ old right) per row: a row without a gold label (`labels` == ignore_index) gets α."""
    gold = (labels != ignore_index).float()
    return focal_weights(old_right.float() * gold.to(old_right.device), focal.alpha, focal.beta)


def focal_task_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                                 old_right: torch.Tensor, *, focal: FocalDistillation, alpha: float = 0.5,
                                 temperature: float = 2.0,
                                 old_logits: torch.Tensor | None = None) -> FocalTaskKDLoss:
    """One batch of task distillation (losses.task_distillation_loss: `alpha`, `temperature`) with focal weights
    (the block comment above). `old_logits` None = the old model is the teacher: the KD term is weighted by
    λ·(α + β·1(gold ∧ old right)); else a λ-weighted focal term D(new, old) is added."""
    from bortify.finetuning.losses import IGNORE_INDEX, task_distillation_loss

    if old_right.shape[0] != student_logits.shape[0]:
        raise ValueError(f"{old_right.shape[0]} old_right flags for {student_logits.shape[0]} rows.")
    weights = distill_focal_weights(labels, old_right, focal, IGNORE_INDEX)
    if old_logits is None:
        parts = task_distillation_loss(student_logits, teacher_logits, labels, alpha=alpha, temperature=temperature,
                                       kd_weights=focal.lam * weights)
        return FocalTaskKDLoss(parts.loss, parts.gold, parts.kd, torch.zeros(()))
    if old_logits.shape != student_logits.shape:
        raise ValueError(f"new logits {tuple(student_logits.shape)} and old logits {tuple(old_logits.shape)} differ: "
                         "old and new must have the same label set.")
    parts = task_distillation_loss(student_logits, teacher_logits, labels, alpha=alpha, temperature=temperature)
    d = divergence(student_logits, old_logits, focal.divergence, focal.temperature)
    fd = (weights.to(d) * d).mean()
    return FocalTaskKDLoss(parts.loss + focal.lam * fd, parts.gold, parts.kd, fd.detach())


def is_teacher(old_model: str | None, labeler: str | None) -> bool:
    """Whether `--old_model` names distill mode's teacher: the word 'teacher', or the --labeler path itself."""
    from pathlib import Path

    if old_model == OLD_IS_TEACHER:
        return True
    return bool(old_model and labeler) and Path(old_model).resolve() == Path(labeler).resolve()


class DistillFocal:
    """What `--old_model` adds to task distillation (distill.distill): the `old_right` column for every transfer-
    set row (gold rows only; 0 elsewhere) and, for an old model that is not the teacher, its `old_logits` column
    (one pass per row through the old model, OldOutputCache). With old = teacher the teacher's logits are reused:
    no second pass."""

    def __init__(self, old_model: str, task, focal: FocalDistillation, *, teacher: bool, max_length: int = 128,
                 batch_size: int = 64):
        self.name, self.focal, self.teacher = old_model, focal, teacher
        self.cols = list(task.text_columns)
        self.cache = None
        if not teacher:
            from bortify.finetuning.old_model import load_task_classifier

            old = load_task_classifier(old_model, task.label_names, "old model")
            self.cache = OldOutputCache(old, self.cols, max_length=max_length, batch_size=batch_size)
        self.old_train_accuracy: float | None = None
        self.gold_rows = 0

    def add_columns(self, train_tok, rows: list[dict], teacher_logits: np.ndarray):
        """`train_tok` (the tokenised transfer set, same order as `rows`) plus `old_right` (and `old_logits`)."""
        old_logits = np.asarray(teacher_logits) if self.teacher else self.cache.logits_for(rows)
        gold = [r.get("source", "gold") == "gold" for r in rows]
        labels = [int(r["label"]) if g else 0 for r, g in zip(rows, gold)]
        right = old_right_flags(old_logits, labels, gold)
        self.gold_rows = sum(gold)
        self.old_train_accuracy = float(right.sum() / max(1, self.gold_rows))
        if "old_right" in train_tok.column_names:
            train_tok = train_tok.remove_columns("old_right")
        train_tok = train_tok.add_column("old_right", right.tolist())
        if not self.teacher:
            if "old_logits" in train_tok.column_names:
                train_tok = train_tok.remove_columns("old_logits")
            train_tok = train_tok.add_column("old_logits", np.asarray(old_logits, np.float32).tolist())
        return train_tok

    def describe(self) -> dict:
        """For report.json (finetune's `congruent` key)."""
        f = self.focal
        return {"old_model": self.name, "old_is_teacher": self.teacher, "lambda": f.lam, "alpha": f.alpha,
                "beta": f.beta,
                # old = teacher: the KD term's own divergence (KL at distill_temperature) is the D that is weighted
                "divergence": "kd" if self.teacher else f.divergence,
                "temperature": None if self.teacher or f.divergence != "kl" else f.temperature,
                "old_rows_computed": self.cache.computed if self.cache else 0,
                "old_train_accuracy": self.old_train_accuracy, "gold_rows": self.gold_rows}
