"""The held-out test split (docs/methods/09-heldout.md §9): one record per run, its texts dropped from every stage's data,
overlap counted everywhere and stated on the card."""

import json

import datasets
import pytest

from bortify.data import DataError
from bortify.finetuning.overlap import clean_task, finish, majority_baseline, upstream_seen
from bortify.finetuning.tasks import prepare_task
from bortify.heldout import HELDOUT_FILE, HeldOut, normalise, row_hash, rows_of, text_hash
from helpers import copy_model, sentiment_rows, write_csv

pytestmark = pytest.mark.usefixtures("finetune_models")

TEST_TEXT = "a great film number 7"  # a test row planted (case and white space changed) upstream


def _task(tmp_path, train_rows, test_rows, dev_rows=None):
    files = {"train": write_csv(tmp_path / "train.csv", train_rows),
             "test": write_csv(tmp_path / "test.csv", test_rows)}
    if dev_rows:
        files["validation"] = write_csv(tmp_path / "dev.csv", dev_rows)
    return prepare_task(None, data_files=files, text_columns=["text"], label_column="label")


def test_normalisation_and_the_record_round_trip(tmp_path):
    assert normalise("  A  Great\tFILM \n") == "a great film"
    assert text_hash("A great  film") == text_hash("a great film") != text_hash("a great films")
    held = HeldOut.from_rows([("A good one",), ("two texts", "in a pair")], {"dataset": "x"})
    assert held.has_text("a GOOD one") and held.has_row(["Two texts", "in a  pair"]) and held.has_text("in a pair")
    again = HeldOut.read(held.write(tmp_path / HELDOUT_FILE))
    assert (again.rows, again.texts, again.count, again.digest) == (held.rows, held.texts, 2, held.digest)
    assert "A good one" not in (tmp_path / HELDOUT_FILE).read_text()  # hashes only, never the texts
    (tmp_path / "bad.json").write_text("{\"rows\": 3}")
    with pytest.raises(DataError, match="not a held-out record"):
        HeldOut.read(tmp_path / "bad.json")
    with pytest.raises(DataError, match="does not exist"):
        HeldOut.read(tmp_path / "nope.json")


def test_test_rows_planted_in_train_dev_and_pool_are_dropped_and_counted(tmp_path, capsys):
    train = sentiment_rows(40)
    test = sentiment_rows(10, start=100)
    dev = sentiment_rows(8, start=200)
    # planted: two test rows in train (case and spacing changed), one test row in dev, one dev row in train
    train[3]["text"] = test[0]["text"].upper()
    train[5]["text"] = "  " + test[1]["text"].replace(" ", "   ")
    dev[2]["text"] = test[2]["text"].title()
    train[9]["text"] = dev[4]["text"]
    task = _task(tmp_path, train, test, dev)
    overlap = clean_task(task, None, user_files=True)
    assert overlap["found"] == {"test_vs_train": 2, "dev_vs_train": 1, "test_vs_dev": 1, "test_vs_unlabeled": 0}
    assert overlap["dropped"] == {"train": 3, "dev": 1, "unlabeled": 0}
    assert overlap["user_files_test_repeats_train"] == 2 and overlap["run_record"] is None
    assert "warning: 2 of the 10 test rows of your files repeat train rows" in capsys.readouterr().out
    assert len(task.train) == 37 and len(task.dev) == 7 and task.splits["train"] == 37
    test_keys = {row_hash(r) for r in rows_of(task.test, ["text"])}
    assert not test_keys & {row_hash(r) for r in rows_of(task.train, ["text"]) + rows_of(task.dev, ["text"])}
    done = finish(overlap, task, None, None)
    assert done["seen"]["train"] == done["seen"]["dev"] == 0
    assert done["seen"]["corpus"] is None and done["not_checked"] == ["corpus", "extraction"]
    assert done["seen_by_any_stage"] is None and done["seen_by_any_stage_at_least"] == 0


