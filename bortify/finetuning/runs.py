"""The student's fine-tuning runs and their scores: what every mode (modes.py) searches with, and what the report
says about the result.

- `RunSettings`: the three fields of the model arguments a run reads (max_length, eval_batch_size, seed);
- `Runs`: one fine-tuning run on train (trainer.fit, or the congruent / compatible losses when attached) and
  predictions on dev, with one progress bar over the runs;
- `DevParts`: how dev was used (selection / repair indices and the report's note), given by the mode;
- `Scores` / `score_result`: step 4 of finetune.py, the best model (and every round's best) on dev and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import datasets
from tqdm.auto import tqdm

from bortify.finetuning.agora import AgoraResult
from bortify.finetuning.arguments import FinetuneGridArguments
from bortify.finetuning.losses import one_hot
from bortify.finetuning.tasks import TaskData
from bortify.finetuning.trainer import (examples_seen, fit, log_progress, predict, score, to_predictions,
                                        tokenize)


@dataclass(frozen=True)
class RunSettings:
    """What a run, a prediction and the labeler read of the model arguments (FinetuneModelArguments)."""

    max_length: int
    eval_batch_size: int
    seed: int

    @classmethod
    def of(cls, model_args) -> "RunSettings":
        """From FinetuneModelArguments (after its max_length was fitted to the model: trainer.fitted_max_length)."""
        return cls(max_length=model_args.max_length, eval_batch_size=model_args.eval_batch_size,
                   seed=model_args.seed)


def task_rows(ds: datasets.Dataset, task: TaskData) -> list[dict]:
    """A split's rows as dicts of the text columns and the label."""
    return [{**{c: r[c] for c in task.text_columns}, "label": r["label"]} for r in ds]


def rows_dataset(rows: list[dict], task: TaskData) -> datasets.Dataset:
    """Rows as a Dataset; when any row carries a `soft_label` (Agora with soft labels) every row gets one, gold
    rows their one-hot label (losses.py)."""
    label_type = datasets.Value("float32") if task.regression else datasets.ClassLabel(names=task.label_names)
    columns = {**{c: datasets.Value("string") for c in task.text_columns}, "label": label_type}
    if any("soft_label" in r for r in rows):
        columns["soft_label"] = datasets.Sequence(datasets.Value("float32"), length=task.num_labels)
        rows = [r if "soft_label" in r else {**r, "soft_label": one_hot(r["label"], task.num_labels)} for r in rows]
    return datasets.Dataset.from_list(rows, features=datasets.Features(columns))


def row_key(task: TaskData):
    """A row's identity: its text (a tuple of texts for pair tasks)."""
    cols = task.text_columns
    return (lambda r: r[cols[0]]) if len(cols) == 1 else (lambda r: tuple(r[c] for c in cols))


