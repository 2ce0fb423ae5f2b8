"""The Bort FPTAS (de Wynter 2020, arXiv 2010.08512; docs/methods/01-extraction.md §1 "Algorithm").

    T    = the maximum point (the source shape: largest p and i)
    W(ξ) = ((p(T) − p(ξ)) / p(T)) · ((i(T) − i(ξ)) / i(T)) / ê(ξ)                    (docs/methods/01-extraction.md §1, "W-coefficient")

Write f(ξ) = (1 − p(ξ)/p(T))·(1 − i(ξ)/i(T)), the size/cost gain known without training, so W = f / ê.

ε-bucketing (our reconstruction; the paper's pseudo-code is not public). The ordering the ABnC property gives
is: a candidate with a smaller gain f (a bigger, costlier network) does not have a larger error,
    f(a) ≤ f(b)  ⇒  ê(a) ≤ ê(b).
Sort candidates by f, and cover the values x = −log f with the fewest intervals of width δ = −log(1 − ε)
(greedy from the largest f). Each interval is a bucket; inside it, f varies by at most a factor (1 − ε).
Train only the candidate with the smallest f of each bucket (by the ordering, its ê is the bucket's lowest).
For any skipped b in that bucket with kept k:
    W(b) = f(b)/ê(b) ≤ f(b)/ê(k) ≤ f(k) / ((1 − ε)·ê(k)) = W(k)/(1 − ε),
so the returned W ≥ (1 − ε)·(exhaustive best W). Greedy interval covering is minimal, and a cover with
width δ is a cover with any wider width, so the number of trained candidates never grows with ε.
ε = 0 trains everything (exhaustive). Candidates with f = 0 (the source's own shape) have W = 0 whatever ê
is: with ε > 0 they are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tqdm.auto import tqdm

from bortify.extraction.costs import (
    Shape,
    effective_parameter_count,
    operation_count,
    parameter_count,
)


@dataclass
class Candidate:
    shape: Shape
    parameters: int
    effective_parameters: int
    ops: int
    latency_s: float | None = None
    error: float | None = None
    W: float | None = None
    bucket: int = -1
    status: str = "pending"  # trained | skipped | cached
    details: dict = field(default_factory=dict)
    satisfies: bool | None = None  # constraint modes (constraints.py): meets the bound; None = not known (not trained)

    @property
    def cost(self) -> float:
        """i(ξ): measured latency when measured, else the operation count."""
        return self.latency_s if self.latency_s is not None else float(self.ops)

    def record(self) -> dict:
        return {**self.shape.dims(), "parameters": self.parameters, "effective_parameters": self.effective_parameters,
                "ops": self.ops, "latency_s": self.latency_s, "error": self.error, "W": self.W,
                "bucket": self.bucket, "status": self.status, **({"details": self.details} if self.details else {}),
                **({"satisfies": self.satisfies} if self.satisfies is not None else {})}


def make_candidate(shape: Shape, seq_len: int, latency_s: float | None = None) -> Candidate:
    return Candidate(shape, parameter_count(shape), effective_parameter_count(shape), operation_count(shape, seq_len),
                     latency_s=latency_s)


def gain(p: float, i: float, p_T: float, i_T: float) -> float:
    """f(ξ) = ((p(T) − p)/p(T)) · ((i(T) − i)/i(T)) — the numerator of W (docs/methods/01-extraction.md §1)."""
    return ((p_T - p) / p_T) * ((i_T - i) / i_T)


def w_coefficient(p: float, i: float, error: float, p_T: float, i_T: float) -> float:
    """W(ξ) = ((p(T) − p)/p(T)) · ((i(T) − i)/i(T)) / ê (docs/methods/01-extraction.md §1). Maximise it; W(T) = 0."""
    if error <= 0:
        raise ValueError(f"error estimate must be > 0 (got {error}); W divides by it — use an error with a floor.")
    return gain(p, i, p_T, i_T) / error


def epsilon_buckets(gains: Sequence[float], epsilon: float) -> tuple[list[int], list[int]]:
    """Bucket index of every candidate, and the index of the candidate to train in each bucket.

    See the module docstring: greedy covering of −log f with intervals of width −log(1 − ε), keeping the
    smallest-gain member of each bucket. f = 0 candidates go to one bucket that is trained only when ε = 0.
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1); got {epsilon}.")
    n = len(gains)
    if epsilon == 0:
        return list(range(n)), list(range(n))
    bucket = [-1] * n
    keep: list[int] = []
    positive = sorted((i for i in range(n) if gains[i] > 0), key=lambda i: -gains[i])  # largest gain first
    delta = -math.log1p(-epsilon)
    b, start, members = -1, None, []
    for i in positive:
        x = -math.log(gains[i])
        if start is None or x >= start + delta * (1 - 1e-12):
            if members:
                keep.append(min(members, key=lambda j: (gains[j], j)))
            b, start, members = b + 1, x, []
        bucket[i] = b
        members.append(i)
    if members:
        keep.append(min(members, key=lambda j: (gains[j], j)))
    zero = [i for i in range(n) if gains[i] <= 0]
    for i in zero:  # W = 0 whatever ê is: never worth training when approximating
        bucket[i] = b + 1
    return bucket, keep