def test_the_runs_record_also_drops_its_texts_from_the_unlabelled_pool(tmp_path):
    rows = sentiment_rows(120)
    task = prepare_task(None, data_files={"train": write_csv(tmp_path / "t.csv", rows)}, text_columns=["text"],
                        label_column="label", max_train_samples=20)
    pool = list(task.unlabeled["text"])
    held = HeldOut.from_rows([(pool[0].upper(),), (pool[5],), *rows_of(task.test, ["text"])])
    overlap = clean_task(task, held, user_files=False)
    assert overlap["found"]["test_vs_unlabeled"] == 2 and overlap["dropped"]["unlabeled"] == 2
    assert len(task.unlabeled) == len(pool) - 2 and not any(held.has_text(t) for t in task.unlabeled["text"])
    assert overlap["run_record"]["same_split"] is False  # the record holds two texts beyond this test split
    done = finish(overlap, task, None, {"transfer_set": {"unlabeled_dropped_dev_test": 3}})
    assert done["seen"]["transfer"] == 0 and done["found"]["dev_or_test_vs_transfer"] == 3


def test_a_test_file_copied_from_train_is_refused(tmp_path):
    rows = sentiment_rows(40)
    task = _task(tmp_path, rows, [dict(r, text=r["text"].upper()) for r in rows])
    with pytest.raises(DataError, match=r"Every train row \(\d+\) repeats a test or dev row"):
        clean_task(task, None, user_files=True)


def test_extraction_estimator_and_corpus_drop_the_held_out_texts(tmp_path):
    from bortify.extraction.estimators import SlicedTaskEstimator, _data_key, sliced_task_rows
    from bortify.pretraining.data import split_corpus_texts

    ds = datasets.Dataset.from_dict({"text": [f"review number {i}" for i in range(200)], "label": [i % 2 for i in range(200)]})
    held = HeldOut.from_rows([("Review  number 3",), ("review number 150",)])
    dev, train, record = sliced_task_rows(ds, "text", 0, 100, 40, held)
    used = list(dev["text"]) + list(train["text"])
    assert not any(held.has_text(t) for t in used) and record["dropped"] == 2 and record["checked"] == 200
    dev0, train0, none = sliced_task_rows(ds, "text", 0, 100, 40)
    assert none is None and len(dev0) == 40 and len(train0) == 100
    assert _data_key("text", held) == {"heldout": held.digest} and _data_key("text", None) == {}
    est = SlicedTaskEstimator(None, "x", heldout=held)
    assert est.fingerprint()["heldout"] == held.digest  # ê measured on other data is not reused

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["Review number 3", "some other line of text", "review   NUMBER 150"] * 10 +
                                [f"line {i} of the corpus" for i in range(40)]) + "\n")
    record: dict = {}
    kept, heldout_part = split_corpus_texts(str(corpus), heldout=held, record=record)
    texts = list(kept["text"]) + list(heldout_part["text"])
    assert len(texts) == 50 and not any(held.has_text(t) for t in texts)
    assert record["dropped"] == 20 and record["checked"] == 70


def _pretrain_report(folder, corpus, heldout=None, student_config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"teacher": "x", "corpus": corpus, "heldout": heldout,
                                                    "student_config": student_config}))
    return str(folder)


def test_finetune_alone_counts_test_texts_in_the_base_models_corpus_and_extraction_data(tmp_path):
    test_rows = [(TEST_TEXT,), ("an awful film number 8",), ("never in any corpus",)]
    own = HeldOut.from_rows(test_rows)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"{TEST_TEXT.upper()}\nan  awful film number 8\nsomething else\n")
    extract = tmp_path / "extract"
    extract.mkdir()
    (extract / "report.json").write_text(json.dumps({"estimator_settings": {"error_estimator": "none"}}))
    model = _pretrain_report(tmp_path / "pretrain", str(corpus), student_config=str(extract))
    upstream, rows = upstream_seen(model, test_rows, own)
    assert upstream["corpus"]["seen"] == 2 and rows["corpus"] == {0, 1}
    assert upstream["extraction"]["seen"] == 0  # error none: no data
    # the run kept the same split out: 0, with what was dropped
    kept = _pretrain_report(tmp_path / "pretrain2", str(corpus), heldout=own.describe(2, 3, "corpus"))
    upstream, _ = upstream_seen(kept, test_rows, own)
    assert upstream["corpus"] == {"seen": 0, "dropped": 2, "how": "kept out by the run's held-out record"}
    assert upstream["extraction"]["seen"] is None  # no extract report named: not checked