class Runs:
    """The student's fine-tuning runs on train and its predictions on dev: what plain search and Agora call.

    One bar counts fine-tuning runs (`total`: Agora's total depends on pruning and replays, so it is open-ended);
    each run shows its own bar over optimiser steps (trainer.StepBar). The tokenised train set is cached by size
    (train only grows)."""

    def __init__(self, student0, tokenizer, task: TaskData, settings: RunSettings, grid_args: FinetuneGridArguments,
                 name: str = "plain", total: int | None = None):
        self.student0, self.tokenizer, self.task, self.grid = student0, tokenizer, task, grid_args
        self.settings = settings
        self.max_length, self.eval_batch_size, self.seed = settings.max_length, settings.eval_batch_size, settings.seed
        self.training = grid_args.training_arguments()
        self.dev_tok = tokenize(task.dev, tokenizer, task.text_columns, self.max_length)
        self.bar = tqdm(total=total, desc=f"finetune ({name})", unit="run", dynamic_ncols=True)
        self._train_tok: dict[int, datasets.Dataset] = {}
        self.congruent = None  # congruent.CongruentRuns with --old_model
        self.compat = None  # finetuning.compatible.CompatFinetune with --compatible_with

    def fit(self, rows: list[dict], theta: dict):
        """A fresh copy of the student fine-tuned on `rows` with θ (trainer.fit)."""
        if len(rows) not in self._train_tok:  # train only grows, so its size identifies it
            self._train_tok.clear()
            self._train_tok[len(rows)] = tokenize(rows_dataset(rows, self.task), self.tokenizer,
                                                  self.task.text_columns, self.max_length)
        if self.congruent is not None:  # focal distillation against the old model (docs/methods/04-updates.md §4.3)
            from bortify.finetuning.congruent import fit_congruent

            model = fit_congruent(self.student0, self.tokenizer,
                                  self.congruent.train_set(rows, self._train_tok[len(rows)]), theta,
                                  self.congruent.focal, epochs=self.grid.num_train_epochs,
                                  max_steps=self.grid.max_steps, seed=self.seed, training=self.training)
        elif self.compat is not None:  # BCT's influence loss (docs/methods/04-updates.md §4.4)
            model = self.compat.fit(self.student0, self.tokenizer, self._train_tok[len(rows)], theta,
                                    epochs=self.grid.num_train_epochs, max_steps=self.grid.max_steps, seed=self.seed,
                                    training=self.training)
        else:
            model = fit(self.student0, self.tokenizer, self._train_tok[len(rows)], theta,
                        epochs=self.grid.num_train_epochs, max_steps=self.grid.max_steps, seed=self.seed,
                        training=self.training, eval_tok=self.dev_tok)
        self.bar.update(1)
        return model

    def predictions(self, model, ds_tok: datasets.Dataset):
        """Class ids (scores for regression) of `model` on a tokenised split."""
        return to_predictions(predict(model, self.tokenizer, ds_tok, self.eval_batch_size), self.task.regression)

    def dev_predict(self, model) -> list:
        return self.predictions(model, self.dev_tok).tolist()

    def dev_main_score(self, preds, golds=None) -> float:
        golds = self.task.dev["label"] if golds is None else golds
        return score(preds, golds, [self.task.main_metric], self.task.num_labels)[self.task.main_metric]

    def seen(self, n: int, theta: dict) -> int:
        """Training examples one run over `n` rows processes (an optimiser step takes batch × accumulation rows)."""
        batch = int(theta["batch_size"]) * self.grid.gradient_accumulation_steps
        return examples_seen(n, batch, self.grid.num_train_epochs, self.grid.max_steps)


class DevParts(NamedTuple):
    """How a mode used dev: the selection indices (θ and the best round are chosen on them), the repair indices
    (Agora with repair_fraction < 1; else None) and the report's `dev_note`."""

    select: list[int]
    repair: list[int] | None
    note: str


@dataclass
class Scores:
    """What the report says about the returned model (and every round's best) on dev and, at the end, test."""

    dev: dict
    dev_repair: dict | None
    dev_note: str
    test: dict
    rounds: list[dict]  # RoundRecord dicts + each round's test score
    select_idx: list[int]
    repair_idx: list[int] | None


def score_result(runs: Runs, result: AgoraResult, parts: DevParts) -> Scores:
    """Step 4: the best model on dev (its selection / repair parts, as the mode split them) and on test, and every
    round's best model on test; the round models are released afterwards."""
    task = runs.task
    log_progress(f"predicting on test ({len(task.test)} rows)")
    test_tok = tokenize(task.test, runs.tokenizer, task.text_columns, runs.max_length)

    def metrics_of(preds, gold, idx=None):
        if idx is not None:
            preds, gold = [preds[i] for i in idx], [gold[i] for i in idx]
        return score(preds, gold, task.metrics, task.num_labels)

    best = result.best_model
    select_idx, repair_idx, dev_note = parts
    dev_gold = list(task.dev["label"])
    dev_preds = runs.predictions(best, runs.dev_tok)
    test_metrics = metrics_of(runs.predictions(best, test_tok), task.test["label"])
    rounds = [r.to_dict() for r in result.rounds]
    for rec in rounds:
        model = result.round_models.get(rec["round"])
        if model is not None:
            rec["test_score"] = (test_metrics[task.main_metric] if model is best else
                                 metrics_of(runs.predictions(model, test_tok), task.test["label"])[task.main_metric])
    result.round_models.clear()
    return Scores(dev=metrics_of(dev_preds, dev_gold, select_idx),
                  dev_repair=metrics_of(dev_preds, dev_gold, repair_idx) if repair_idx is not None else None,
                  dev_note=dev_note, test=test_metrics, rounds=rounds, select_idx=select_idx, repair_idx=repair_idx)
