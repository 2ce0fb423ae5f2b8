"""The labeler: a second model that labels Agora's generated texts (docs/methods/03-agora.md §3).

Either an existing classifier (path, Hub or embedded name) or one bortify builds by fine-tuning the teacher
(default all-MiniLM-L6-v2) on the train split. Its dev score must exceed a threshold, else `LabelerError`
before the loop starts. The paper asks for 2/3 accuracy on its (balanced) binary tasks; ours for
classification is m + (1 - m)/3 with m the dev majority-class rate (what always predicting the most frequent
dev class scores), which is 2/3 for a balanced binary task and, unlike uniform chance 1/k, cannot be passed by
a labeler that is barely better than the majority class on a skewed or many-class task; Pearson r 0.5 for
regression. A labeler whose label set differs from the task's is refused.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import datasets
import numpy as np

from bortify.finetuning.acceptance import rejection_reasons
from bortify.finetuning.agora import Rejected
from bortify.finetuning.losses import softmax_with_temperature
from bortify.finetuning.tasks import TaskData
from bortify.finetuning.trainer import (fit, load_classifier_with_note, predict, log_progress, score, theta_guard,
                                        to_predictions, tokenize)
from bortify.utils import check_finite_weights, check_sequence_length

logger = logging.getLogger(__name__)


class LabelerError(ValueError):
    pass


def majority_rate(labels) -> float:
    """The share of the most frequent label (the accuracy of always predicting it)."""
    labels = list(labels)
    if not labels:
        return 0.0
    return max(Counter(labels).values()) / len(labels)


def default_threshold(task: TaskData, *, role: str = "labeler") -> float:
    """The default dev bar (docs/methods/03-agora.md §3.2, §7).

    role "labeler" (Agora: its hard labels join the gold training set): Pearson r 0.5 for regression; for
    classification m + (1 - m)/3, with m the dev majority-class rate (2/3 for a balanced binary task, the paper's bar).
    role "teacher" (task distillation: its soft labels are a second target next to the gold CE, and the student is
    judged on dev afterwards): the teacher must only beat the trivial predictor, m for classification and r 0 for
    regression. A 300-row teacher just under Agora's bar still carries what the student needs (BENCHMARKS.md,
    task distillation: debates 0.640 student vs 0.634 teacher with a teacher at dev 0.585 under Agora's 0.607)."""
    if role not in ("labeler", "teacher"):
        raise ValueError(f"role must be 'labeler' or 'teacher', got {role!r}.")
    if task.regression:
        return 0.5 if role == "labeler" else 0.0
    m = majority_rate(task.dev["label"])
    return m + (1.0 - m) / 3.0 if role == "labeler" else m


def _generic(names: list[str]) -> bool:
    return all(n == f"LABEL_{i}" for i, n in enumerate(names))


class Labeler:
    """Labels rows (dicts with the task's text columns) with class ids of the TASK's label order."""

    def __init__(self, model, tokenizer, task: TaskData, *, max_length: int, batch_size: int = 64,
                 source: str = "", id_map: list[int] | None = None):
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.max_length, self.batch_size, self.source = max_length, batch_size, source
        self.id_map = id_map  # labeler class index -> task class index
        self.dev_score: float | None = None
        self.threshold: float | None = None  # the dev bar it passed (build_labeler)
        self.majority_rate: float | None = None  # dev majority-class rate (classification)
        self.seconds = 0.0
        self.selection: dict | None = None  # teachers.TeacherSelection's record (every candidate's dev score)
        self.candidates: dict = {}  # the other teacher candidates' models by name, scored on test at the end

    def score_candidates(self, split: datasets.Dataset, chosen_scores: dict[str, float] | None = None) -> None:
        """Each teacher candidate's score on `split` (the test split, at the end of a run) as `test_score` in the
        selection record, for the report and the benchmark; the candidate models are released afterwards.
        `chosen_scores` ({metric: score}): the chosen teacher's scores on `split` already measured (the run's own
        test pass); the selection's metric is taken from it, not measured a second time."""
        if not self.selection:
            return
        metric = self.selection.get("metric", "accuracy")
        known = (chosen_scores or {}).get(metric)
        for record in self.selection["candidates"]:
            model = self.candidates.get(record["name"])
            if record["name"] == self.selection.get("chosen") and known is not None:
                record["test_score"] = round(float(known), 4)
                continue
            if model is None:
                continue
            other = Labeler(model, self.tokenizer, self.task, max_length=self.max_length, batch_size=self.batch_size)
            record["test_score"] = round(float(score(other(list(split)), split["label"], [metric],
                                                     self.task.num_labels)[metric]), 4)
        self.candidates = {}

    def logits(self, rows: list[dict]) -> np.ndarray:
        ds = datasets.Dataset.from_list([{**{c: r[c] for c in self.task.text_columns},
                                          "label": 0.0 if self.task.regression else 0} for r in rows])
        return predict(self.model, self.tokenizer, tokenize(ds, self.tokenizer, self.task.text_columns, self.max_length),
                       self.batch_size)

    def __call__(self, rows: list[dict]) -> list:
        if not rows:
            return []
        preds = to_predictions(self.logits(rows), self.task.regression)
        if self.task.regression:
            return [float(p) for p in preds]
        return [int(self.id_map[p]) if self.id_map else int(p) for p in preds]

    def task_logits(self, rows: list[dict]) -> np.ndarray:
        """The labeler's logits per row, columns in the TASK's label order."""
        logits = self.logits(rows)
        if not self.id_map:
            return logits
        out = np.empty_like(logits)
        out[:, self.id_map] = logits
        return out

    def probabilities(self, rows: list[dict], temperature: float = 1.0) -> np.ndarray:
        """softmax(logits / T) per row, columns in the TASK's label order (the soft labels of losses.py)."""
        return softmax_with_temperature(self.task_logits(rows), temperature)

    def evaluate(self, ds: datasets.Dataset) -> float:
        """Accuracy (Pearson r for regression) on a labelled split."""
        preds = self(list(ds))
        metric = "pearsonr" if self.task.regression else "accuracy"
        return score(preds, ds["label"], [metric], self.task.num_labels)[metric]

    def describe(self) -> dict:
        return {"name": self.source, "dev_accuracy" if not self.task.regression else "dev_pearsonr": self.dev_score,
                "threshold": self.threshold, "majority_rate": self.majority_rate, "seconds": round(self.seconds, 1),
                **({"selection": self.selection} if self.selection else {})}


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) from p = softmax(z): p^(1/T), renormalised per row (the same distribution, without a second
    labeler pass)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if temperature == 1:
        return probabilities
    q = np.asarray(probabilities, dtype=np.float64) ** (1.0 / temperature)
    return q / q.sum(axis=1, keepdims=True)


