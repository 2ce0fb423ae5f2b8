"""The shipped `flips` evaluate module (docs/methods/04-updates.md §4): hand-computed cases and the module interface."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bortify.metrics import load_metric
from bortify.metrics.flips.flips import flip_statistics


def test_hand_computed_case():
    #        i:  0  1  2  3  4  5  6  7  8  9
    gold = [0, 1, 1, 0, 1, 0, 1, 0, 1, 1]
    old = [0, 1, 0, 0, 1, 1, 0, 0, 1, 1]  # right on 0,1,3,4,7,8,9 -> 7/10
    new = [0, 0, 1, 1, 1, 0, 0, 0, 1, 0]  # right on 0,2,4,5,7,8   -> 6/10
    got = flip_statistics(gold, old, new)
    # negative flips (old right, new wrong): 1, 3, 9 -> 3; positive (old wrong, new right): 2, 5 -> 2
    assert got["negative_flips"] == 3 and got["positive_flips"] == 2 and got["n"] == 10
    assert got["nfr"] == pytest.approx(0.3)
    assert got["pfr"] == pytest.approx(0.2)
    assert got["accuracy_old"] == pytest.approx(0.7) and got["accuracy_new"] == pytest.approx(0.6)
    # rNFR = NFR / ((1 - ER_old) * ER_new) = 0.3 / (0.7 * 0.4)
    assert got["relative_nfr"] == pytest.approx(0.3 / 0.28)
    # disagreement: old != new at 1, 2, 3, 5, 9 -> 5/10 (index 6: both wrong with the same label, agree)
    assert got["disagreement"] == pytest.approx(0.5)


def test_three_classes_both_wrong_differently_is_no_flip_but_a_disagreement():
    got = flip_statistics([2, 2, 0], [1, 2, 0], [0, 2, 0])
    assert got["nfr"] == 0 and got["pfr"] == 0
    assert got["disagreement"] == pytest.approx(1 / 3)


def test_identical_models_have_no_flips_and_degenerate_relative_nfr_is_zero():
    got = flip_statistics([0, 1, 1], [0, 1, 0], [0, 1, 0])
    assert got["nfr"] == got["pfr"] == got["disagreement"] == 0
    perfect = flip_statistics([0, 1], [1, 0], [0, 1])  # new never wrong: ER_new = 0, rNFR's denominator is 0
    assert perfect["relative_nfr"] == 0.0 and perfect["pfr"] == 1.0


@pytest.mark.parametrize("args, message", [(([0, 1], [0], [0, 1]), "same length"), (([], [], []), "at least one")])
def test_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        flip_statistics(*args)


triples = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None)
@given(triples)
def test_identities(rows):
    gold, old, new = ([r[i] for r in rows] for i in range(3))
    got = flip_statistics(gold, old, new)
    # accuracy changes by exactly the positive minus the negative flips
    assert got["accuracy_new"] - got["accuracy_old"] == pytest.approx(got["pfr"] - got["nfr"])
    assert got["nfr"] + got["pfr"] <= got["disagreement"] + 1e-12
    swapped = flip_statistics(gold, new, old)  # swapping old and new swaps the flips
    assert swapped["nfr"] == pytest.approx(got["pfr"]) and swapped["pfr"] == pytest.approx(got["nfr"])


def test_evaluate_module_computes_the_same():
    module = load_metric("flips")
    gold, old, new = [0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0]
    got = module.compute(references=gold, old_predictions=old, new_predictions=new)
    assert got == pytest.approx(flip_statistics(gold, old, new))
    assert got["nfr"] == pytest.approx(0.25) and got["pfr"] == pytest.approx(0.25)
