"""`bortify finetune` end to end on tiny random BERTs (fast) with the real tokenizer and real/packaged data:
standard checkpoints, report.json, Agora's data flow (test read only at the end), CLI, pipeline stage, errors."""

import csv
import json

import pytest
import torch
from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification, pipeline

import bortify.finetuning.finetune as ft_module
import bortify.finetuning.labelers as labelers_module
import bortify.finetuning.modes as modes_module
import bortify.finetuning.runs as runs_module
from bortify.finetuning.arguments import (AgoraArguments, FinetuneDataArguments, FinetuneGridArguments,
                                          FinetuneModelArguments)
from bortify.finetuning.cli import main as finetune_main
from bortify.finetuning.labelers import LabelerError
from bortify.finetuning.tasks import prepare_task

pytestmark = pytest.mark.slow  # every test uses the packaged MiniLM (minilm_path) and trains

DATA = dict(dataset="embedded:rotten-tomatoes", max_train_samples=40, max_dev_samples=24, max_test_samples=30)


@pytest.fixture
def tiny_student(tmp_path, tiny_bert_config, minilm_path):
    torch.manual_seed(0)
    path = tmp_path / "student"
    BertForMaskedLM(tiny_bert_config).save_pretrained(path)  # a masked-LM checkpoint, as pretraining writes
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return str(path)


def tiny_classifier(tmp_path, config, minilm_path, labels, name="labeler"):
    torch.manual_seed(1)
    config = config.__class__(**{**config.to_dict(), "id2label": dict(enumerate(labels)),
                                 "label2id": {n: i for i, n in enumerate(labels)}})
    path = tmp_path / name
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return str(path)


def small_sentiment_csv(path, n=40):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            w.writerow([f"{'a great' if i % 2 else 'an awful'} film number {i}", "fresh" if i % 2 else "rotten"])
    return str(path)


def args(student, out, mode="agora", labeler=None, data=None, **agora_kw):
    return (FinetuneModelArguments(model=student, output_dir=str(out), mode=mode, max_length=16, eval_batch_size=32),
            FinetuneDataArguments(**(data or DATA)),
            FinetuneGridArguments(learning_rates=[1e-3, 1e-4], num_train_epochs=1, batch_sizes=[16]),
            AgoraArguments(labeler=labeler, max_rounds=2, k=2, generator_embeddings="student", **agora_kw))


def test_agora_writes_a_standard_checkpoint_and_reads_test_only_at_the_end(tmp_path, tiny_student, tiny_bert_config,
                                                                           minilm_path, monkeypatch):
    labeler = tiny_classifier(tmp_path, tiny_bert_config, minilm_path, ["fresh", "rotten"])  # other order: mapped
    task = prepare_task(**DATA)
    test_texts, dev_texts = set(task.test["text"]), set(task.dev["text"])
    events = []
    real_tokenize, real_fit, real_gen = runs_module.tokenize, runs_module.fit, modes_module.generate_rows

    def spy_tokenize(ds, *a, **kw):
        texts = set(ds["text"])
        events.append(("test" if texts & test_texts else "other", len(ds)))
        return real_tokenize(ds, *a, **kw)

    def spy_fit(*a, **kw):
        events.append(("fit", 0))
        return real_fit(*a, **kw)

    def spy_generate(rows, *a, **kw):
        assert {r["text"] for r in rows} <= dev_texts  # Agora only repairs dev mistakes, never test rows
        return real_gen(rows, *a, **kw)

    monkeypatch.setattr(runs_module, "tokenize", spy_tokenize)
    monkeypatch.setattr(labelers_module, "tokenize", spy_tokenize)
    monkeypatch.setattr(runs_module, "fit", spy_fit)
    monkeypatch.setattr(modes_module, "generate_rows", spy_generate)

    out = tmp_path / "out"
    # (a tiny random labeler predicts one class: class balancing would reject every generated row, and it is
    # right on too few mistakes for verify_mistakes to leave any)
    report = ft_module.finetune(*args(tiny_student, out, labeler=labeler, labeler_min_dev_score=0.0,
                                      balance_classes=False, verify_mistakes=False))

    kinds = [k for k, _ in events]
    assert "test" in kinds and kinds.count("fit") >= 3  # 2 θ in round 1, 1 in round 2
    last_fit = max(i for i, k in enumerate(kinds) if k == "fit")
    assert min(i for i, k in enumerate(kinds) if k == "test") > last_fit  # test only after all training

    for key in ("base_model", "dataset", "task", "text_columns", "labels", "metric", "mode", "labeler", "rounds",
                "dev", "test", "splits", "train_seconds"):
        assert key in report
    assert report["labels"] == ["rotten", "fresh"] and report["mode"] == "agora" and report["metric"] == "accuracy"
    assert json.loads((out / "report.json").read_text())["test"] == report["test"]
    assert (out / "rounds.png").stat().st_size > 1000 and (out / "model.safetensors").exists()
    rounds = report["rounds"]
    assert len(rounds) == 2 and rounds[1]["train_size"] == rounds[0]["train_size"] + rounds[0]["examples_added"]
    assert all(r["test_score"] is not None for r in rounds)
    assert report["splits"]["train"] == 40 and "stratified" in report["splits"]["how"]["test"]
    ag = report["agora"]  # dev split into a repair half and a selection half (the default), recorded
    assert ag["repair_fraction"] == 0.5 and ag["balance_classes"] is False
    assert ag["dev_repair_rows"] + ag["dev_selection_rows"] == report["splits"]["dev"] == len(dev_texts)
    assert abs(ag["dev_repair_rows"] - ag["dev_selection_rows"]) <= 2
    assert rounds[0]["mistakes"] <= ag["dev_repair_rows"] and rounds[0]["repair_dev_score"] is not None
    added = [json.loads(line) for line in (out / "agora_added.jsonl").read_text().splitlines()]
    assert len(added) == rounds[0]["examples_added"]
    assert not {a["text"] for a in added} & (dev_texts | test_texts)  # generated texts, never dev/test texts
    # soft labels (the default): each added row carries the labeler's distribution, its argmax is the label
    assert ag["soft_labels"] is True and report["generator"]["verify_mistakes"] is False
    assert all(abs(sum(a["soft_label"]) - 1) < 1e-4 and a["label"] == max(range(2), key=a["soft_label"].__getitem__)
               for a in added)

    clf = pipeline("text-classification", model=str(out), device=-1)  # no custom code needed
    assert clf("a wonderful film")[0]["label"] in ("rotten", "fresh")


