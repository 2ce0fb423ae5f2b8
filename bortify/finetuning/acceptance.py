"""Pure helpers around Agora's repair step (docs/methods/03-agora.md §3), our additions to the paper's loop.

- `split_dev`: the paper expands the dev mistakes AND selects θ / the best model on the same dev set, so once
  variants of dev mistakes are in train, dev is a biased judge. We split dev into a *repair* part (its mistakes
  are expanded) and a *selection* part (used only to score θ and rounds). `repair_fraction=1` is the paper.
- `wrong_class` / `largest_errors`: what counts as a dev "mistake" whose neighbourhood Agora repairs: a wrong
  class (the paper), or for regression (ours) the quarter of the rows with the largest absolute error.
- `accept_generated`: the labeler labels variants of exactly the hard texts, so its labels are noisy and can be
  skewed towards one class. Optionally keep only variants the labeler is confident about, and cap the rows
  added per labeler class so that the added rows follow the train class ratio of the classes the labeler did
  predict (a class it never predicted does not block the others).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np


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


def wrong_class(predictions: Sequence[Any], golds: Sequence[Any]) -> list[bool]:
    """Per row: the predicted class differs from the gold class (the paper's mistakes)."""
    if len(predictions) != len(golds):
        raise ValueError("predictions and golds must have the same length.")
    return [p != y for p, y in zip(predictions, golds)]


REGRESSION_MISTAKE_QUANTILE = 0.75


def largest_errors(predictions: Sequence[float], golds: Sequence[float],
                   quantile: float = REGRESSION_MISTAKE_QUANTILE) -> list[bool]:
    """Per row: its absolute error is at least the `quantile` of the absolute errors (ours: a regressor's
    "mistakes" are the quarter of the rows it misses most; docs/methods/03-agora.md §3)."""
    if len(predictions) != len(golds):
        raise ValueError("predictions and golds must have the same length.")
    if not predictions:
        return []
    errors = [abs(float(p) - float(y)) for p, y in zip(predictions, golds)]
    threshold = float(np.quantile(errors, quantile))
    return [e >= threshold for e in errors]


def mistake_rule(regression: bool):
    """The mistakes rule of a task: `largest_errors` for regression, `wrong_class` otherwise."""
    return largest_errors if regression else wrong_class


def class_ratio(train_labels: Sequence[int], num_labels: int) -> list[float]:
    """Fraction of each class in train (the target ratio of the added rows)."""
    counts = Counter(int(y) for y in train_labels)
    total = sum(counts.values())
    return [counts.get(c, 0) / total for c in range(num_labels)]


# Why a generated row was not added (RoundRecord.rejections, report.json): the labeler step's reasons.
LABELER_CONFIDENCE = "labeler_confidence"  # below --min_labeler_confidence
CLASS_CAP = "class_cap"  # over its class's cap (--balance_classes)


def class_caps(available: dict[int, int], ratio: Sequence[float]) -> dict[int, int]:
    """Per-class caps for balanced acceptance, relative to the classes that are present (ours, docs/methods/03-agora.md §3.5).

    P = the classes with at least one available row and a train share r_c > 0. N = min over P of
    (available_c / r_c) is the largest total a perfectly balanced acceptance could reach over P (a class with a
    train share that the labeler never predicted is left out, instead of capping everything at 0); each class
    c in P may add floor(r_c * N) rows, every other class 0. The binding class keeps all its rows, so something
    is accepted whenever any class of P has a row. Among P, the caps follow the train ratio renormalised to P."""
    present = [(c, r) for c, r in enumerate(ratio) if r > 0 and available.get(c, 0) > 0]
    if not present:
        return {}
    total = min(available[c] / r for c, r in present)
    return {c: min(available[c], math.floor(r * total + 1e-9)) for c, r in present}


def rejection_reasons(labels: Sequence[int], confidences: Sequence[float], ratio: Sequence[float], *,
                      min_confidence: float | None = None, balance: bool = True) -> list[str | None]:
    """Per generated row: None (added) or why it is not added (LABELER_CONFIDENCE, CLASS_CAP).

    1. confidence: rows whose labeler confidence (max softmax probability) is below `min_confidence`;
    2. balance: per class, the rows beyond `class_caps` of the confident rows, the least confident first (the
       most confident rows of each class are kept). A class with no train share gets no rows."""
    if len(labels) != len(confidences):
        raise ValueError("labels and confidences must have the same length.")
    reasons: list[str | None] = [None if min_confidence is None or c >= min_confidence else LABELER_CONFIDENCE
                                 for c in confidences]
    if not balance:
        return reasons
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (y, why) in enumerate(zip(labels, reasons)):
        if why is None:
            by_class[int(y)].append(i)
    caps = class_caps({c: len(idx) for c, idx in by_class.items()}, ratio)
    for c, idx in by_class.items():
        for i in sorted(idx, key=lambda i: -confidences[i])[caps.get(c, 0):]:
            reasons[i] = CLASS_CAP
    return reasons


def accept_generated(labels: Sequence[int], confidences: Sequence[float], ratio: Sequence[float], *,
                     min_confidence: float | None = None, balance: bool = True) -> list[bool]:
    """Which generated rows to add to train (True = keep): `rejection_reasons` is None."""
    return [why is None for why in rejection_reasons(labels, confidences, ratio, min_confidence=min_confidence,
                                                     balance=balance)]
