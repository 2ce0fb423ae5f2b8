"""bortify/outputs.py: the output contract every stage follows. What a folder is (ours, finished, unfinished,
foreign, another stage's), inputs refused, the lock (a second process is refused, naming the folder and its pid),
and replace-by-rename (a replacement that fails midway, or is killed between the renames, leaves the old output
whole). Plain files only: no model is loaded here."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bortify import outputs
from bortify.outputs import MARKER, OUTPUTS, OutputError, OutputLockedError, claim, inspect, refuse_inputs
from bortify.utils import OutputExistsError, user_error_types


def _write(folder, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _finished_compare(folder, **extra):
    _write(folder, {"report.json": '{"nfr": 0.1}', "negative_flips.jsonl": "{}\n", **extra})
    (folder / MARKER).write_text(json.dumps({"stage": "compare", "files": ["negative_flips.jsonl", "report.json"]}))


# --- what a folder is ----------------------------------------------------------------------------------------

def test_inspect_tells_states_apart(tmp_path):
    assert inspect("bench", tmp_path / "nope").state == "absent"
    (tmp_path / "empty").mkdir()
    assert inspect("bench", tmp_path / "empty").state == "empty"
    _finished_compare(tmp_path / "cmp")
    found = inspect("compare", tmp_path / "cmp")
    assert found.state == "finished" and found.writer == "compare" and found.ours
    # an older bortify's output (no marker) with its report and only the stage's own files: still ours
    _write(tmp_path / "old_ft", {"report.json": "{}", "config.json": "{}", "model.safetensors": "w",
                                 "stage_done.json": "{}"})
    assert inspect("finetune", tmp_path / "old_ft").state == "finished"
    # an older bortify's unfinished pretraining run (run_args.json, checkpoints): ours, to resume
    _write(tmp_path / "old_pt", {"run_args.json": "{}"})
    (tmp_path / "old_pt" / "checkpoint-2").mkdir()
    assert inspect("pretrain", tmp_path / "old_pt").state == "unfinished"
    # a marked, unfinished fine-tuning output (interrupted): ours, reused
    _write(tmp_path / "ft", {"config.json": "{}", MARKER: json.dumps({"stage": "finetune", "files": []})})
    assert inspect("finetune", tmp_path / "ft").state == "unfinished"


@pytest.mark.parametrize("stage, files, message", [
    ("finetune", {"config.json": "{}", "model.safetensors": "w"},  # another model's checkpoint: no marker, no report
     r"is not an output of `bortify finetune`: it holds config\.json, model\.safetensors but no \.bortify-output"),
    ("compare", {"negative_flips.jsonl": "mine"}, r"holds negative_flips\.jsonl but no \.bortify-output\.json"),
    ("finetune", {"report.json": "{}", "notes.txt": "mine"}, r"\(it holds notes\.txt\).*even with --overwrite"),
    ("bench", {"report.json": "{}", "config.json": "{}", "model.safetensors": "w"},  # a finetune output, no marker
     r"is not an output of `bortify bench` \(it holds config\.json, model\.safetensors\)"),
    ("card", {"README.md": "# my project", "thesis.tex": "years"},
     r"is not a release folder made by `bortify card` \(it holds thesis\.tex\)"),
    ("finetune", {"report.json": "{}", ".git": "a repository"}, r"\(it holds \.git\)"),  # hidden files count too
])
def test_inspect_refuses_what_bortify_did_not_write(tmp_path, stage, files, message):
    _write(tmp_path / "out", files)
    before = _tree(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=message):
            claim(stage, tmp_path / "out", overwrite=overwrite)
    assert _tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_another_stages_output_is_never_replaced(tmp_path):
    _finished_compare(tmp_path / "cmp")
    with pytest.raises(OutputError, match=r"holds the output of `bortify compare`.*`bortify bench` neither writes"):
        claim("bench", tmp_path / "cmp", overwrite=True)
    (tmp_path / "cmp" / MARKER).write_text("{not json")
    with pytest.raises(OutputError, match=r"is unreadable"):
        claim("compare", tmp_path / "cmp", overwrite=True)


def test_a_finished_output_needs_overwrite_and_errors_are_user_errors(tmp_path):
    _finished_compare(tmp_path / "cmp")
    with pytest.raises(OutputError, match=r"already holds results\. Pass --overwrite"):
        claim("compare", tmp_path / "cmp")
    assert issubclass(OutputError, OutputExistsError) and OutputExistsError in user_error_types()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"Cannot write to --output_dir .*file: it exists and is not a directory"):
        claim("bench", tmp_path / "file")
    with pytest.raises(OutputError, match=r"Cannot write to --output_dir .*file, on the way to it, is a file"):
        claim("bench", tmp_path / "file" / "out")


def test_every_stage_has_a_contract():
    assert set(OUTPUTS) == {"extract", "pretrain", "finetune", "compress", "bench", "compare", "card"}
    assert {s.stage for s in OUTPUTS.values() if s.resumable} == {"extract", "pretrain", "finetune"}
    assert not OUTPUTS["card"].marker  # the release folder is uploaded as it is
    assert OUTPUTS["bench"].owns("bench.png") and not OUTPUTS["bench"].owns("config.json")


# --- inputs --------------------------------------------------------------------------------------------------

def test_inputs_are_refused_whatever_the_overlap(tmp_path):
    (tmp_path / "model").mkdir()
    for out, how in ((tmp_path / "model", "is"), (tmp_path / "model" / "sub", "is inside"), (tmp_path, "contains")):
        with pytest.raises(OutputError, match=rf"{how} the input model .*--overwrite never replaces an input"):
            refuse_inputs(out, {"model": str(tmp_path / "model")})
        with pytest.raises(OutputError, match=rf"{how} the input model"):
            claim("finetune", out, overwrite=True, inputs={"model": str(tmp_path / "model")})
    refuse_inputs(tmp_path / "out", {"model": "embedded:splade-tiny", "teacher": "bert-base-uncased", "x": None})
    os.symlink(tmp_path / "model", tmp_path / "link")  # resolved: a link to the input is the input
    with pytest.raises(OutputError, match="is the input model"):
        refuse_inputs(tmp_path / "link", {"model": str(tmp_path / "model")})


# --- writing: in place, staged, committed ----------------------------------------------------------------------

def test_a_new_output_is_built_aside_and_swapped_in_with_its_marker(tmp_path):
    out = tmp_path / "runs" / "cmp"  # parents are made
    with claim("compare", out) as output:
        work = output.work_dir()
        assert work == tmp_path / "runs" / ".cmp.bortify-new" and not out.exists()  # invisible until finished
        (work / "report.json").write_text("{}")
    assert json.loads((out / MARKER).read_text()) == {"stage": "compare", "files": ["report.json"], "finished": True}
    assert sorted(p.name for p in out.parent.iterdir()) == ["cmp"]  # no staging, old folder or lock left


def test_a_resumable_stage_writes_in_place_and_keeps_an_unfinished_output(tmp_path):
    out = tmp_path / "ft"
    with pytest.raises(RuntimeError):
        with claim("finetune", out) as output:
            assert output.work_dir() == out
            (out / "config.json").write_text("{}")
            raise RuntimeError("killed mid-run")
    assert (out / "config.json").exists()  # what it wrote stays: unfinished, reused next time
    with claim("finetune", out) as output:
        assert output.resuming and not output.replacing and output.work_dir() == out
        (out / "report.json").write_text("{}")
    assert inspect("finetune", out).state == "finished"


def test_an_error_before_anything_is_written_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b" / "ft"
    with pytest.raises(ValueError):
        with claim("finetune", out) as output:
            output.work_dir()
            raise ValueError("bad data")
    assert list(tmp_path.iterdir()) == []  # the folders it made (holding only its marker) are gone


def test_a_failed_replacement_leaves_the_old_output_whole(tmp_path):
    out = tmp_path / "cmp"
    _finished_compare(out)
    before = _tree(out)
    with pytest.raises(RuntimeError, match="disk full"):  # the stage fails midway
        with claim("compare", out, overwrite=True) as output:
            assert output.replacing
            (output.work_dir() / "report.json").write_text('{"half": true}')
            raise RuntimeError("disk full")
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]


def test_a_swap_that_fails_between_the_renames_puts_the_old_output_back(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    _finished_compare(out)
    before = _tree(out)
    real = os.replace

    def fail_second(src, dst):  # the old folder is moved aside, then moving the new one in fails
        if str(src).endswith(".bortify-new"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", fail_second)
    with pytest.raises(OSError, match="No space left"):
        with claim("compare", out, overwrite=True) as output:
            (output.work_dir() / "report.json").write_text('{"new": true}')
    monkeypatch.setattr(outputs.os, "replace", real)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]


def test_a_kill_between_the_renames_is_undone_by_the_next_claim(tmp_path):
    out = tmp_path / "cmp"
    _finished_compare(out)
    before = _tree(out)
    os.replace(out, tmp_path / ".cmp.bortify-old")  # killed here: the old output aside, the new one not in place
    (tmp_path / ".cmp.bortify-new").mkdir()
    with pytest.raises(OutputError, match="already holds results"):  # the old output is back, and is finished
        claim("compare", out)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]


def test_a_replacement_swaps_only_at_the_end(tmp_path):
    out = tmp_path / "cmp"
    _finished_compare(out)
    with claim("compare", out, overwrite=True) as output:
        (output.work_dir() / "report.json").write_text('{"nfr": 0.2}')
        assert json.loads((out / "report.json").read_text()) == {"nfr": 0.1}  # the old one, until the end
        output.commit()  # compare commits before its release gate may fail
        assert json.loads((out / "report.json").read_text()) == {"nfr": 0.2}
    assert not (out / "negative_flips.jsonl").exists()  # the old run's file went with it


# --- the lock ------------------------------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys
    from bortify.outputs import claim
    with claim("bench", sys.argv[1]) as output:
        print("locked", flush=True)
        sys.stdin.readline()
""")


def test_a_second_run_into_the_same_folder_is_refused_naming_the_folder_and_pid(tmp_path):
    out = tmp_path / "bench"
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"--output_dir {out} is being written by another bortify run "
                                                    rf"\(pid {other.pid};"):
            claim("bench", out, overwrite=True)
    finally:
        other.communicate("\n", timeout=60)
    assert other.returncode == 0
    with claim("bench", out):  # released: the next run goes ahead
        pass
    assert not list(tmp_path.glob(".bench.bortify-lock"))


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
    (tmp_path / ".bench.bortify-lock").write_text("12345\n")  # kill -9: the file stays, the flock does not
    with claim("bench", tmp_path / "bench"):
        assert (tmp_path / ".bench.bortify-lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".bench.bortify-lock").exists()
