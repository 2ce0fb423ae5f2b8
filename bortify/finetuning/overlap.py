"""Fine-tuning's side of the held-out test split (docs/methods/09-heldout.md §9): test texts are dropped from train, dev and
the unlabelled pool before any model sees them, and report.json's `overlap` counts test texts against every input
of every stage (train, dev, the transfer set, the pretraining corpus, the extraction estimator's data).

`clean_task` runs right after the task is loaded (before the teacher or the student is built); `finish` after
training, when the transfer set's counts are known. Upstream inputs are read from the base model's reports: the
pretrain stage's `report.json` (its `heldout` record, else its corpus, counted directly) and, through its
student_config, the extract stage's (its `heldout` record, else the estimator's data re-derived from its
settings). An input that cannot be checked offline is listed in `not_checked`, and the total is then a lower
bound.
"""

from __future__ import annotations

from pathlib import Path

from bortify.data import DataError
from bortify.heldout import NORMALISATION, HeldOut, row_hash, rows_of, seen_rows, text_hash

UPSTREAM = ("corpus", "extraction")  # the inputs of earlier stages, in `overlap["seen"]`


def _drop(ds, keep: list[int]):
    return ds if len(keep) == len(ds) else ds.select(keep)


def clean_task(task, heldout: HeldOut | None, *, user_files: bool) -> dict:
    """Drop test rows (normalised; and every text of the run's `heldout` record) from `task`'s train, dev and
    unlabelled pool, in place, and dev rows from train. -> the report's `overlap` (what was found and dropped).
    A DataError when nothing of train is left; a warning naming the count when the test rows repeat train rows."""
    from bortify.finetuning.trainer import log_progress

    cols = list(task.text_columns)
    test_rows = rows_of(task.test, cols)
    own = HeldOut.from_rows(test_rows)
    test_keys = own.rows | (heldout.rows if heldout is not None else frozenset())
    test_texts = heldout.texts if heldout is not None else frozenset()

    def is_test(row) -> bool:
        return row_hash(row) in test_keys or (len(row) == 1 and text_hash(row[0]) in test_texts)

    train_rows, dev_rows = rows_of(task.train, cols), rows_of(task.dev, cols)
    dev_keys = {row_hash(r) for r in dev_rows}
    test_in_train = [i for i, r in enumerate(train_rows) if is_test(r)]
    dev_in_train = [i for i, r in enumerate(train_rows) if row_hash(r) in dev_keys and not is_test(r)]
    test_in_dev = [i for i, r in enumerate(dev_rows) if is_test(r)]
    found = {"test_vs_train": len(test_in_train), "dev_vs_train": len(dev_in_train), "test_vs_dev": len(test_in_dev)}
    if user_files and test_in_train:
        log_progress(f"warning: {len({row_hash(train_rows[i]) for i in test_in_train} & own.rows)} of the {len(test_rows)} "
            "test rows of your files repeat train rows (after lower-casing and collapsing white space): those train "
            "rows are dropped so that the test score measures unseen text; report.json's overlap and the model card "
            "say so.")
    elif test_in_train or dev_in_train or test_in_dev:
        log_progress(f"warning: dropped {len(test_in_train)} train row(s) that repeat a test row, {len(dev_in_train)} that "
            f"repeat a dev row and {len(test_in_dev)} dev row(s) that repeat a test row (lower-cased, white space "
            "collapsed).")
    bad = set(test_in_train) | set(dev_in_train)
    if bad and len(bad) == len(train_rows):
        raise DataError(f"Every train row ({len(train_rows)}) repeats a test or dev row (after lower-casing and "
                        "collapsing white space): the test/dev data is a copy of train, so no score would measure "
                        "unseen text. Give test/dev rows that are not in train.")
    task.train = _drop(task.train, [i for i in range(len(train_rows)) if i not in bad])
    task.dev = _drop(task.dev, [i for i in range(len(dev_rows)) if i not in set(test_in_dev)])
    if len(task.dev) == 0:
        raise DataError("Every dev row repeats a test row (after lower-casing and collapsing white space): give dev "
                        "rows that are not in the test data.")
    if not task.regression and len(set(task.train["label"])) < 2:
        raise DataError(f"After dropping the {len(bad)} train row(s) that repeat test/dev rows, the training set has "
                        "one class; give more train rows that are not in the test/dev data.")
    dropped_pool = 0
    if task.unlabeled is not None:
        pool = rows_of(task.unlabeled, cols)
        keep = [i for i, r in enumerate(pool) if not is_test(r) and row_hash(r) not in dev_keys]
        dropped_pool = len(pool) - len(keep)
        task.unlabeled = _drop(task.unlabeled, keep) if keep else None
    found["test_vs_unlabeled"] = dropped_pool
    task.splits.update({"train": len(task.train), "dev": len(task.dev),
                        "unlabeled": len(task.unlabeled) if task.unlabeled is not None else 0})
    overlap = {
        "normalisation": NORMALISATION,
        "test_rows": len(test_rows),
        "digest": own.digest,
        # the run's record (`bortify run`): every stage kept these texts out; None: this stage ran alone
        "run_record": ({"digest": heldout.digest, "test_rows": heldout.count, "same_split": heldout.digest == own.digest}
                       if heldout is not None else None),
        "found": found,  # before dropping, in this stage's own data
        "dropped": {"train": len(bad), "dev": len(test_in_dev), "unlabeled": dropped_pool},
    }
    if user_files:  # the test rows of the user's own files that repeated train rows (the card says so)
        overlap["user_files_test_repeats_train"] = len({row_hash(train_rows[i]) for i in test_in_train} & own.rows)
    return overlap


