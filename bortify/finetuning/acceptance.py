"""Pure helpers around Agora's repair step (docs/methods.md §3), our additions to the paper's loop.

- `split_dev`: the paper expands the dev mistakes AND selects θ / the best model on the same dev set, so once
  variants of dev mistakes are in train, dev is a biased judge. We split dev into a *repair* part (its mistakes
  are expanded) and a *selection* part (used only to score θ and rounds). `repair_fraction=1` is the paper.
- `accept_generated`: the labeler labels variants of exactly the hard texts, so its labels are noisy and can be
  skewed towards one class. Optionally keep only variants the labeler is confident about, and cap the rows
  added per labeler class so that the added rows follow the train class ratio.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Any, Sequence


def split_dev(labels: Sequence[Any], repair_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(repair indices, selection indices) of dev, seeded and stratified by label (classification).

    `repair_fraction` = 1 -> both are all of dev (the paper: one dev set repairs and selects). Otherwise the two
    index lists are disjoint, cover dev, and each class is split in that proportion (at least one row per part
    per class of two or more rows). Float labels (regression) are split without stratification."""
    n = len(labels)
    if not 0 < repair_fraction <= 1:
        raise ValueError(f"repair_fraction must be in (0, 1], got {repair_fraction}.")
    if repair_fraction == 1:
        return list(range(n)), list(range(n))
    rng = random.Random(seed)
    strata: dict[Any, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        strata[y if not isinstance(y, float) else None].append(i)
    repair: list[int] = []
    for key in sorted(strata, key=repr):
        idx = strata[key]
        rng.shuffle(idx)
        k = round(len(idx) * repair_fraction)
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        repair.extend(idx[:k])
    repair_set = set(repair)
    selection = [i for i in range(n) if i not in repair_set]
    if not repair or not selection:
        raise ValueError(f"dev ({n} rows) is too small to split with repair_fraction={repair_fraction}: give a "
                         "larger dev split or repair_fraction=1.")
    return sorted(repair), selection


def class_ratio(train_labels: Sequence[int], num_labels: int) -> list[float]:
    """Fraction of each class in train (the target ratio of the added rows)."""
    counts = Counter(int(y) for y in train_labels)
    total = sum(counts.values())
    return [counts.get(c, 0) / total for c in range(num_labels)]


def accept_generated(labels: Sequence[int], confidences: Sequence[float], ratio: Sequence[float], *,
                     min_confidence: float | None = None, balance: bool = True) -> list[bool]:
    """Which generated rows to add to train (True = keep), given the labeler's labels and confidences.

    1. confidence: drop rows whose labeler confidence (max softmax probability) is below `min_confidence`;
    2. balance: keep per class c at most floor(ratio[c] * N) rows, with N the largest total for which every
       class can meet its share, N = min over classes with ratio > 0 of (available_c / ratio[c]); the most
       confident rows of each class are kept. A class the labeler never predicts therefore caps everything at
       0 (a one-sided batch would only skew train further)."""
    if len(labels) != len(confidences):
        raise ValueError("labels and confidences must have the same length.")
    keep = [min_confidence is None or c >= min_confidence for c in confidences]
    if not balance:
        return keep
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (y, ok) in enumerate(zip(labels, keep)):
        if ok:
            by_class[int(y)].append(i)
    shares = [(c, r) for c, r in enumerate(ratio) if r > 0]
    if not shares:
        return [False] * len(labels)
    total = min(len(by_class.get(c, [])) / r for c, r in shares)
    out = [False] * len(labels)
    for c, r in shares:
        cap = math.floor(r * total + 1e-9)
        for i in sorted(by_class.get(c, []), key=lambda i: -confidences[i])[:cap]:
            out[i] = True
    return out
