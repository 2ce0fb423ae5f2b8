"""Losses for backward-compatible embeddings, as pure functions (docs/methods/04-updates.md §4, BCT).

- `mean_pool`: the sentence embedding of sentence-transformers' mean pooling (average of the real tokens).
- `compatibility_loss`: pulls the new model's projected sentence embedding φ_new(x)·W onto the old model's φ_old(x)
  for the same text (cosine: 1 − cos; mse: squared error per dimension). This is our heterogeneous-width form of
  BCT: the old model's *embedding* is the target, which needs no classifier and works for any old encoder.
- `influence_loss`: BCT's influence loss as published (Shen et al. 2020, eq. 4): the new embedding, through the
  OLD model's frozen classifier w_old, must classify x correctly: CE(w_old(φ_new(x)), y).
- `bct_finetune_loss`: BCT's whole fine-tuning objective, L = CE(new head(e_new), y) + λ·CE(w_old(φ(e_new)), y)
  (`bortify finetune --compatible_with`, docs/methods/04-updates.md §4.4).
- `distill_influence_loss`: the influence term inside task distillation (`--mode distill --compatible_with`): the
  gold label where a row has one, the teacher's distribution where it has none (docs/methods/04-updates.md §4.4).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

COMPAT_LOSSES = ("cosine", "mse")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, H) token states -> (B, H): mean over the real (attention_mask == 1) tokens (sentence-transformers'
    mean pooling; a row with no real token gives zeros, not NaN)."""
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, H) -> (B, H): the first token's state (sentence-transformers' `cls` pooling)."""
    return hidden[:, 0]


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {"mean": mean_pool, "cls": cls_pool}


def compatibility_loss(new_embedding: torch.Tensor, old_embedding: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Mean over the batch of the distance between the new model's projected embedding (B, D) and the old model's
    embedding of the same texts (B, D); the old side is a fixed target (detached).

    `cosine`: 1 − cos(new, old), in [0, 2] — what a cosine index ranks by, and the same for any scale of either
    side (sentence-transformers models such as all-MiniLM-L6-v2 normalise). `mse`: mean squared error per
    dimension — for indexes searched by Euclidean distance or dot product on unnormalised vectors.
    """
    if new_embedding.shape != old_embedding.shape:
        raise ValueError(f"new embedding {tuple(new_embedding.shape)} and old embedding {tuple(old_embedding.shape)} "
                         "differ: project the new one to the old model's width first.")
    if new_embedding.numel() == 0:
        return new_embedding.sum() * 0.0
    new, old = new_embedding.float(), old_embedding.detach().float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(new, old, dim=-1, eps=1e-8)).mean()
    if kind == "mse":
        return (new - old).pow(2).mean()
    raise ValueError(f"compatibility loss must be one of {COMPAT_LOSSES}, got {kind!r}.")


def _check_frozen(old_classifier) -> None:
    """BCT keeps w_old fixed: refuse an old head with a trainable parameter (a contract, not a hope)."""
    if any(p.requires_grad for p in getattr(old_classifier, "parameters", lambda: [])()):
        raise ValueError("the old classifier must be frozen (requires_grad_(False)): BCT keeps w_old fixed.")


def influence_loss(new_embedding: torch.Tensor, old_classifier: Callable[[torch.Tensor], torch.Tensor],
                   labels: torch.Tensor) -> torch.Tensor:
    """BCT's influence loss (Shen et al. 2020, eq. 4): CE(w_old(φ_new(x)), y), mean over the batch.

    `new_embedding` (B, D_old) is the new model's embedding already projected to the old classifier's input width;
    `old_classifier` is the old model's classifier head, frozen (its parameters must not require grad: the old
    classifier is fixed, only the new embedding learns — the check below makes that a contract, not a hope).
    """
    _check_frozen(old_classifier)
    if new_embedding.shape[0] != labels.shape[0]:
        raise ValueError(f"{new_embedding.shape[0]} embeddings for {labels.shape[0]} labels.")
    logits = old_classifier(new_embedding)
    return F.cross_entropy(logits.float(), labels.long())


