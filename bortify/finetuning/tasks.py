"""Tasks: which columns hold the text(s) and the label, which metrics score it, and train/dev/test splits.

`TASKS` is the GLUE table (as in transformers' run_glue.py) plus the embedded sentiment task. Any other
dataset works by naming its columns. Checks here run BEFORE any training: missing columns, one class,
label values in dev/test that train does not have.

Over 500 lines because `load_task`'s checks are one small function per way a user's data can be wrong, each
with its own message, and they read best beside the splitting they guard.
"""

from __future__ import annotations

import logging
import math
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


ROW = "__bortify_row__"  # a temporary column: the original row order, restored after a split


def _stratified_split(ds: datasets.Dataset, size: float | int, seed: int, stratify: bool, what: str = "",
                      fix: str = ""):
    """(rest, held-out): `size` rows (int) or that fraction (float) held out by `Dataset.train_test_split`, stratified
    by the ClassLabel `label` when every class has at least two rows and the rest can hold one row of each (else a
    plain seeded split); both parts keep the original row order. A held-out part that would be every row, or
    (stratified) fewer rows than there are classes, is a DataError naming `what` is carved and `fix`."""
    n_held = size if isinstance(size, int) else round(size * len(ds))
    if n_held >= len(ds):
        raise DataError(f"Only {len(ds)} row(s) to carve {what or 'a split'} of {n_held} row(s) from, leaving none to "
                        "train on: give more rows, or dev/test files (--dev_file / --test_file).")
    counts = np.unique(np.asarray(ds["label"]), return_counts=True)[1] if stratify else None
    if counts is not None and counts.min() >= 2 and n_held < len(counts):
        raise DataError(f"The data has {len(counts)} classes but {what or 'the split'} would have {n_held} row(s): a "
                        f"split stratified by class needs at least one row of every class: {fix}.")
    by = "label" if counts is not None and counts.min() >= 2 and len(ds) - n_held >= len(counts) else None
    parts = ds.add_column(ROW, list(range(len(ds)))).train_test_split(test_size=size, seed=seed,
                                                                     stratify_by_column=by)
    return tuple(ds.select(sorted(parts[p][ROW])) for p in ("train", "test"))


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


