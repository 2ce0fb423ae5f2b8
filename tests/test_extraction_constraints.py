"""Extraction constraint modes (docs/methods/08-constraints.md §8): --max_error_increase δ and --latency_budget_ms B.

Deterministic injected estimators (as in test_extraction_fptas.py) on synthetic and tiny real spaces; one slow
test runs the real sliced-task estimator on the demo space.
"""

import json
import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bortify.extraction import ExtractionArguments, extract
from bortify.extraction.constraints import (
    GUARANTEES,
    ConstraintError,
    cost_buckets,
    run_latency_budget,
    run_max_error_increase,
)
from bortify.extraction.costs import Shape
from bortify.extraction.fptas import Candidate

from casetable import Case, run_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


# ------------------------------------------------------------------------------------------- synthetic spaces
def _cands(costs, latency=False):
    """Candidates with the given costs (ops, or latency in seconds); parameters grow with cost; shape = a label."""
    out = []
    for k, c in enumerate(costs):
        cand = Candidate(Shape(1, 1, k + 1, 1), parameters=10 * (k + 1), effective_parameters=0,
                         ops=int(c * 1000) if not latency else 10 * (k + 1), latency_s=c if latency else None)
        out.append(cand)
    return out


def _T(cost=1e6, latency=False):
    return Candidate(Shape(9, 9, 9, 9), parameters=10**6, effective_parameters=0, ops=int(cost * 1000),
                     latency_s=cost if latency else None)


class Table:
    """Deterministic ê from a table by shape key; records every call."""

    def __init__(self, errors: dict):
        self.errors, self.calls = errors, []

    def __call__(self, shape):
        self.calls.append(shape.key())
        return self.errors[shape.key()]


def test_cost_buckets_keep_the_costliest_member():
    costs = [1.0, 1.05, 2.0, 2.1, 8.0]
    buckets, keep = cost_buckets(costs, 0.2)  # a bucket spans a cost factor <= 1/(1-0.2) = 1.25
    assert buckets == [0, 0, 1, 1, 2]
    assert sorted(keep) == [1, 3, 4]
    assert cost_buckets(costs, 0.0) == (list(range(5)), list(range(5)))
    with pytest.raises(ValueError, match="> 0"):
        cost_buckets([1.0, 0.0], 0.1)


def test_max_error_increase_picks_the_cheapest_within_delta_and_trains_only_up_to_it():
    costs = [1, 2, 3, 4, 5, 6]
    errors = [0.40, 0.35, 0.26, 0.30, 0.22, 0.21]  # not ordered: ε = 0 must still be exact
    cands, T = _cands(costs), _T()
    est = Table({**{c.shape.key(): e for c, e in zip(cands, errors)}, T.shape.key(): 0.20})
    out = run_max_error_increase(cands, T, est, 0.07, 0.0, progress=False)
    assert out.winner is cands[2]  # 0.26 <= 0.20 + 0.07, and the two cheaper ones are above it
    assert est.calls == [T.shape.key()] + [c.shape.key() for c in cands[:3]]  # source first, then cost order
    assert T.error == 0.20 and out.fields["source_error"] == 0.20 and out.fields["target_error"] == pytest.approx(0.27)
    assert [c.status for c in cands] == ["trained"] * 3 + ["skipped"] * 3
    assert [c.satisfies for c in cands] == [False, False, True, None, None, None]
    assert "0.26" in out.why and "2 cheaper" in out.why


@st.composite
def instances(draw, ordered: bool):
    n = draw(st.integers(1, 30))
    costs = draw(st.lists(st.floats(0.01, 100.0), min_size=n, max_size=n))
    if ordered:  # the ABnC ordering: a costlier candidate does not have a larger ê
        top = draw(st.floats(0.05, 1.0))
        scale = draw(st.floats(0.0, 1.0))
        errors = [top + scale / c for c in costs]
    else:
        errors = draw(st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n))
    source = draw(st.floats(0.01, 1.0))
    delta = draw(st.floats(0.0, 0.5))
    return costs, errors, source, delta


