"""Soft-label targets for Agora's generated rows (bortify/finetuning/losses.py) and their path through the Trainer.
The labeler that produces them is tested in test_finetuning_labelers.py."""

import math

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertForSequenceClassification

from bortify.finetuning.losses import one_hot, soft_cross_entropy, softmax_with_temperature
from bortify.finetuning.trainer import fit, predict, tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_soft_cross_entropy_is_cross_entropy_for_one_hot_targets():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    targets = F.one_hot(labels, 3).float()
    assert torch.allclose(soft_cross_entropy(logits, targets), F.cross_entropy(logits, labels), atol=1e-6)


def test_soft_cross_entropy_is_minimised_at_the_target_distribution():
    q = torch.tensor([[0.7, 0.2, 0.1]])
    logits = q.log().clone().requires_grad_(True)
    loss = soft_cross_entropy(logits, q)
    loss.backward()
    assert torch.allclose(logits.grad, torch.zeros_like(logits), atol=1e-6)  # gradient softmax(z) - q = 0
    entropy = -(q * q.log()).sum()
    assert math.isclose(loss.item(), entropy.item(), rel_tol=1e-5)
    assert soft_cross_entropy(torch.zeros(1, 3), q).item() > loss.item()


def test_soft_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 2))


def test_softmax_with_temperature_softens_and_checks_its_argument():
    logits = np.array([[4.0, 0.0], [0.0, 1.0]])
    p1, p4 = softmax_with_temperature(logits, 1.0), softmax_with_temperature(logits, 4.0)
    assert np.allclose(p1.sum(1), 1) and np.allclose(p4.sum(1), 1)
    assert p1[0, 0] > p4[0, 0] > 0.5  # same argmax, less confident
    assert np.isclose(p1[0, 0], 1 / (1 + math.exp(-4)))
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(logits, 0)
    assert one_hot(1, 3) == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        one_hot(3, 3)


@pytest.mark.slow
def test_trainer_learns_the_soft_targets_not_the_hard_labels(tiny_bert_config, minilm_path):
    """Every row has hard label 0; with soft targets (0.5, 0.5) the model must end near 0.5, without them near 1."""
    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    model0 = BertForSequenceClassification(tiny_bert_config.__class__(**{**tiny_bert_config.to_dict(), "num_labels": 2}))
    texts = [f"review number {i} of a film" for i in range(32)]
    hard = datasets.Dataset.from_dict({"text": texts, "label": [0] * 32})
    soft = hard.add_column("soft_label", [[0.5, 0.5]] * 32)
    theta = {"learning_rate": 5e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 8}
    p0 = {}
    for name, ds in (("hard", hard), ("soft", soft)):
        ds_tok = tokenize(ds, tok, ["text"], 16)
        assert ("soft_labels" in ds_tok.column_names) == (name == "soft")
        model = fit(model0, tok, ds_tok, theta, epochs=6, seed=0)
        p0[name] = torch.softmax(torch.from_numpy(predict(model, tok, ds_tok)), -1)[:, 0].mean().item()
    assert p0["hard"] > 0.9
    assert abs(p0["soft"] - 0.5) < 0.1


def test_layer_relation_loss_is_zero_for_a_copy_positive_otherwise_and_only_trains_the_student():
    import torch

    from bortify.finetuning.losses import layer_relation_loss

    torch.manual_seed(0)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, 3:] = 0
    teacher = tuple(torch.randn(2, 5, 12) for _ in range(5))  # embeddings + 4 layers, width 12
    same = tuple(h.clone().requires_grad_() for h in (teacher[0], teacher[2], teacher[4]))  # layers 1 and 3
    assert float(layer_relation_loss(same, teacher, [1, 3], mask, 4)) == pytest.approx(0.0, abs=1e-6)
    student = tuple(torch.randn(2, 5, 8, requires_grad=True) for _ in range(3))  # other width: no projection
    teacher_leaf = tuple(h.clone().requires_grad_() for h in teacher)
    loss = layer_relation_loss(student, teacher_leaf, [1, 3], mask, 4)
    assert float(loss) > 0
    loss.backward()
    assert student[1].grad is not None and student[1].grad.abs().sum() > 0
    assert all(h.grad is None for h in teacher_leaf)
    with pytest.raises(ValueError, match="names a layer the teacher"):
        layer_relation_loss(student, teacher, [1, 9], mask, 4)
    with pytest.raises(ValueError, match="layer_map has 1 entries"):
        layer_relation_loss(student, teacher, [1], mask, 4)
