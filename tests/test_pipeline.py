import json
import re

import pytest

import pipeline_toy_stage as toy
from bortify import pipeline
from bortify.recipes import RecipeError


@pytest.fixture
def toy_stages(monkeypatch):
    toy.CALLS.clear()
    stages = [
        pipeline.Stage("extract", "pipeline_toy_stage"),
        pipeline.Stage("pretrain", "pipeline_toy_stage", inputs={"input": "extract"}),
        pipeline.Stage("card", "pipeline_toy_stage", all_outputs_key="stage_dirs"),
    ]
    monkeypatch.setattr(pipeline, "STAGES", stages)
    monkeypatch.setattr(pipeline, "STAGE_NAMES", [s.name for s in stages])
    return stages


def test_wiring_and_resume(tmp_path, toy_stages):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {a: 1}\npretrain: {b: 2}\ncard: {}\n")
    run = tmp_path / "run"
    result = pipeline.run_recipe(recipe, run)
    assert [c["output_dir"] for c in toy.CALLS] == [str(run / s) for s in ("extract", "pretrain", "card")]
    assert toy.CALLS[1]["input"] == str(run / "extract")  # wired from the earlier stage
    assert toy.CALLS[2]["stage_dirs"] == {"extract": str(run / "extract"), "pretrain": str(run / "pretrain")}
    assert result["stages"]["pretrain"]["input"] == str(run / "extract")
    assert json.loads((run / "summary.json").read_text())["run_dir"] == str(run)

    toy.CALLS.clear()
    pipeline.run_recipe(recipe, run)  # everything finished: nothing runs again
    assert toy.CALLS == []
    pipeline.run_recipe(recipe, run, overwrite=True)
    assert len(toy.CALLS) == 3


def test_failed_stage_is_rerun_and_earlier_skipped(tmp_path, toy_stages):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {}\npretrain: {fail: true}\n")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.run_recipe(recipe, run)
    assert not (run / "pretrain" / pipeline.DONE_FILE).exists()
    recipe.write_text("extract: {}\npretrain: {fail: false}\n")
    toy.CALLS.clear()
    pipeline.run_recipe(recipe, run)
    assert [c["output_dir"] for c in toy.CALLS] == [str(run / "pretrain")]  # resumes at the failed stage


def test_recipe_errors(tmp_path, toy_stages):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extrakt: {}\n")
    with pytest.raises(RecipeError, match="extrakt"):
        pipeline.run_recipe(recipe, tmp_path / "run")
    recipe.write_text("pretrain: {}\n")  # needs the extract stage's output
    with pytest.raises(RecipeError, match="needs 'input'"):
        pipeline.run_recipe(recipe, tmp_path / "run")
    with pytest.raises(RecipeError, match="does not exist"):
        pipeline.run_recipe(tmp_path / "missing.yaml", tmp_path / "run")


def test_cli_help_lists_commands(capsys):
    from bortify.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("extract", "pretrain", "finetune", "push", "run", "resources"):
        assert f"  {name}" in out
    assert main(["nope"]) == 2


def test_changed_recipe_section_is_refused_before_any_work_then_redone_with_overwrite(tmp_path, toy_stages):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {a: 1}\npretrain: {b: 2}\ncard: {}\n")
    run = tmp_path / "run"
    pipeline.run_recipe(recipe, run)
    before = (run / "pretrain" / pipeline.DONE_FILE).read_text()
    recipe.write_text("extract: {a: 1}\npretrain: {b: 3, c: 4}\ncard: {}\n")
    toy.CALLS.clear()
    with pytest.raises(RecipeError, match=r"pretrain \(changed: b, c\).*--overwrite --stages pretrain card"):
        pipeline.run_recipe(recipe, run)
    assert toy.CALLS == [] and (run / "pretrain" / pipeline.DONE_FILE).read_text() == before  # nothing touched
    pipeline.run_recipe(recipe, run, stages=["pretrain", "card"], overwrite=True)
    assert [c["output_dir"] for c in toy.CALLS] == [str(run / "pretrain"), str(run / "card")]
    assert json.loads((run / "pretrain" / pipeline.DONE_FILE).read_text())["recipe_section"] == {"b": 3, "c": 4}
    toy.CALLS.clear()
    pipeline.run_recipe(recipe, run)  # now in step with the recipe: nothing to do
    assert toy.CALLS == []


def test_cli_runs_the_redo_command_the_error_prints(tmp_path, toy_stages, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {a: 1}\npretrain: {b: 2}\ncard: {}\n")
    run = tmp_path / "run"
    assert pipeline.main([str(recipe), "--output_dir", str(run)]) == 0
    recipe.write_text("extract: {a: 1}\npretrain: {b: 3}\ncard: {}\n")
    assert pipeline.main([str(recipe), "--output_dir", str(run)]) == 2
    redo = re.search(r"`(--overwrite --stages [^`]+)`", capsys.readouterr().err).group(1).split()
    toy.CALLS.clear()
    assert pipeline.main([str(recipe), "--output_dir", str(run), *redo]) == 0  # the printed command works as is
    assert [c["output_dir"] for c in toy.CALLS] == [str(run / "pretrain"), str(run / "card")]
    toy.CALLS.clear()
    assert pipeline.main([str(recipe), "--output_dir", str(run), "--stages", "extract,card", "--overwrite"]) == 0
    assert [c["output_dir"] for c in toy.CALLS] == [str(run / "extract"), str(run / "card")]  # commas still work
