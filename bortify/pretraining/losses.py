"""Distillation losses as pure functions (no modules, no state): docs/methods/02-pretraining.md §2.

- `logit_kd_loss`: Bort's pretraining loss, L = w_mlm·CE(student, gold) + w_kd·T²·KL(p_t^T ‖ p_s^T) on masked
  positions only (Hinton et al. 2015; Bort's public code for w_mlm=0.1, w_kd=0.5, T=2).
- `hidden_mse_loss`: TinyBERT-style hidden-state MSE through a learned projection when widths differ.
- `attention_relation_kd_loss`: MiniLMv2 self-attention relation distillation (Q-Q, K-K, V-V relations over
  a number of *relation heads* that need not equal either model's attention heads).
- `masked_cross_entropy`: the masked-LM cross-entropy at the positions that carry a label (bortify's one
  definition: the KD losses, the held-out score, the extraction estimator and task distillation use it).
- `scale_to_global_tokens`: a micro-batch's per-token mean turned into its share of the optimiser step's
  per-token mean (the Trainer path and the CPU HSDP path, distributed.py, use it).

Which teacher layer each student layer learns from is `bortify.slicing.default_layer_map` (0-based; slicing
initialises from the same layers).

All losses return scalars averaged over the positions that count (masked tokens for logit KD, real tokens
for the representation losses), so they do not change with batch size or padding.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
KD_REDUCTIONS = ("textbook", "bort_quirk")


class LogitKDLoss(NamedTuple):
    loss: torch.Tensor  # w_mlm·mlm + w_kd·kd: what is back-propagated
    mlm: torch.Tensor  # CE of the student against the gold tokens (masked positions)
    kd: torch.Tensor  # T²·KL(teacher ‖ student) at temperature T (masked positions), before w_kd


def select_masked(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten to the positions whose label is not `ignore_index`: (N, V) logits and (N,) labels."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on positions.")
    keep = labels != ignore_index
    return logits[keep], labels[keep]


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
                         reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `logits` against `labels` at the positions whose label is not `ignore_index`
    (Devlin et al. 2019's masked-LM loss; docs/methods/02-pretraining.md §2), in float32 whatever the logits' dtype.

    `logits` (..., V) with `labels` (...), or already gathered at the masked positions ((N, V) with (N,)).
    `reduction`: "mean" (per labelled position), "sum", or "none" (one value per labelled position). With no
    labelled position, "mean"/"sum" give a zero that stays in the autograd graph (DDP and the Trainer expect a
    differentiable loss) and "none" an empty tensor.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    s, gold = select_masked(logits, labels, ignore_index)
    if gold.numel() == 0 and reduction != "none":
        return logits.sum() * 0.0
    return F.cross_entropy(s.float(), gold, reduction=reduction)


def scale_to_global_tokens(loss: torch.Tensor, local_tokens: int, global_tokens, num_processes: int = 1):
    """This micro-batch's share of the per-token mean over a whole optimiser step (docs/methods/02-pretraining.md §2, §6).

    `loss` is a mean over this micro-batch's `local_tokens` labelled positions; `global_tokens` counts them over
    every micro-batch of the step on every process. Summing the returned values over the step's micro-batches
    gives the step's true per-token mean, so world 2 x batch 4, world 1 x batch 8 and batch 4 x 2 accumulation
    steps train identically. DDP / FSDP average gradients over processes, hence the factor `num_processes`
    (what `Trainer.compute_loss` does for models when `average_tokens_across_devices` is on)."""
    return loss * (local_tokens / global_tokens) * num_processes


def kd_kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                     reduction: str = "textbook") -> torch.Tensor:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), summed over the vocabulary, mean over positions (docs/methods/02-pretraining.md §2).

    The T² factor keeps the gradient scale independent of T (Hinton et al. 2015, §2). `reduction="bort_quirk"`
    reproduces Bort's released script instead: it applies softmax twice and averages the KL over the
    vocabulary, which makes KD about 1/V as strong (kept only to reproduce the paper's numbers).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: student and teacher must share the vocabulary.")
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    if reduction == "textbook":
        log_p_s = F.log_softmax(s, dim=-1)
        log_p_t = F.log_softmax(t, dim=-1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    elif reduction == "bort_quirk":
        log_p_s = F.log_softmax(F.softmax(s, dim=-1), dim=-1)
        log_p_t = F.log_softmax(F.softmax(t, dim=-1), dim=-1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).mean(-1)
    else:
        raise ValueError(f"reduction must be one of {KD_REDUCTIONS}, got {reduction!r}.")
    return kl.mean() * temperature**2


def logit_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                  temperature: float = 2.0, w_mlm: float = 0.1, w_kd: float = 0.5, kd_reduction: str = "textbook",
                  ignore_index: int = IGNORE_INDEX) -> LogitKDLoss:
    """Bort's KD loss on masked positions only (docs/methods/02-pretraining.md §2): w_mlm·CE + w_kd·T²·KL.

    Logits may be (..., V) over all positions with labels (...) holding `ignore_index` at unmasked ones, or
    already gathered at the masked positions ((N, V) with (N,) labels). Unmasked positions never count.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: student and teacher must share the vocabulary.")
    s, gold = select_masked(student_logits, labels, ignore_index)
    t, _ = select_masked(teacher_logits, labels, ignore_index)
    if gold.numel() == 0:  # a batch with nothing masked contributes nothing (but stays in the graph)
        zero = student_logits.sum() * 0.0
        return LogitKDLoss(zero, zero.detach(), zero.detach())
    mlm = masked_cross_entropy(s, gold, ignore_index=ignore_index)
    kd = kd_kl_divergence(s, t.detach(), temperature, kd_reduction)
    return LogitKDLoss(w_mlm * mlm + w_kd * kd, mlm, kd)


