"""The `bortify finetune` options: one dataclass per concern, read from flags or a recipe's `finetune:` section.

Θ (docs/methods/03-agora.md §3) is the product of the four grid lists (learning rates × weight decays × warmup ratios ×
batch sizes). Plain mode fine-tunes every θ once and keeps the best on dev (grid search, the baseline);
Agora mode runs the paper's loop over the same Θ.

Over 500 lines because it is the command's option table: seven dataclasses of fields with their help texts and
checks, which `--help`, recipes and docs/commands.md read together.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from bortify.utils import check_torch_threads, overwrite_field, torch_threads_field
from bortify.utils import help_field


# Argument checks, run in each dataclass's __post_init__: a bad value is refused before any data is loaded or any
# model trained (a negative learning rate used to surface only after the labeler had been fine-tuned).
def _at_least(low, **values):
    for name, value in values.items():
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}.")


def _positive(**values):
    for name, value in values.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}.")
            if v is not None and v == float("inf"):  # every step would be NaN: nothing trains
                raise ValueError(f"{name} must be a finite number, got {v}.")


def _fraction(name, value, *, low_open=True, high_open=True):
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}0, 1{')' if high_open else ']'}, "
                         f"got {value}.")


# TrainingArguments fields that bortify sets itself in every fine-tuning run (trainer.run_arguments): θ,
# epochs/steps, seed and where the run lives; `training_args` may not set them.
RESERVED_TRAINING_ARGS = frozenset({
    "output_dir", "per_device_train_batch_size", "learning_rate", "weight_decay", "warmup_steps", "warmup_ratio",
    "num_train_epochs", "max_steps", "seed", "data_seed", "remove_unused_columns"})
TRAINING_DEFAULTS = {"bf16": False, "fp16": False, "gradient_accumulation_steps": 1, "eval_strategy": "no",
                     "save_strategy": "no"}


def parse_training_args(text: str | None) -> dict:
    """`training_args` (a JSON object of TrainingArguments fields) as a dict; refuses bad JSON, unknown and
    reserved fields by name."""
    if not text:
        return {}
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"training_args is not valid JSON ({exc.msg}): give an object such as "
                         "'{\"eval_steps\": 50}'.") from None
    if not isinstance(value, dict):
        raise ValueError(f"training_args must be a JSON object of TrainingArguments fields, got {text!r}.")
    reserved = sorted(RESERVED_TRAINING_ARGS & set(value))
    if reserved:
        raise ValueError(f"training_args sets {reserved}, which bortify sets itself: use learning_rates, "
                         "weight_decays, warmup_ratios, batch_sizes, num_train_epochs, max_steps and seed instead.")
    from bortify.hygiene import refuse_hub_training_args

    # push_to_hub / hub_* / a networked report_to: the Trainer would publish behind `bortify push` (bortify.hygiene)
    refuse_hub_training_args(value, "training_args")
    return value


def check_training_arguments(extra: dict) -> None:
    """Build one TrainingArguments with `extra` (in a throw-away directory), so that an unknown field or a bad
    combination (fp16 without a GPU, load_best_model_at_end with mismatched strategies) is refused before any data
    is loaded. transformers is imported only here, when a non-default value is set."""
    import dataclasses
    import tempfile

    from transformers import TrainingArguments

    unknown = sorted(set(extra) - {f.name for f in dataclasses.fields(TrainingArguments)})
    if unknown:
        raise ValueError(f"training_args names unknown TrainingArguments field(s) {unknown}: see the "
                         "transformers.TrainingArguments documentation for the field names.")
    with tempfile.TemporaryDirectory(prefix="bortify-args-") as tmp:
        try:
            TrainingArguments(output_dir=tmp, report_to="none", **{"eval_strategy": "no", "save_strategy": "no",
                                                                    **extra})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"The fine-tuning TrainingArguments are refused: {exc}") from None


EMBEDDED_DEFAULT_DATASET = "embedded:rotten-tomatoes"
MODES = ("agora", "plain", "distill")
# Agora's text generators (generators.GENERATORS builds them; docs/methods/03-agora.md §3.3): name -> what it does.
GENERATORS = {"nn-substitution": "replace ~substitution_rate of the word tokens by one of their `neighbours` "
                                 "nearest tokens in an input-embedding table; our choice"}


@dataclass
class FinetuneModelArguments:
    model: str = help_field("Student checkpoint to fine-tune: a directory (e.g. the pretraining stage's output), a Hub "
                       "name, or an embedded name (embedded:all-MiniLM-L6-v2). Loaded with "
                       "AutoModelForSequenceClassification: an MLM head is dropped and a classifier initialised.")
    output_dir: str = help_field("Where the fine-tuned checkpoint, report.json and rounds.png are written.")
    overwrite: bool = overwrite_field()
    mode: str = help_field("'distill' (task distillation, docs/methods/07-task-distillation.md §7, the default: the teacher is fine-tuned on "
                      "train as Agora's labeler is, then the student learns its soft labels over the train texts, "
                      "generated variants and unlabelled in-domain text; the distill_* options), 'agora' (the Agora "
                      "loop, docs/methods/03-agora.md §3) or 'plain' (fine-tune each θ of the grid once, keep the best on "
                      "dev). Distill is the default because it was the most accurate student on every task measured "
                      "(BENCHMARKS.md, the Pareto benchmark).", default="distill")
    seed: int = help_field("Seed of fine-tuning: set (transformers.set_seed) before the student, the labeler and the "
                      "classifier head are built, so two runs with the same arguments give the same weights on the "
                      "same hardware; also data order and generation.", default=42)
    max_length: int = help_field("Maximum tokens per example (text pairs together); longer inputs are truncated.",
                            default=128)
    eval_batch_size: int = help_field("Batch size for prediction on dev/test and for labelling.", default=64)
    torch_threads: int | None = torch_threads_field()

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}.")
        _at_least(1, eval_batch_size=self.eval_batch_size)
        check_torch_threads(self.torch_threads)


@dataclass
class FinetuneDataArguments:
    dataset: str | None = help_field("Dataset: an embedded name (embedded:rotten-tomatoes), a local csv/json/parquet file "
                                "(or comma-separated files, or a directory: files named train*, validation*/dev*/"
                                "valid*, test* keep those roles), or a Hub name (glue, with dataset_config sst2). "
                                "Default: the train_file/dev_file/test_file when given, else "
                                f"{EMBEDDED_DEFAULT_DATASET}. Not together with train_file.", default=None)
    dataset_config: str | None = help_field("Hub dataset configuration, e.g. 'sst2' for glue.", default=None)
    task: str | None = help_field("Task name from the built-in table (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, "
                             "rotten-tomatoes) setting text columns and metrics; default: guessed from the "
                             "dataset/config name.", default=None)
    train_file: str | None = help_field("Local train file (csv/json/parquet); with dev_file/test_file, each split "
                                   "comes from its own file.", default=None)
    dev_file: str | None = help_field("Local dev file (optional; made from train when missing).", default=None)
    test_file: str | None = help_field("Local test file (optional; made from train when missing).", default=None)
    text_columns: list[str] | None = help_field("One text column, or two for sentence pairs (default: from the task "
                                           "table, or 'text' / 'sentence' / 'sentence1 sentence2' if present).",
                                           default=None)
    label_column: str = help_field("Label column: class names/ids, or floats for regression.", default="label")
    regression: bool | None = help_field("Treat the label as a float score (default: from the task table or the "
                                    "column's type).", default=None)
    train_split: str = help_field("Split used for training.", default="train")
    dev_split: str | None = help_field("Split used as dev (Agora's repair set and model selection); default: "
                                  "the task's, else a seeded stratified split of train.", default=None)
    test_split: str | None = help_field("Labelled split used as the held-out test, read only at the end; default: "
                                   "'test' if labelled, else the dataset's dev split (then dev is carved from "
                                   "train), else a seeded stratified split of train.", default=None)
    dev_fraction: float = help_field("Fraction of train carved out as dev when the data has no dev split.", default=0.1)
    test_fraction: float = help_field("Fraction of train carved out as test when the data has no labelled test split.",
                                 default=0.2)
    split_seed: int = help_field("Seed of the dev/test splits and of subsampling.", default=42)
    max_train_samples: int | None = help_field("Use a seeded stratified subsample of train (small-data regime; speed).",
                                          default=None)
    max_dev_samples: int | None = help_field("Subsample dev to this many rows.", default=None)
    max_test_samples: int | None = help_field("Subsample test to this many rows.", default=None)
    heldout: str | None = help_field("A run's heldout.json (docs/methods/09-heldout.md §9; `bortify run` sets it): its test texts are "
                                "dropped from train, dev and the unlabelled pool too. Without it the stage's own test "
                                "split is kept out, and overlap with the base model's corpus and extraction data is "
                                "counted from their reports (report.json `overlap`).", default=None)

    def __post_init__(self):
        if self.dataset and self.train_file:
            raise ValueError(f"Give either dataset ({self.dataset!r}) or train_file ({self.train_file!r}), not both: "
                             "drop --dataset to use your files, or drop --train_file/--dev_file/--test_file.")
        if not self.train_file and (self.dev_file or self.test_file):
            raise ValueError("dev_file/test_file need train_file too (or put train/dev/test files in one folder "
                             "and pass it as dataset).")
        _fraction("dev_fraction", self.dev_fraction)
        _fraction("test_fraction", self.test_fraction)
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError(f"dev_fraction + test_fraction must be < 1 (train keeps the rest), got "
                             f"{self.dev_fraction} + {self.test_fraction}.")
        _at_least(1, max_train_samples=self.max_train_samples, max_dev_samples=self.max_dev_samples,
                  max_test_samples=self.max_test_samples)

    def resolved_dataset(self) -> str | None:
        """The dataset to load: the one given, None when files are given, else the embedded default."""
        if self.dataset or self.train_file:
            return self.dataset
        return EMBEDDED_DEFAULT_DATASET

    def data_files(self) -> dict | None:
        if not self.train_file:
            return None
        files = {"train": self.train_file}
        if self.dev_file:
            files["validation"] = self.dev_file
        if self.test_file:
            files["test"] = self.test_file
        return files


@dataclass
class FinetuneGridArguments:
    learning_rates: list[float] = help_field("Θ: learning rates (the Bort paper's grid: 1e-4 1e-5 9e-6).",
                                        default_factory=lambda: [1e-4])
    weight_decays: list[float] = help_field("Θ: AdamW weight decays (paper: 0 10 100 350).",
                                       default_factory=lambda: [0.0])
    warmup_ratios: list[float] = help_field("Θ: linear warmup as a fraction of the steps (paper: 0.35-0.50).",
                                       default_factory=lambda: [0.1])
    batch_sizes: list[int] = help_field("Θ: train batch sizes (paper: 8 16).", default_factory=lambda: [16])
    num_train_epochs: float = help_field("Epochs of each fine-tuning run (every θ, every round).", default=3.0)
    max_steps: int = help_field("If > 0, optimiser steps per fine-tuning run instead of epochs.", default=-1)
    # transformers.TrainingArguments of each student fine-tuning run (trainer.run_arguments); the θ fields above
    # stay bortify's. The labeler/teacher keeps its own settings (AgoraArguments.labeler_*).
    bf16: bool = help_field("Train in bfloat16 mixed precision (TrainingArguments.bf16).", default=False)
    fp16: bool = help_field("Train in float16 mixed precision (TrainingArguments.fp16; needs a GPU).", default=False)
    gradient_accumulation_steps: int = help_field("Accumulate gradients over this many batches per optimiser step (the "
                                             "effective batch is θ's batch size times this).", default=1)
    eval_strategy: str = help_field("Evaluate the dev loss during each run: 'no', 'steps' or 'epoch' "
                               "(TrainingArguments.eval_strategy). Dev then also guides training, e.g. with "
                               "load_best_model_at_end in training_args.", default="no")
    save_strategy: str = help_field("Save checkpoints during each run: 'no', 'steps', 'epoch' or 'best' "
                               "(TrainingArguments.save_strategy). They are written in the run's temporary "
                               "directory (for load_best_model_at_end), never into output_dir.", default="no")
    training_args: str | None = help_field("Further TrainingArguments of each run as a JSON object, e.g. "
                                      "'{\"eval_steps\": 50, \"load_best_model_at_end\": true}'. Not the θ, epoch, "
                                      f"step or seed fields ({', '.join(sorted(RESERVED_TRAINING_ARGS))}): set "
                                      "those with their own options.", default=None)

    def __post_init__(self):
        for name in ("learning_rates", "weight_decays", "warmup_ratios", "batch_sizes"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty: Θ needs at least one value of each.")
        _positive(learning_rates=self.learning_rates)
        if any(w < 0 for w in self.weight_decays):
            raise ValueError(f"weight_decays must be >= 0, got {self.weight_decays}.")
        for w in self.warmup_ratios:
            _fraction("warmup_ratios", w, low_open=False)
        if any(int(b) != b or b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be whole numbers >= 1, got {self.batch_sizes}.")
        if not (self.max_steps and self.max_steps > 0):
            _positive(num_train_epochs=self.num_train_epochs)
        _at_least(1, gradient_accumulation_steps=self.gradient_accumulation_steps)
        for name, value, allowed in (("eval_strategy", self.eval_strategy, ("no", "steps", "epoch")),
                                     ("save_strategy", self.save_strategy, ("no", "steps", "epoch", "best"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}.")
        extra = self.training_arguments()
        if extra != TRAINING_DEFAULTS:
            check_training_arguments(extra)

    def training_arguments(self) -> dict:
        """The TrainingArguments fields these options set for each student run (trainer.run_arguments' `extra`)."""
        return {"bf16": self.bf16, "fp16": self.fp16, "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "eval_strategy": self.eval_strategy, "save_strategy": self.save_strategy,
                **parse_training_args(self.training_args)}

    def thetas(self) -> list[dict]:
        """Θ as a list of hyperparameter sets, in a fixed order."""
        self.__post_init__()
        return [
            {"learning_rate": lr, "weight_decay": wd, "warmup_ratio": wr, "batch_size": bs}
            for lr, wd, wr, bs in itertools.product(self.learning_rates, self.weight_decays, self.warmup_ratios,
                                                    self.batch_sizes)
        ]


@dataclass
class AgoraArguments:
    max_rounds: int = help_field("Agora round budget (replays count as rounds); the loop also stops when Θ is empty.",
                            default=4)
    prune: str = help_field("How Θ is pruned after a round: 'worst' (drop the worst-scoring θ, ties together; the "
                       "paper) or 'none' (never prune: stop on max_rounds).", default="worst")
    replay: int = help_field("How many times a round may be re-run (without pruning Θ) when it did not improve the "
                        "best dev score (the author needed replay to converge).", default=0)
    k: int = help_field("Generated texts per dev mistake.", default=4)
    verify_mistakes: bool = help_field("Ours, not the paper's: expand only the dev mistakes whose original text the "
                                  "labeler labels correctly (a labeler wrong at the centre labels the variants wrong "
                                  "too); classification only. Set false for the paper's loop.", default=True)
    train_k: int = help_field("Ours, not the paper's: after round 1 also generate this many variants of every original "
                         "train row (labelled by the labeler like the dev-mistake variants), so the added data covers "
                         "the task, not only the dev mistakes' neighbourhoods. 0 = the paper.", default=0)
    generator: str = help_field("Text generator, one of: " + "; ".join(f"'{k}' ({v})" for k, v in GENERATORS.items())
                           + ".", default="nn-substitution")
    substitution_rate: float = help_field("Fraction of word tokens replaced per generated text (10-15 percent; at least 1).",
                                     default=0.15)
    neighbours: int = help_field("Each replaced token is drawn from its this-many nearest neighbours (cosine).",
                            default=8)
    generator_embeddings: str = help_field("Whose input-embedding table the generator searches: 'labeler', 'student' or "
                                      "a model path/name.", default="labeler")
    repair_fraction: float = help_field("Fraction of dev whose mistakes Agora expands (the repair part); the rest (the "
                                   "selection part) only picks θ and the best round, so dev stays an unbiased judge "
                                   "once variants of its mistakes are in train. 1 = the paper (one dev set for "
                                   "both).", default=0.5)
    balance_classes: bool = help_field("Cap the generated rows added per labeler class at the train class ratio (the "
                                  "labeler's labels on hard texts are skewed); classification only.", default=True)
    min_labeler_confidence: float | None = help_field("Add only generated rows whose labeler confidence (max softmax "
                                                 "probability) is at least this, e.g. 0.7; classification only.",
                                                 default=None)
    soft_labels: bool = help_field("Train on the labeler's class distribution for generated rows (knowledge "
                              "distillation; gold rows keep one-hot targets) instead of its hard label (false: the "
                              "paper); classification only.", default=True)
    soft_label_temperature: float = help_field("Temperature T of the soft labels, softmax(labeler logits / T); > 1 "
                                          "softens an over-confident labeler.", default=1.0)
    labeler: str | None = help_field("A fine-tuned classifier (path, Hub or embedded name) that labels generated texts; "
                                "default: bortify builds one by fine-tuning `teacher` on the train split.",
                                default=None)
    teacher: str = help_field("Model fine-tuned into the labeler when `labeler` is unset.",
                         default="embedded:all-MiniLM-L6-v2")
    labeler_epochs: float = help_field("Epochs of the labeler's fine-tuning.", default=3.0)
    labeler_learning_rate: float = help_field("Learning rate of the labeler's fine-tuning.", default=5e-5)
    labeler_batch_size: int = help_field("Batch size of the labeler's fine-tuning.", default=16)
    labeler_max_train_samples: int | None = help_field("Fine-tune the labeler on at most this many train rows.",
                                                  default=None)
    labeler_min_dev_score: float | None = help_field("The labeler's dev accuracy (Pearson r for regression) must exceed "
                                                "this; default in Agora mode: m + (1 - m)/3 with m the dev "
                                                "majority-class rate (2/3 for a balanced binary task, the paper), "
                                                "0.5 r for regression; in distill mode: m (r 0 for regression), "
                                                "the teacher must beat the trivial predictor.", default=None)

    teacher_candidates: list[str] | None = help_field(
        "The teachers built from `teacher` and compared on dev, the best one labelling the transfer set / generated "
        "rows (docs/methods/07-task-distillation.md §7.2): 'probe' (logistic regression on the frozen encoder's pooled features), "
        "'finetune' (full fine-tuning with the pooling the encoder was trained with, the head at "
        "teacher_head_learning_rate, best epoch on dev), 'lp-ft' (head from the probe, then fine-tuned at half "
        "labeler_learning_rate), 'stock' (the [CLS] classifier at one learning rate). Default: probe finetune lp-ft "
        "in distill mode, stock in Agora mode.", default=None)
    teacher_head_learning_rate: float = help_field("Learning rate of the fresh classifier head in the 'finetune' "
                                              "teacher candidate (the encoder trains at labeler_learning_rate).",
                                              default=1e-2)
    teacher_ensemble: int = help_field("k > 1: the average class distribution of the best k teacher candidates is one "
                                  "more candidate, judged on dev like the others (1 = off).", default=1)

    def __post_init__(self):
        if self.prune not in ("worst", "none"):
            raise ValueError(f"prune must be 'worst' or 'none', got {self.prune!r}.")
        if self.generator not in GENERATORS:
            raise ValueError(f"Unknown generator {self.generator!r}; available: {', '.join(GENERATORS)}.")
        if not 0 < self.substitution_rate <= 1:
            raise ValueError(f"substitution_rate must be in (0, 1], got {self.substitution_rate}.")
        if not 0 < self.repair_fraction <= 1:
            raise ValueError(f"repair_fraction must be in (0, 1], got {self.repair_fraction}.")
        if self.min_labeler_confidence is not None and not 0 <= self.min_labeler_confidence <= 1:
            raise ValueError(f"min_labeler_confidence must be in [0, 1], got {self.min_labeler_confidence}.")
        if self.soft_label_temperature <= 0:
            raise ValueError(f"soft_label_temperature must be > 0, got {self.soft_label_temperature}.")
        if self.k < 1 or self.max_rounds < 1 or self.neighbours < 1 or self.replay < 0 or self.train_k < 0:
            raise ValueError("k, max_rounds and neighbours must be >= 1, replay and train_k >= 0.")
        _positive(labeler_epochs=self.labeler_epochs, labeler_learning_rate=self.labeler_learning_rate)
        if self.teacher_candidates is not None:
            from bortify.finetuning.teachers import check_candidates

            check_candidates(self.teacher_candidates)
        _positive(teacher_head_learning_rate=self.teacher_head_learning_rate)
        _at_least(1, teacher_ensemble=self.teacher_ensemble)
        _at_least(1, labeler_batch_size=self.labeler_batch_size,
                  labeler_max_train_samples=self.labeler_max_train_samples)


UNLABELED_FORMATS = (".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet")


@dataclass
class TaskDistillArguments:
    """Options of `--mode distill`. Every name starts with `distill_` so they sit beside the other fine-tuning
    dataclasses in one HfArgumentParser / one recipe `finetune:` section without clashing."""

    distill_temperature: float = help_field("Temperature T of the KD term: KL(softmax(z_t/T) || softmax(z_s/T)), scaled "
                                       "by T² (Hinton et al. 2015). Classification only.", default=2.0)
    distill_alpha: float = help_field("Weight α of the gold-label cross-entropy (on the rows that have a gold label); "
                                 "the KD term gets 1 - α. 0 = soft labels only, 1 = plain fine-tuning on the gold "
                                 "rows.", default=0.5)
    distill_augment_k: int = help_field("At most this many augmented variants of every train row in the transfer set "
                                   "(Agora's nearest-neighbour substitution, no gold label; the teacher labels them), "
                                   "as many as distill_augment_until asks for. 0 = none.", default=8)
    distill_augment_until: int = help_field("Variants fill a small transfer set up to this many rows: each train row gets "
                                       "min(distill_augment_k, ceil((N - train rows - unlabelled rows) / train rows)) "
                                       "variants, none when the train rows and the unlabelled pool reach N already "
                                       "(BENCHMARKS.md, task distillation on debates). 0 = always distill_augment_k.",
                                       default=4000)
    distill_use_unlabeled: bool = help_field("Add the task's unused train rows (those max_train_samples left out), labels "
                                        "stripped, to the transfer set.", default=True)
    distill_unlabeled_file: str | None = help_field("Extra unlabelled in-domain text: a .txt (one text per line; single-"
                                               "text tasks), .csv/.tsv/.json/.jsonl/.parquet file with the task's "
                                               "text column(s). Any label column is ignored.", default=None)
    distill_max_unlabeled: int | None = help_field("At most this many unlabelled rows (a seeded sample of the pool, "
                                              "after removing dev/test texts and duplicates); unset = all.",
                                              default=20000)
    distill_epochs: float = help_field("Epochs over the transfer set (at least; see distill_min_examples). With "
                                       "distill_best_epoch the best dev epoch ships, so this is a ceiling on "
                                       "accuracy's side and a cost on time's: longer than 3 measured better on a "
                                       "binary, a 31-class and a long-text task (BENCHMARKS.md, the panels).",
                                       default=8.0)
    distill_best_epoch: bool = help_field("Score the student on dev after every epoch and keep the best epoch's "
                                          "weights (early stopping by dev, as for the teacher candidates; "
                                          "docs/methods/07-task-distillation.md §7). False = the last epoch's.",
                                          default=True)
    distill_min_examples: int = help_field("Raise the epochs of a small transfer set until the student sees at least this "
                                      "many rows in all (3 epochs over 300 gold rows is a few dozen steps). 0 = "
                                      "distill_epochs as given.", default=20000)
    distill_learning_rate: float = help_field("Peak learning rate of the student (AdamW, linear decay). 5e-4 measured "
                                         "stable for the demo's H128 student; 1e-3 sometimes collapsed to one class "
                                         "(BENCHMARKS.md, task distillation).", default=5e-4)
    distill_batch_size: int = help_field("Train batch size.", default=32)
    distill_warmup: float = help_field("Linear warm-up as a fraction of the steps, in [0, 1).", default=0.1)
    distill_weight_decay: float = help_field("AdamW weight decay.", default=0.01)
    distill_w_layers: float = help_field(
        "Weight of the intermediate-layer term (TinyBERT's task stage; docs/methods/07-task-distillation.md §7.1): for each student layer "
        "and its teacher layer (slicing.default_layer_map), KL between the teacher's and the student's token-token "
        "relations of the hidden states, as MiniLMv2 compares attention relations (no projection: widths may "
        "differ). 0 = off (the default). Runs the fine-tuned teacher on every batch (slower) and needs a teacher "
        "with the student's vocabulary.", default=0.0)

    def __post_init__(self):
        if self.distill_w_layers < 0:
            raise ValueError(f"distill_w_layers must be >= 0 (0 = off), got {self.distill_w_layers}.")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}.")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}.")
        if self.distill_augment_k < 0:
            raise ValueError(f"distill_augment_k must be >= 0, got {self.distill_augment_k}.")
        if self.distill_augment_until < 0:
            raise ValueError(f"distill_augment_until must be >= 0 (0 = always distill_augment_k variants), got "
                             f"{self.distill_augment_until}.")
        if self.distill_max_unlabeled is not None and self.distill_max_unlabeled < 0:
            raise ValueError(f"distill_max_unlabeled must be >= 0 (or unset for all), got {self.distill_max_unlabeled}.")
        if self.distill_min_examples < 0:
            raise ValueError(f"distill_min_examples must be >= 0 (0 = distill_epochs as given), got "
                             f"{self.distill_min_examples}.")
        if self.distill_epochs <= 0:
            raise ValueError(f"distill_epochs must be > 0, got {self.distill_epochs}.")
        if self.distill_learning_rate <= 0:
            raise ValueError(f"distill_learning_rate must be > 0, got {self.distill_learning_rate}.")
        if self.distill_batch_size < 1:
            raise ValueError(f"distill_batch_size must be >= 1, got {self.distill_batch_size}.")
        if not 0.0 <= self.distill_warmup < 1.0:
            raise ValueError(f"distill_warmup must be a fraction in [0, 1), got {self.distill_warmup}.")
        if self.distill_weight_decay < 0:
            raise ValueError(f"distill_weight_decay must be >= 0, got {self.distill_weight_decay}.")
        if self.distill_unlabeled_file is not None:
            path = Path(self.distill_unlabeled_file)
            if not path.is_file():
                raise ValueError(f"distill_unlabeled_file {str(path)!r} does not exist (or is not a file).")
            if path.suffix.lower() not in UNLABELED_FORMATS:
                raise ValueError(f"distill_unlabeled_file {str(path)!r}: unknown format; use one of "
                                 f"{', '.join(UNLABELED_FORMATS)}.")