@dataclass
class GeneratedRowLabeler:
    """Agora's `label` callable for classification (agora.py): one labeler pass labels a batch of generated rows
    and applies the acceptance rules (acceptance.rejection_reasons: confidence floor, class cap at the train
    ratio), docs/methods/03-agora.md §3.

    Per row it returns `Rejected(reason)`, the labeler's class id, or with `soft_labels` {"label": id,
    "soft_label": softmax(logits / T)} (the target of losses.soft_cross_entropy)."""

    labeler: Labeler
    ratio: list[float]  # the original train's class ratio (acceptance.class_ratio)
    min_confidence: float | None = None
    balance: bool = True
    soft_labels: bool = True
    temperature: float = 1.0

    def __call__(self, rows: list[dict]) -> list:
        if not rows:
            return []
        probs = self.labeler.probabilities(rows)
        labels = [int(c) for c in probs.argmax(axis=1)]
        why: list = [None] * len(rows)
        if self.balance or self.min_confidence is not None:
            why = rejection_reasons(labels, probs.max(axis=1).tolist(), self.ratio,
                                    min_confidence=self.min_confidence, balance=self.balance)
        soft = tempered(probs, self.temperature) if self.soft_labels else [None] * len(rows)
        return [Rejected(w) if w else y if q is None else {"label": y, "soft_label": q.tolist()}
                for y, w, q in zip(labels, why, soft)]


def _label_map(model, task: TaskData, source: str) -> list[int] | None:
    """Map the labeler's class indices onto the task's, by label name; refuse a different label set."""
    if task.regression:
        if model.config.num_labels != 1:
            raise LabelerError(f"Labeler {source!r} has {model.config.num_labels} classes but the task is regression.")
        return None
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(map(str, names)) == sorted(task.label_names):
        return [task.label_names.index(str(n)) for n in names]
    if _generic(names) and len(names) == len(task.label_names):
        logger.warning("Labeler %s has generic label names %s; assuming they follow the task's order %s.",
                       source, names, task.label_names)
        return list(range(len(names)))
    raise LabelerError(f"Labeler {source!r} predicts labels {names} but the task's labels are {task.label_names}: "
                       "a labeler must have the same label set. Give a labeler fine-tuned on this task, or leave "
                       "`labeler` unset to have bortify fine-tune the teacher.")


