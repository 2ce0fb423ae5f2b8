"""benchmarks/panels.py's splitting on a tiny synthetic input (no Debian download, no model)."""

import csv

import panels


def synthetic_rows():
    rows = []
    for c in range(5):
        n = 8 + 4 * c  # 8..24 distinct texts a class; class 0 is under min_class_rows
        rows += [(f"class {c} text number {i}", f"c{c}") for i in range(n)]
    rows += [("Class 1  TEXT number 0", "c1"), ("class 2 text number 0", "c2")]  # normalised duplicates
    rows += [("shared text", "c3"), ("SHARED   text", "c4")]  # same text under two labels: dropped
    return rows


SPEC = panels.PanelSpec("toy", test=panels.Quota(per_class=4), dev=panels.Quota(per_class=2),
                        train=panels.Quota(per_class=3), min_class_rows=10, source="synthetic", licence="-",
                        label_is="-")


def test_split_keeps_test_out_and_respects_caps():
    for seed in (1, 2, 3):
        out = panels.split_rows(synthetic_rows(), SPEC, seed)
        assert out["dropped_classes"] == {"c0": 8}
        norm = {k: {panels.normalise(r if isinstance(r, str) else r[0]) for r in out[k]}
                for k in ("train", "dev", "test", "pool")}
        assert not norm["test"] & (norm["train"] | norm["dev"] | norm["pool"])
        assert not norm["dev"] & (norm["train"] | norm["pool"]) and not norm["train"] & norm["pool"]
        assert "shared text" not in set().union(*norm.values())
        for split, cap in (("train", 3), ("dev", 2), ("test", 4)):
            per_class = {}
            for _, label in out[split]:
                per_class[label] = per_class.get(label, 0) + 1
            assert per_class == {c: cap for c in ("c1", "c2", "c3", "c4")}
        total = sum(len(out[k]) for k in ("train", "dev", "test", "pool"))
        assert total == 12 + 16 + 20 + 24  # every distinct text of the kept classes, once


def test_test_rows_fixed_across_seeds_and_splits_reproducible():
    a, b, a2 = (panels.split_rows(synthetic_rows(), SPEC, s) for s in (1, 2, 1))
    assert sorted(a["test"]) == sorted(b["test"])
    assert a == a2 and sorted(a["train"]) != sorted(b["train"])


def test_stratified_total_quota():
    counts = panels.Quota(total=10).counts({"big": 80, "mid": 15, "small": 5})
    assert sum(counts.values()) == 10 and counts["big"] == 8 and counts["small"] >= 1


def test_build_panel_writes_csvs(tmp_path):
    folder = panels.build_panel("many-class", 1, cache=tmp_path,
                                rows=[(f"t{c} {i}", f"k{c}") for c in range(25) for i in range(100)], tokens=False)
    with open(folder / "train.csv", newline="") as f:
        train = list(csv.DictReader(f))
    with open(folder / "pool.csv", newline="") as f:
        pool = list(csv.DictReader(f))
    assert len(train) == 25 * 30 and set(train[0]) == {"text", "label"}
    assert len(pool) == 25 * (100 - 60) and set(pool[0]) == {"text"}
    assert panels.panel_info(folder)["n_classes"] == 25


def _results(chosen_stands: bool) -> dict:
    """A results file of one panel, two seeds: peers, the student and its teacher candidates (one rescored)."""
    def student(seed, test, teacher, lpft_dev, rescored):
        cands = [{"name": "finetune", "dev_score": 0.60, "test_score": teacher},
                 {"name": "lp-ft", "dev_score": lpft_dev, "test_score": 0.50, **({"rescored": True} if rescored else {})}]
        sel = {"chosen": "finetune", "candidates": cands, **({"chosen_stands": chosen_stands} if rescored else {})}
        return {"test": test, "teacher_test": teacher, "teacher_selection": sel,
                "distill": {"teacher_agreement": {"agreement": 0.7 + seed / 100}}}
    units = {f"toy/seed{s}": {"panel": "toy", "seed": s, "rows": {"train": 10, "dev": 5, "test": 5, "pool": 20},
                              "peers": {"frozen_lr": {"test": 0.55}, "model2vec_lr": {"test": 0.40}},
                              "bortify": {"student": student(s, 0.57 + s / 100, 0.60, 0.55, s == 1)}}
             for s in (1, 2)}
    units["toy/seed1"]["timing"] = {"student": {"sentences_per_s": 50.0}, "teacher": {"sentences_per_s": 10.0}}
    return {"panels": {"toy": {"n_classes": 3, "source": "s", "licence": "l", "label": "x", "tokens": {"median": 9}}},
            "units": units, "runs": []}