def _run_delta(costs, errors, source, delta, epsilon):
    cands, T = _cands(costs, latency=True), _T(1e6, latency=True)  # float costs: no ties from rounding
    est = Table({**{c.shape.key(): e for c, e in zip(cands, errors)}, T.shape.key(): source})
    try:
        out = run_max_error_increase(cands, T, est, delta, epsilon, progress=False)
    except ConstraintError:
        return None, est, cands
    return out, est, cands


@settings(max_examples=150, deadline=None)
@given(instances(ordered=False))
def test_max_error_increase_epsilon_zero_is_exact_without_any_ordering(instance):
    costs, errors, source, delta = instance
    out, est, cands = _run_delta(costs, errors, source, delta, 0.0)
    feasible = [c for c, e in zip(cands, errors) if e <= source + delta + 1e-12]
    if not feasible:
        assert out is None
        return
    assert out.winner.cost == min(c.cost for c in feasible)
    assert out.winner.error <= source + delta + 1e-12
    assert all(c.cost <= out.winner.cost for c in cands if c.status == "trained")  # nothing costlier trained


@settings(max_examples=150, deadline=None)
@given(instances(ordered=True), st.floats(0.01, 0.9))
def test_max_error_increase_epsilon_guarantee_under_the_ordering(instance, epsilon):
    costs, errors, source, delta = instance
    out, est, cands = _run_delta(costs, errors, source, delta, epsilon)
    feasible = [c for c, e in zip(cands, errors) if e <= source + delta + 1e-12]
    if not feasible:
        assert out is None
        return
    best = min(c.cost for c in feasible)
    assert out.winner.error <= source + delta + 1e-12  # always within δ (measured)
    assert out.winner.cost <= best / (1 - epsilon) * (1 + 1e-9)  # and within 1/(1-ε) of the cheapest
    exact, exact_est, _ = _run_delta(costs, errors, source, delta, 0.0)
    assert exact.winner.cost == best
    assert len(est.calls) <= len(exact_est.calls)  # never more training than the exact scan


def test_max_error_increase_nothing_within_delta_is_a_clear_error():
    cands, T = _cands([1, 2, 3]), _T()
    est = Table({**{c.shape.key(): e for c, e in zip(cands, [0.5, 0.4, 0.33])}, T.shape.key(): 0.2})
    with pytest.raises(ConstraintError, match=r"lowest ê among the 3 trained is 0.33.*at least 0.13"):
        run_max_error_increase(cands, T, est, 0.05, 0.0, progress=False)


def test_latency_budget_never_picks_over_budget_and_picks_the_lowest_error_among_the_rest():
    lat = [0.001, 0.002, 0.004, 0.008, 0.016]
    errors = [0.30, 0.22, 0.25, 0.10, 0.05]  # the two slowest are the most accurate, but over budget
    cands, T = _cands(lat, latency=True), _T(1.0, latency=True)
    est = Table({c.shape.key(): e for c, e in zip(cands, errors)})
    out = run_latency_budget(cands, T, est, 0.005, 0.0, progress=False)
    assert out.winner is cands[1]  # lowest ê among those within 5 ms, although not the slowest of them
    assert set(est.calls) == {c.shape.key() for c in cands[:3]}  # over-budget ones never trained
    assert [c.satisfies for c in cands] == [True, True, True, False, False]
    assert [c.status for c in cands[3:]] == ["skipped", "skipped"]
    assert out.satisfied == cands[:3] and "2 over budget" in out.why


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-4, 1.0), st.floats(0.01, 1.0)), min_size=1, max_size=30),
       st.floats(1e-4, 1.0), st.floats(0.0, 0.9), st.booleans())
def test_latency_budget_property(rows, budget, epsilon, ordered):
    lat = [r[0] for r in rows]
    errors = [0.05 + 0.01 / l for l in lat] if ordered else [r[1] for r in rows]
    cands, T = _cands(lat, latency=True), _T(2.0, latency=True)
    est = Table({c.shape.key(): e for c, e in zip(cands, errors)})
    within = [c for c in cands if c.latency_s <= budget]
    if not within:
        with pytest.raises(ConstraintError, match="fastest"):
            run_latency_budget(cands, T, est, budget, epsilon, progress=False)
        assert est.calls == []
        return
    out = run_latency_budget(cands, T, est, budget, epsilon, progress=False)
    assert out.winner.latency_s <= budget
    assert all(key in {c.shape.key() for c in within} for key in est.calls)  # never trains over budget
    best = min(errors[i] for i, c in enumerate(cands) if c in within)
    if epsilon == 0 or ordered:  # exact: ε = 0 always, ε > 0 under the ordering
        assert out.winner.error == best
    else:
        assert out.winner.error >= best


