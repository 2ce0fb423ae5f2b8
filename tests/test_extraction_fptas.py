"""Extraction: the W-coefficient, ε-bucketing and the FPTAS guarantee (hypothesis property tests)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bortify.extraction.costs import Shape
from bortify.extraction.fptas import Candidate, epsilon_buckets, gain, run_fptas, w_coefficient


def test_w_coefficient_formula_and_maximum_point():
    # W = ((p(T)-p)/p(T)) * ((i(T)-i)/i(T)) / ê   (docs/methods/01-extraction.md §1)
    assert w_coefficient(25, 50, 0.5, 100, 200) == pytest.approx(0.75 * 0.75 / 0.5)
    assert w_coefficient(100, 200, 0.3, 100, 200) == 0.0  # the maximum point itself
    assert w_coefficient(50, 100, 0.2, 100, 200) > w_coefficient(50, 100, 0.4, 100, 200)  # lower error, higher W
    with pytest.raises(ValueError, match="floor"):
        w_coefficient(50, 100, 0.0, 100, 200)


def test_epsilon_zero_is_exhaustive_and_bad_epsilon_rejected():
    gains = [0.9, 0.5, 0.5, 0.1, 0.0]
    buckets, keep = epsilon_buckets(gains, 0.0)
    assert keep == [0, 1, 2, 3, 4] and buckets == [0, 1, 2, 3, 4]
    for eps in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            epsilon_buckets(gains, eps)


def test_buckets_keep_the_smallest_gain_and_skip_the_source_shape():
    # x = -log f: 0.105, 0.163, 0.693, 0.755; with ε = 0.3, δ = 0.357
    gains = [0.90, 0.85, 0.50, 0.47, 0.0]
    buckets, keep = epsilon_buckets(gains, 0.3)
    assert buckets[:4] == [0, 0, 1, 1]
    assert sorted(keep) == [1, 3]  # the costlier member of each bucket: the ordering says its error is lowest
    assert 4 not in keep  # f = 0: W = 0 whatever ê is


def _candidates(sizes):
    """Synthetic candidates: (p, i) pairs; shape is a label only."""
    return [Candidate(Shape(1, 1, k + 1, 1), parameters=p, effective_parameters=p, ops=i) for k, (p, i) in enumerate(sizes)]


@st.composite
def ordered_instances(draw):
    """Random spaces whose errors satisfy the ABnC ordering: f(a) <= f(b) => ê(a) <= ê(b)."""
    n = draw(st.integers(2, 40))
    p_T = 1000.0
    i_T = 5000.0
    sizes = [(draw(st.integers(1, 999)), draw(st.integers(1, 4999))) for _ in range(n)]
    gains = [gain(p, i, p_T, i_T) for p, i in sizes]
    # error: a non-decreasing function of the gain (ties in f get equal errors)
    base = draw(st.floats(0.05, 1.0))
    slope = draw(st.floats(0.0, 5.0))
    power = draw(st.floats(0.2, 3.0))
    errors = {f: base + slope * f ** power for f in set(gains)}
    return sizes, [errors[f] for f in gains], (p_T, i_T)


def _search(sizes, errors, T_size, epsilon):
    cands = _candidates(sizes)
    T = Candidate(Shape(2, 1, 1, 1), parameters=int(T_size[0]), effective_parameters=0, ops=int(T_size[1]))
    table = {c.shape.key(): e for c, e in zip(cands, errors)}
    calls = []

    def estimate(shape):
        calls.append(shape.key())
        return table[shape.key()]

    winner = run_fptas(cands, T, estimate, epsilon, progress=False)
    return winner, calls, cands


@settings(max_examples=150, deadline=None)
@given(ordered_instances(), st.floats(0.0, 0.9))
def test_fptas_guarantee_w_at_least_one_minus_epsilon_of_exhaustive(instance, epsilon):
    sizes, errors, T = instance
    exhaustive, all_calls, _ = _search(sizes, errors, T, 0.0)
    approx, calls, cands = _search(sizes, errors, T, epsilon)
    assert len(all_calls) == len(sizes)
    best_w = max(gain(p, i, *T) / e for (p, i), e in zip(sizes, errors))
    assert exhaustive.W == pytest.approx(best_w)
    assert approx.W >= (1 - epsilon) * exhaustive.W - 1e-12
    assert len(calls) <= len(all_calls)
    assert {c.status for c in cands} <= {"trained", "skipped"}
    assert sum(c.status == "trained" for c in cands) == len(calls)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
       st.lists(st.floats(0.0, 0.95), min_size=2, max_size=6))
def test_fewer_candidates_trained_as_epsilon_grows(gains, epsilons):
    counts = [len(epsilon_buckets(gains, eps)[1]) for eps in sorted(epsilons)]
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=60), st.floats(0.01, 0.95))
def test_every_bucket_spans_at_most_a_factor_one_minus_epsilon(gains, epsilon):
    buckets, keep = epsilon_buckets(gains, epsilon)
    for k in keep:
        members = [g for g, b in zip(gains, buckets) if b == buckets[k]]
        assert gains[k] == min(members)
        assert min(members) >= (1 - epsilon) * max(members) * (1 - 1e-9)


def test_fewer_trained_on_a_real_space_and_resume_cache_is_used():
    sizes = [(p, 2 * p) for p in range(10, 1000, 10)]
    errors = [0.1 + (1 - p / 1000) for p, _ in sizes]
    counts = []
    for eps in (0.0, 0.1, 0.3):
        _, calls, _ = _search(sizes, errors, (1000, 2000), eps)
        counts.append(len(calls))
    assert counts[0] == len(sizes) and counts[0] > counts[1] > counts[2] >= 1
    # resume: cached results are not re-estimated, and are marked as such
    cands = _candidates(sizes[:5])
    T = Candidate(Shape(2, 1, 1, 1), parameters=1000, effective_parameters=0, ops=2000)
    cache = {cands[0].shape.key(): {"error": 0.5, "details": {}}}
    seen = []
    run_fptas(cands, T, lambda s: seen.append(s.key()) or 0.5, 0.0, cache=cache, progress=False)
    assert cands[0].status == "cached" and cands[0].shape.key() not in seen and len(seen) == 4


def test_estimator_may_return_details_dict():
    cands = _candidates([(10, 10), (20, 20)])
    T = Candidate(Shape(2, 1, 1, 1), parameters=100, effective_parameters=0, ops=100)
    winner = run_fptas(cands, T, lambda s: {"error": 0.2, "per_theta": {"1e-4": 0.2}}, 0.0, progress=False)
    assert winner is cands[0] and winner.details["per_theta"] == {"1e-4": 0.2}
    assert math.isclose(winner.W, gain(10, 10, 100, 100) / 0.2)
