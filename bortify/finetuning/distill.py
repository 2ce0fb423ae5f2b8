"""Task-specific distillation: the student learns the fine-tuned teacher's soft labels (docs/methods/07-task-distillation.md §7).

TinyBERT's task stage (Jiao et al. 2020) and Tang et al. 2019 ("Distilling task-specific knowledge from BERT into
simple networks"): once the teacher is fine-tuned on the task, its logits are a label for ANY in-domain text, so the
student can be trained on far more text than the gold rows:

    transfer set = gold train rows                           (label: gold, + the teacher's logits)
                 + k augmented variants of every train row     (no gold label; Agora's generator, docs/methods/03-agora.md §3;
                                                                k fills a small transfer set up to
                                                                distill_augment_until rows: variants_per_row)
                 + an unlabelled in-domain pool                (no gold label: the dataset's unused train rows,
                                                                labels stripped, and/or a user file)
    loss         = α·CE(student, gold) on gold rows + (1-α)·T²·KL(teacher^T ‖ student^T) on every row
                   (losses.task_distillation_loss; MSE to the teacher's score for regression)

The teacher's logits are computed ONCE per transfer-set row before training and travel in the dataset's
`teacher_logits` column: the teacher never runs inside the training loop. Texts of the dev and test splits never
enter the transfer set (compared after lower-casing and collapsing white space).

`distill(...)` is the library entry point (`bortify finetune --mode distill`); `build_transfer_set`,
`teacher_logits_for` and `train_distilled` are its steps (the benchmark reuses them to share one teacher pass
between settings).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import random
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import datasets
import numpy as np
from transformers import DataCollatorWithPadding, Trainer

from bortify.finetuning.arguments import UNLABELED_FORMATS, TaskDistillArguments  # noqa: F401 (re-exported)
from bortify.finetuning.losses import IGNORE_INDEX, layer_relation_loss, task_distillation_loss
from bortify.finetuning.trainer import BestEpoch, StepBar, run_arguments, theta_guard

logger = logging.getLogger(__name__)
SOURCES = ("gold", "augmented", "unlabeled")


class DistillError(ValueError):
    """Task distillation cannot run with these inputs (raised before any long work)."""


# --- the transfer set ---------------------------------------------------------------------------------------

def _suffix(path: Path) -> str:
    return path.suffix.lower()


def text_key(row: dict, text_columns: list[str]) -> tuple:
    """A row's texts, lower-cased with white space collapsed: the identity used to keep dev/test texts out and
    to drop duplicates (stricter than exact equality)."""
    return tuple(" ".join(str(row[c]).lower().split()) for c in text_columns)


def load_unlabeled_file(path: str | Path, text_columns: list[str]) -> list[dict]:
    """Rows {text column: text} from a .txt / .csv / .tsv / .json / .jsonl / .parquet file (labels ignored)."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise DistillError(f"Unlabelled file {str(path)!r} does not exist.")
    if suffix == ".txt":
        if len(text_columns) != 1:
            raise DistillError(f"Unlabelled file {str(path)!r} is plain text (one text per line) but the task has "
                               f"text pairs {text_columns}: give a csv/json file with those columns.")
        with open(path, encoding="utf-8") as f:
            return [{text_columns[0]: line.rstrip("\n")} for line in f]
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            records = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        columns = list(records[0]) if records else []
    elif suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        try:
            records = json.loads(text) if text.lstrip().startswith("[") else [
                json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise DistillError(f"Unlabelled file {str(path)!r} is not JSON / JSON lines: {exc}.") from exc
        if not all(isinstance(r, dict) for r in records):
            raise DistillError(f"Unlabelled file {str(path)!r} must hold objects with the text column(s) "
                               f"{text_columns}.")
        columns = sorted({k for r in records for k in r})
    elif suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path))
        records, columns = list(ds), ds.column_names
    else:
        raise DistillError(f"Unlabelled file {str(path)!r}: unknown format; use one of {', '.join(UNLABELED_FORMATS)}.")
    missing = [c for c in text_columns if c not in columns]
    if records and missing:
        raise DistillError(f"Unlabelled file {str(path)!r} lacks the text column(s) {missing} (its columns: "
                           f"{columns}). Name the columns as in the task data.")
    return [{c: r.get(c) for c in text_columns} for r in records]