# --------------------------------------------------------------------------------- extract() end to end
class Recorder:
    """Deterministic ê (bigger -> lower, the ABnC ordering); records prepare() and every call."""

    name = "recorder"

    def __init__(self):
        self.calls, self.prepared = [], 0

    def fingerprint(self):
        return {"error_estimator": self.name}

    def prepare(self):
        self.prepared += 1

    def __call__(self, shape):
        self.calls.append(shape.key())
        return 0.1 + 1.0 / (shape.D * shape.H)


def _args(out, **kw):
    base = dict(output_dir=str(out), source="embedded:all-MiniLM-L6-v2", depths=[1, 2, 3], heads=[4],
                hidden_sizes=[64, 128], intermediate_sizes=[128, 256], epsilon=0.0, progress=False)
    return ExtractionArguments(**{**base, **kw})


def test_extract_max_error_increase_report_and_config(tmp_path):
    est = Recorder()
    report = extract(_args(tmp_path / "d", max_error_increase=0.005), estimator=est)
    source_error = 0.1 + 1.0 / (6 * 384)
    within = [c for c in report["candidates"] if 0.1 + 1.0 / (c["D"] * c["H"]) <= source_error + 0.005]
    cheapest = min(within, key=lambda c: c["ops"])
    w = report["winner"]
    assert (w["D"], w["H"], w["I"]) == (cheapest["D"], cheapest["H"], cheapest["I"])
    assert report["objective"] == "max_error_increase" and report["source_error"] == pytest.approx(source_error)
    con = report["constraint"]
    assert con["mode"] == "max_error_increase" and con["bound"] == {"max_error_increase": 0.005}
    assert con["source_error"] == pytest.approx(source_error) and con["target_error"] == pytest.approx(source_error + 0.005)
    assert con["satisfied"] == [f"D{w['D']}-A{w['A']}-H{w['H']}-I{w['I']}"] and con["num_satisfied"] == 1
    assert "cheapest" in con["winner_reason"] and con["guarantee"] == GUARANTEES["max_error_increase"]
    assert est.calls[0] == "D6-A12-H384-I1536"  # the source, estimated with the same estimator
    trained = [c for c in report["candidates"] if c["status"] == "trained"]
    assert len(est.calls) == 1 + len(trained) and all(c["ops"] <= w["ops"] for c in trained)
    assert all(c["satisfies"] is False for c in trained if c["ops"] < w["ops"])
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (w["D"], w["H"])
    # the source's ê is in partial_results too: a resumed run does not re-estimate it
    partial = json.loads((tmp_path / "d" / "partial_results.json").read_text())
    assert "D6-A12-H384-I1536" in partial["results"]


def test_extract_latency_budget_report(tmp_path):
    kw = dict(depths=[1, 2], hidden_sizes=[64], intermediate_sizes=[128, 256], seq_len=16, latency_batch_size=2,
              latency_repeats=2)
    probe = extract(_args(tmp_path / "probe", cost="latency", **kw))  # measured latencies of this space
    lat = sorted(c["latency_s"] for c in probe["candidates"])
    budget_ms = 1e3 * lat[-1] * 50  # generous: every candidate fits on a loaded machine too
    est = Recorder()
    report = extract(_args(tmp_path / "b", latency_budget_ms=budget_ms, **kw), estimator=est)
    assert report["cost"] == "latency" and report["objective"] == "latency_budget"
    con = report["constraint"]
    assert con["bound"] == {"latency_budget_ms": budget_ms} and con["latency_budget_s"] == pytest.approx(budget_ms / 1e3)
    ok = [c for c in report["candidates"] if c["satisfies"]]
    assert con["num_satisfied"] == len(ok) and all(1e3 * c["latency_s"] <= budget_ms for c in ok)
    assert all(not c["satisfies"] for c in report["candidates"] if 1e3 * c["latency_s"] > budget_ms)
    best = min(c["error"] for c in report["candidates"] if c["error"] is not None)
    assert report["winner"]["error"] == best and 1e3 * report["winner"]["latency_s"] <= budget_ms
    assert "lowest ê" in con["winner_reason"] and con["guarantee"] == GUARANTEES["latency_budget"]
    assert report["estimator_settings"]["latency"] == {"batch_size": 2, "repeats": 2, "threads": 1}


