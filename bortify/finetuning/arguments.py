"""The `bortify finetune` options: one dataclass per concern, read from flags or a recipe's `finetune:` section.

Θ (PAPERS.md §3) is the product of the four grid lists (learning rates × weight decays × warmup ratios ×
batch sizes). Plain mode fine-tunes every θ once and keeps the best on dev (grid search, the baseline);
Agora mode runs the paper's loop over the same Θ.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class FinetuneModelArguments:
    model: str = _help("Student checkpoint to fine-tune: a directory (e.g. the pretraining stage's output), a Hub "
                       "name, or an embedded name (embedded:all-MiniLM-L6-v2). Loaded with "
                       "AutoModelForSequenceClassification: an MLM head is dropped and a classifier initialised.")
    output_dir: str = _help("Where the fine-tuned checkpoint, report.json and rounds.png are written.")
    overwrite: bool = _help("Replace an existing output directory's results.", default=False)
    mode: str = _help("'agora' (the Agora loop, PAPERS.md §3) or 'plain' (fine-tune each θ of the grid once, "
                      "keep the best on dev).", default="agora")
    seed: int = _help("Seed of fine-tuning (initialisation of the classifier, data order, generation).", default=42)
    max_length: int = _help("Maximum tokens per example (text pairs together); longer inputs are truncated.",
                            default=128)
    eval_batch_size: int = _help("Batch size for prediction on dev/test and for labelling.", default=64)

    def __post_init__(self):
        if self.mode not in ("agora", "plain"):
            raise ValueError(f"mode must be 'agora' or 'plain', got {self.mode!r}.")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}.")


@dataclass
class FinetuneDataArguments:
    dataset: str = _help("Dataset: an embedded name (embedded:rotten-tomatoes), a local csv/json/parquet file (or "
                         "comma-separated files, or a directory), or a Hub name (glue, with dataset_config sst2).",
                         default="embedded:rotten-tomatoes")
    dataset_config: str | None = _help("Hub dataset configuration, e.g. 'sst2' for glue.", default=None)
    task: str | None = _help("Task name from the built-in table (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, "
                             "rotten-tomatoes) setting text columns and metrics; default: guessed from the "
                             "dataset/config name.", default=None)
    train_file: str | None = _help("Local train file (csv/json/parquet); with dev_file/test_file, each split "
                                   "comes from its own file.", default=None)
    dev_file: str | None = _help("Local dev file (optional; made from train when missing).", default=None)
    test_file: str | None = _help("Local test file (optional; made from train when missing).", default=None)
    text_columns: list[str] | None = _help("One text column, or two for sentence pairs (default: from the task "
                                           "table, or 'text' / 'sentence' / 'sentence1 sentence2' if present).",
                                           default=None)
    label_column: str = _help("Label column: class names/ids, or floats for regression.", default="label")
    regression: bool | None = _help("Treat the label as a float score (default: from the task table or the "
                                    "column's type).", default=None)
    train_split: str = _help("Split used for training.", default="train")
    dev_split: str | None = _help("Split used as dev (Agora's repair set and model selection); default: "
                                  "the task's, else a seeded stratified split of train.", default=None)
    test_split: str | None = _help("Labelled split used as the held-out test, read only at the end; default: "
                                   "'test' if labelled, else the dataset's dev split (then dev is carved from "
                                   "train), else a seeded stratified split of train.", default=None)
    dev_fraction: float = _help("Fraction of train carved out as dev when the data has no dev split.", default=0.1)
    test_fraction: float = _help("Fraction of train carved out as test when the data has no labelled test split.",
                                 default=0.2)
    split_seed: int = _help("Seed of the dev/test splits and of subsampling.", default=42)
    max_train_samples: int | None = _help("Use a seeded stratified subsample of train (small-data regime; speed).",
                                          default=None)
    max_dev_samples: int | None = _help("Subsample dev to this many rows.", default=None)
    max_test_samples: int | None = _help("Subsample test to this many rows.", default=None)

    def data_files(self) -> dict | None:
        if not self.train_file:
            if self.dev_file or self.test_file:
                raise ValueError("dev_file/test_file need train_file too.")
            return None
        files = {"train": self.train_file}
        if self.dev_file:
            files["validation"] = self.dev_file
        if self.test_file:
            files["test"] = self.test_file
        return files


@dataclass
class FinetuneGridArguments:
    learning_rates: list[float] = _help("Θ: learning rates (the Bort paper's grid: 1e-4 1e-5 9e-6).",
                                        default_factory=lambda: [1e-4])
    weight_decays: list[float] = _help("Θ: AdamW weight decays (paper: 0 10 100 350).",
                                       default_factory=lambda: [0.0])
    warmup_ratios: list[float] = _help("Θ: linear warmup as a fraction of the steps (paper: 0.35-0.50).",
                                       default_factory=lambda: [0.1])
    batch_sizes: list[int] = _help("Θ: train batch sizes (paper: 8 16).", default_factory=lambda: [16])
    num_train_epochs: float = _help("Epochs of each fine-tuning run (every θ, every round).", default=3.0)
    max_steps: int = _help("If > 0, optimiser steps per fine-tuning run instead of epochs.", default=-1)

    def thetas(self) -> list[dict]:
        """Θ as a list of hyperparameter sets, in a fixed order."""
        for name in ("learning_rates", "weight_decays", "warmup_ratios", "batch_sizes"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty: Θ needs at least one value of each.")
        return [
            {"learning_rate": lr, "weight_decay": wd, "warmup_ratio": wr, "batch_size": bs}
            for lr, wd, wr, bs in itertools.product(self.learning_rates, self.weight_decays, self.warmup_ratios,
                                                    self.batch_sizes)
        ]


@dataclass
class AgoraArguments:
    max_rounds: int = _help("Agora round budget (replays count as rounds); the loop also stops when Θ is empty.",
                            default=4)
    prune: str = _help("How Θ is pruned after a round: 'worst' (drop the worst-scoring θ, ties together; the "
                       "paper) or 'none' (never prune: stop on max_rounds).", default="worst")
    replay: int = _help("How many times a round may be re-run (without pruning Θ) when it did not improve the "
                        "best dev score (the author needed replay to converge).", default=0)
    k: int = _help("Generated texts per dev mistake.", default=4)
    verify_mistakes: bool = _help("Ours, not the paper's: expand only the dev mistakes whose original text the "
                                  "labeler labels correctly (a labeler wrong at the centre labels the variants wrong "
                                  "too); classification only. Set false for the paper's loop.", default=True)
    train_k: int = _help("Ours, not the paper's: after round 1 also generate this many variants of every original "
                         "train row (labelled by the labeler like the dev-mistake variants), so the added data covers "
                         "the task, not only the dev mistakes' neighbourhoods. 0 = the paper.", default=0)
    generator: str = _help("Text generator: 'nn-substitution' (replace tokens by nearest neighbours in an input-"
                           "embedding table; our choice, PAPERS.md §3).", default="nn-substitution")
    substitution_rate: float = _help("Fraction of word tokens replaced per generated text (10-15 percent; at least 1).",
                                     default=0.15)
    neighbours: int = _help("Each replaced token is drawn from its this-many nearest neighbours (cosine).",
                            default=8)
    generator_embeddings: str = _help("Whose input-embedding table the generator searches: 'labeler', 'student' or "
                                      "a model path/name.", default="labeler")
    repair_fraction: float = _help("Fraction of dev whose mistakes Agora expands (the repair part); the rest (the "
                                   "selection part) only picks θ and the best round, so dev stays an unbiased judge "
                                   "once variants of its mistakes are in train. 1 = the paper (one dev set for "
                                   "both).", default=0.5)
    balance_classes: bool = _help("Cap the generated rows added per labeler class at the train class ratio (the "
                                  "labeler's labels on hard texts are skewed); classification only.", default=True)
    min_labeler_confidence: float | None = _help("Add only generated rows whose labeler confidence (max softmax "
                                                 "probability) is at least this, e.g. 0.7; classification only.",
                                                 default=None)
    soft_labels: bool = _help("Train on the labeler's class distribution for generated rows (knowledge "
                              "distillation; gold rows keep one-hot targets) instead of its hard label (false: the "
                              "paper); classification only.", default=True)
    soft_label_temperature: float = _help("Temperature T of the soft labels, softmax(labeler logits / T); > 1 "
                                          "softens an over-confident labeler.", default=1.0)
    labeler: str | None = _help("A fine-tuned classifier (path, Hub or embedded name) that labels generated texts; "
                                "default: bortify builds one by fine-tuning `teacher` on the train split.",
                                default=None)
    teacher: str = _help("Model fine-tuned into the labeler when `labeler` is unset.",
                         default="embedded:all-MiniLM-L6-v2")
    labeler_epochs: float = _help("Epochs of the labeler's fine-tuning.", default=3.0)
    labeler_learning_rate: float = _help("Learning rate of the labeler's fine-tuning.", default=5e-5)
    labeler_batch_size: int = _help("Batch size of the labeler's fine-tuning.", default=16)
    labeler_max_train_samples: int | None = _help("Fine-tune the labeler on at most this many train rows.",
                                                  default=None)
    labeler_min_dev_score: float | None = _help("The labeler's dev accuracy (Pearson r for regression) must exceed "
                                                "this; default: chance + (1 - chance)/3, i.e. 2/3 for binary "
                                                "tasks (the paper), 0.5 r for regression.", default=None)

    def __post_init__(self):
        if self.prune not in ("worst", "none"):
            raise ValueError(f"prune must be 'worst' or 'none', got {self.prune!r}.")
        if self.generator != "nn-substitution":
            raise ValueError(f"Unknown generator {self.generator!r}; available: 'nn-substitution'.")
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


ARGUMENT_CLASSES = (FinetuneModelArguments, FinetuneDataArguments, FinetuneGridArguments, AgoraArguments)
