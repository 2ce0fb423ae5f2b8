"""Tasks: which columns hold the text(s) and the label, which metrics score it, and train/dev/test splits.

`TASKS` is the GLUE table (as in transformers' run_glue.py) plus the embedded sentiment task. Any other
dataset works by naming its columns. Checks here run BEFORE any training: missing columns, one class,
label values in dev/test that train does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import numpy as np

from bortify.data import DataError, load_any_dataset


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


def prepare_task(
    dataset: str,
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
    (int class index, or float for regression)."""
    name, spec = resolve_task(dataset, dataset_config, task)
    dsd = load_any_dataset(dataset, dataset_config, data_files)
    if train_split not in dsd:
        raise DataError(f"Dataset {dataset!r} has no split {train_split!r} (it has {list(dsd)}); set train_split.")
    label_column = label_column or (spec.label_column if spec else "label")
    columns = dsd[train_split].column_names
    if text_columns:
        text_columns = list(text_columns)
    elif spec:
        text_columns = list(spec.text_columns)
    else:
        text_columns = next((list(c) for c in GUESSED_TEXT_COLUMNS if all(x in columns for x in c)), None)
        if text_columns is None:
            raise DataError(f"Cannot tell the text column(s) of {dataset!r} (columns: {columns}). Set text_columns "
                            "(one column, or two for sentence pairs).")
    if not 1 <= len(text_columns) <= 2:
        raise DataError(f"text_columns must name one column or a pair, got {text_columns}.")
    for split_name, split in dsd.items():
        missing = [c for c in [*text_columns, label_column] if c not in split.column_names]
        if missing and split_name in (train_split, dev_split, test_split):
            raise DataError(f"Split {split_name!r} of {dataset!r} lacks column(s) {missing}; its columns are "
                            f"{split.column_names}. Set text_columns / label_column.")

    # Which splits serve as dev and test. A split with no gold labels (GLUE test: -1) cannot be used.
    def labelled(split_name):
        if not split_name or split_name not in dsd or label_column not in dsd[split_name].column_names:
            return False
        values = dsd[split_name][label_column]
        return any(v is not None and v != -1 for v in values)

    how = {}
    own_dev = dev_split or (spec.dev_split if spec else None) or next((s for s in ("validation", "dev") if s in dsd), None)
    own_test = test_split or (spec.test_split if spec else None) or ("test" if "test" in dsd else None)
    for given, what in ((dev_split, "dev_split"), (test_split, "test_split")):
        if given and given not in dsd:
            raise DataError(f"Dataset {dataset!r} has no split {given!r} (it has {list(dsd)}); fix {what}.")
    own_dev = own_dev if labelled(own_dev) else None
    own_test = own_test if labelled(own_test) else None

    keep = [*text_columns, label_column]
    def clean(ds):
        ds = ds.select_columns(keep)
        if label_column != "label":
            ds = ds.rename_column(label_column, "label")
        return ds

    train = clean(dsd[train_split])
    dev = clean(dsd[own_dev]) if own_dev else None
    test = clean(dsd[own_test]) if own_test else None
    if test is None and dev is not None and not dev_split:
        # Data with a labelled dev split but no labelled test split (GLUE): its dev split becomes the held-out
        # test, and a new dev is carved out of train (our choice; recorded in report.json).
        test, dev = dev, None
        how["test"] = f"the dataset's {own_dev!r} split"
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
    if regression:
        label_names = []
        def to_float(ds):
            return ds.cast_column("label", datasets.Value("float32"))
        train = to_float(train)
        dev, test = (to_float(d) if d is not None else None for d in (dev, test))
    else:
        if isinstance(feature, datasets.ClassLabel):
            label_names = list(feature.names)
            present = set(train["label"])
        else:
            present = set(train["label"])
            if None in present:
                raise DataError(f"Split {train_split!r} has rows with no label in column {label_column!r}; drop them first.")
            label_names = _labels_as_strings(sorted(present, key=lambda v: (str(type(v)), v)))
        if len(present) < 2:
            raise DataError(f"The training data of {dataset!r} has only one class ({sorted(map(str, present))}): a "
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
                raise DataError(f"Split {split_name!r} has label value(s) {unknown[:5]} that the training data does not "
                                f"have (train labels: {label_names}). Fix the data or map the labels first.")
            ids = [name_to_id[v] for v in values]
            ds = ds.remove_columns("label").add_column("label", ids)
            return ds.cast_column("label", datasets.ClassLabel(names=label_names))

        train = encode(train, train_split)
        dev = encode(dev, own_dev) if dev is not None else None
        test = encode(test, how.get("test", "test")) if test is not None else None

    # Drop rows with empty text (they cannot be tokenised into anything useful).
    def non_empty(ds):
        return ds.filter(lambda ex: all(isinstance(ex[c], str) and ex[c].strip() for c in text_columns))
    train = non_empty(train)

    for frac, what in ((dev_fraction, "dev_fraction"), (test_fraction, "test_fraction")):
        if not 0 < frac < 1:
            raise DataError(f"{what} must be in (0, 1), got {frac}.")
    stratify = not regression
    dropped = 0
    if test is None or dev is None:
        # Splits carved from train must not share texts (the embedded data repeats some snippets): drop exact
        # duplicate inputs first, keeping the first occurrence (our choice; the count is recorded).
        seen, keep_idx = set(), []
        for i, key in enumerate(zip(*[train[c] for c in text_columns])):
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

    def cap(ds, n, seed):  # a seeded (stratified) subsample of n rows
        if n is None or n >= len(ds):
            return ds
        return _stratified_split(ds, n, seed, stratify)[1]

    train = cap(train, max_train_samples, split_seed)
    dev = cap(dev, max_dev_samples, split_seed + 1)
    test = cap(test, max_test_samples, split_seed + 2)
    if not regression and len(set(train["label"])) < 2:
        raise DataError("After splitting/subsampling, the training set has one class; use more data (max_train_samples).")

    splits = {"train": len(train), "dev": len(dev), "test": len(test), "seed": split_seed, "how": how,
              "duplicates_dropped": dropped,
              "max_samples": {"train": max_train_samples, "dev": max_dev_samples, "test": max_test_samples}}
    metrics = list(spec.metrics) if spec else (["pearsonr", "spearmanr"] if regression else ["accuracy", "f1"])
    return TaskData(name=name, train=train, dev=dev, test=test, text_columns=text_columns,
                    label_names=label_names, regression=regression, metrics=metrics, splits=splits)
