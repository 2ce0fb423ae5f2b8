"""Extraction: error estimators ê — pure maths, and short real runs with the Trainer on packaged data."""

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM

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
        make_estimator("bleu", None)


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