PC_DIVERGENCES = ("l2", "kl")


@dataclass
class CongruentArguments:
    """`--old_model`: positive-congruent fine-tuning, focal distillation against the model being replaced
    (docs/methods/04-updates.md §4.3). Plain, Agora and distill modes; the other names start with `pc_`."""

    old_model: str | None = help_field("The classifier this fine-tuning replaces (its id2label names must be the task's "
                                  "labels): train with focal distillation against it, L = CE + λ·mean[(α + β·1(old "
                                  "right))·D(new, old)], so fewer examples it got right become wrong (negative flips). "
                                  "--mode distill: 'teacher' (or the --labeler path) = the run's own teacher, whose "
                                  "cached logits are reused: its KD term on gold rows is weighted λ·(α + β·1(teacher "
                                  "right)), λ·α elsewhere. Unset: plain training.", default=None)
    pc_lambda: float = help_field("λ: weight of the focal-distillation term.", default=1.0)
    pc_alpha: float = help_field("α: distillation weight of every row (0 does not work, the paper).", default=1.0)
    pc_beta: float = help_field("β: extra weight of the rows the old model gets right (0 = plain distillation).",
                           default=5.0)
    pc_divergence: str = help_field("D: 'l2' (½‖logit difference‖², the paper's better variant) or 'kl' (τ²·KL at "
                               "temperature pc_temperature).", default="l2")
    pc_temperature: float = help_field("τ of the 'kl' divergence (the paper: a high temperature, ~100).", default=100.0)
    save_teacher: bool = help_field("Keep the fine-tuned teacher (distill) / labeler (agora) as teacher/ in --output_dir, "
                               "so `bortify compare` can measure the student's negative flips against it (its default "
                               "old model).", default=False)

    def __post_init__(self):
        if self.pc_divergence not in PC_DIVERGENCES:
            raise ValueError(f"pc_divergence must be one of {', '.join(PC_DIVERGENCES)}, got {self.pc_divergence!r}.")
        if min(self.pc_lambda, self.pc_alpha, self.pc_beta) < 0:
            raise ValueError(f"pc_lambda, pc_alpha and pc_beta must be >= 0, got {self.pc_lambda}, {self.pc_alpha}, "
                             f"{self.pc_beta}.")
        _positive(pc_temperature=self.pc_temperature)

    def focal(self):
        """The loss settings (bortify.finetuning.congruent.FocalDistillation)."""
        from bortify.finetuning.congruent import FocalDistillation

        return FocalDistillation(lam=self.pc_lambda, alpha=self.pc_alpha, beta=self.pc_beta,
                                 divergence=self.pc_divergence, temperature=self.pc_temperature)


