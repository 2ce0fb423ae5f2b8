"""The extraction's report (bortify.reports.ExtractReport, report.json) and its Pareto plot."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

from bortify.extraction.fptas import Candidate
from bortify.reports import PLOT_FILE, ExtractReport
from bortify.utils import write_bytes_atomic


def error_spread(candidates: list[Candidate]) -> dict:
    """min / max / std of ê over evaluated candidates: if it is ~0, W degenerates to "smallest wins"."""
    errors = [c.error for c in candidates if c.error is not None]
    if not errors:
        return {"min": None, "max": None, "std": None, "n": 0}
    return {"min": min(errors), "max": max(errors), "std": statistics.pstdev(errors) if len(errors) > 1 else 0.0,
            "n": len(errors)}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when both coordinates are minimised, sorted by the first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(candidates: list[Candidate], winner: Candidate, source_point: Candidate, path: str | Path, title: str,
                budget_s: float | None = None) -> None:
    """Two panels: p vs i over every candidate (trained / skipped), and p vs ê over evaluated ones with the
    (p, ê) Pareto front; the winner is a star in both. `budget_s`: a latency budget drawn on the first panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    cost_label = "measured latency (s)" if winner.latency_s is not None else "multiply-adds per sequence"
    for status, style in (("skipped", dict(c="lightgrey", marker="o", s=14)),
                          ("trained", dict(c="tab:blue", marker="o", s=18)),
                          ("cached", dict(c="tab:cyan", marker="o", s=18))):
        pts = [c for c in candidates if c.status == status]
        if pts:
            ax1.scatter([c.parameters for c in pts], [c.cost for c in pts], label=status, **style)
    ax1.scatter([source_point.parameters], [source_point.cost], c="black", marker="s", s=40, label="source (T)")
    ax1.scatter([winner.parameters], [winner.cost], c="red", marker="*", s=220, label="winner", zorder=5)
    if budget_s is not None:
        ax1.axhline(budget_s, c="tab:red", ls="--", lw=1, label="latency budget")
    ax1.set_xlabel("parameters p")
    ax1.set_ylabel(cost_label)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title("size vs inference cost")

    ev = [c for c in candidates if c.error is not None]
    pts = [(float(c.parameters), float(c.error)) for c in ev]
    ax2.scatter([p for p, _ in pts], [e for _, e in pts], c="tab:blue", s=18, label="evaluated")
    front = [ev[i] for i in pareto_front(pts)]
    ax2.plot([c.parameters for c in front], [c.error for c in front], "-", c="tab:orange", label="Pareto front (p, ê)")
    ax2.scatter([winner.parameters], [winner.error], c="red", marker="*", s=220, label="winner", zorder=5)
    if source_point.error is not None:  # max_error_increase: the source's own ê
        ax2.scatter([source_point.parameters], [source_point.error], c="black", marker="s", s=40, label="source (T)")
    for c in ev:
        ax2.annotate(c.shape.key(), (c.parameters, c.error), fontsize=5, alpha=0.6)
    ax2.set_xscale("log")
    ax2.set_xlabel("parameters p")
    ax2.set_ylabel("error estimate ê")
    ax2.legend(fontsize=8)
    ax2.set_title("size vs error estimate")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def build_report(*, source: str, source_point: Candidate, epsilon: float, space: dict, dropped_indivisible: int,
                 dropped_larger: int, error_estimator: str, seq_len: int, cost: str, winner: Candidate,
                 candidates: list[Candidate], estimator_settings: dict, seconds: float,
                 constraint: dict | None = None, output_dir: str | Path | None = None,
                 heldout: dict | None = None) -> ExtractReport:
    """The report. `constraint` (run.constraint_record): the objective, its bound, the candidates that satisfied it,
    why the winner won and the mode's guarantee; absent means objective W."""
    constraint = constraint or {"mode": "W", "bound": None}
    n_trained = sum(c.status == "trained" for c in candidates)
    n_cached = sum(c.status == "cached" for c in candidates)
    return ExtractReport.make({
        "heldout": heldout,  # the run's test texts dropped from the estimator's data (docs/methods/09-heldout.md §9)
        "source": source,
        "source_shape": source_point.shape.dims(),
        "source_parameters": source_point.parameters,
        "source_effective_parameters": source_point.effective_parameters,
        "source_ops": source_point.ops,
        "source_latency_s": source_point.latency_s,
        "source_error": source_point.error,  # max_error_increase only: the source's own ê (same estimator); else null
        "objective": constraint["mode"],
        "constraint": constraint,
        "epsilon": epsilon,
        "space": space,
        "dropped_indivisible": dropped_indivisible,
        "dropped_larger_than_source": dropped_larger,
        "num_candidates": len(candidates),
        "num_trained": n_trained,
        "num_cached": n_cached,
        "num_skipped": sum(c.status == "skipped" for c in candidates),
        "error_estimator": error_estimator,
        "estimator_settings": estimator_settings,
        "seq_len": seq_len,
        "cost": cost,
        "winner": {**winner.shape.dims(), "parameters": winner.parameters, "effective_parameters": winner.effective_parameters,
                   "ops": winner.ops, "latency_s": winner.latency_s, "error": winner.error, "W": winner.W,
                   "parameter_ratio": winner.parameters / source_point.parameters, "ops_ratio": winner.ops / source_point.ops},
        "candidates": [c.record() for c in candidates],
        "plot": PLOT_FILE,
        "error_spread": error_spread(candidates),
        "seconds": round(seconds, 1),
    }, output_dir=None if output_dir is None else str(output_dir))
