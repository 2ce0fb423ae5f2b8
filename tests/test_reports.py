"""Typed stage reports (bortify/reports.py): one module writes and reads report.json; older files still load."""

import json
import shutil
from pathlib import Path

import pytest

from bortify.reports import (REPORT_FILE, ExtractReport, FinetuneReport, PretrainReport, PushReport, ReportError,
                             Round, Winner, clean_scores, read_report, write_report)

DEMO = Path(__file__).parent / "data" / "demo_run"  # report.json files of a real `bortify run recipes/demo.yaml`


@pytest.mark.parametrize("kind", ["extract", "pretrain", "finetune"])
def test_a_real_runs_reports_load_typed_and_write_back_byte_for_byte(kind, tmp_path):
    report = read_report(DEMO / kind, kind)
    # fields newer than the stored run, each written only when its option is used: nfr (a compare against the
    # replaced model, §4), compatibility (--compatible_with, §4.4), congruent (--old_model, §4.3); and newer than
    # the run: heldout / overlap (the held-out test split, §9) and baseline (the majority class)
    assert type(report).kind == kind and not report.extra
    assert report.missing <= {"nfr", "compatibility", "congruent", "heldout", "overlap", "baseline"}
    write_report(tmp_path, report)
    assert json.loads((tmp_path / REPORT_FILE).read_text()) == json.loads((DEMO / kind / REPORT_FILE).read_text())
    assert list(json.loads((tmp_path / REPORT_FILE).read_text())) == list(json.loads((DEMO / kind / REPORT_FILE).read_text()))
    assert report.summary_lines() and all(isinstance(line, str) for line in report.summary_lines())


def test_typed_fields_and_the_mapping_view_agree():
    ex = read_report(DEMO / "extract", "extract")
    assert isinstance(ex.winner, Winner) and ex.winner.shape() == {"D": 2, "A": 6, "H": 192, "I": 768}
    assert ex["winner"]["W"] == ex.winner.W and isinstance(ex["winner"], dict)  # report["key"]: the JSON value
    ft = read_report(DEMO / "finetune", "finetune")
    assert isinstance(ft.rounds[0], Round) and ft["rounds"][0]["dev_score"] == ft.rounds[0].dev_score == pytest.approx(0.7633, abs=1e-4)
    assert ft.labeler_scores("dev") == {"accuracy": pytest.approx(0.7883, abs=1e-4)}
    assert ft.labeler_scores("test") == {"accuracy": 0.797} and ft.transfer_set()["gold"] == 600
    assert "splits" in ft and ft.get("no_such_key", "default") == "default"
    record = ft.record()
    assert record["dev"] == pytest.approx(0.7633, abs=1e-4) and record["test"] == 0.753 and record["examples_added"] == [8326]
    assert record["model_dir"] == str(DEMO / "finetune") and str(DEMO / "finetune") in record["summary_lines"][-1]
    pt = read_report(DEMO / "pretrain", "pretrain")
    assert pt.record()["output_dir"] == str(DEMO / "pretrain") and "held-out MLM loss 10.553 -> 7.194" in pt.summary_lines()[-1]


def test_older_files_load_missing_keys_wrong_types_and_unknown_keys(tmp_path):
    old = {"dataset": "embedded:rotten-tomatoes", "mode": "agora",  # no dataset_hub_id, splits, rounds, ...
           "dev": {"eval_accuracy": 0.64, "eval_loss": 0.6, "eval_runtime": 1.0}, "test": {"test_f1": 0.61},
           "labeler": "not a dict", "rounds": [{"round": 1, "dev_score": 0.6}, "garbage"],
           "max_length": True, "future_key": {"kept": 1}}
    (tmp_path / REPORT_FILE).write_text(json.dumps(old))
    ft = read_report(tmp_path, "finetune")
    assert {"dataset_hub_id", "splits", "example_text"} <= ft.missing and "dataset" not in ft.missing
    assert ft.dev == {"accuracy": 0.64} and ft.test == {"f1": 0.61}  # Trainer prefixes and bookkeeping dropped
    assert ft.labeler is None and ft.max_length is None  # wrong types read as missing values
    assert [r.round for r in ft.rounds] == [1] and ft.rounds[0].test_score is None
    assert ft.splits == {} and ft.extra == {"future_key": {"kept": 1}}
    written = ft.to_dict()  # written back: no invented keys, the unknown key kept
    assert "dataset_hub_id" not in written and written["future_key"] == {"kept": 1}
    assert written["rounds"] == [{"round": 1, "dev_score": 0.6}]
    assert read_report(tmp_path / "nowhere", "finetune") is None and read_report(None, "extract") is None
    empty = ExtractReport.from_dict({})
    assert not empty and empty.winner is None and empty.num_trained == 0  # an empty report is falsy, all defaults


def test_unreadable_reports_are_named(tmp_path):
    (tmp_path / REPORT_FILE).write_text("{not json")
    with pytest.raises(ReportError, match=r"report\.json is not valid JSON .*re-run that stage"):
        read_report(tmp_path, "pretrain")
    (tmp_path / REPORT_FILE).write_text("[1, 2]")
    with pytest.raises(ReportError, match="not a report"):
        read_report(tmp_path, PretrainReport)


def test_write_report_is_atomic_and_replaces(tmp_path, monkeypatch):
    import os

    shutil.copy(DEMO / "pretrain" / REPORT_FILE, tmp_path / REPORT_FILE)
    before = (tmp_path / REPORT_FILE).read_bytes()
    report = read_report(tmp_path, "pretrain")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path, report)
    assert (tmp_path / REPORT_FILE).read_bytes() == before  # the old file intact, no temporary left
    assert [p.name for p in tmp_path.iterdir()] == [REPORT_FILE]


def test_made_reports_keep_what_the_stage_computed():
    made = FinetuneReport.make({"mode": "plain", "rounds": [{"round": 1, "repair_dev_score": None, "new_field": 3}],
                                "test": {"accuracy": 0.5}, "dataset_hub_id": None}, output_dir="out")
    assert made.rounds[0].extra == {"new_field": 3} and made.to_dict()["rounds"][0] == \
        {"round": 1, "repair_dev_score": None, "new_field": 3}  # None values a stage wrote stay in the file
    assert made.to_dict()["dataset_hub_id"] is None and "dataset_hub_id" not in made.missing
    assert made.output_dir == "out" and "output_dir" not in made.to_dict()  # known in memory, not a report key


def test_push_report_keeps_todays_json_shape():
    skipped = PushReport(skipped=True, reason="skipped: no Hub configured (no token)", repo_id="me/m", model_dir="rel")
    assert skipped.to_dict() == {"skipped": True, "reason": "skipped: no Hub configured (no token)", "repo_id": "me/m",
                                 "summary_lines": ["skipped: no Hub configured (no token); push later with "
                                                   "`bortify push rel --repo-id me/m`"]}
    pushed = PushReport(repo_id="me/m", revision="main", commit_oid="abcdef0123456", commit_url="u", repo_url="r",
                        files=["a"], left_out=[], attempts=1, retries_logged=[])
    assert "reason" not in pushed.to_dict() and pushed.summary_lines()[0].startswith("pushed 1 files to r")
    assert PushReport.from_dict(pushed.to_dict()).to_dict() == pushed.to_dict()


def test_clean_scores():
    assert clean_scores({"eval_accuracy": 0.5, "eval_loss": 0.7, "test_f1": 1, "flag": True}) == {"accuracy": 0.5, "f1": 1.0}
    assert clean_scores(None) == {}