def test_majority_baseline_is_the_train_majority_on_test(tmp_path):
    train = sentiment_rows(30) + [{"text": f"an awful extra {i}", "label": "rotten"} for i in range(10)]
    test = [{"text": f"t {i}", "label": "rotten" if i < 6 else "fresh"} for i in range(10)]
    task = _task(tmp_path, train, test)
    base = majority_baseline(task)
    assert base["class"] == "rotten" and base["test"]["accuracy"] == pytest.approx(0.6) and base["test_share"] == 0.6


def test_finetune_in_a_run_keeps_the_planted_test_text_out_and_reports_it(tmp_path, capsys):
    """A tiny run (finetune section only, a base model whose pretrain report names a corpus holding a test text):
    the pipeline writes heldout.json before the stage, the stage drops the planted rows, report.json counts them
    and the card line says how many test texts any stage saw."""
    import yaml

    from bortify.hub.card import overlap_lines
    from bortify.pipeline import run_recipe
    from bortify.reports import FinetuneReport

    train = sentiment_rows(40)
    test = sentiment_rows(12, start=100)
    train[4]["text"] = test[3]["text"].upper()  # planted in train
    model = copy_model(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"{test[5]['text']}\nunrelated text line\n")  # planted in the base model's corpus
    _pretrain_report_into(model, str(corpus))
    section = {"model": model, "train_file": write_csv(tmp_path / "train.csv", train),
               "dev_file": write_csv(tmp_path / "dev.csv", sentiment_rows(8, start=200)),
               "test_file": write_csv(tmp_path / "test.csv", test), "text_columns": ["text"],
               "mode": "plain", "max_length": 16, "num_train_epochs": 1, "learning_rates": [1e-3], "batch_sizes": [8],
               "eval_batch_size": 16}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"finetune": section}))
    run = tmp_path / "run"
    run_recipe(recipe, run)
    held = HeldOut.read(run / HELDOUT_FILE)
    assert held.count == 12 and held.has_text(test[3]["text"])
    report = json.loads((run / "finetune" / "report.json").read_text())
    o = report["overlap"]
    assert o["run_record"]["same_split"] is True and o["test_rows"] == 12
    assert o["found"]["test_vs_train"] == 1 and o["dropped"]["train"] == 1 and o["user_files_test_repeats_train"] == 1
    assert o["seen"]["train"] == 0 and o["seen"]["corpus"] == 1  # the corpus was not cleaned (no pretrain in the run)
    assert o["seen"]["extraction"] is None and o["seen_by_any_stage"] is None
    assert o["seen_by_any_stage_at_least"] == 1
    assert report["baseline"]["class"] in ("fresh", "rotten")
    assert report["rounds"][0]["mistakes"] is None and report["examples_added"] == 0
    lines = overlap_lines(FinetuneReport.from_dict(report))
    assert lines[0].startswith("**At least 1 of 12 test texts were seen by a stage** (the pretraining corpus 1)")
    assert "1 of the 12 test rows of the supplied data files repeated train rows" in lines[1]


def _pretrain_report_into(model_dir, corpus):
    from pathlib import Path

    (Path(model_dir) / "report.json").write_text(json.dumps({"teacher": "x", "corpus": corpus, "heldout": None}))


