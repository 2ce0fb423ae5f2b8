"""Extraction: error estimators ê — pure maths, and short real runs with the Trainer on packaged data."""

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM

from bortify.extraction.arguments import EstimatorArguments
from bortify.extraction.costs import Shape
from bortify.extraction.estimators import (
    EstimatorError,
    MLMEstimator,
    SlicedTaskEstimator,
    TrainingBudget,
    WeightClipCallback,
    error_rate,
    make_estimator,
    masked_lm_loss,
    mean_pool,
)
from bortify.extraction.space import InlineSource, load_source_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def test_masked_lm_loss_equals_transformers_loss(tiny_bert_config):
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config).eval()
    ids = torch.randint(0, 30522, (3, 10))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 0], labels[2, 9] = 7, 100, 2000, 5
    with torch.no_grad():
        reference = model(input_ids=ids, labels=labels).loss
        ours = masked_lm_loss(model.bert(input_ids=ids).last_hidden_state, labels, model.cls)
    torch.testing.assert_close(ours, reference)
    no_mask = masked_lm_loss(torch.randn(2, 4, 32, requires_grad=True), torch.full((2, 4), -100), model.cls)
    assert no_mask.item() == 0.0


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_error_rate_has_a_floor():
    assert error_rate(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0]), 0.01) == 0.5
    assert error_rate(np.array([1, 0]), np.array([1, 0]), 0.25) == 0.25  # perfect dev score -> floor, never 0


def test_weight_clip_callback_clamps_matrices_only():
    lin = torch.nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.fill_(5.0)
        lin.bias.fill_(5.0)
    WeightClipCallback(1.5).on_step_end(None, None, None, model=lin)
    assert lin.weight.max().item() == 1.5 and lin.bias.max().item() == 5.0


def test_budget_and_unknown_estimator_errors():
    with pytest.raises(EstimatorError, match="learning_rates"):
        TrainingBudget(learning_rates=()).check()
    with pytest.raises(EstimatorError, match="Unknown error estimator"):
        make_estimator("bleu", None, "embedded:all-MiniLM-L6-v2", EstimatorArguments())


@pytest.mark.parametrize("field, value, match", [("train_steps", 0, "train_steps"), ("train_batch_size", 0, "train_steps"),
                                                 ("max_seq_length", 4, "max_seq_length"),
                                                 ("learning_rates", [1e-3, 0.0], "learning_rates"),
                                                 ("clip_value", -1.0, "clip_value"), ("importance", "random", "importance")])
def test_estimator_settings_have_one_validation(field, value, match):
    """EstimatorArguments runs the estimators' own check (TrainingBudget.check): one rule, one message."""
    with pytest.raises(ValueError, match=match):
        EstimatorArguments(**{field: value})
    if field != "importance":
        settings = EstimatorArguments()
        setattr(settings, field, value)  # e.g. changed after parsing: the library check says the same
        with pytest.raises(EstimatorError, match=match):
            TrainingBudget.from_settings(settings).check()


def test_the_factory_builds_each_estimator_from_the_arguments():
    source = load_source_config("x", InlineSource(layers=2, heads=2, hidden=64, intermediate=128, vocab_size=30522))
    settings = EstimatorArguments(train_steps=7, train_batch_size=4, learning_rates=[1e-3], max_seq_length=16,
                                  clip_value=2.0, seed=5, task="embedded:rotten-tomatoes", importance="magnitude",
                                  corpus="embedded:corpus", train_samples=64, eval_samples=32)
    assert make_estimator("none", source, "src", settings).fingerprint() == {"error_estimator": "none"}
    mlm = make_estimator("mlm", source, "src", settings)
    assert isinstance(mlm, MLMEstimator) and mlm.tokenizer_name == "src" and mlm.corpus == "embedded:corpus"
    sliced = make_estimator("sliced-task", source, "src", settings)
    assert isinstance(sliced, SlicedTaskEstimator) and sliced.source == "src" and sliced.importance == "magnitude"
    for est in (mlm, sliced):
        assert est.budget == TrainingBudget(steps=7, batch_size=4, learning_rates=(1e-3,), max_seq_length=16,
                                            clip_value=2.0, seed=5)
        assert (est.train_samples, est.eval_samples) == (64, 32)


def test_candidate_runs_use_the_shared_run_arguments():
    from bortify.extraction.estimators import _training_args

    args = _training_args("unused-dir", 1e-3, TrainingBudget(steps=40, batch_size=8, seed=3))
    assert (args.max_steps, args.per_device_train_batch_size, args.learning_rate, args.warmup_steps) == (40, 8, 1e-3, 4)
    assert (args.seed, args.data_seed, args.weight_decay, args.max_grad_norm) == (3, 3, 0.01, 1.0)
    assert args.save_strategy == "no" and args.per_device_eval_batch_size == 64


@pytest.mark.slow
def test_mlm_estimator_short_real_run(corpus):
    source = load_source_config("embedded:all-MiniLM-L6-v2")
    est = MLMEstimator(source, tokenizer="embedded:all-MiniLM-L6-v2", corpus="embedded:corpus",
                       budget=TrainingBudget(steps=3, batch_size=4, max_seq_length=16, learning_rates=(5e-4, 1e-3)),
                       train_samples=48, eval_samples=16)
    est.prepare()
    result = est(Shape(1, 2, 32, 64, 30522, 512, 2))
    assert set(result["per_theta"]) == {"0.0005", "0.001"}
    assert result["error"] == min(result["per_theta"].values())
    # a from-scratch model is near the uniform-vocabulary loss ln(30522) = 10.3 after 3 steps
    assert 8.0 < result["error"] < 11.5


@pytest.fixture(scope="module")
def sliced_estimator():
    source = load_source_config("embedded:all-MiniLM-L6-v2")
    est = SlicedTaskEstimator(source, source="embedded:all-MiniLM-L6-v2",
                              budget=TrainingBudget(steps=4, batch_size=8, max_seq_length=32, learning_rates=(3e-4,)),
                              train_samples=64, eval_samples=100)
    est.prepare()
    return est


@pytest.mark.slow
def test_sliced_task_estimator_short_real_run(sliced_estimator):
    result = sliced_estimator(Shape(1, 4, 128, 256, 30522, 512, 2))
    assert 0 < result["error"] <= 1
    assert result["error"] >= sliced_estimator.floor
    assert result["theta"] == {"learning_rate": 3e-4}
    # deterministic: same seed, same candidate, same ê (needed for resume and for the ordering)
    assert sliced_estimator(Shape(1, 4, 128, 256, 30522, 512, 2))["error"] == result["error"]


@pytest.mark.slow
def test_sliced_task_needs_a_checkpoint_and_a_task_with_labels(tmp_path):
    inline = load_source_config("x", InlineSource(layers=2, heads=2, hidden=64, intermediate=128, vocab_size=30522))
    with pytest.raises(EstimatorError, match="could not be loaded as a checkpoint"):
        SlicedTaskEstimator(inline, source=str(tmp_path / "missing")).prepare()
    source = load_source_config("embedded:all-MiniLM-L6-v2")
    with pytest.raises(EstimatorError, match="no column 'stars'"):
        SlicedTaskEstimator(source, source="embedded:all-MiniLM-L6-v2", label_column="stars").prepare()