def build_labeler(task: TaskData, *, labeler: str | None, teacher: str, max_length: int, seed: int,
                  epochs: float = 3.0, learning_rate: float = 5e-5, batch_size: int = 16,
                  max_train_samples: int | None = None, min_dev_score: float | None = None,
                  eval_batch_size: int = 64, role: str = "labeler", selection=None) -> Labeler:
    """Load or build the labeler and check it on dev (raises LabelerError when it is not good enough).

    `selection` (teachers.TeacherSettings): build the teacher candidates from `teacher` and keep the best on dev
    (teachers.TeacherSelection, docs/methods/07-task-distillation.md §7.2); the record of every candidate lands in `Labeler.selection`.
    None: the stock recipe (fine-tune `teacher` for `epochs` at `learning_rate`)."""
    import transformers

    start = time.perf_counter()
    transformers.set_seed(seed)  # the labeler's head and data order: reproducible with the run's seed
    if labeler:

        from bortify.resources import resolve_model
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        import bortify.finetuning.pooled  # noqa: F401 - a saved teacher/ may be bortify's mean-pooling classifier

        path = resolve_model(labeler)
        try:
            config = transformers.AutoConfig.from_pretrained(path)
        except Exception as exc:
            raise LabelerError(f"Cannot load labeler {labeler!r}: {exc}") from exc
        if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
            raise LabelerError(f"Labeler {labeler!r} is not a sequence classifier (architectures: "
                               f"{config.architectures}). Give a fine-tuned classifier, or set `teacher` and leave "
                               "`labeler` unset to have bortify fine-tune one.")
        check_sequence_length(max_length, config, "--max_length", f"the labeler {labeler!r}")
        log_progress(f"loading the labeler {labeler}")
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
        check_finite_weights(model, f"The labeler {labeler!r} ({path})")
        tokenizer = AutoTokenizer.from_pretrained(path)
        result = Labeler(model, tokenizer, task, max_length=max_length, batch_size=eval_batch_size, source=labeler,
                         id_map=_label_map(model, task, labeler))
    elif selection is not None:
        from bortify.finetuning.teachers import TeacherSelection, candidate_text

        chooser = TeacherSelection(task, teacher, selection)
        chosen, record = chooser.select()
        check_finite_weights(chosen.model, f"The {role} candidate {chosen.name!r}")
        result = Labeler(chosen.model, chooser.tokenizer, task, max_length=max_length, batch_size=eval_batch_size,
                         source=f"{teacher}: {candidate_text(chosen, len(chooser.train))}")
        result.selection = record
        result.candidates = chooser.models  # scored on test at the end (score_candidates)
    else:
        model0, tokenizer, note = load_classifier_with_note(teacher, task.label_names, task.regression,
                                                            max_length=max_length)
        train = task.train
        if max_train_samples and max_train_samples < len(train):
            train = train.shuffle(seed=seed).select(range(max_train_samples))
        log_progress(f"building the labeler: fine-tuning {teacher} on {len(train)} train rows for {epochs:g} epoch(s) "
            f"({note})")
        theta = {"learning_rate": learning_rate, "weight_decay": 0.01, "warmup_ratio": 0.1, "batch_size": batch_size}
        model = fit(model0, tokenizer, tokenize(train, tokenizer, task.text_columns, max_length), theta,
                    epochs=epochs, seed=seed, desc="labeler",
                    guard=theta_guard(theta, f"fine-tuning the {role} {teacher!r}", "lower --labeler_learning_rate"))
        result = Labeler(model, tokenizer, task, max_length=max_length, batch_size=eval_batch_size,
                         source=f"{teacher} fine-tuned on {len(train)} train rows ({epochs:g} epochs)")
    result.dev_score = result.evaluate(task.dev)
    result.seconds = time.perf_counter() - start
    threshold = default_threshold(task, role=role) if min_dev_score is None else min_dev_score
    result.threshold = threshold
    result.majority_rate = None if task.regression else majority_rate(task.dev["label"])
    if not result.dev_score > threshold:
        raise LabelerError(gate_message(result.source, result.dev_score, threshold, result.majority_rate,
                                        default=min_dev_score is None, role=role))
    return result


def gate_message(source: str, dev_score: float, threshold: float, majority: float | None, *, default: bool,
                 role: str = "labeler") -> str:
    """The error for a labeler under its dev bar, naming the bar's basis (the dev majority-class rate)."""
    what = "Pearson r" if majority is None else "accuracy"
    if majority is None:
        basis = "the default for regression" if default else "labeler_min_dev_score"
    elif default and role == "teacher":
        basis = f"the dev majority-class rate {majority:.3f} (always predicting the most frequent class)"
    elif default:
        basis = (f"the dev majority-class rate {majority:.3f} (always predicting the most frequent class) plus a "
                 "third of the rest")
    else:
        basis = f"labeler_min_dev_score; the dev majority-class rate is {majority:.3f}"
    return (f"The labeler ({source}) has dev {what} {dev_score:.3f}, not above the threshold {threshold:.3f} "
            f"({basis}): its labels would poison the training set. Use a better labeler (more labeler_epochs / "
            "labeler_max_train_samples, another teacher) or lower labeler_min_dev_score deliberately.")