def test_card_states_the_overlap_in_one_line():
    from bortify.hub.card import overlap_lines
    from bortify.reports import FinetuneReport

    clean = {"test_rows": 1000, "seen": {"train": 0, "dev": 0, "transfer": 0, "corpus": 0, "extraction": 0},
             "seen_by_any_stage": 0, "seen_by_any_stage_at_least": 0, "not_checked": [],
             "dropped": {"train": 0, "dev": 0, "unlabeled": 0},
             "upstream": {"corpus": {"seen": 0, "dropped": 998}, "extraction": {"seen": 0, "dropped": 110}}}
    line, = overlap_lines(FinetuneReport.from_dict({"mode": "distill", "overlap": clean}))
    assert line.startswith("**0 of 1,000 test texts were seen by any stage**")
    assert "the pretraining corpus (998), the extraction estimator's data (110)" in line
    seen = {**clean, "seen": {**clean["seen"], "corpus": 996, "extraction": 110}, "seen_by_any_stage": 996}
    line, = overlap_lines(FinetuneReport.from_dict({"mode": "distill", "overlap": seen}))
    assert "**996 of 1,000 test texts were seen by any stage** (the pretraining corpus 996, the extraction" in line
    old, = overlap_lines(FinetuneReport.from_dict({"mode": "distill"}))
    assert "not measured" in old


def test_card_fields_mean_one_thing_in_every_mode():
    from bortify.hub.card import baseline_line, round_columns, task_text
    from bortify.reports import FinetuneReport

    distill = FinetuneReport.from_dict({"mode": "distill", "task": "rotten-tomatoes", "labels": ["rotten", "fresh"],
                                        "baseline": {"class": "fresh", "test": {"accuracy": 0.578}}})
    assert "dev mistakes" not in round_columns(distill)
    assert "dev mistakes" in round_columns(FinetuneReport.from_dict({"mode": "agora"}))
    assert task_text(distill, {}).startswith("Is a short movie-review snippet positive")
    assert baseline_line(distill) == ("Majority-class baseline (always `fresh`, the most frequent train label): test "
                                      "accuracy 0.5780.")
    other = FinetuneReport.from_dict({"task": "x.csv", "dataset": "x.csv", "text_columns": ["body"],
                                      "labels": ["a", "b", "c"]})
    assert task_text(other, {}) == "which of 3 classes (a, b, c) `body` belongs to"


def test_card_evidence_reads_nfr_from_the_compare_report(tmp_path):
    from bortify.hub.card import collect_evidence

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                                   "model_type": "bert", "vocab_size": 10, "hidden_size": 8,
                                                   "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "intermediate_size": 16, "id2label": {"0": "a", "1": "b"}}))
    compare = tmp_path / "compare"
    compare.mkdir()
    (compare / "report.json").write_text(json.dumps({"nfr": 0.082, "metric": "accuracy"}))
    evidence = collect_evidence({"compare": str(compare)}, model, _no_latency())
    assert evidence["nfr"] == pytest.approx(0.082)


def _no_latency():
    from bortify.hub.card import CardOptions

    return CardOptions(measure_latency=False)


def test_pipeline_wires_the_record_into_the_stages_that_read_data(tmp_path):
    from bortify.pipeline import stage_config
    from bortify.stages import BY_NAME

    assert [s for s, spec in BY_NAME.items() if spec.reads_heldout] == ["extract", "pretrain", "finetune"]
    recipe = {"finetune": {"dataset": "x"}, "compare": {}, "pretrain": {"heldout": "mine.json"}}
    path = str(tmp_path / HELDOUT_FILE)
    assert stage_config(BY_NAME["finetune"], recipe, {"pretrain": "p"}, tmp_path, path)["heldout"] == path
    assert stage_config(BY_NAME["pretrain"], recipe, {"extract": "e"}, tmp_path, path)["heldout"] == "mine.json"
    assert "heldout" not in stage_config(BY_NAME["compare"], recipe, {"finetune": "f"}, tmp_path, path)