def test_summary_marks_rescored_candidates_and_checks_the_goals():
    import bench_panels

    text = bench_panels.summarize(_results(chosen_stands=True))
    assert "lp-ft 0.550 / 0.500†" in text  # seed 1's rescored candidate
    assert "no such candidate beat the chosen one on dev" in text
    assert "agreeing with its teacher on 0.710 of its training rows" in text
    # student mean 0.585 vs teacher 0.600 at 5.0x: within 2 pt; above frozen 0.55 and model2vec + 5 pt
    assert "| student within 2 pt of the teacher at ≥ 4× its sentences/s | 0.585 vs 0.600, 5.0× | **met** |" in text
    assert "| student > frozen + LR and ≥ model2vec + LR + 5 pt | 0.585 vs 0.550 / 0.400 | **met** |" in text
    results = _results(chosen_stands=True)  # seed 2's student re-run with its teacher (--reuse_teacher)
    results["units"]["toy/seed2"]["bortify"]["student"].update(
        previous_student={"test": 0.51, "distill": {"teacher_agreement": {"agreement": 0.6}}},
        distill={"teacher_agreement": {"agreement": 0.72}, "dev_by_epoch": [0.3, 0.5, 0.4], "best_epoch": 2})
    assert ("student 0.590, agreeing with its teacher on 0.720 of its training rows; best dev epoch 2 of 3; before "
            "(same teacher, --reuse_teacher): 0.510, agreement 0.600") in bench_panels.summarize(results)
    stale = bench_panels.summarize(_results(chosen_stands=False))
    assert "that seed's student must be re-run" in stale


def test_reuse_teacher_copies_the_chosen_teacher_out_and_reruns_each_point_once(tmp_path):
    import json

    import bench_panels
    import pytest

    saved = tmp_path / "work" / "toy" / "seed1" / "bortify" / "teacher"
    saved.mkdir(parents=True)
    (saved / "config.json").write_text("{}")
    results = _results(chosen_stands=True)
    point = results["units"]["toy/seed1"]["bortify"]["student"]
    point["teacher_model"] = str(saved)
    results["units"]["toy/seed1"]["fingerprint"] = "fp"
    out = tmp_path / "panels.json"
    out.write_text(json.dumps(results))
    args = bench_panels.parse_args(["--student_only", "--reuse_teacher", "--out", str(out)])
    prev, extra = bench_panels.reused_teacher(args, "toy", 1, tmp_path / "work", "fp")
    kept = tmp_path / "work" / "toy" / "seed1" / "teacher"
    assert prev["teacher_selection"]["chosen"] == "finetune" and extra == ["--labeler", str(kept)]
    assert (kept / "config.json").read_text() == "{}"  # a copy outside the folder --overwrite replaces
    # another fingerprint (the split changed), or the option off: nothing to reuse
    assert bench_panels.reused_teacher(args, "toy", 1, tmp_path / "work", "other") == (None, [])
    off = bench_panels.parse_args(["--student_only", "--out", str(out)])
    assert bench_panels.reused_teacher(off, "toy", 1, tmp_path / "work", "fp") == (None, [])
    point["teacher_reused"] = True  # already re-run: skipped, not re-run again
    out.write_text(json.dumps(results))
    assert bench_panels.reused_teacher(args, "toy", 1, tmp_path / "work", "fp") == (None, [])
    del point["teacher_reused"]
    point["teacher_model"] = str(tmp_path / "gone")
    out.write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="is gone"):
        bench_panels.reused_teacher(args, "toy", 1, tmp_path / "work", "fp")


def test_a_failed_rerun_keeps_the_point_it_reran():
    import bench_panels

    prev = {"test": 0.52, "command": "bortify finetune ...", "teacher_model": "/w/teacher"}
    failed = {"command": "bortify finetune ... --labeler /w/teacher", "seconds": 12.0, "log": "/w/bortify.log",
              "error": "bortify finetune exited -9: Killed"}
    kept = bench_panels.point_to_keep(failed, prev)
    assert kept["test"] == 0.52 and "error" not in kept and kept["failed_rerun"]["error"].endswith("Killed")
    assert "its re-run failed and this point stands" in bench_panels.student_history(kept)
    # nothing to keep (a first run), or a run that worked: the new point is saved as it is
    assert bench_panels.point_to_keep(failed, None) is failed
    ok = {"test": 0.55, "command": "c"}
    assert bench_panels.point_to_keep(ok, prev) is ok
    assert "failed" not in bench_panels.student_history(ok)