ErrorFn = Callable[[Shape], "float | dict"]


def evaluate(c: Candidate, estimate: ErrorFn, cache: dict, on_result: Callable[[Candidate], None] | None = None) -> None:
    """Set c.error (and details, status) from `cache` (status "cached") or one `estimate` call ("trained")."""
    hit = cache.get(c.shape.key())
    if hit is not None:
        c.error, c.details, c.status = float(hit["error"]), dict(hit.get("details") or {}), "cached"
        return
    result = estimate(c.shape)
    if isinstance(result, dict):
        c.error, c.details = float(result["error"]), {k: v for k, v in result.items() if k != "error"}
    else:
        c.error = float(result)
    c.status = "trained"
    if on_result is not None:
        on_result(c)


def run_fptas(candidates: list[Candidate], source_point: Candidate, estimate: ErrorFn, epsilon: float, *,
              cache: dict | None = None, on_result: Callable[[Candidate], None] | None = None,
              progress: bool = True) -> Candidate:
    """Run the search in place over `candidates`; return the winner (argmax W over evaluated candidates).

    `estimate(shape)` returns ê (a float > 0) or a dict with key "error" (and any details for the report).
    `cache` maps shape keys to earlier results {"error", "details"}: those are not re-estimated (resume).
    `on_result` is called after each evaluated candidate (the caller persists partial results there).
    """
    p_T, i_T = float(source_point.parameters), source_point.cost
    gains = [gain(c.parameters, c.cost, p_T, i_T) for c in candidates]
    buckets, keep = epsilon_buckets(gains, epsilon)
    keep_set = set(keep)
    for c, b in zip(candidates, buckets):
        c.bucket = b
    # train from the cheapest kept candidate up: a crash late loses the expensive ones only
    order = sorted(keep_set, key=lambda i: candidates[i].parameters)
    cache = cache or {}
    bar = tqdm(order, desc=f"extract (ε={epsilon})", unit="candidate", disable=not progress)
    for idx in bar:
        c = candidates[idx]
        bar.set_postfix_str(c.shape.key(), refresh=False)
        evaluate(c, estimate, cache, on_result)
        c.W = w_coefficient(c.parameters, c.cost, c.error, p_T, i_T)
    for i, c in enumerate(candidates):
        if i not in keep_set:
            c.status, c.error, c.W = "skipped", None, None
    evaluated = [c for c in candidates if c.W is not None]
    if not evaluated:
        raise RuntimeError("No candidate was evaluated (every candidate equals the source; add smaller sizes).")
    return max(evaluated, key=lambda c: (c.W, -c.parameters))


__all__ = ["Candidate", "make_candidate", "gain", "w_coefficient", "epsilon_buckets", "evaluate", "run_fptas"]