def _token_mean(per_token: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a (B, L) tensor over real (attention_mask == 1) tokens."""
    if attention_mask is None:
        return per_token.mean()
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


def hidden_mse_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                    projections: Sequence[Callable[[torch.Tensor], torch.Tensor] | None] | None = None,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """TinyBERT hidden-state loss: mean over layer pairs of MSE(H_s·W_h, H_t) (TinyBERT eq. 8).

    `student_hidden[i]` (B, L, H_s) is paired with `teacher_hidden[i]` (B, L, H_t); `projections[i]` maps
    H_s -> H_t (a learned linear layer when widths differ; None = identity, allowed only for equal widths).
    The squared error is averaged over the hidden size and over real tokens (padding excluded).
    """
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise ValueError(f"need as many student ({len(student_hidden)}) as teacher ({len(teacher_hidden)}) "
                         "hidden states, at least one.")
    projections = list(projections) if projections is not None else [None] * len(student_hidden)
    if len(projections) != len(student_hidden):
        raise ValueError(f"{len(projections)} projections for {len(student_hidden)} layer pairs.")
    losses = []
    for h_s, h_t, proj in zip(student_hidden, teacher_hidden, projections):
        h_s = proj(h_s) if proj is not None else h_s
        if h_s.shape != h_t.shape:
            raise ValueError(f"student hidden {tuple(h_s.shape)} vs teacher {tuple(h_t.shape)}: widths differ, "
                             "so a projection is needed.")
        per_token = (h_s.float() - h_t.detach().float()).pow(2).mean(-1)
        losses.append(_token_mean(per_token, attention_mask))
    return torch.stack(losses).mean()


def _relation_log_probs(x: torch.Tensor, num_relation_heads: int, key_mask: torch.Tensor | None) -> torch.Tensor:
    """log softmax(X_r X_r^T / sqrt(d_r)) per relation head r (MiniLMv2 eq. 1-3): (B, R, L, L)."""
    bsz, length, width = x.shape
    if width % num_relation_heads:
        raise ValueError(f"hidden width {width} is not divisible by num_relation_heads={num_relation_heads}; "
                         "choose a number of relation heads that divides both models' widths.")
    d_r = width // num_relation_heads
    xr = x.float().view(bsz, length, num_relation_heads, d_r).transpose(1, 2)  # B, R, L, d_r
    scores = xr @ xr.transpose(-1, -2) / math.sqrt(d_r)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def attention_relation_kd_loss(student_qkv: Sequence[torch.Tensor], teacher_qkv: Sequence[torch.Tensor],
                               num_relation_heads: int, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLMv2 self-attention relation distillation (Wang et al. 2021, eq. 4).

    `student_qkv` / `teacher_qkv` are the (query, key, value) projections of one layer each, (B, L, H_s) and
    (B, L, H_t): widths and attention-head counts may differ, because both are re-split into the same
    `num_relation_heads` and only the (L × L) relation matrices are compared. The loss is the mean over the
    Q-Q, K-K and V-V relations of KL(teacher ‖ student), summed over keys and averaged over relation heads
    and real query tokens.
    """
    if len(student_qkv) != len(teacher_qkv) or not student_qkv:
        raise ValueError("student_qkv and teacher_qkv must both hold the same relations (query, key, value).")
    losses = []
    for x_s, x_t in zip(student_qkv, teacher_qkv):
        if x_s.shape[:2] != x_t.shape[:2]:
            raise ValueError(f"student {tuple(x_s.shape)} and teacher {tuple(x_t.shape)} disagree on batch/length.")
        log_s = _relation_log_probs(x_s, num_relation_heads, attention_mask)
        log_t = _relation_log_probs(x_t.detach(), num_relation_heads, attention_mask)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean(1)  # B, L (sum over keys, mean over relation heads)
        losses.append(_token_mean(kl, attention_mask))
    return torch.stack(losses).mean()


def default_relation_heads(student_width: int, teacher_width: int, max_heads: int) -> int:
    """The largest number of relation heads ≤ `max_heads` that divides both widths (our choice; MiniLMv2 uses
    a fixed 48 for base-size teachers and 64 for large ones, which small students' widths may not allow)."""
    g = math.gcd(student_width, teacher_width)
    return max(r for r in range(1, max(1, max_heads) + 1) if g % r == 0)
