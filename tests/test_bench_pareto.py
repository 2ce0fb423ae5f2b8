"""The Pareto benchmark's bookkeeping (benchmarks/bench_pareto.py): which finished points a re-run may reuse, and
the --distill overrides of the task-distilled point. No model is trained here."""

import json
from dataclasses import asdict

import pytest

import bench_pareto


def _config(tmp_path, **changes):
    settings = bench_pareto.Settings(
        student="runs/demo/pretrain", student_name="s", work=str(tmp_path), model2vec_dir=str(tmp_path / "m2v"),
        max_test_rows=1000, min_test_rows=250, epochs=3.0, learning_rates=(1e-3,), max_rounds=3, k=8,
        teacher_epochs=6.0, teacher_learning_rate=1e-4, labeler_min_dev_score=None, with_distill=True,
        with_int8=False, first_seed=1)
    plan = bench_pareto.TASK_PLANS["debates"]
    data = {"dataset": plan.dataset, "max_train_samples": 300, "split_seed": 42}
    settings = bench_pareto.Settings(**{**asdict(settings), **changes})
    return bench_pareto.unit_config(settings, plan, data)


def _unit(tmp_path, config, names=("teacher", "plain", "agora", "distill")):
    unit = tmp_path / "unit"
    points = {}
    for name in names:
        (unit / name).mkdir(parents=True, exist_ok=True)
        points[name] = {"test": 0.5, "model_dir": str(unit / name)}
    (unit / "unit.json").write_text(json.dumps({"config": config, "points": points}))
    return unit


def test_changing_the_distillation_settings_retrains_only_the_distilled_point(tmp_path):
    old = _config(tmp_path)
    new = _config(tmp_path, distill=(("distill_augment_k", 2),))
    unit = _unit(tmp_path, old)
    assert sorted(bench_pareto.reusable_points(unit, old)) == ["agora", "distill", "plain", "teacher"]
    assert sorted(bench_pareto.reusable_points(unit, new)) == ["agora", "plain", "teacher"]


def test_an_option_added_since_at_its_default_keeps_the_distilled_point(tmp_path):
    config = _config(tmp_path)
    recorded = json.loads(json.dumps(config))
    recorded["distill_arguments"].pop("distill_w_layers")  # a run made before the option existed
    unit = _unit(tmp_path, recorded)
    assert set(bench_pareto.reusable_points(unit, config)) == {"teacher", "plain", "agora", "distill"}
    changed = _config(tmp_path, distill=(("distill_w_layers", 0.5),))
    assert "distill" not in bench_pareto.reusable_points(unit, changed)


def test_changing_the_teacher_retrains_everything_that_uses_it(tmp_path):
    old = _config(tmp_path)
    unit = _unit(tmp_path, old)
    assert sorted(bench_pareto.reusable_points(unit, _config(tmp_path, teacher_epochs=3.0))) == ["plain"]


def test_a_point_whose_model_is_gone_is_retrained(tmp_path):
    old = _config(tmp_path)
    unit = _unit(tmp_path, old)
    (unit / "teacher").rmdir()
    assert "teacher" not in bench_pareto.reusable_points(unit, old)


def test_another_split_is_refused(tmp_path):
    old = _config(tmp_path)
    unit = _unit(tmp_path, old)
    other = json.loads(json.dumps(old))
    other["data"]["max_train_samples"] = 1000
    with pytest.raises(SystemExit, match="another split"):
        bench_pareto.reusable_points(unit, other)


def test_distill_overrides_are_typed_and_checked_before_work():
    assert bench_pareto.parse_overrides(["augment_k=8", "distill_epochs=4.5", "distill_unlabeled_file=none"]) == (
        ("distill_augment_k", 8), ("distill_epochs", 4.5), ("distill_unlabeled_file", None))
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        bench_pareto.parse_overrides(["no_such_option=1"])
    with pytest.raises(ValueError, match="distill_augment_k"):
        bench_pareto.parse_overrides(["augment_k=-1"])


def test_points_made_on_other_split_texts_are_not_reused(tmp_path):
    config = _config(tmp_path)
    unit = _unit(tmp_path, config)
    data = json.loads((unit / "unit.json").read_text())
    (unit / "unit.json").write_text(json.dumps({**data, "split_fingerprint": "aaaa"}))
    assert sorted(bench_pareto.reusable_points(unit, config, "aaaa")) == ["agora", "distill", "plain", "teacher"]
    assert bench_pareto.reusable_points(unit, config, "bbbb") == {}


def test_int8_point_predicts_what_the_fp32_student_predicts(tmp_path, minilm_path):
    """The int8 point: bortify's int8 CPU path (ONNX Runtime) on a saved student; its predictions and parameter count
    match the fp32 model's."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    import pareto_peers

    assert bench_pareto.int8_available() is None
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, num_labels=3)
    student = tmp_path / "student"
    BertForSequenceClassification(config).eval().save_pretrained(student)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(student)
    out = bench_pareto.int8_point(student, tmp_path / "int8")
    assert (out / "model.int8.onnx").is_file() and (out / "tokenizer.json").is_file()
    predict, params = pareto_peers.int8_predictor(str(out), 32)
    fp32, fp32_params = pareto_peers.classifier_predictor(str(student), 32)
    texts = [f"review number {i}: {'great' if i % 2 else 'dull'} acting and a {i}-minute plot" for i in range(40)]
    pred = predict(texts)
    assert pred.shape == (40,) and set(pred.tolist()) <= {0, 1, 2}
    assert np.mean(pred == fp32(texts)) >= 0.8
    assert abs(params - fp32_params) <= 0.01 * fp32_params