@dataclass
class TransferSet:
    """The rows the student learns from: text columns, `label` (gold, or IGNORE_INDEX) and `source`."""

    rows: list[dict]
    counts: dict  # rows per source, and what was dropped (for report.json)

    def select(self, sources=SOURCES, *, augment_k: int | None = None, max_unlabeled: int | None = None) -> "TransferSet":
        """A sub-transfer-set (benchmark ablations share one teacher pass): the given sources, the first
        `augment_k` variants of each train row, the first `max_unlabeled` pool rows (the pool is already
        shuffled)."""
        out, taken = [], {s: 0 for s in SOURCES}
        for row in self.rows:
            src = row["source"]
            if src not in sources:
                continue
            if src == "augmented" and augment_k is not None and row["variant"] >= augment_k:
                continue
            if src == "unlabeled" and max_unlabeled is not None and taken[src] >= max_unlabeled:
                continue
            taken[src] += 1
            out.append(row)
        return TransferSet(out, {**taken, "total": len(out)})


def _clean(rows, text_columns) -> list[dict]:
    """Rows whose text columns are all non-empty strings, reduced to those columns."""
    return [{c: r[c] for c in text_columns} for r in rows
            if all(isinstance(r.get(c), str) and r[c].strip() for c in text_columns)]


def build_transfer_set(task, *, augment_k: int = 0, generator=None, unlabeled_rows=(),
                       max_unlabeled: int | None = None, seed: int = 42) -> TransferSet:
    """Gold train rows + `augment_k` generated variants of each + the unlabelled pool (shuffled with `seed`,
    capped at `max_unlabeled`). No row's text equals (after normalisation) a dev or test text, and the augmented
    and unlabelled rows are unique and differ from the train texts."""
    from bortify.finetuning.generators import generate_rows

    cols = list(task.text_columns)
    held_out = {text_key(r, cols) for split in (task.dev, task.test) for r in split}
    gold = [{**{c: r[c] for c in cols}, "label": r["label"], "source": "gold", "variant": -1} for r in task.train]
    seen = {text_key(r, cols) for r in gold}
    counts = {"gold": len(gold)}

    augmented = []
    if augment_k > 0:
        if generator is None:
            raise DistillError("distill_augment_k > 0 needs a text generator (Agora's nearest-neighbour substitution).")
        rng = random.Random(seed)
        for r in gold:  # one train row at a time, so each variant keeps its index (TransferSet.select by k)
            variants = generate_rows([{c: r[c] for c in cols}], cols, generator, augment_k, rng)
            for j, v in enumerate(variants):
                k = text_key(v, cols)
                if k in held_out or k in seen:
                    continue
                seen.add(k)
                augmented.append({**v, "label": IGNORE_INDEX, "source": "augmented", "variant": j})
    counts["augmented"] = len(augmented)

    pool = _clean(unlabeled_rows or [], cols)
    dropped_held_out = dropped_dup = 0
    unlabeled = []
    for r in pool:
        k = text_key(r, cols)
        if k in held_out:
            dropped_held_out += 1
        elif k in seen:
            dropped_dup += 1
        else:
            seen.add(k)
            unlabeled.append({**r, "label": IGNORE_INDEX, "source": "unlabeled", "variant": -1})
    random.Random(seed + 1).shuffle(unlabeled)
    available = len(unlabeled)
    if max_unlabeled is not None:
        unlabeled = unlabeled[:max_unlabeled]
    counts.update({"unlabeled": len(unlabeled), "unlabeled_available": available,
                   "unlabeled_dropped_dev_test": dropped_held_out, "unlabeled_dropped_duplicates": dropped_dup,
                   "unlabeled_dropped_empty": len(unlabeled_rows or []) - len(pool)})
    rows = gold + augmented + unlabeled
    counts["total"] = len(rows)
    return TransferSet(rows, counts)


