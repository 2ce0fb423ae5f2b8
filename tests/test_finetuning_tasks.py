"""Task resolution, label checks and dev/test splits (bortify/finetuning/tasks.py): clear errors before training."""

import collections
import csv

import datasets
import pytest

from bortify.data import DataError
from bortify.finetuning.tasks import TASKS, prepare_task


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def sentiment_rows(n, labels=("neg", "pos")):
    return [{"review": f"review number {i} is {'great' if i % 2 else 'awful'}", "stars": labels[i % len(labels)]}
            for i in range(n)]


def test_embedded_task_gets_seeded_stratified_dev_and_test_recorded(rotten_tomatoes):
    a = prepare_task("embedded:rotten-tomatoes", max_train_samples=300, split_seed=7)
    b = prepare_task("embedded:rotten-tomatoes", max_train_samples=300, split_seed=7)
    assert a.label_names == ["rotten", "fresh"] and a.text_columns == ["text"] and a.metrics[0] == "accuracy"
    assert a.train["text"] == b.train["text"] and a.test["text"] == b.test["text"]  # seeded
    n = len(rotten_tomatoes) - a.splits["duplicates_dropped"]  # repeated snippets are dropped before splitting
    assert len(set(rotten_tomatoes["text"])) == n
    assert a.splits["test"] == round(0.2 * n) and a.splits["dev"] == round(0.1 * n) and a.splits["train"] == 300
    assert "stratified" in a.splits["how"]["test"] and "stratified" in a.splits["how"]["dev"]
    # stratified: class balance of test matches the full data within a point
    full = sum(rotten_tomatoes["label"]) / n
    assert abs(sum(a.test["label"]) / len(a.test) - full) < 0.01
    # no overlap between the splits
    assert not set(a.train["text"]) & set(a.test["text"])
    assert not set(a.dev["text"]) & set(a.test["text"])


def test_local_csv_with_named_columns_and_string_labels(tmp_path):
    path = write_csv(tmp_path / "d.csv", sentiment_rows(60))
    task = prepare_task(path, text_columns=["review"], label_column="stars")
    assert task.label_names == ["neg", "pos"] and task.text_columns == ["review"]
    assert isinstance(task.train.features["label"], datasets.ClassLabel)
    assert task.train.column_names == ["review", "label"]
    assert len(task.train) + len(task.dev) + len(task.test) == 60


def test_missing_column_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", sentiment_rows(20))
    with pytest.raises(DataError, match="lacks column.*'text'.*text_columns"):
        prepare_task(path, text_columns=["text"], label_column="stars")
    with pytest.raises(DataError, match="Cannot tell the text column"):
        prepare_task(path, label_column="stars")


def test_one_class_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", sentiment_rows(20, labels=("pos",)))
    with pytest.raises(DataError, match="only one class"):
        prepare_task(path, text_columns=["review"], label_column="stars")


def test_unknown_label_in_dev_or_test_is_a_clear_error(tmp_path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(20))
    dev = write_csv(tmp_path / "dev.csv", sentiment_rows(6, labels=("neg", "pos", "meh")))
    with pytest.raises(DataError, match=r"label value\(s\) \['meh'\]"):
        prepare_task(train, data_files={"train": train, "validation": dev}, text_columns=["review"], label_column="stars")
    test = write_csv(tmp_path / "test.csv", sentiment_rows(6, labels=("neg", "bad")))
    with pytest.raises(DataError, match=r"\['bad'\]"):
        prepare_task(train, data_files={"train": train, "test": test}, text_columns=["review"], label_column="stars")


def test_glue_layout_uses_validation_as_test_and_carves_dev(tmp_path):
    # GLUE-like: labelled validation, unlabelled test (-1) -> validation is the held-out test, dev from train.
    feats = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]), "idx": datasets.Value("int32")})
    def split(n, unlabelled=False):
        return datasets.Dataset.from_dict({"sentence1": [f"a {i}" for i in range(n)], "sentence2": [f"b {i}" for i in range(n)],
                                           "label": [-1 if unlabelled else i % 2 for i in range(n)], "idx": list(range(n))}, features=feats)
    datasets.DatasetDict({"train": split(50), "validation": split(10), "test": split(10, True)}).save_to_disk(tmp_path / "mrpc")
    task = prepare_task(str(tmp_path / "mrpc"), task="mrpc")
    assert task.text_columns == ["sentence1", "sentence2"] and task.metrics == list(TASKS["mrpc"].metrics)
    assert len(task.test) == 10 and "validation" in task.splits["how"]["test"]
    assert "split of" in task.splits["how"]["dev"] and len(task.train) + len(task.dev) == 50
    assert set(task.test["label"]) <= {0, 1}


def test_float_labels_are_regression_and_integer_floats_are_classes(tmp_path):
    rows = [{"s1": f"x {i}", "s2": f"y {i}", "score": i / 7} for i in range(30)]
    task = prepare_task(write_csv(tmp_path / "r.csv", rows), text_columns=["s1", "s2"], label_column="score")
    assert task.regression and task.label_names == [] and task.metrics[0] == "pearsonr" and task.num_labels == 1
    rows = [{"s": f"x {i}", "y": float(i % 3)} for i in range(30)]
    task = prepare_task(write_csv(tmp_path / "c.csv", rows), text_columns=["s"], label_column="y")
    assert not task.regression and task.num_labels == 3
    assert collections.Counter(task.train["label"]).keys() == {0, 1, 2}


