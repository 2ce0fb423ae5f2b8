"""Constraint modes of the extraction: a size the user chooses instead of W's trade-off (docs/methods/08-constraints.md §8).

W = f/ê (fptas.py) favours the tiniest candidates whenever ê is flat; these modes fix one axis and optimise the
other, with the same ingredients (the ABnC ordering and ε-buckets; docs/methods/01-extraction.md §1 "Algorithm"):

- max_error_increase δ: the cheapest candidate (fewest multiply-adds, or lowest measured latency with
  cost=latency) with ê ≤ ê(T) + δ, where ê(T) is the source's own shape under the same estimator.
- latency_budget B: the lowest-ê candidate whose measured CPU latency is ≤ B.

ε-buckets of cost (`cost_buckets`): sort candidates by cost c and cover x = log c with intervals of width
−log(1 − ε), so inside a bucket c varies by at most a factor 1/(1 − ε); train only the costliest member of a
bucket (by the ordering "a costlier candidate does not have a larger ê" it has the bucket's lowest ê).

Guarantees (`GUARANTEES`, also written to report.json):
- max_error_increase: buckets are scanned from the cheapest and the scan stops at the first trained candidate
  within the bound, so the winner always meets the bound (measured). ε = 0 trains in cost order and returns
  exactly the cheapest candidate within the bound, no assumption needed. ε > 0: when ê does not increase with
  cost, every member of an earlier bucket misses the bound (its bucket's costliest member did), so
  cost(winner) ≤ cost(cheapest within the bound) / (1 − ε); without the ordering a cheaper skipped candidate
  may also have met it.
- latency_budget: over-budget candidates are never trained (filtered on measured latency first). ε = 0 trains
  every candidate within budget: the winner has the lowest ê among them, exactly, no assumption. ε > 0 trains
  the slowest member of each latency bucket; when ê does not increase with latency, the slowest candidate
  within budget has the lowest ê and is always trained, so the winner is still exact; without the ordering a
  skipped candidate may have a lower ê (no ε-bound on ê). Ties in ê go to the larger candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tqdm.auto import tqdm

from bortify.extraction.fptas import Candidate, ErrorFn, epsilon_buckets, evaluate, w_coefficient

OBJECTIVES = ("W", "max_error_increase", "latency_budget")
GUARANTEES = {
    "W": "W(winner) >= (1-ε) x the exhaustive best W when ê is ordered by size (the ABnC property); ε = 0 is "
         "exhaustive.",
    "max_error_increase": "The winner's measured ê is within δ of the source's ê. ε = 0: exactly the cheapest "
                          "candidate within δ (candidates are trained in cost order until one meets the bound). "
                          "ε > 0: only the costliest candidate of each ε-bucket of cost is trained; when ê does not "
                          "increase with cost (the ABnC ordering) the winner's cost is <= 1/(1-ε) x the cheapest "
                          "within δ, otherwise a cheaper skipped candidate may also be within δ.",
    "latency_budget": "Candidates over the latency budget are never trained; the winner's measured latency is "
                      "within it. ε = 0: the lowest ê among all candidates within budget (every one is trained). "
                      "ε > 0: only the slowest candidate of each ε-bucket of latency is trained; exact when ê does "
                      "not increase with latency (the ABnC ordering), otherwise a skipped candidate may have a "
                      "lower ê (no ε-bound on ê). Ties in ê go to the larger candidate.",
}
_TOL = 1e-12  # float slack in "ê ≤ ê(T) + δ" (ê(T) + δ is a float sum)


class ConstraintError(ValueError):
    """No candidate can meet the constraint; the message names the closest one and what to change."""


@dataclass
class Outcome:
    """Result of a constraint search: the winner, why it won, and the mode-specific report fields."""

    winner: Candidate
    satisfied: list[Candidate]
    why: str
    fields: dict = field(default_factory=dict)


def cost_buckets(costs: list[float], epsilon: float) -> tuple[list[int], list[int]]:
    """Bucket of every cost and the index kept (trained) per bucket: the costliest member.

    fptas.epsilon_buckets on g = min(cost)/cost ∈ (0, 1]: its intervals of −log g are intervals of log cost of
    width −log(1 − ε), numbered from the cheapest, and its smallest-g member is the costliest.
    """
    if any(c <= 0 for c in costs):
        raise ValueError(f"costs must be > 0; got {costs}.")
    cheapest = min(costs)
    return epsilon_buckets([cheapest / c for c in costs], epsilon)


def _by_cost(c: Candidate) -> tuple:
    return (c.cost, c.parameters, c.shape.key())


def _set_w(c: Candidate, source_point: Candidate) -> None:
    """W as extra information in every mode (the model card shows it); undefined for ê ≤ 0."""
    c.W = w_coefficient(c.parameters, c.cost, c.error, float(source_point.parameters), source_point.cost) if c.error > 0 else None


def _cost_text(c: Candidate) -> str:
    return f"{1e3 * c.latency_s:.3g} ms" if c.latency_s is not None else f"{c.ops / 1e9:.4g}G multiply-adds"


def run_max_error_increase(candidates: list[Candidate], source_point: Candidate, estimate: ErrorFn, delta: float,
                           epsilon: float, *, cache: dict | None = None,
                           on_result: Callable[[Candidate], None] | None = None, progress: bool = True) -> Outcome:
    """The cheapest candidate with ê ≤ ê(T) + δ (module docstring: scan, buckets, guarantee).

    T is estimated first with the same `estimate` (its shape's entry is shared with a candidate of that shape).
    Raises ConstraintError when no trained candidate meets the bound (after the scan: ê is only known then).
    """
    cache = cache if cache is not None else {}
    source = Candidate(source_point.shape, source_point.parameters, source_point.effective_parameters, source_point.ops, latency_s=source_point.latency_s)
    evaluate(source, estimate, cache, on_result)
    source_point.error, source_point.details = source.error, source.details
    target = source.error + delta
    buckets, keep = cost_buckets([c.cost for c in candidates], epsilon)
    for c, b in zip(candidates, buckets):
        c.bucket, c.status, c.error, c.W = b, "skipped", None, None
    order = sorted(keep, key=lambda i: _by_cost(candidates[i]))
    winner, tried = None, []
    for c in _train_in_order([candidates[i] for i in order], source_point, estimate, cache, on_result,
                             desc=f"extract (ê ≤ {target:.4g}, ε={epsilon})", progress=progress):
        c.satisfies = c.error <= target + _TOL
        tried.append(c)
        if c.satisfies:
            winner = c
            break
    fields = {"source_error": source.error, "source_error_details": source.details, "source_status": source.status,
              "target_error": target}
    if winner is None:
        best = min(tried, key=lambda c: (c.error, c.cost))
        raise ConstraintError(
            f"No candidate has ê <= ê(source) + δ = {source.error:.4g} + {delta:g} = {target:.4g}: the lowest ê among "
            f"the {len(tried)} trained is {best.error:.4g} ({best.shape.key()}). Raise --max_error_increase to at "
            f"least {best.error - source.error:.4g}, or add larger sizes to the space. The ê measured so far are "
            "kept in partial_results.json: re-running resumes without retraining them."
        )
    missed = len(tried) - 1
    why = (f"cheapest trained candidate ({_cost_text(winner)}) with ê {winner.error:.4g} <= ê(source) "
           f"{source.error:.4g} + δ {delta:g} = {target:.4g}; {missed} cheaper trained candidate(s) missed the bound "
           f"and {len(candidates) - len(tried)} were not trained (the scan stops at the first within δ)")
    return Outcome(winner, [winner], why, fields)


def _train_in_order(ordered: list[Candidate], source_point: Candidate, estimate: ErrorFn, cache: dict,
                    on_result: Callable[[Candidate], None] | None, *, desc: str, progress: bool):
    """Estimate ê for each candidate in turn (cached ones are not retrained) and yield it with its W set; the
    caller may stop early. One progress bar, closed however the loop ends."""
    bar = tqdm(ordered, desc=desc, unit="candidate", disable=not progress)
    try:
        for c in bar:
            bar.set_postfix_str(c.shape.key(), refresh=False)
            evaluate(c, estimate, cache, on_result)
            _set_w(c, source_point)
            yield c
    finally:
        bar.close()


def check_latency_budget(candidates: list[Candidate], budget_s: float, flag: str | None = None) -> list[Candidate]:
    """Candidates whose measured latency is ≤ budget_s; ConstraintError (before any training) if none is.

    `flag` names the option that set the budget in the message (default: --latency_budget_ms)."""
    if any(c.latency_s is None for c in candidates):
        raise ValueError("latency_budget needs every candidate's measured latency (cost=latency).")
    within = [c for c in candidates if c.latency_s <= budget_s]
    if not within:
        fastest = min(candidates, key=lambda c: c.latency_s)
        raise ConstraintError(
            f"No candidate fits {flag or '--latency_budget_ms'} (a budget of {1e3 * budget_s:.3g} ms): the fastest, "
            f"{fastest.shape.key()}, measured {1e3 * fastest.latency_s:.3g} ms (batch/seq_len/threads as set by "
            "latency_batch_size, seq_len, latency_threads). Raise the budget (or lower --min_speedup) or add smaller "
            "sizes (depths, hidden_sizes, intermediate_sizes)."
        )
    return within


def run_latency_budget(candidates: list[Candidate], source_point: Candidate, estimate: ErrorFn, budget_s: float,
                       epsilon: float, *, cache: dict | None = None,
                       on_result: Callable[[Candidate], None] | None = None, progress: bool = True,
                       flag: str | None = None) -> Outcome:
    """The lowest-ê candidate with measured latency ≤ budget_s (module docstring: filter, buckets, guarantee)."""
    cache = cache if cache is not None else {}
    within = check_latency_budget(candidates, budget_s, flag)
    for c in candidates:
        c.bucket, c.status, c.error, c.W = -1, "skipped", None, None
        c.satisfies = c.latency_s <= budget_s
    buckets, keep = cost_buckets([c.cost for c in within], epsilon)
    for c, b in zip(within, buckets):
        c.bucket = b
    order = sorted(keep, key=lambda i: _by_cost(within[i]))  # cheapest first: a crash late loses the costly ones
    trained = list(_train_in_order([within[i] for i in order], source_point, estimate, cache, on_result,
                                   desc=f"extract (≤ {1e3 * budget_s:g} ms, ε={epsilon})", progress=progress))
    winner = min(trained, key=lambda c: (c.error, -c.parameters, -c.cost, c.shape.key()))
    why = (f"lowest ê ({winner.error:.4g}) among the {len(trained)} trained of {len(within)} candidates within "
           f"{1e3 * budget_s:g} ms (its latency {1e3 * winner.latency_s:.3g} ms; ties go to the larger); "
           f"{len(candidates) - len(within)} over budget were never trained")
    return Outcome(winner, within, why, {"latency_budget_s": budget_s})


__all__ = ["OBJECTIVES", "GUARANTEES", "ConstraintError", "Outcome", "cost_buckets", "run_max_error_increase",
           "check_latency_budget", "run_latency_budget"]
