"""Flip metrics of a model update as an `evaluate` module (offline; shipped with bortify; docs/methods/04-updates.md §4).

Positive-congruent training (Yan et al., CVPR 2021, arXiv:2011.09161) measures what an update breaks: over N
examples with gold labels y, the old model's predictions o and the new model's n,

    NFR  = (1/N) Σ 1[o_i = y_i ∧ n_i ≠ y_i]          negative flip rate (old right, new wrong)
    PFR  = (1/N) Σ 1[o_i ≠ y_i ∧ n_i = y_i]          positive flip rate (old wrong, new right)
    rNFR = NFR / ((1 − ER_old) · ER_new)              relative NFR: NFR over what independent errors would give
    disagreement = (1/N) Σ 1[o_i ≠ n_i]

with ER the error rate (1 − accuracy). rNFR is 0 when its denominator is 0 (an old model never right or a new
model never wrong: no negative flip is possible then).
"""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = ("Negative flip rate (old right, new wrong), relative NFR, positive flip rate, disagreement and both "
                "models' accuracy of a model update (Yan et al. 2021, positive-congruent training).")
_KWARGS = """
Args:
    references (list of int): gold labels.
    old_predictions (list of int): the replaced (old) model's predicted labels.
    new_predictions (list of int): the new model's predicted labels.
Returns:
    {"nfr", "relative_nfr", "pfr", "disagreement", "accuracy_old", "accuracy_new": float,
     "negative_flips", "positive_flips", "n": int}
"""
_CITATION = ("Yan, Xiong, Kundu, Yang, Deng, Wang, Xia, Soatto. Positive-Congruent Training: Towards Regression-Free "
             "Model Updates. CVPR 2021.")


def flip_statistics(references, old_predictions, new_predictions) -> dict:
    """The flip metrics of the module docstring, as a pure function over three equal-length label sequences."""
    refs, old, new = list(references), list(old_predictions), list(new_predictions)
    if not len(refs) == len(old) == len(new):
        raise ValueError(f"references, old_predictions and new_predictions must have the same length, got "
                         f"{len(refs)}, {len(old)} and {len(new)}.")
    n = len(refs)
    if n == 0:
        raise ValueError("flip metrics need at least one example.")
    old_right = [o == y for o, y in zip(old, refs)]
    new_right = [p == y for p, y in zip(new, refs)]
    negative = sum(o and not p for o, p in zip(old_right, new_right))
    positive = sum(p and not o for o, p in zip(old_right, new_right))
    acc_old, acc_new = sum(old_right) / n, sum(new_right) / n
    nfr = negative / n
    expected = acc_old * (1.0 - acc_new)  # (1 − ER_old) · ER_new
    return {
        "nfr": nfr,
        "relative_nfr": nfr / expected if expected > 0 else 0.0,
        "pfr": positive / n,
        "disagreement": sum(o != p for o, p in zip(old, new)) / n,
        "accuracy_old": acc_old,
        "accuracy_new": acc_new,
        "negative_flips": negative,
        "positive_flips": positive,
        "n": n,
    }


class Flips(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"references": datasets.Value("int64"),
                                        "old_predictions": datasets.Value("int64"),
                                        "new_predictions": datasets.Value("int64")}),
            reference_urls=["https://arxiv.org/abs/2011.09161"],
        )

    def _compute(self, references, old_predictions, new_predictions):
        return flip_statistics(references, old_predictions, new_predictions)