def test_extract_min_speedup_sets_the_budget_from_the_source_measured_in_the_same_run(tmp_path):
    kw = dict(depths=[1, 2], hidden_sizes=[64], intermediate_sizes=[128, 256], seq_len=16, latency_batch_size=2,
              latency_repeats=2)
    est = Recorder()
    report = extract(_args(tmp_path / "s", min_speedup=2.0, **kw), estimator=est)
    con = report["constraint"]
    assert report["objective"] == "latency_budget" and report["cost"] == "latency"
    assert con["bound"] == {"min_speedup": 2.0}
    assert con["latency_budget_s"] == pytest.approx(report["source_latency_s"] / 2.0)
    ok = [c for c in report["candidates"] if c["satisfies"]]
    assert ok and all(c["latency_s"] <= con["latency_budget_s"] for c in ok)
    assert all(c["latency_s"] > con["latency_budget_s"] for c in report["candidates"] if not c["satisfies"])
    assert report["winner"]["error"] == min(c["error"] for c in ok if c["error"] is not None)
    assert len(est.calls) == sum(c["status"] == "trained" for c in report["candidates"])


def test_impossible_min_speedup_names_the_flag_and_fails_before_any_estimator_call(tmp_path):
    est = Recorder()
    with pytest.raises(ConstraintError, match=r"No candidate fits --min_speedup 1e\+06 \(a budget of"):
        extract(_args(tmp_path / "x", min_speedup=1e6, depths=[1], hidden_sizes=[64], intermediate_sizes=[128],
                      seq_len=16, latency_batch_size=1, latency_repeats=1), estimator=est)
    assert est.calls == [] and est.prepared == 0 and not (tmp_path / "x" / "report.json").exists()


def test_nothing_within_delta_keeps_partial_results_and_a_larger_delta_resumes(tmp_path):
    out = tmp_path / "z"
    first = Recorder()  # every candidate is smaller than MiniLM, so its ê is above the source's: δ = 0 fails
    with pytest.raises(ConstraintError, match="Raise --max_error_increase to at least"):
        extract(_args(out, max_error_increase=0.0), estimator=first)
    assert not (out / "report.json").exists() and not (out / "config.json").exists()
    partial = json.loads((out / "partial_results.json").read_text())["results"]
    assert set(partial) == set(first.calls) and len(first.calls) == 1 + 12  # the source + all 12 candidates
    second = Recorder()
    report = extract(_args(out, max_error_increase=0.02), estimator=second)
    assert second.calls == [] and report["num_cached"] >= 1  # every ê came from partial_results.json


def test_impossible_latency_budget_fails_before_any_estimator_call(tmp_path):
    est = Recorder()
    with pytest.raises(ConstraintError, match=r"fastest, D1-A4-H64-I128, measured [0-9.]+ ms"):
        extract(_args(tmp_path / "x", latency_budget_ms=1e-6, depths=[1], hidden_sizes=[64], intermediate_sizes=[128],
                      seq_len=16, latency_batch_size=1, latency_repeats=1), estimator=est)
    assert est.calls == [] and est.prepared == 0
    assert not (tmp_path / "x" / "report.json").exists()


def test_error_none_with_max_error_increase_fails_first(tmp_path):
    with pytest.raises(ValueError, match="--error none"):
        extract(_args(tmp_path / "n", max_error_increase=0.01, error="none"))
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("kw, message", [
    (dict(max_error_increase=-0.1), "must be >= 0"),
    (dict(latency_budget_ms=0.0), "must be > 0"),
    (dict(max_error_increase=0.1, latency_budget_ms=5.0), "give one"),
    (dict(max_error_increase=0.1, min_speedup=4.0), "give one"),
    (dict(latency_budget_ms=5.0, min_speedup=4.0), "two ways to set one latency budget"),
    (dict(min_speedup=0.0), "--min_speedup must be > 0"),
    (dict(objective="latency_budget"), "needs its bound"),
    (dict(objective="W", max_error_increase=0.1), "drop it or set --objective max_error_increase"),
    (dict(objective="smallest"), "--objective must be one of"),
])
def test_bad_constraint_arguments(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **kw)


