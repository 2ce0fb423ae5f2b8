"""`bortify finetune --mode distill` end to end on a tiny random BERT (seconds): the teacher (here an existing
classifier given as --labeler) labels train + the unused train rows, the student learns them, and the report,
summary and card say what the transfer set was."""

import json
from pathlib import Path

import pytest

from helpers import copy_model, sentiment_rows, write_csv

pytestmark = pytest.mark.usefixtures("finetune_models", "one_torch_thread")


def _run(tmp_path, capsys, *extra):
    from bortify.cli import main

    write_csv(tmp_path / "data" / "train.csv", sentiment_rows(60))
    write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(10, start=100))
    write_csv(tmp_path / "data" / "test.csv", sentiment_rows(10, start=200))
    student = copy_model(tmp_path, "student", "student")
    teacher = copy_model(tmp_path, "labeler", "teacher")
    out = tmp_path / "out"
    rc = main(["finetune", "--mode", "distill", "--model", student, "--labeler", teacher,
               "--train_file", str(tmp_path / "data" / "train.csv"), "--dev_file", str(tmp_path / "data" / "dev.csv"),
               "--test_file", str(tmp_path / "data" / "test.csv"), "--max_train_samples", "20",
               "--labeler_min_dev_score", "0", "--distill_epochs", "1", "--distill_min_examples", "0",
               "--distill_batch_size", "8",
               "--max_length", "16", "--output_dir", str(out), *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return out, json.loads((out / "report.json").read_text()), captured.out


def test_distill_mode_trains_on_train_plus_the_unused_rows_under_the_teachers_labels(tmp_path, capsys):
    out, report, stdout = _run(tmp_path, capsys)
    assert report["mode"] == "distill"
    counts = report["distill"]["transfer_set"]
    assert counts["gold"] == 20 and report["splits"]["train"] == 20
    # the 40 train rows max_train_samples left out are the unlabelled pool (labels stripped)
    assert counts["unlabeled"] == report["splits"]["unlabeled"] == 40
    assert counts["total"] == counts["gold"] + counts["augmented"] + counts["unlabeled"]
    assert report["rounds"][0]["train_size"] == counts["total"]
    assert report["labeler"]["name"].endswith("teacher") and "test_accuracy" in report["labeler"]
    # a small transfer set (20 + 40 rows < distill_augment_until 4,000) gets distill_augment_k = 8 variants per
    # train row, the teacher labels them (variants equal to another text are dropped)
    assert counts["variants_per_row"] == 8 and 0 < counts["augmented"] <= 8 * 20
    assert f"transfer set: 20 gold + {counts['augmented']} augmented + 40 unlabelled" in stdout
    assert report["theta"] is None and report["best_theta"]["alpha"] == 0.5
    # the student was scored on dev after its one epoch, and that score is the run's dev score
    assert report["distill"]["dev_by_epoch"] == [round(report["dev"]["accuracy"], 4)]
    assert report["distill"]["best_epoch"] == 1 and "(epoch 1 kept)" in stdout
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out, use_safetensors=True)
    assert model.config.id2label == {0: "fresh", 1: "rotten"}


def test_distill_mode_refuses_an_output_inside_the_teacher_before_work(tmp_path, capsys):
    from bortify.cli import main

    write_csv(tmp_path / "train.csv", sentiment_rows(30))
    student = copy_model(tmp_path, "student", "student")
    teacher = copy_model(tmp_path, "labeler", "teacher")
    before = sorted(p.name for p in Path(teacher).iterdir())
    rc = main(["finetune", "--mode", "distill", "--model", student, "--labeler", teacher,
               "--train_file", str(tmp_path / "train.csv"), "--output_dir", str(Path(teacher) / "out")])
    assert rc == 2 and "labeler" in capsys.readouterr().err
    assert sorted(p.name for p in Path(teacher).iterdir()) == before


def test_distill_card_states_the_transfer_set_and_the_teachers_score(tmp_path, capsys):
    from bortify.hub.card import CardOptions, collect_evidence, render_card

    out, report, _ = _run(tmp_path, capsys)
    evidence = collect_evidence({"finetune": str(out)}, out, CardOptions(measure_latency=False))
    text = str(render_card(evidence, CardOptions(measure_latency=False)))
    assert "task-distillation fine-tuning" in text
    n_variants = report["distill"]["transfer_set"]["augmented"]
    assert n_variants > 0
    assert f"20 labelled train rows, {n_variants} generated variants and 40 unlabelled in-domain texts" in text
    assert "The teacher's own test score" in text
    assert "1 epochs (the student's best dev epoch kept: 1 of 1)" in text


def test_intermediate_layer_term_runs_the_teacher_per_batch_and_is_reported(tmp_path, capsys, monkeypatch):
    """--distill_w_layers: the teacher runs on every training batch with output_hidden_states, and the report
    names the layer map (docs/methods/07-task-distillation.md §7.1)."""
    from bortify.finetuning import losses

    calls = []
    real = losses.layer_relation_loss

    def spy(student_hidden, teacher_hidden, layer_map, mask, heads):
        value = real(student_hidden, teacher_hidden, layer_map, mask, heads)
        calls.append((len(student_hidden), len(teacher_hidden), float(value)))
        return value

    monkeypatch.setattr("bortify.finetuning.distill.layer_relation_loss", spy)
    out, report, stdout = _run(tmp_path, capsys, "--distill_w_layers", "0.5", "--distill_augment_k", "0")
    layers = report["distill"]["layers"]
    assert layers["weight"] == 0.5 and len(layers["layer_map"]) == calls[0][0] - 1 and layers["relation_heads"] >= 1
    steps = -(-report["distill"]["transfer_set"]["total"] // 8)  # one call per training batch, 1 epoch
    assert len(calls) == steps and all(v >= 0 for *_, v in calls)
    assert "intermediate layers" in stdout