def _first_occurrences(keys: list, exclude: set = frozenset()) -> list[int]:
    """Indices of the first row of each distinct key, skipping keys in `exclude`, in order."""
    seen, keep = set(exclude), []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def _unlabeled_pool(left_out: datasets.Dataset | None, text_columns: list[str], exclude: set) -> datasets.Dataset | None:
    """Train rows that max_train_samples left out, texts only, de-duplicated and without any text of the
    train/dev/test splits (`exclude`): the pool task distillation may label with a teacher."""
    if left_out is None or len(left_out) == 0:
        return None
    keep = _first_occurrences(_dedup_keys(left_out, text_columns), exclude)
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
    (ClassLabel class index, or float32 for regression). Every check runs here, before any model is built."""
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
    text_columns = _text_columns(text_columns, spec, dsd[train_split].column_names, shown)
    own_dev, own_test = _pick_eval_splits(dsd, spec, dev_split, test_split, shown,
                                          lambda split: _labelled(dsd, split, label_column), local=files is not None)
    _check_columns_and_rows(dsd, (train_split, own_dev, own_test), text_columns, label_column, where)
    dsd = _numbers_as_texts(dsd, (train_split, own_dev, own_test), text_columns, where)
    train, dropped_empty = _train_without_empty_texts(dsd, train_split, text_columns, label_column, where)
    _check_eval_texts(dsd, (own_dev, own_test), text_columns, label_column, where, local=files is not None)
    dev, test, how, test_source = _own_eval_splits(dsd, own_dev, own_test, dev_split, text_columns, label_column)
    own_test = own_dev if test_source == "validation" else own_test
    regression = _is_regression(regression, spec, train, label_column, where(train_split))
    if regression:
        label_names = []
        train, dev, test = _regression_splits(train, dev, test, (train_split, own_dev, own_test), label_column, where)
    else:
        label_names = _class_names(train, label_column, where(train_split), shown)
        train, dev, test = (_encode_classes(ds, label_names, split, where) if ds is not None else None
                            for ds, split in ((train, train_split), (dev, own_dev), (test, own_test)))

    stratify = not regression
    train, dev, test, dropped = _carve_splits(train, dev, test, how, text_columns, stratify=stratify,
                                              fractions=(dev_fraction, test_fraction), seed=split_seed,
                                              train_split=train_split, where=where)
    train, left_out = _cap(train, max_train_samples, split_seed, stratify)
    dev, _ = _cap(dev, max_dev_samples, split_seed + 1, stratify, "max_dev_samples")
    test, _ = _cap(test, max_test_samples, split_seed + 2, stratify, "max_test_samples")
    if not regression and len(set(train["label"])) < 2:
        raise DataError("After splitting/subsampling, the training set has one class; use more data (max_train_samples).")
    exclude = {k for ds in (train, dev, test) for k in _dedup_keys(ds, text_columns)}
    unlabeled = _unlabeled_pool(left_out, text_columns, exclude)

    splits = {"train": len(train), "dev": len(dev), "test": len(test), "seed": split_seed, "how": how,
              # test is the data's own test split (a Hub/file split named test, or --test_file), not carved
              # from train nor a stand-in validation split; test_source says which of the three
              "test_official": test_source == "test", "test_source": test_source,
              "duplicates_dropped": dropped, "dropped_empty": dropped_empty,
              "unlabeled": len(unlabeled) if unlabeled is not None else 0,
              "max_samples": {"train": max_train_samples, "dev": max_dev_samples, "test": max_test_samples}}
    if files is not None:
        splits["files"] = {s: [Path(f).name for f in fs] for s, fs in files.items()}
    metrics = list(spec.metrics) if spec else (["pearsonr", "spearmanr"] if regression else ["accuracy", "f1"])
    return TaskData(name=name, train=train, dev=dev, test=test, text_columns=text_columns,
                    label_names=label_names, regression=regression, metrics=metrics, splits=splits,
                    unlabeled=unlabeled)


def _text_columns(given: list[str] | None, spec: TaskSpec | None, columns: list[str], shown: str) -> list[str]:
    """The text column(s): as given, else the task table's, else the first GUESSED_TEXT_COLUMNS the data has."""
    if given:
        text_columns = list(given)
    elif spec:
        text_columns = list(spec.text_columns)
    else:
        text_columns = next((list(c) for c in GUESSED_TEXT_COLUMNS if all(x in columns for x in c)), None)
        if text_columns is None:
            raise DataError(f"Cannot tell the text column(s) of {shown} (columns: {columns}). Set text_columns "
                            "(one column, or two for sentence pairs).")
    if not 1 <= len(text_columns) <= 2:
        raise DataError(f"text_columns must name one column or a pair, got {text_columns}.")
    return text_columns


def _labelled(dsd, split_name: str | None, label_column: str) -> bool:
    """A split with any gold label (GLUE test splits are all -1)."""
    if not split_name or split_name not in dsd or label_column not in dsd[split_name].column_names:
        return False
    return any(v is not None and v != -1 for v in dsd[split_name][label_column])


def _check_columns_and_rows(dsd, split_names, text_columns: list[str], label_column: str, where: _Sources) -> None:
    """Each used split has the text and label columns and at least one row."""
    for split_name in dict.fromkeys(s for s in split_names if s):
        split = dsd[split_name]
        missing = [c for c in [*text_columns, label_column] if c not in split.column_names]
        if missing:
            raise DataError(f"{where(split_name).capitalize()} lacks column(s) {missing}; its columns are "
                            f"{split.column_names}. Set text_columns / label_column.")
        if len(split) == 0:
            raise DataError(f"{where(split_name).capitalize()} has no rows (only a header?): give data rows.")


