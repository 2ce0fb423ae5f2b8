"""Focal distillation inside task distillation (docs/methods/04-updates.md §4.3): the weighted KD loss by hand, rows without a
gold label at α, the transfer-set columns (no second pass when the old model is the teacher), and `bortify finetune
--mode distill --old_model` end to end on tiny models."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import DATA, copy_compare_models, finetune_cli, write_data

from bortify.finetuning.congruent import (DistillFocal, FocalDistillation, distill_focal_weights,
                                          divergence, focal_task_distillation_loss, is_teacher)
from bortify.finetuning.losses import IGNORE_INDEX, task_distillation_loss

pytestmark = pytest.mark.usefixtures("compare_models", "one_torch_thread")

FAST = ["--max_length", "16", "--labeler_epochs", "1", "--labeler_min_dev_score", "0", "--distill_epochs", "1",
        "--distill_min_examples", "0", "--distill_augment_k", "0", "--distill_batch_size", "8"]


def _kl_rows(s, t, temperature):
    """T²·KL(softmax(t/T) ‖ softmax(s/T)) per row, written out."""
    p_t = F.softmax(t / temperature, -1)
    return (p_t * (p_t.log() - F.log_softmax(s / temperature, -1))).sum(-1) * temperature**2


def _batch():
    torch.manual_seed(0)
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3)
    labels = torch.tensor([0, 2, IGNORE_INDEX, 1])  # row 2: no gold label (augmented / unlabelled text)
    right = torch.tensor([1.0, 0.0, 1.0, 1.0])  # row 2's flag must not count: it has no gold label
    return s, t, labels, right


def test_weights_gold_rows_alpha_plus_beta_where_old_right_and_unlabelled_rows_alpha():
    _, _, labels, right = _batch()
    w = distill_focal_weights(labels, right, FocalDistillation(alpha=1.0, beta=5.0))
    assert w.tolist() == [6.0, 1.0, 1.0, 6.0]


def test_old_is_teacher_loss_by_hand():
    s, t, labels, right = _batch()
    focal = FocalDistillation(lam=2.0, alpha=1.0, beta=5.0)
    got = focal_task_distillation_loss(s, t, labels, right, focal=focal, alpha=0.3, temperature=2.0)
    weights = 2.0 * torch.tensor([6.0, 1.0, 1.0, 6.0])  # λ·(α + β·1(gold ∧ old right))
    kd = (weights * _kl_rows(s.detach(), t, 2.0)).mean()
    keep = labels != IGNORE_INDEX
    ce = F.cross_entropy(s.detach()[keep], labels[keep])
    assert got.kd.item() == pytest.approx(kd.item(), rel=1e-5)
    assert got.gold.item() == pytest.approx(ce.item(), rel=1e-5)
    assert got.loss.item() == pytest.approx(0.3 * ce.item() + 0.7 * kd.item(), rel=1e-5)
    assert got.fd.item() == 0.0
    got.loss.backward()
    assert s.grad is not None and t.grad is None


def test_beta_zero_is_plain_task_distillation_and_beta_changes_the_loss():
    s, t, labels, right = _batch()
    plain = task_distillation_loss(s, t, labels, alpha=0.5, temperature=2.0)
    same = focal_task_distillation_loss(s, t, labels, right, focal=FocalDistillation(alpha=1.0, beta=0.0))
    assert same.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    focal = focal_task_distillation_loss(s, t, labels, right, focal=FocalDistillation(alpha=1.0, beta=5.0))
    assert focal.loss.item() > plain.loss.item()
    # the flag of a row without gold label is ignored: flipping it changes nothing
    other = right.clone()
    other[2] = 0.0
    again = focal_task_distillation_loss(s, t, labels, other, focal=FocalDistillation(alpha=1.0, beta=5.0))
    assert again.loss.item() == pytest.approx(focal.loss.item(), rel=1e-6)


def test_another_old_model_adds_a_focal_term_on_its_own_logits():
    s, t, labels, right = _batch()
    old = torch.randn(4, 3)
    focal = FocalDistillation(lam=0.5, alpha=1.0, beta=5.0, divergence="l2")
    got = focal_task_distillation_loss(s, t, labels, right, focal=focal, old_logits=old)
    plain = task_distillation_loss(s, t, labels)
    fd = (torch.tensor([6.0, 1.0, 1.0, 6.0]) * divergence(s.detach(), old, "l2")).mean()
    assert got.fd.item() == pytest.approx(fd.item(), rel=1e-5)
    assert got.kd.item() == pytest.approx(plain.kd.item(), rel=1e-6)  # the teacher term unweighted
    assert got.loss.item() == pytest.approx(plain.loss.item() + 0.5 * fd.item(), rel=1e-5)
    with pytest.raises(ValueError, match="same label set"):
        focal_task_distillation_loss(s, t, labels, right, focal=focal, old_logits=torch.zeros(4, 2))


def test_kd_weights_of_ones_change_nothing_and_a_wrong_shape_is_refused():
    s, t, labels, _ = _batch()
    a = task_distillation_loss(s, t, labels)
    b = task_distillation_loss(s, t, labels, kd_weights=torch.ones(4))
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-7)
    with pytest.raises(ValueError, match="one weight per row"):
        task_distillation_loss(s, t, labels, kd_weights=torch.ones(3))


def test_is_teacher(tmp_path):
    assert is_teacher("teacher", None)
    assert is_teacher(str(tmp_path / "lab"), str(tmp_path / "x" / ".." / "lab"))
    assert not is_teacher(str(tmp_path / "old"), str(tmp_path / "lab"))
    assert not is_teacher(str(tmp_path / "old"), None)


class _Task:
    text_columns = ["text"]
    label_names = ["rotten", "fresh"]


def test_distill_focal_columns_reuse_the_teacher_logits_and_flag_gold_rows_only(tmp_path):
    import datasets

    rows = [{"text": "a", "label": 1, "source": "gold"}, {"text": "b", "label": 0, "source": "gold"},
            {"text": "c", "label": IGNORE_INDEX, "source": "unlabeled"}]
    logits = np.array([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]], np.float32)  # the teacher: class 1 everywhere
    ds = datasets.Dataset.from_dict({"input_ids": [[1], [2], [3]]})
    focal = DistillFocal("teacher", _Task(), FocalDistillation(), teacher=True)
    out = focal.add_columns(ds, rows, logits)
    assert out["old_right"] == [1.0, 0.0, 0.0] and "old_logits" not in out.column_names
    info = focal.describe()
    assert info["old_is_teacher"] and info["old_rows_computed"] == 0 and info["old_train_accuracy"] == 0.5
    assert info["gold_rows"] == 2


def test_distill_mode_accepts_old_model_teacher_and_weights_the_kd_term(tmp_path, monkeypatch):
    """--old_model teacher: the KD term is weighted by the teacher's cached logits; no second pass."""
    from bortify.finetuning import congruent

    calls = []
    original = congruent.focal_task_distillation_loss

    def spy(*a, **k):
        calls.append(k.get("old_logits") is None)
        return original(*a, **k)

    monkeypatch.setattr(congruent, "focal_task_distillation_loss", spy)
    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "mlm")
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(tmp_path / "out"), "--mode", "distill",
                      "--teacher", paths["mlm"], "--old_model", "teacher", "--pc_beta", "4",
                      *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    info = report["congruent"]
    assert info["old_is_teacher"] and info["beta"] == 4.0 and info["old_rows_computed"] == 0
    assert info["gold_rows"] == report["distill"]["transfer_set"]["gold"] == 40
    assert 0 <= info["old_train_accuracy"] <= 1
    assert calls and all(calls)  # the focal loss ran, on the teacher's logits only


def test_distill_mode_with_another_old_model_runs_it_once_per_transfer_row(tmp_path):
    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(tmp_path / "out"), "--mode", "distill",
                      "--teacher", paths["mlm"], "--old_model", paths["old"], *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    info = report["congruent"]
    assert not info["old_is_teacher"] and info["divergence"] == "l2"
    assert info["old_rows_computed"] == report["distill"]["transfer_set"]["total"]