def test_default_objective_is_w_and_bound_sets_the_mode(tmp_path):
    assert _args(tmp_path).objective == "W"
    assert _args(tmp_path, max_error_increase=0.0).objective == "max_error_increase"
    lat = _args(tmp_path, latency_budget_ms=3.0)
    assert lat.objective == "latency_budget" and lat.cost == "latency"


# --------------------------------------------------------------------------- the CLI: bad-input case table
TINY = ["--source", "embedded:all-MiniLM-L6-v2", "--depths", "1", "--heads", "4", "--hidden_sizes", "64",
        "--intermediate_sizes", "128", "--seq_len", "16", "--latency_batch_size", "1", "--latency_repeats", "1",
        "--progress", "false"]


def _finished_run(root):
    out = root / "out"
    out.mkdir()
    for name, text in (("report.json", '{"old": true}'), ("config.json", "{}"), ("partial_results.json", "{}")):
        (out / name).write_text(text)
    return {}


CASES = [
    Case("extract-budget-below-fastest", ["extract", *TINY, "--output_dir", "{root}/out", "--latency_budget_ms", "1e-6"],
         r"No candidate fits --latency_budget_ms 1e-06 \(a budget of 1e-06 ms\): the fastest, D1-A4-H64-I128, "
         r"measured [0-9.e-]+ ms"),
    Case("extract-budget-overwrite-keeps-old-run",
         ["extract", *TINY, "--output_dir", "{root}/out", "--overwrite", "--latency_budget_ms", "1e-6"],
         r"the fastest", setup=_finished_run),
    Case("extract-error-none-delta", ["extract", *TINY, "--output_dir", "{root}/out", "--error", "none",
                                      "--max_error_increase", "0.01"], r"--error none"),
    Case("extract-two-bounds", ["extract", *TINY, "--output_dir", "{root}/out", "--max_error_increase", "0.01",
                                "--latency_budget_ms", "5"], r"give one"),
    Case("extract-negative-delta", ["extract", *TINY, "--output_dir", "{root}/out", "--error", "sliced-task",
                                    "--max_error_increase", "-0.01"], r"max_error_increase.*>= 0"),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
def test_help_states_each_modes_guarantee():
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "bortify.cli", "extract", "--help"], capture_output=True, text=True,
                         cwd=root, timeout=120)
    text = " ".join(out.stdout.split())
    for flag in ("--objective", "--max_error_increase", "--latency_budget_ms", "--latency_threads"):
        assert flag in text, flag
    assert "1/(1-ε) x the cheapest within δ" in text
    assert "ε = 0 trains every candidate within budget" in text


# ------------------------------------------------------------------------------ the real estimator, demo space
@pytest.mark.slow
def test_demo_space_max_error_increase_with_sliced_task(tmp_path):
    """The demo recipe's 24-candidate space around MiniLM with the real sliced-task ê at a tiny budget."""
    from bortify.extraction import EstimatorArguments

    args = _args(tmp_path / "demo", depths=[1, 2, 3], heads=[4, 6], hidden_sizes=[128, 192, 256],
                 intermediate_sizes=[256, 768], epsilon=0.3, error="sliced-task", max_error_increase=0.1,
                 torch_threads=1)
    est = EstimatorArguments(train_steps=4, train_batch_size=8, learning_rates=[1e-3], max_seq_length=32,
                             train_samples=64, eval_samples=100)
    report = extract(args, est)
    con = report["constraint"]
    assert 0 < report["source_error"] <= 1 and con["target_error"] == pytest.approx(report["source_error"] + 0.1)
    w = report["winner"]
    assert w["error"] <= con["target_error"] + 1e-12
    trained = [c for c in report["candidates"] if c["status"] in ("trained", "cached")]
    assert trained and all(c["ops"] <= w["ops"] for c in trained)
    assert report["num_trained"] < report["num_candidates"]
    assert math.isfinite(w["W"])