COMPAT_INITS = ("lstsq", "random")


@dataclass
class CompatibleArguments:
    """`--compatible_with`: backward-compatible embeddings in fine-tuning, BCT's influence loss through the old
    classifier's frozen head (docs/methods/04-updates.md §4.4). Every mode (in task distillation the rows without a gold label
    take the teacher's distribution as the target); the other names start with `compat_` /
    `w_compat`, as in `bortify pretrain --compatible_with`."""

    compatible_with: str | None = help_field("The fine-tuned classifier (same task labels, by name) whose embedding space "
                                        "the new model must join (BCT, Shen et al. 2020): its [CLS] embedding, "
                                        "through a learned projection to the old width, must be classified right by "
                                        "the OLD model's frozen head: L = CE(new) + w_compat·CE(w_old(φ(e_new))). The "
                                        "output gains sentence-transformers files (cls pooling + the projection) and "
                                        "report.json BCT's compatibility test on the test split. Unset: off.",
                                        default=None)
    w_compat: float = help_field("With --compatible_with: weight λ of BCT's influence loss.", default=1.0)
    compat_init: str = help_field("With --compatible_with: the projection's start, 'lstsq' (ridge regression of the old "
                             "model's embeddings of the train texts on the initial student's) or 'random'.",
                             default="lstsq")
    compat_eval_gallery: int = help_field("Compatibility test: gallery size (test texts embedded by the old model).",
                                     default=2000)
    compat_eval_queries: int = help_field("Compatibility test: queries (test texts embedded by the new model).",
                                     default=500)
    compat_eval_k: int = help_field("Compatibility test: k of the kNN classification.", default=10)

    def __post_init__(self):
        if self.compat_init not in COMPAT_INITS:
            raise ValueError(f"compat_init must be one of {', '.join(COMPAT_INITS)}, got {self.compat_init!r}.")
        if self.w_compat < 0:
            raise ValueError(f"w_compat must be >= 0, got {self.w_compat}.")
        _at_least(1, compat_eval_gallery=self.compat_eval_gallery, compat_eval_queries=self.compat_eval_queries,
                  compat_eval_k=self.compat_eval_k)

    def settings(self):
        """The run's settings (bortify.finetuning.compatible.CompatSettings)."""
        from bortify.finetuning.compatible import CompatSettings

        return CompatSettings(old_model=self.compatible_with, w_compat=self.w_compat, init=self.compat_init,
                              gallery=self.compat_eval_gallery, queries=self.compat_eval_queries,
                              knn_k=self.compat_eval_k)


ARGUMENT_CLASSES = (FinetuneModelArguments, FinetuneDataArguments, FinetuneGridArguments, AgoraArguments,
                    TaskDistillArguments, CongruentArguments, CompatibleArguments)
