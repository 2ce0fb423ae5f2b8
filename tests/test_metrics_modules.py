"""The evaluate modules shipped in bortify/metrics: loadable offline by path, equal to scikit-learn/scipy."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bortify.metrics import METRICS, compute_metrics, load_metric, metric_path

labels = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=2, max_size=40)


def test_every_module_loads_by_path_offline():
    import evaluate

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    for name in METRICS:
        module = evaluate.load(metric_path(name))
        assert isinstance(module, evaluate.Metric)
        assert module.name == name


@settings(max_examples=8, deadline=None)
@given(labels)
def test_classification_metrics_match_sklearn(pairs):
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    got = compute_metrics(["accuracy", "matthews_correlation"], preds, refs)
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert got["matthews_correlation"] == pytest.approx(matthews_corrcoef(refs, preds))
    macro = compute_metrics(["f1"], preds, refs, average="macro")["f1"]
    assert macro == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0))


def test_binary_f1_and_known_values():
    f1 = load_metric("f1")
    assert f1.compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0])["f1"] == pytest.approx(2 / 3)
    assert load_metric("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"] == pytest.approx(2 / 3)
    # MCC is 0 for a constant predictor, 1 for a perfect one, -1 for an inverted one
    mcc = load_metric("matthews_correlation")
    assert mcc.compute(predictions=[1, 1, 1, 1], references=[0, 1, 0, 1])["matthews_correlation"] == 0.0
    assert mcc.compute(predictions=[0, 1, 0, 1], references=[1, 0, 1, 0])["matthews_correlation"] == pytest.approx(-1.0)


def test_correlations_match_scipy_and_handle_constants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = x + rng.normal(scale=0.5, size=50)
    got = compute_metrics(["pearsonr", "spearmanr"], x.tolist(), y.tolist())
    assert got["pearsonr"] == pytest.approx(pearsonr(y, x)[0], rel=1e-6)
    assert got["spearmanr"] == pytest.approx(spearmanr(y, x)[0], rel=1e-6)
    assert compute_metrics(["pearsonr"], [1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["pearsonr"] == 0.0


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="bortify ships"):
        metric_path("bleu")


def test_metric_modules_are_packages_so_installs_carry_them():
    # pyproject uses packages.find(include=["bortify*"]): a module directory is shipped (editable AND regular
    # installs) only if setuptools finds it as a package.
    from setuptools import find_packages

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = set(find_packages(root, include=["bortify*"]))
    for name in METRICS:
        assert f"bortify.metrics.{name}" in found