@pytest.mark.parametrize("labeler, error", [
    (["negative", "positive"], r"predicts labels \['negative', 'positive'\].*\['fresh', 'rotten'\]"),
    (["rotten", "fresh"], "not above the threshold 0.667"),  # a random classifier: ~chance, under the default bar
    (None, "not a sequence classifier"),  # the student itself: a masked LM
])
def test_a_labeler_with_another_label_set_a_weak_one_or_no_classifier_is_refused_before_training(
        tmp_path, tiny_student, tiny_bert_config, minilm_path, monkeypatch, labeler, error):
    monkeypatch.setattr(runs_module, "fit", lambda *a, **k: pytest.fail("trained despite a bad labeler"))
    data = {"dataset": small_sentiment_csv(tmp_path / "s.csv")}  # labels sorted as strings: ["fresh", "rotten"]
    path = tiny_classifier(tmp_path, tiny_bert_config, minilm_path, labeler) if labeler else tiny_student
    bar = {"labeler_min_dev_score": 0.0} if labeler == ["negative", "positive"] else {}
    with pytest.raises(LabelerError, match=error):
        ft_module.finetune(*args(tiny_student, tmp_path / "out", labeler=path, data=data, **bar))


def write_pairs_csv(path, n=60):
    labels = ["entailment", "neutral", "contradiction"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["premise", "hypothesis", "gold"])
        for i in range(n):
            w.writerow([f"the cat number {i} sat", f"a cat {'sat' if i % 3 == 0 else 'ran'} {i}", labels[i % 3]])
    return str(path)


def test_cli_plain_sentence_pairs_multiclass_and_overwrite_guard(tmp_path, tiny_student, capsys):
    data = write_pairs_csv(tmp_path / "nli.csv")
    out = tmp_path / "nli-out"
    argv = ["--model", tiny_student, "--output_dir", str(out), "--mode", "plain", "--dataset", data,
            "--text_columns", "premise", "hypothesis", "--label_column", "gold", "--max_length", "24",
            "--num_train_epochs", "1", "--learning_rates", "1e-3"]
    assert finetune_main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == ["contradiction", "entailment", "neutral"] and report["mode"] == "plain"
    assert report["text_columns"] == ["premise", "hypothesis"] and set(report["test"]) == {"accuracy", "f1"}
    printed = capsys.readouterr().out
    assert "test: accuracy" in printed and "macro-f1" in printed  # every metric of the task, F1 named as macro
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert finetune_main(argv) == 2  # an existing output is not overwritten silently
    assert "--overwrite" in capsys.readouterr().err


def test_cli_bad_input_fails_fast_with_a_clear_message(tmp_path, tiny_student, capsys):
    data = write_pairs_csv(tmp_path / "nli.csv")
    rc = finetune_main(["--model", tiny_student, "--output_dir", str(tmp_path / "x"), "--dataset", data,
                        "--text_columns", "premise", "claim", "--label_column", "gold"])
    assert rc == 2 and "lacks column(s) ['claim']" in capsys.readouterr().err
    rc = finetune_main(["--model", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "y"), "--dataset", data,
                        "--text_columns", "premise", "hypothesis", "--label_column", "gold"])
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_pipeline_stage_regression(tmp_path, tiny_student):
    from bortify.finetuning.stage import run_stage

    path = tmp_path / "sts.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence1", "sentence2", "score"])
        for i in range(50):
            w.writerow([f"a dog {i}", f"a {'dog' if i % 2 else 'car'} {i}", round((i % 11) / 2.1, 3)])
    out = tmp_path / "stage"
    summary = run_stage({"model": tiny_student, "output_dir": str(out), "dataset": str(path), "label_column": "score",
                         "mode": "plain", "max_length": 16, "num_train_epochs": 1, "learning_rates": [1e-3]})
    report = json.loads((out / "report.json").read_text())
    assert report["regression"] and report["metric"] == "pearsonr" and report["labels"] == []
    assert set(report["test"]) == {"pearsonr", "spearmanr"} and summary["metric"] == "pearsonr"
    assert summary["summary_lines"] and str(out) in summary["summary_lines"][-1]
    assert json.loads((out / "config.json").read_text())["problem_type"] == "regression"