def _as_text(value):
    """A text cell as a string: numbers as they are written (a JSON 12 or a csv column of numbers is the text
    "12"; 3.0 from a pandas float column "3"); missing values (None, NaN) stay missing."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    return value


def _numbers_as_texts(dsd, split_names, text_columns: list[str], where: _Sources):
    """Text columns that are not strings (a JSON/CSV column inferred as numbers, or mixed numbers and strings) read
    as strings, so numeric texts are texts, not "empty"; anything else (lists, objects) is refused by name."""
    for split_name in dict.fromkeys(s for s in split_names if s):
        ds = dsd[split_name]
        columns = [c for c in text_columns if getattr(ds.features[c], "dtype", None) not in ("string", "large_string")]
        if not columns:
            continue
        for column in columns:
            bad = next(((i, v) for i, v in enumerate(ds[column]) if not (v is None or isinstance(_as_text(v), str))),
                       None)
            if bad is not None:
                raise DataError(f"{where(split_name).capitalize()}: column {column!r} row {bad[0] + 1} holds "
                                f"{type(bad[1]).__name__} {str(bad[1])[:60]!r}, not a text: give plain texts in "
                                "the text columns.")
        features = datasets.Features({**ds.features, **{c: datasets.Value("string") for c in columns}})
        dsd[split_name] = ds.map(lambda batch: {c: [_as_text(v) for v in batch[c]] for c in columns}, batched=True,
                                 features=features, desc=None)
        logger.info("Read the %s column(s) %s of %s as text.", "number" if len(columns) == 1 else "numeric",
                    columns, where(split_name))
    return dsd


def _clean(ds: datasets.Dataset, text_columns: list[str], label_column: str) -> datasets.Dataset:
    """The text columns and the label (renamed `label`) only."""
    ds = ds.select_columns([*text_columns, label_column])
    return ds.rename_column(label_column, "label") if label_column != "label" else ds


def _train_without_empty_texts(dsd, train_split: str, text_columns: list[str], label_column: str,
                               where: _Sources) -> tuple[datasets.Dataset, int]:
    """(train, rows dropped): empty texts are dropped from train (counted, warned, recorded in report.json)."""
    train = _clean(dsd[train_split], text_columns, label_column)
    empty = _empty_text_rows(train, text_columns)
    if empty:
        logger.warning("Dropped %d train row(s) with an empty or missing text in %s (%s).", len(empty),
                       "/".join(text_columns), where(train_split))
        train = train.select(sorted(set(range(len(train))) - set(empty)))
        if len(train) == 0:
            raise DataError(f"Every row of {where(train_split)} has an empty {'/'.join(text_columns)}.")
    return train, len(empty)


def _check_eval_texts(dsd, split_names, text_columns: list[str], label_column: str, where: _Sources, *,
                      local: bool) -> None:
    """Empty texts in dev/test are an error (their rows are the user's measurement: dropping them silently would
    change the score's meaning), and so are unlabelled rows in a dev/test file."""
    for split_name in (s for s in split_names if s):
        bad = _empty_text_rows(dsd[split_name], text_columns)
        if bad:
            raise DataError(f"{where(split_name).capitalize()} has {len(bad)} row(s) with an empty or missing "
                            f"{'/'.join(text_columns)} text: {_rows_text(bad)}. Fill in or drop those rows.")
        unlabelled = [i for i, v in enumerate(dsd[split_name][label_column]) if v is None] if local else []
        if unlabelled:
            raise DataError(f"{where(split_name).capitalize()} has {len(unlabelled)} row(s) with no label in "
                            f"column {label_column!r}: {_rows_text(unlabelled)}. Fill in or drop them.")


def _own_eval_splits(dsd, own_dev: str | None, own_test: str | None, dev_split: str | None,
                     text_columns: list[str], label_column: str):
    """(dev or None, test or None, how each was made, test source) from the data's own splits. Data with a
    labelled dev split but no labelled test split (GLUE): its dev split becomes the held-out test, and a new dev
    is carved out of train later (our choice; recorded in report.json)."""
    how = {}
    dev = _clean(dsd[own_dev], text_columns, label_column) if own_dev else None
    test = _clean(dsd[own_test], text_columns, label_column) if own_test else None
    test_source = "test" if test is not None else "carved"
    if test is None and dev is not None and not dev_split:
        test, dev = dev, None
        how["test"] = f"the dataset's {own_dev!r} split"
        test_source = "validation"
    elif test is not None:
        how["test"] = f"the dataset's {own_test!r} split"
    if dev is not None:
        how["dev"] = f"the dataset's {own_dev!r} split"
    return dev, test, how, test_source


def _is_regression(regression: bool | None, spec: TaskSpec | None, train: datasets.Dataset, label_column: str,
                   where: str) -> bool:
    """As given, else the task table's, else from the label column's type: floats are scores unless they are
    few whole numbers (0.0/1.0 class ids in a csv); a string column of fractional numbers with a few typos is
    an error rather than a many-class task."""
    if regression is not None:
        return regression
    feature = train.features["label"]
    numeric = isinstance(feature, datasets.Value)
    regression = spec.regression if spec else (feature.dtype.startswith("float") if numeric else False)
    if regression and numeric:
        values = set(train["label"])
        if all(float(v).is_integer() for v in values if v is not None) and len(values) <= 20:
            regression = False  # floats that are really class ids (e.g. 0.0/1.0 in a csv)
    if not regression and numeric and feature.dtype in ("string", "large_string"):
        typos = _looks_like_scores_with_typos(train["label"])
        if typos:
            raise DataError(
                f"Label column {label_column!r} of {where} holds fractional numbers and non-numeric value(s) "
                f"{[v for _, v in typos[:3]]} at {_rows_text([i for i, _ in typos])}: fix those rows for a "
                "regression task, or set regression false to use every value as a class.")
    return regression


def _regression_splits(train, dev, test, split_names, label_column: str, where: _Sources):
    """Every split's label as float32 (a ClassLabel train column is refused: classes, not scores)."""
    feature = train.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        raise DataError(f"Label column {label_column!r} of {where(split_names[0])} holds classes {feature.names}, "
                        "not scores: set regression false.")
    return tuple(_regression_labels(ds, where(split), label_column) if ds is not None else None
                 for ds, split in zip((train, dev, test), split_names))


def _class_names(train: datasets.Dataset, label_column: str, where: str, shown: str) -> list[str]:
    """Class names: a ClassLabel feature's, else the distinct train values as strings, sorted by value."""
    feature = train.features["label"]
    present = set(train["label"])
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        if None in present:
            raise DataError(f"{where.capitalize()} has rows with no label in column {label_column!r}; drop them first.")
        names = _labels_as_strings(sorted(present, key=lambda v: (str(type(v)), v)))
    if len(present) < 2:
        raise DataError(f"The training data of {shown} has only one class ({sorted(map(str, present))}): a "
                        "classifier needs at least two. Check label_column or the data files.")
    return names


def _encode_classes(ds: datasets.Dataset, label_names: list[str], split_name: str, where: _Sources) -> datasets.Dataset:
    """`label` as ClassLabel(names=label_names): a split already in those classes is checked for ids out of
    range; any other is mapped by name (ClassLabel ids -> their names, values -> str) and cast with
    `cast_column(ClassLabel)`, after naming values the training data does not have."""
    feature = ds.features["label"]
    if isinstance(feature, datasets.ClassLabel) and feature.names == label_names:
        bad = sorted({v for v in ds["label"] if not 0 <= v < len(label_names)})
        if bad:
            raise DataError(f"Split {split_name!r} has label ids {bad[:5]} outside {label_names}.")
        return ds
    to_name = feature.int2str if isinstance(feature, datasets.ClassLabel) else str
    unknown = sorted({to_name(v) for v in ds["label"]} - set(label_names))
    if unknown:
        raise DataError(f"{where(split_name).capitalize()} has label value(s) {unknown[:5]} that the training data "
                        f"does not have (train labels: {label_names}). Fix the data or map the labels first.")
    as_names = datasets.Features({**ds.features, "label": datasets.Value("string")})
    ds = ds.map(lambda batch: {"label": [to_name(v) for v in batch["label"]]}, batched=True, features=as_names)
    return ds.cast_column("label", datasets.ClassLabel(names=label_names))


def _carve_splits(train, dev, test, how: dict, text_columns: list[str], *, stratify: bool,
                  fractions: tuple[float, float], seed: int, train_split: str, where: _Sources):
    """(train, dev, test, duplicates dropped): a missing test, then a missing dev, carved out of train by seeded
    (stratified) splits whose sizes are fractions of the original train split. Splits carved from train must
    not share texts (the embedded data repeats some snippets): exact duplicate inputs are dropped first, keeping
    the first occurrence (our choice; the count is recorded)."""
    dev_fraction, test_fraction = fractions
    dropped = 0
    if test is None or dev is None:
        keep = _first_occurrences(_dedup_keys(train, text_columns))
        dropped = len(train) - len(keep)
        if dropped:
            train = train.select(keep)
    kind = f"seeded {'stratified ' if stratify else ''}split"
    n_original = len(train)
    def fix(fraction: str, value: float, size: int) -> str:
        n_classes = len(set(train["label"])) if stratify else 0
        least = f" to at least {math.ceil(1000 * n_classes / n_original) / 1000:g}" if n_classes > size else ""
        return (f"give {'a test file (--test_file)' if fraction == 'test_fraction' else 'a dev file (--dev_file)'}, "
                f"or raise {fraction} (now {value:g}){least}")

    if test is None:
        size = max(1, round(test_fraction * n_original))
        train, test = _stratified_split(train, size, seed, stratify, f"the test split ({test_fraction:g} of "
                                        f"{where(train_split)})", fix("test_fraction", test_fraction, size))
        how["test"] = f"{kind} of {test_fraction:.0%} of {train_split!r} (seed {seed})"
    if dev is None:
        size = max(1, round(dev_fraction * n_original))
        train, dev = _stratified_split(train, size, seed + 1, stratify, f"the dev split ({dev_fraction:g} of "
                                       f"{where(train_split)})", fix("dev_fraction", dev_fraction, size))
        how["dev"] = f"{kind} of {dev_fraction:.0%} of {train_split!r} (seed {seed + 1})"
    if len(train) == 0:
        raise DataError(f"{where(train_split).capitalize()} is too small to carve dev/test splits from: give more "
                        "rows, or dev/test files.")
    return train, dev, test, dropped


def _cap(ds: datasets.Dataset, n: int | None, seed: int, stratify: bool, what: str = "max_train_samples"):
    """(a seeded (stratified) subsample of n rows, the rows left out or None)."""
    if n is None or n >= len(ds):
        return ds, None
    rest, sample = _stratified_split(ds, n, seed, stratify, f"a sample of {n} rows ({what})",
                                     f"raise {what} or leave it unset")
    return sample, rest


def load_task(data_args) -> TaskData:
    """The task from a FinetuneDataArguments (prepare_task with its data options): how finetune, compare and
    compress all load the same splits."""
    return prepare_task(
        data_args.resolved_dataset(), dataset_config=data_args.dataset_config, task=data_args.task,
        data_files=data_args.data_files(), text_columns=data_args.text_columns, label_column=data_args.label_column,
        train_split=data_args.train_split, dev_split=data_args.dev_split, test_split=data_args.test_split,
        dev_fraction=data_args.dev_fraction, test_fraction=data_args.test_fraction, split_seed=data_args.split_seed,
        max_train_samples=data_args.max_train_samples, max_dev_samples=data_args.max_dev_samples,
        max_test_samples=data_args.max_test_samples, regression=data_args.regression)
