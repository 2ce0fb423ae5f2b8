"""Loss maths for fine-tuning, as pure functions (tested in tests/test_finetuning_losses.py).

Agora's labeler (PAPERS.md §3) labels generated texts. The paper adds its hard label; with `soft_labels` we keep
the labeler's whole class distribution as the target (knowledge distillation, Hinton et al. 2015, eq. 2 at T):

    L(x) = - Σ_c q_c(x) · log softmax(z(x))_c ,   q = softmax(z_labeler / T)  for a generated row,
                                                   q = one-hot(y)              for a gold (original train) row,

so gold rows get the usual cross-entropy and generated rows carry the labeler's uncertainty instead of a label
that is often wrong near the hard texts Agora expands (BENCHMARKS.md, fine-tuning).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