def variants_per_row(max_k: int, until: int, n_train: int, n_unlabeled: int) -> int:
    """How many generated variants each train row gets (distill_augment_k / distill_augment_until): enough to bring
    the transfer set (train rows + unlabelled rows + variants) up to `until` rows, at most `max_k`; 0 when the train
    rows and the pool reach it already. `until` 0 = always `max_k`. Variants help when there is little text for the
    teacher to label (debates, no unused rows) and add little where an unlabelled pool exists (Rotten Tomatoes):
    BENCHMARKS.md, task distillation."""
    if max_k <= 0 or n_train <= 0:
        return 0
    if until <= 0:
        return max_k
    missing = until - n_train - n_unlabeled
    return 0 if missing <= 0 else min(max_k, -(-missing // n_train))


def epochs_for(epochs: float, min_examples: int, n_rows: int) -> float:
    """Epochs over a transfer set of `n_rows` rows: `epochs`, raised so that the student sees at least
    `min_examples` rows in all (distill_min_examples; 0 = `epochs` as given). A small transfer set (a few hundred
    gold rows and no unlabelled text) is otherwise trained for a few dozen steps: on debates, 3 epochs over the 300
    gold rows reached 0.41 test accuracy, 15 epochs 0.60 (BENCHMARKS.md, task distillation)."""
    if min_examples <= 0 or n_rows <= 0:
        return epochs
    return max(epochs, round(min_examples / n_rows, 2))


def teacher_logits_for(teacher, rows: list[dict], text_columns: list[str]) -> np.ndarray:
    """The teacher's logits (task label order) for every row, ONE forward per row: the rows go through
    `Labeler.task_logits` sorted by length (less padding per batch), and come back in the original order."""
    if not rows:
        return np.zeros((0, teacher.task.num_labels), dtype=np.float32)
    order = sorted(range(len(rows)), key=lambda i: sum(len(rows[i][c]) for c in text_columns))
    logits = np.asarray(teacher.task_logits([{c: rows[i][c] for c in text_columns} for i in order]), dtype=np.float32)
    out = np.empty_like(logits)
    out[np.asarray(order)] = logits
    return out


# --- training -----------------------------------------------------------------------------------------------

class DistillTrainer(Trainer):
    """Trainer whose loss is `losses.task_distillation_loss`: each batch carries `labels` (IGNORE_INDEX where the
    row has no gold label) and the teacher's precomputed `teacher_logits` (the teacher is not run here)."""

    def __init__(self, *args, alpha: float = 0.5, temperature: float = 2.0, regression: bool = False, focal=None,
                 layers: "LayerKD | None" = None, influence=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kd_alpha, self.kd_temperature, self.kd_regression = alpha, temperature, regression
        self.focal = focal  # congruent.FocalDistillation with --old_model (docs/methods/04-updates.md §4.3)
        self.layers = layers  # the intermediate-layer term (docs/methods/07-task-distillation.md §7.1), None = off
        # finetuning.compatible.InfluenceTerm with --compatible_with: BCT's influence term (docs/methods/04-updates.md §4.4)
        self.influence = influence.to(self.args.device) if influence is not None else None

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.influence is not None:  # φ trains with the student
            from bortify.finetuning.compatible import add_projection_group

            add_projection_group(optimizer, self.influence.projection)
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits")
        labels = inputs.pop("labels")
        old_right, old_logits = inputs.pop("old_right", None), inputs.pop("old_logits", None)
        outputs = model(**inputs, output_hidden_states=self.layers is not None or self.influence is not None)
        if self.focal is not None and old_right is not None:  # focal weights (congruent.py)
            from bortify.finetuning.congruent import focal_task_distillation_loss

            parts = focal_task_distillation_loss(outputs.logits, teacher_logits, labels, old_right, focal=self.focal,
                                                 alpha=self.kd_alpha, temperature=self.kd_temperature,
                                                 old_logits=old_logits)
        else:
            parts = task_distillation_loss(outputs.logits, teacher_logits, labels, alpha=self.kd_alpha,
                                           temperature=self.kd_temperature, regression=self.kd_regression)
        loss = parts.loss
        if self.layers is not None:
            loss = loss + self.layers.weight * self.layers.loss(outputs.hidden_states, inputs)
        if self.influence is not None:
            loss = loss + self.influence.loss(outputs.hidden_states[-1], labels, teacher_logits, IGNORE_INDEX)
        return (loss, outputs) if return_outputs else loss


@dataclass
class LayerKD:
    """The intermediate-layer term's teacher side: the fine-tuned teacher run on each batch (no gradient), the
    layer map and the number of relation heads (docs/methods/07-task-distillation.md §7.1, losses.layer_relation_loss)."""

    teacher: Any
    weight: float
    layer_map: list[int]
    relation_heads: int

    @classmethod
    def build(cls, student, teacher, tokenizer, teacher_tokenizer, weight: float) -> "LayerKD":
        from bortify.pretraining.losses import default_relation_heads
        from bortify.slicing import default_layer_map

        if tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
            raise DistillError("distill_w_layers runs the teacher on the student's token ids, but their vocabularies "
                               "differ; use a teacher with the student's tokenizer or set distill_w_layers 0.")
        s, t = student.config, teacher.config
        return cls(teacher.eval(), weight, default_layer_map(s.num_hidden_layers, t.num_hidden_layers),
                   default_relation_heads(s.hidden_size, t.hidden_size, max_heads=8))

    def loss(self, student_hidden, inputs: dict):
        import torch

        device = next(self.teacher.parameters()).device
        feed = {k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            teacher_hidden = self.teacher(**feed, output_hidden_states=True).hidden_states
        return layer_relation_loss(student_hidden, [h.to(student_hidden[0].device) for h in teacher_hidden],
                                   self.layer_map, inputs.get("attention_mask"), self.relation_heads)

    def describe(self) -> dict:
        return {"weight": self.weight, "layer_map": self.layer_map, "relation_heads": self.relation_heads}


def tokenize_transfer(rows: list[dict], logits: np.ndarray, tokenizer, text_columns: list[str], max_length: int,
                      regression: bool) -> datasets.Dataset:
    """input_ids/attention_mask(/token_type_ids) + `labels` (gold or IGNORE_INDEX) + `teacher_logits`."""
    if len(rows) != len(logits):
        raise ValueError(f"{len(rows)} rows but {len(logits)} rows of teacher logits.")
    labels = [float(r["label"]) if regression else int(r["label"]) for r in rows]
    ds = datasets.Dataset.from_dict({**{c: [r[c] for r in rows] for c in text_columns},
                                     "labels": labels, "teacher_logits": np.asarray(logits, np.float32).tolist()})

    def encode(batch):
        return tokenizer(*[batch[c] for c in text_columns], truncation=True, max_length=max_length)
    return ds.map(encode, batched=True, remove_columns=list(text_columns), desc=None)


def train_distilled(student0, tokenizer, train_tok: datasets.Dataset, args: TaskDistillArguments, *,
                    regression: bool = False, seed: int = 42, callbacks=None, focal=None,
                    layers: LayerKD | None = None, influence=None):
    """Train a copy of `student0` on a tokenised transfer set (student0 is left untouched); returns (the model in
    eval mode, its mean training loss). `focal` (congruent.FocalDistillation): focal weights from the set's
    `old_right` (/`old_logits`) columns (congruent.DistillFocal.add_columns). `influence`
    (finetuning.compatible.InfluenceTerm): BCT's influence term, its φ trained in place with the student."""
    model = copy.deepcopy(student0)
    with tempfile.TemporaryDirectory(prefix="bortify-distill-") as tmp:
        targs = run_arguments(tmp, batch_size=args.distill_batch_size, learning_rate=args.distill_learning_rate,
                              weight_decay=args.distill_weight_decay, warmup=args.distill_warmup,
                              epochs=args.distill_epochs, seed=seed,
                              keep_columns=True)  # keep `teacher_logits` (not a forward() argument) for the loss
        trainer = DistillTrainer(model=model, args=targs, train_dataset=train_tok,
                                 data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                                 callbacks=[StepBar("student"), *(callbacks or []), theta_guard(
                                     {"learning_rate": args.distill_learning_rate, "weight_decay": args.distill_weight_decay,
                                      "warmup_ratio": args.distill_warmup, "batch_size": args.distill_batch_size},
                                     "the student's distillation run", "lower --distill_learning_rate")],
                                 alpha=args.distill_alpha,
                                 temperature=args.distill_temperature, regression=regression, focal=focal,
                                 layers=layers, influence=influence)
        train_output = trainer.train()
    model.eval()
    return model, float(train_output.training_loss)


def teacher_agreement(model, tokenizer, train_tok: datasets.Dataset, logits: np.ndarray, *, regression: bool,
                      max_rows: int = 2000, seed: int = 0, batch_size: int = 64) -> dict:
    """How well the trained student follows its teacher on (a seeded sample of) the transfer set: the fraction of
    rows where their classes agree and how many classes the student still predicts (MSE to the teacher's score
    for regression). Only training rows are read. A student that predicts one class everywhere while its teacher
    does not has collapsed (seen here with too large a learning rate)."""
    import torch

    n = len(train_tok)
    idx = sorted(np.random.default_rng(seed).permutation(n)[:max_rows].tolist())
    rows = train_tok.select(idx).remove_columns([c for c in ("labels", "teacher_logits", "old_right", "old_logits")
                                                 if c in train_tok.column_names])
    collator = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy())
    student = np.concatenate(out) if out else np.zeros((0, logits.shape[1]), np.float32)
    teacher = np.asarray(logits)[idx]
    if regression:
        return {"rows": len(idx), "mse_to_teacher": round(float(np.mean((student[:, 0] - teacher[:, 0]) ** 2)), 4)}
    s_cls, t_cls = student.argmax(1), teacher.argmax(1)
    return {"rows": len(idx), "agreement": round(float(np.mean(s_cls == t_cls)), 4),
            "student_classes": int(len(np.unique(s_cls))), "teacher_classes": int(len(np.unique(t_cls)))}


def checked_agreement(model, tokenizer, train_tok: datasets.Dataset, logits: np.ndarray, *, regression: bool,
                      seed: int) -> dict:
    """`teacher_agreement`, with a warning when the student collapsed to one class where its teacher did not."""
    fidelity = teacher_agreement(model, tokenizer, train_tok, logits, regression=regression, seed=seed)
    if not regression and fidelity["student_classes"] == 1 < fidelity["teacher_classes"]:
        logger.warning("The distilled student predicts one class on every transfer-set row sampled while its teacher "
                       "predicts %d: training collapsed. Lower distill_learning_rate (e.g. halve it) and re-run.",
                       fidelity["teacher_classes"])
    return fidelity


# --- the entry point ----------------------------------------------------------------------------------------

def _check(task, student0, teacher) -> None:
    if teacher.task.text_columns != task.text_columns or teacher.task.regression != task.regression or (
            not task.regression and list(teacher.task.label_names) != list(task.label_names)):
        raise DistillError("The teacher (labeler) was built for another task (text columns, label set or "
                           "regression differ); build it on this task (build_labeler).")
    n = getattr(student0.config, "num_labels", None)
    if n != task.num_labels:
        raise DistillError(f"The student has {n} outputs but the task needs {task.num_labels}; load it with the "
                           "task's labels (trainer.load_classifier).")


def unlabeled_pool(task, args: TaskDistillArguments,
                   unlabeled_rows: list[dict] | None) -> tuple[list[dict], list[str]]:
    """The unlabelled rows of the transfer set (`distill`'s `unlabeled_rows`, or the task's unused train rows, plus
    `distill_unlabeled_file`) and a description of each source."""
    cols = list(task.text_columns)
    pool: list[dict] = []
    sources = []
    if unlabeled_rows is not None:
        pool += list(unlabeled_rows)
        sources.append(f"{len(unlabeled_rows)} given rows")
    elif args.distill_use_unlabeled and getattr(task, "unlabeled", None) is not None:
        pool += [{c: r[c] for c in cols} for r in task.unlabeled]
        sources.append(f"{len(task.unlabeled)} unused train rows")
    if args.distill_unlabeled_file:
        from_file = load_unlabeled_file(args.distill_unlabeled_file, cols)
        pool += from_file
        sources.append(f"{len(from_file)} rows of {Path(args.distill_unlabeled_file).name}")
    return pool, sources


def distill(task, student0, tokenizer, teacher, args: TaskDistillArguments, *, generator=None,
            unlabeled_rows: list[dict] | None = None, seed: int = 42, max_length: int = 128,
            progress: Callable[[str], None] | None = None, focal=None, compat=None,
            dev_score_of: Callable[[Any], float] | None = None):
    """Distil the fine-tuned `teacher` (a labelers.Labeler) into a copy of `student0` on the task's transfer set.

    `unlabeled_rows`: rows with the task's text column(s) (labels, if any, are ignored); None = the task's
    `unlabeled` split when it has one and `args.distill_use_unlabeled`; `args.distill_unlabeled_file` adds to it.
    `generator`: Agora's text generator for `distill_augment_k` (default: nearest-neighbour substitution over the
    teacher's input embeddings). Returns (model, info) with info = transfer-set sizes by source, seconds by
    step and the settings, for report.json. Only train/dev/test TEXTS are read here (dev/test to keep them out
    of the transfer set); no model is scored. `focal` (congruent.DistillFocal, `--old_model`): focal weights
    against the model being replaced (docs/methods/04-updates.md §4.3); info["congruent"] describes them. `compat`
    (finetuning.compatible.CompatFinetune, `--compatible_with`): BCT's influence term through the old model's frozen
    head (docs/methods/04-updates.md §4.4); the trained φ is registered with it. `dev_score_of(model)`: the task's
    dev score of a student; with `distill_best_epoch` it is called after every epoch and the best epoch is kept
    (info["dev_by_epoch"], info["best_epoch"]).
    """
    t0 = time.perf_counter()
    log_progress = progress or (lambda msg: None)
    _check(task, student0, teacher)
    cols = list(task.text_columns)
    pool, sources = unlabeled_pool(task, args, unlabeled_rows)
    n_pool = len(_clean(pool, cols))  # before de-duplication
    if args.distill_max_unlabeled is not None:
        n_pool = min(n_pool, args.distill_max_unlabeled)
    augment_k = variants_per_row(args.distill_augment_k, args.distill_augment_until, len(task.train), n_pool)
    if augment_k > 0 and generator is None:
        from bortify.finetuning.generators import NearestNeighbourSubstitution

        generator = NearestNeighbourSubstitution(teacher.tokenizer, teacher.model.get_input_embeddings().weight)

    log_progress(f"building the transfer set ({augment_k} generated variant(s) per train row)")
    transfer = build_transfer_set(task, augment_k=augment_k, generator=generator, unlabeled_rows=pool,
                                  max_unlabeled=args.distill_max_unlabeled, seed=seed)
    transfer.counts["variants_per_row"] = augment_k
    t1 = time.perf_counter()
    log_progress(f"teacher logits for {len(transfer.rows)} rows")
    logits = teacher_logits_for(teacher, transfer.rows, cols)
    t2 = time.perf_counter()
    train_tok = tokenize_transfer(transfer.rows, logits, tokenizer, cols, max_length, task.regression)
    if focal is not None:  # old = teacher reuses `logits` (no second pass)
        train_tok = focal.add_columns(train_tok, transfer.rows, logits)
    epochs = epochs_for(args.distill_epochs, args.distill_min_examples, len(train_tok))
    if epochs != args.distill_epochs:  # the settings below (report, card) state the epochs actually run
        args = replace(args, distill_epochs=epochs)
    layers = LayerKD.build(student0, teacher.model, tokenizer, teacher.tokenizer, args.distill_w_layers) \
        if args.distill_w_layers > 0 else None
    log_progress(f"training the student on {len(train_tok)} rows for {epochs:g} epoch(s)"
        + (f", intermediate layers {layers.layer_map} of the teacher (weight {layers.weight:g})" if layers else ""))
    influence = compat.influence_term() if compat is not None else None
    best = BestEpoch(dev_score_of) if args.distill_best_epoch and dev_score_of is not None else None
    model, train_loss = train_distilled(student0, tokenizer, train_tok, args, regression=task.regression, seed=seed,
                                        focal=focal.focal if focal is not None else None, layers=layers,
                                        influence=influence, callbacks=[best] if best else None)
    if best is not None:  # φ (influence) trains in place and is not rolled back: it is refitted or checked on dev
        best.restore(model).eval()
    if influence is not None:
        compat.register(model, influence.projection)
    fidelity = checked_agreement(model, tokenizer, train_tok, logits, regression=task.regression, seed=seed)
    t3 = time.perf_counter()
    info = {
        "transfer_set": transfer.counts,
        "unlabeled_sources": sources,
        "teacher": teacher.describe(),
        "examples_seen": int(round(args.distill_epochs * len(train_tok))),
        "train_loss": round(train_loss, 4),
        "teacher_agreement": fidelity,  # on a sample of the transfer set (training rows), not dev/test
        "seconds": {"transfer_set": round(t1 - t0, 1), "teacher_logits": round(t2 - t1, 1),
                    "train": round(t3 - t2, 1), "total": round(t3 - t0, 1)},
        "settings": {**asdict(args), "seed": seed, "max_length": max_length},
    }
    if best is not None:
        info["dev_by_epoch"], info["best_epoch"] = best.scores, best.best_epoch
    if focal is not None:
        info["congruent"] = focal.describe()
    if layers is not None:
        info["layers"] = layers.describe()
    return model, info