class BCTLoss(NamedTuple):
    loss: torch.Tensor  # CE_new + λ·influence: what is back-propagated
    ce: torch.Tensor  # the new head's task term (detached)
    influence: torch.Tensor  # BCT's influence term, before λ (detached)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None, soft_targets: torch.Tensor | None):
    """CE against class ids, or against row distributions (Agora's soft labels)."""
    if labels is not None:
        return F.cross_entropy(logits.float(), labels.long())
    return -(soft_targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def bct_finetune_loss(new_logits: torch.Tensor, projected_embedding: torch.Tensor,
                      old_classifier: Callable[[torch.Tensor], torch.Tensor], *, labels: torch.Tensor | None = None,
                      soft_targets: torch.Tensor | None = None, w_compat: float = 1.0) -> BCTLoss:
    """BCT's fine-tuning objective (Shen et al. 2020, eq. 3-4): the new model's own head learns the task, and the
    new embedding projected to the old width, φ(e_new) (`projected_embedding`, (B, D_old)), must be classified
    correctly by the old model's frozen head (`old_classifier`, logits in the TASK's class order):

        L = CE(new_logits, y) + w_compat · CE(w_old(φ(e_new)), y)

    Targets are class ids (`labels`) or row distributions (`soft_targets`: Agora's generated rows); exactly one."""
    if (labels is None) == (soft_targets is None):
        raise ValueError("give exactly one of labels / soft_targets.")
    if w_compat < 0:
        raise ValueError(f"w_compat must be >= 0, got {w_compat}.")
    _check_frozen(old_classifier)
    if projected_embedding.shape[0] != new_logits.shape[0]:
        raise ValueError(f"{projected_embedding.shape[0]} embeddings for {new_logits.shape[0]} rows.")
    old_logits = old_classifier(projected_embedding)
    if old_logits.shape != new_logits.shape:
        raise ValueError(f"the old head gives {tuple(old_logits.shape)} logits, the new one {tuple(new_logits.shape)}: "
                         "old and new must classify the same label set.")
    ce = _cross_entropy(new_logits, labels, soft_targets)
    influence = _cross_entropy(old_logits, labels, soft_targets)
    return BCTLoss(ce + w_compat * influence, ce.detach(), influence.detach())


def distill_influence_loss(projected_embedding: torch.Tensor, old_classifier: Callable[[torch.Tensor], torch.Tensor],
                           labels: torch.Tensor, teacher_logits: torch.Tensor, *,
                           ignore_index: int = -100) -> torch.Tensor:
    """BCT's influence term for a task-distillation batch (docs/methods/04-updates.md §4.4, "In task distillation"): the mean
    over the rows of CE(w_old(φ(e_new(x_i))), t_i), where t_i is the gold class for a labelled row and the
    teacher's distribution softmax(teacher_logits_i) (temperature 1) for a row whose label is `ignore_index`
    (unused train rows, generated variants: the teacher's belief is the best label they have).

    `projected_embedding` (B, D_old) is φ(e_new); `old_classifier` is the old model's frozen head (task order)."""
    _check_frozen(old_classifier)
    if not (projected_embedding.shape[0] == labels.shape[0] == teacher_logits.shape[0]):
        raise ValueError(f"{projected_embedding.shape[0]} embeddings, {labels.shape[0]} labels and "
                         f"{teacher_logits.shape[0]} teacher rows: one of each per row.")
    old_logits = old_classifier(projected_embedding).float()
    if old_logits.shape != teacher_logits.shape:
        raise ValueError(f"the old head gives {tuple(old_logits.shape)} logits, the teacher "
                         f"{tuple(teacher_logits.shape)}: old model and teacher must classify the same label set.")
    gold = (labels != ignore_index).unsqueeze(-1)  # a one-hot target for the labelled rows, the teacher's elsewhere
    targets = torch.where(gold, F.one_hot(labels.clamp_min(0).long(), old_logits.shape[-1]).float(),
                          F.softmax(teacher_logits.detach().float(), dim=-1))
    return _cross_entropy(old_logits, None, targets)


def least_squares_projection(x: torch.Tensor, y: torch.Tensor,
                             ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising ‖x·Wᵀ + b − y‖² + ridge·N·‖W‖² (ridge regression, closed form; b unpenalised): the
    projection's starting point before training (our choice, docs/methods/04-updates.md §4): the student already carries
    much of the old model's space (it was distilled from, often sliced out of, it), and a linear read-out of it
    is one solve away. `x` (N, H_new) pooled student embeddings, `y` (N, D_old) the old embeddings."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need the same number (>= 2) of student ({x.shape[0]}) and old ({y.shape[0]}) embeddings.")
    x, y = x.double(), y.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc + ridge * x.shape[0] * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(gram, xc.T @ yc).T  # (D_old, H_new)
    b = my - w @ mx
    return w.float(), b.float()