def test_recipes_glue_carry_the_paper_grid_and_demo_section_parses():
    import glob

    from bortify.finetuning.arguments import ARGUMENT_CLASSES
    from bortify.recipes import args_from_dict, load_recipe

    files = sorted(glob.glob("recipes/glue/*.yaml"))
    assert {f.split("/")[-1][:-5] for f in files} >= {"sst2", "cola", "mrpc", "stsb", "rte", "qnli", "qqp", "mnli"}
    for f in files + ["recipes/demo.yaml"]:
        section = {**load_recipe(f)["finetune"], "model": "m", "output_dir": "o"}
        _, data, grid, *_ = args_from_dict(ARGUMENT_CLASSES, section)
        if "glue" in f:
            assert data.task in TASKS and sorted(grid.learning_rates) == [9e-6, 1e-5, 1e-4]
            assert sorted(grid.weight_decays) == [0, 10, 100, 350] and sorted(grid.batch_sizes) == [8, 16]
            assert all(0.35 <= w <= 0.5 for w in grid.warmup_ratios) and len(grid.thetas()) == 48


# --- prepare_task's named steps ---------------------------------------------------------------------------------

def class_split(labels, names=("a", "b")):
    return datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(len(labels))], "label": labels},
                                      features=datasets.Features({"text": datasets.Value("string"),
                                                                  "label": datasets.ClassLabel(names=list(names))}))


@pytest.mark.parametrize("labels, stratify, size", [
    ([0] * 30 + [1] * 10, True, 8),  # stratified: 6 + 2 held out
    ([0] * 30 + [1] * 10, False, 0.25),  # a plain seeded split
    ([0] * 39 + [1], True, 8),  # a class of one row: no stratification possible, a plain split
])
def test_split_is_seeded_keeps_the_row_order_and_stratifies_when_it_can(labels, stratify, size):
    from bortify.finetuning.tasks import _stratified_split

    ds = class_split(labels)
    rest, held = _stratified_split(ds, size, seed=3, stratify=stratify)
    again = _stratified_split(ds, size, seed=3, stratify=stratify)[1]
    assert list(held["text"]) == list(again["text"]) and len(held) == (size if isinstance(size, int) else round(size * 40))
    assert sorted([*rest["text"], *held["text"]]) == sorted(ds["text"])
    for part in (rest, held):
        order = [int(t[1:]) for t in part["text"]]
        assert order == sorted(order)  # the data's own order
    if stratify and min(collections.Counter(labels).values()) >= 2:
        assert collections.Counter(held["label"]) == {0: 6, 1: 2}


@pytest.mark.parametrize("values, feature, expected", [
    (["pos", "neg", "pos"], None, ["neg", "pos"]),
    ([10, 2, 1], None, ["1", "2", "10"]),  # numbers in numeric order, as strings
    ([0.0, 1.0, 0.0], None, ["0.0", "1.0"]),
    ([1, 0], datasets.ClassLabel(names=["no", "yes"]), ["no", "yes"]),  # a ClassLabel keeps its names
])
def test_class_names(values, feature, expected):
    from bortify.finetuning.tasks import _class_names

    features = datasets.Features({"label": feature}) if feature else None
    ds = datasets.Dataset.from_dict({"label": values}, features=features)
    assert _class_names(ds, "label", "train", "'d'") == expected


@pytest.mark.parametrize("values, error", [
    (["pos", "pos"], "only one class"),
    (["pos", None], "no label"),
])
def test_class_names_refuse_one_class_and_missing_labels(values, error):
    from bortify.finetuning.tasks import _class_names

    with pytest.raises(DataError, match=error):
        _class_names(datasets.Dataset.from_dict({"label": values}), "label", "train", "'d'")


def test_encode_classes_maps_values_and_other_classlabels_by_name():
    from bortify.finetuning.tasks import _encode_classes, _Sources

    where = _Sources("'d'", None)
    names = ["neg", "pos"]
    by_value = _encode_classes(datasets.Dataset.from_dict({"label": ["pos", "neg"]}), names, "dev", where)
    assert list(by_value["label"]) == [1, 0] and by_value.features["label"].names == names
    other = class_split([0, 1, 1], names=("pos", "neg"))  # the same classes in another order
    assert list(_encode_classes(other, names, "test", where)["label"]) == [1, 0, 0]
    with pytest.raises(DataError, match=r"label value\(s\) \['meh'\]"):
        _encode_classes(datasets.Dataset.from_dict({"label": ["meh"]}), names, "dev", where)
    with pytest.raises(DataError, match="outside"):
        _encode_classes(class_split([0, -1], names=names), names, "test", where)


@pytest.mark.parametrize("values, given, expected", [
    ([0.5, 1.25, 3.0], None, True),
    ([0.0, 1.0, 0.0], None, False),  # whole-number floats are class ids
    (["a", "b"], None, False),
    ([0.5, 1.25], False, False),  # as given
])
def test_is_regression(values, given, expected):
    from bortify.finetuning.tasks import _is_regression

    ds = datasets.Dataset.from_dict({"label": values})
    assert _is_regression(given, None, ds, "label", "train") is expected


def test_carve_splits_drops_duplicate_texts_first_and_records_how():
    from bortify.finetuning.tasks import _carve_splits, _Sources

    train = datasets.Dataset.from_dict({"text": [f"t{i % 45}" for i in range(50)], "label": [i % 2 for i in range(50)]})
    how = {}
    train, dev, test, dropped = _carve_splits(train, None, None, how, ["text"], stratify=False, fractions=(0.1, 0.2),
                                              seed=1, train_split="train", where=_Sources("'d'", None))
    assert dropped == 5 and (len(train), len(dev), len(test)) == (32, 4, 9)  # 10% / 20% of the 45 distinct rows
    assert not set(train["text"]) & set([*dev["text"], *test["text"]]) and not set(dev["text"]) & set(test["text"])
    assert how == {"test": "seeded split of 20% of 'train' (seed 1)", "dev": "seeded split of 10% of 'train' (seed 2)"}