def _pretrain_report(model: str | None):
    from bortify.reports import read_report

    if not model or not Path(model).is_dir():
        return None
    try:
        return read_report(model, "pretrain")
    except Exception:  # not a pretrain stage's folder (or an unreadable report): nothing upstream to read
        return None


def _extract_report(pretrain):
    from bortify.reports import read_report

    config = pretrain.student_config if pretrain is not None else None
    if not config or not Path(config).exists():
        return None
    folder = Path(config) if Path(config).is_dir() else Path(config).parent
    try:
        return read_report(folder, "extract")
    except Exception:
        return None


def _loadable(name: str | None) -> bool:
    """Data that can be read without the Hub: a packaged default or a local path."""
    return bool(name) and (str(name).startswith("embedded:") or Path(str(name)).expanduser().exists())


def upstream_seen(model: str | None, test_rows: list, own: HeldOut) -> tuple[dict, dict]:
    """({"corpus": ..., "extraction": ...}, {input: indices of the test rows it held}): per upstream input,
    {"seen": test rows among its texts after what it dropped (None: not checked), "dropped": held-out texts it
    dropped, "how": a few words}."""
    from bortify.extraction.estimators import estimator_texts

    pretrain = _pretrain_report(model)
    extract = _extract_report(pretrain)
    out, rows = {}, {}
    for name, report in (("corpus", pretrain), ("extraction", extract)):
        record = getattr(report, "heldout", None) if report is not None else None
        if record and record.get("digest") == own.digest:
            out[name] = {"seen": 0, "dropped": record.get("dropped"), "how": "kept out by the run's held-out record"}
            rows[name] = set()
            continue
        if report is None:
            why = "no pretrain report beside the base model" if name == "corpus" else "no extract report found"
            out[name] = {"seen": None, "dropped": None, "how": f"not checked: {why}"}
            continue
        texts = None
        if name == "corpus" and _loadable(pretrain.corpus):
            try:
                from bortify.data import load_text_corpus

                texts = load_text_corpus(pretrain.corpus)["text"]
            except Exception:  # unreadable now: the overlap is then "not checked"
                texts = None
        elif name == "extraction":
            texts = estimator_texts(extract.estimator_settings or {})
        if texts is None:
            out[name] = {"seen": None, "dropped": None, "how": "not checked: its data cannot be read offline"}
            continue
        rows[name] = seen_rows(test_rows, texts)
        out[name] = {"seen": len(rows[name]), "dropped": 0, "how": "counted against its data (nothing was kept out)"}
    return out, rows


def finish(overlap: dict, task, model: str | None, distill_info: dict | None) -> dict:
    """The report's `overlap` completed after training: test rows seen per input (train, dev, transfer set,
    corpus, extraction data), the distinct test rows seen by any stage (None when an input was not checked: then
    `seen_by_any_stage_at_least` is the lower bound) and the inputs not checked."""
    cols = list(task.text_columns)
    test_rows = rows_of(task.test, cols)
    own = HeldOut.from_rows(test_rows)
    inputs = {"train": task.train, "dev": task.dev}
    if distill_info is not None:  # the transfer set: train + the pool (generated variants and file rows are
        inputs["transfer"] = [*rows_of(task.train, cols), *rows_of(task.unlabeled, cols)] \
            if task.unlabeled is not None else task.train  # checked against dev/test by distill.build_transfer_set)
        overlap["found"]["dev_or_test_vs_transfer"] = (distill_info.get("transfer_set") or {}).get(
            "unlabeled_dropped_dev_test", 0)
    rows = {}
    for name, ds in inputs.items():
        keys = {row_hash(r) for r in (ds if isinstance(ds, list) else rows_of(ds, cols))}
        rows[name] = {i for i, r in enumerate(test_rows) if row_hash(r) in keys}
    upstream, upstream_rows = upstream_seen(model, test_rows, own)
    rows.update(upstream_rows)
    seen = {name: len(rows[name]) if name in rows else None for name in (*inputs, *UPSTREAM)}
    union = set().union(*rows.values()) if rows else set()
    overlap.update({
        "upstream": upstream, "seen": seen, "not_checked": [k for k, v in seen.items() if v is None],
        "seen_by_any_stage": None if any(v is None for v in seen.values()) else len(union),
        "seen_by_any_stage_at_least": len(union)})
    return overlap


def majority_baseline(task) -> dict | None:
    """What predicting the train majority class for every test row scores (accuracy, and the task's other
    metrics): the floor a classifier has to beat. None for regression."""
    import numpy as np

    from bortify.finetuning.trainer import score

    if task.regression or len(task.test) == 0:
        return None
    labels = np.asarray(task.train["label"])
    majority = int(np.bincount(labels, minlength=task.num_labels).argmax())
    gold = list(task.test["label"])
    metrics = score([majority] * len(gold), gold, list(task.metrics), task.num_labels)
    return {"class": task.label_names[majority], "test": {k: float(v) for k, v in metrics.items()},
            "test_share": float(np.mean(np.asarray(gold) == majority))}
