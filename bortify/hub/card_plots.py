"""The card's accuracy vs sentences/s plot: the run's own models on one chart, the Pareto frontier marked.

The same kind of chart as the Pareto benchmark's (BENCHMARKS.md, benchmarks/bench_pareto.py), drawn from one run's
reports only (docs/methods/05-compression.md §5.s for the speeds, §7 for the teacher):

- this model in fp32: the finetune report's test score; `bortify bench`'s fp32 sentences/s on real texts;
- this model in int8 on ONNX Runtime: the compress report's `forms["onnx_int8"]` test score; bench's `onnxruntime`
  sentences/s;
- the teacher (the fine-tuned source that labelled the transfer set): the finetune report's `labeler`
  test score; the source's fp32 sentences/s on the same texts (bench's `source_sentences`, random weights of the
  source's shape: speed depends on the shape only).

Every point is optional: a point needs both a score and a speed, and with fewer than two such points there is no
plot (and the card has no such section). The score is the finetune report's main metric for every point.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ACCURACY_SPEED_FILE = "accuracy_speed.png"
MIN_POINTS = 2  # a single point is not a trade-off


@dataclass
class SpeedPoint:
    """One model on the chart: its test score, its sentences/s, and whether it is on the Pareto frontier."""

    label: str
    accuracy: float | None
    sentences_per_s: float | None
    pareto: bool = False

    def complete(self) -> bool:
        return _positive(self.sentences_per_s) and isinstance(self.accuracy, (int, float))


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def pareto_flags(points: list[tuple[float, float]]) -> list[bool]:
    """For (speed, accuracy) points: True where no other point is at least as fast and as accurate and better in
    one of the two (the frontier of 'faster' and 'more accurate'; equal points are both on it)."""
    return [not any(s2 >= s and a2 >= a and (s2 > s or a2 > a) for j, (s2, a2) in enumerate(points) if j != i)
            for i, (s, a) in enumerate(points)]


def speed_points(finetune, compress, bench) -> list[SpeedPoint]:
    """The run's points (reports may be None or empty: their points then lack a score or a speed)."""
    metric = getattr(finetune, "metric", None) or "accuracy"
    test = getattr(finetune, "test", None) or {}
    teacher = finetune.labeler_scores("test") if finetune is not None and finetune.labeler else {}
    int8 = ((getattr(compress, "forms", None) or {}).get("onnx_int8") or {}).get("scores") or {}
    source = getattr(bench, "source_sentences", None)
    speed = bench.sentences_per_s if bench is not None else (lambda path: None)
    return [SpeedPoint("this model (fp32)", test.get(metric), speed("fp32")),
            SpeedPoint("this model (int8, ONNX Runtime)", int8.get(metric), speed("onnxruntime")),
            SpeedPoint("teacher (fp32)", teacher.get(metric), source.sentences_per_s if source else None)]


def accuracy_speed_evidence(finetune, compress, bench) -> dict | None:
    """What the plot shows, for card_evidence.json and the card's sentence: {metric, threads, source, dataset, texts,
    batch_size, points: [{label, accuracy, sentences_per_s, pareto}]}; None below MIN_POINTS complete points."""
    points = [p for p in speed_points(finetune, compress, bench) if p.complete()]
    if len(points) < MIN_POINTS:
        return None
    for p, on in zip(points, pareto_flags([(p.sentences_per_s, p.accuracy) for p in points])):
        p.pareto = on
    sentences = bench.sentences if isinstance(bench.sentences, dict) else {}
    return {"metric": getattr(finetune, "metric", None) or "accuracy", "threads": bench.threads,
            "source": bench.source, "dataset": bench.dataset, "texts": sentences.get("texts"),
            "batch_size": sentences.get("batch_size"),
            "points": [asdict(p) for p in points]}


def plot_accuracy_speed(evidence: dict, path: str | Path) -> Path:
    """Test score vs sentences/s (log x), one labelled marker per point, the frontier starred and connected;
    written atomically (a temporary file in the same directory, then renamed), matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    points = [SpeedPoint(**p) for p in evidence["points"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, p in enumerate(points):  # each marker labelled where it is (no legend to look up)
        ax.scatter([p.sentences_per_s], [p.accuracy], marker="*" if p.pareto else "o", s=260 if p.pareto else 70,
                   c=f"C{i}", zorder=3)
        ax.annotate(p.label, (p.sentences_per_s, p.accuracy), textcoords="offset points", xytext=(0, 10),
                    ha="center", fontsize=8)
    front = sorted((p.sentences_per_s, p.accuracy) for p in points if p.pareto)
    if len(front) > 1:
        ax.plot([s for s, _ in front], [a for _, a in front], "--", c="gray", lw=1, zorder=2, label="Pareto frontier")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xscale("log")
    ax.set_xlabel(f"sentences/s on real texts ({evidence.get('threads')} CPU thread(s))")
    ax.set_ylabel(f"test {evidence['metric']}")
    ax.set_title("Accuracy vs CPU throughput (star: on the Pareto frontier)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.3, y=0.2)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
