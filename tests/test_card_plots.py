"""The card's accuracy vs sentences/s plot (bortify/hub/card_plots.py): the frontier, the points, the file."""

from __future__ import annotations

import pytest

from bortify.hub.card_plots import (SpeedPoint, accuracy_speed_evidence, pareto_flags, plot_accuracy_speed,
                                    speed_points)
from bortify.reports import BenchReport, CompressReport, FinetuneReport


@pytest.mark.parametrize("points, frontier", [
    # (sentences/s, accuracy): fast-and-weak, slow-and-strong, and one dominated by both neighbours
    ([(1000, 0.70), (100, 0.80), (50, 0.75)], [True, True, False]),
    # equal speed: the more accurate one wins; equal points are both on the frontier
    ([(100, 0.80), (100, 0.79), (10, 0.80)], [True, False, False]),
    ([(100, 0.80), (100, 0.80)], [True, True]),
    # one point better in both dominates every other
    ([(500, 0.90), (100, 0.80), (400, 0.85), (600, 0.60)], [True, False, False, True]),
    ([(1, 0.5)], [True]),
    ([], []),
])
def test_pareto_flags(points, frontier):
    assert pareto_flags(points) == frontier


def _reports(bench=True, source=True, compress=True):
    ft = FinetuneReport.from_dict({"metric": "accuracy", "test": {"accuracy": 0.73, "f1": 0.77},
                                   "labeler": {"name": "embedded:all-MiniLM-L6-v2 fine-tuned", "test_accuracy": 0.76}})
    cp = CompressReport.from_dict({"metric": "accuracy", "forms": {"onnx_int8": {"scores": {"accuracy": 0.74}}}})
    sentences = {"texts": 12, "batch_size": 4, "fp32": {"sentences_per_s": 900.0},
                 "onnxruntime": {"sentences_per_s": 2500.0, "agreement_with_fp32": 0.99}}
    src = {"sentences_per_s": 120.0, "tokenizer": "source"} if source else None
    bn = BenchReport.from_dict({"threads": 1, "dataset": "embedded:rotten-tomatoes", "sentences": sentences,
                                "source_sentences": src})
    return ft, cp if compress else None, bn if bench else None


def test_points_come_from_the_three_reports():
    points = speed_points(*_reports())
    assert [(p.accuracy, p.sentences_per_s) for p in points] == [(0.73, 900.0), (0.74, 2500.0), (0.76, 120.0)]
    evidence = accuracy_speed_evidence(*_reports())
    assert evidence["metric"] == "accuracy" and evidence["threads"] == 1 and evidence["texts"] == 12
    # int8 is faster and more accurate than fp32 here: fp32 is dominated; the teacher is the most accurate
    assert [p["pareto"] for p in evidence["points"]] == [False, True, True]


def test_points_without_a_score_or_speed_are_left_out_and_one_point_is_no_plot():
    no_source = accuracy_speed_evidence(*_reports(source=False))
    assert [p["label"] for p in no_source["points"]] == ["this model (fp32)", "this model (int8, ONNX Runtime)"]
    assert accuracy_speed_evidence(*_reports(source=False, compress=False)) is None  # fp32 alone
    assert accuracy_speed_evidence(*_reports(bench=False)) is None  # scores without speeds
    assert all(not p.complete() for p in speed_points(FinetuneReport.from_dict({}), None, None))
    assert not SpeedPoint("x", 0.5, 0.0).complete() and not SpeedPoint("x", None, 10.0).complete()


def test_plot_is_written_atomically(tmp_path):
    path = plot_accuracy_speed(accuracy_speed_evidence(*_reports()), tmp_path / "accuracy_speed.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["accuracy_speed.png"]  # no temporary file left
