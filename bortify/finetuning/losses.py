"""Loss maths for fine-tuning, as pure functions (tested in tests/test_finetuning_losses.py).

Agora's labeler (docs/methods/03-agora.md §3) labels generated texts. The paper adds its hard label; with `soft_labels` we keep
the labeler's whole class distribution as the target (knowledge distillation, Hinton et al. 2015, eq. 2 at T):

    L(x) = - Σ_c q_c(x) · log softmax(z(x))_c ,   q = softmax(z_labeler / T)  for a generated row,
                                                   q = one-hot(y)              for a gold (original train) row,

so gold rows get the usual cross-entropy and generated rows carry the labeler's uncertainty instead of a label
that is often wrong near the hard texts Agora expands (BENCHMARKS.md, fine-tuning).

`task_distillation_loss` is task-specific distillation's loss (docs/methods/07-task-distillation.md §7, distill.py): α·CE on the rows
with a gold label + (1-α)·T²·KL(teacher ‖ student) on every row (MSE for regression).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from bortify.pretraining.losses import IGNORE_INDEX, masked_cross_entropy


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -Σ_c targets_c · log_softmax(logits)_c. `targets` rows are distributions (sum to 1);
    for one-hot targets this equals F.cross_entropy(logits, argmax)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape.")
    return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def softmax_with_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax(logits / T) in float64 (the labeler's soft labels)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def one_hot(label: int, num_labels: int) -> list[float]:
    if not 0 <= int(label) < num_labels:
        raise ValueError(f"label {label} is outside 0..{num_labels - 1}.")
    return [1.0 if c == int(label) else 0.0 for c in range(num_labels)]


# ------------------------------------------------------------------------------------------------------------
# Task-specific distillation (docs/methods/07-task-distillation.md §7; TinyBERT's task stage, Jiao et al. 2020; Tang et al. 2019
# "Distilling task-specific knowledge from BERT into simple networks"). The student learns from the FINE-TUNED
# teacher's logits on a transfer set: the gold train rows, augmented variants of them and unlabelled in-domain
# text. Rows without a gold label carry `labels = IGNORE_INDEX` and contribute the KD term only.

# IGNORE_INDEX (-100, the rows without a gold label) is pretraining.losses' own: one convention for every loss.


class TaskKDLoss(NamedTuple):
    loss: torch.Tensor  # α·gold + (1-α)·kd: what is back-propagated
    gold: torch.Tensor  # CE (MSE for regression) against the gold labels, mean over gold rows (0 when none)
    kd: torch.Tensor  # T²·KL(teacher ‖ student) at T (MSE to the teacher's score for regression), mean over rows
    gold_rows: int  # rows of the batch that have a gold label


def _gold_mask(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Rows with a gold label: not `ignore_index` (and, for float labels, not NaN)."""
    keep = labels != ignore_index
    if labels.is_floating_point():
        keep &= ~torch.isnan(labels)
    return keep


def _row_mean(per_row: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """mean_i(per_row_i), or mean_i(w_i · per_row_i) with per-row weights."""
    return per_row.mean() if weights is None else (weights.to(per_row) * per_row).mean()


def task_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                           alpha: float = 0.5, temperature: float = 2.0, regression: bool = False,
                           ignore_index: int = IGNORE_INDEX, kd_weights: torch.Tensor | None = None) -> TaskKDLoss:
    """Hinton et al. 2015 / Tang et al. 2019 for a classifier, one batch (docs/methods/07-task-distillation.md §7):

        L = α · CE(z_s, y)  over the rows with a gold label
          + (1 - α) · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))  over all rows,

    each term a mean per row; T² keeps the KD gradient's scale independent of T (Hinton et al. 2015, §2). A batch
    without gold rows (augmented / unlabelled text only) has a zero gold term (kept in the graph). Regression
    (`regression=True`, logits (B, 1) or (B,)): L = α · MSE(z_s, y) over gold rows + (1 - α) · MSE(z_s, z_t) over
    all rows (Tang et al. 2019 distil logits by MSE); T is not used. The teacher is never back-propagated into.
    `kd_weights` (B,): the KD term becomes mean_i(w_i · KD_i), e.g. focal distillation's α + β·1(old right)
    (congruent.focal_task_distillation_loss, docs/methods/04-updates.md §4.3); None = every row 1.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (the gold-label weight) must be in [0, 1], got {alpha}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: student and teacher must have the same label set.")
    if labels.shape[0] != student_logits.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {student_logits.shape[0]} rows.")
    if kd_weights is not None and kd_weights.shape != (student_logits.shape[0],):
        raise ValueError(f"kd_weights {tuple(kd_weights.shape)} must hold one weight per row ({student_logits.shape[0]}).")
    s = student_logits.float()
    t = teacher_logits.detach().float()
    keep = _gold_mask(labels, ignore_index)
    n_gold = int(keep.sum())
    zero = s.sum() * 0.0  # a zero that stays in the graph (DDP / the Trainer expect a differentiable loss)
    if regression:
        s, t = s.reshape(len(s), -1)[:, 0], t.reshape(len(t), -1)[:, 0]
        kd = _row_mean((s - t) ** 2, kd_weights) if len(s) else zero
        gold = F.mse_loss(s[keep], labels[keep].float()) if n_gold else zero
    else:
        if s.dim() != 2:
            raise ValueError(f"classification logits must be (rows, classes), got {tuple(s.shape)}.")
        if len(s):
            log_p_s = F.log_softmax(s / temperature, dim=-1)
            log_p_t = F.log_softmax(t / temperature, dim=-1)
            kd = _row_mean((log_p_t.exp() * (log_p_t - log_p_s)).sum(-1), kd_weights) * temperature**2
        else:
            kd = zero
        gold = masked_cross_entropy(s[keep], labels[keep].long(), ignore_index=ignore_index)  # 0 (in the graph) if none
    loss = alpha * gold + (1.0 - alpha) * kd
    return TaskKDLoss(loss, gold.detach(), kd.detach(), n_gold)


def layer_relation_loss(student_hidden, teacher_hidden, layer_map: list[int], attention_mask: torch.Tensor,
                        relation_heads: int) -> torch.Tensor:
    """The intermediate-layer term of task distillation (docs/methods/07-task-distillation.md §7.1; TinyBERT's task stage, Jiao et al.
    2020 §3.1, with MiniLMv2's relation loss, Wang et al. 2021 eq. 4, so that widths may differ): the mean over
    student layers m of KL(teacher ‖ student) between the token-token relations of the hidden states of student
    layer m and teacher layer layer_map[m]. `*_hidden` are transformers' `hidden_states` tuples (index 0 = the
    embeddings, so layer m is index m + 1); the teacher side is never back-propagated into."""
    from bortify.pretraining.losses import attention_relation_kd_loss

    if len(layer_map) != len(student_hidden) - 1:
        raise ValueError(f"layer_map has {len(layer_map)} entries for a student with {len(student_hidden) - 1} layers.")
    if max(layer_map) >= len(teacher_hidden) - 1:
        raise ValueError(f"layer_map {layer_map} names a layer the teacher ({len(teacher_hidden) - 1} layers) lacks.")
    pairs = [attention_relation_kd_loss([student_hidden[m + 1]], [teacher_hidden[t + 1].detach()], relation_heads,
                                        attention_mask) for m, t in enumerate(layer_map)]
    return torch.stack(pairs).mean()
