import json
import re

import pytest

import pipeline_toy_stage as toy
from bortify import pipeline
from bortify.recipes import RecipeError


@pytest.fixture
def toy_stages(monkeypatch):
    toy.CALLS.clear()
    stages = (
        toy.spec("extract"),
        toy.spec("pretrain", inputs={"input": "extract"}),
        toy.spec("card", inputs={"extract_dir": "extract", "pretrain_dir": "pretrain"},
                 optional_inputs=("extract_dir", "pretrain_dir"), record_inside=False),
    )
    monkeypatch.setattr(pipeline, "STAGES", stages)
    return stages


def test_wiring_and_resume(tmp_path, toy_stages):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {a: 1}\npretrain: {b: 2}\ncard: {}\n")
    run = tmp_path / "run"
    result = pipeline.run_recipe(recipe, run)
    assert [c["output_dir"] for c in toy.CALLS] == [str(run / s) for s in ("extract", "pretrain", "card")]
    assert toy.CALLS[1]["input"] == str(run / "extract")  # wired from the earlier stage
    assert (toy.CALLS[2]["extract_dir"], toy.CALLS[2]["pretrain_dir"]) == (str(run / "extract"), str(run / "pretrain"))
    assert (run / "card.stage_done.json").is_file() and not (run / "card" / pipeline.DONE_FILE).exists()
    assert result["stages"]["pretrain"]["input"] == str(run / "extract")
    assert json.loads((run / "summary.json").read_text())["run_dir"] == str(run)

    toy.CALLS.clear()
    pipeline.run_recipe(recipe, run)  # everything finished: nothing runs again
    assert toy.CALLS == []
    pipeline.run_recipe(recipe, run, overwrite=True)
    assert len(toy.CALLS) == 3


def test_failed_stage_is_rerun_and_earlier_skipped(tmp_path, toy_stages):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {}\npretrain: {fail: boom}\n")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.run_recipe(recipe, run)
    assert not (run / "pretrain" / pipeline.DONE_FILE).exists()
    recipe.write_text("extract: {}\npretrain: {fail: null}\n")
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


def test_skipped_stage_is_not_recorded_as_done(tmp_path, toy_stages, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {}\npretrain: {skip: true}\n")
    run = tmp_path / "run"
    result = pipeline.run_recipe(recipe, run)
    assert result["stages"]["pretrain"]["skipped"] and not (run / "pretrain" / pipeline.DONE_FILE).exists()
    assert json.loads((run / "summary.json").read_text())["stages"]["pretrain"]["skipped"] is True
    pipeline.print_summary(result)
    assert "[pretrain]" in capsys.readouterr().out
    toy.CALLS.clear()
    recipe.write_text("extract: {}\npretrain: {skip: false}\n")  # e.g. a token is now configured
    pipeline.run_recipe(recipe, run)  # no changed-recipe refusal: a skipped stage made nothing to protect
    assert [c["output_dir"] for c in toy.CALLS] == [str(run / "pretrain")]  # tried again, extract still done
    assert (run / "pretrain" / pipeline.DONE_FILE).exists()


def test_token_in_recipe_is_refused_before_any_work(tmp_path, toy_stages, capsys):
    secret = "hf_" + "Ab3" * 12
    run = tmp_path / "run"
    for text in (f"extract: {{}}\npretrain: {{token: {secret}}}\n",            # a token key
                 f"extract: {{note: {secret}}}\npretrain: {{}}\n",              # a token-like value anywhere
                 "extract: {}\npretrain: {hub_token: abc123secret}\n"):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(text)
        assert pipeline.main([str(recipe), "--output_dir", str(run)]) == 2
        err = capsys.readouterr().err
        assert "bortify run: error:" in err and "hf auth login" in err and "HF_TOKEN" in err
        assert secret not in err and "abc123secret" not in err
        assert toy.CALLS == [] and not run.exists()


def test_nothing_the_pipeline_writes_holds_a_token(tmp_path, toy_stages, monkeypatch, capsys):
    """Defence in depth: a stage that echoes the token (or a token-like value) into its summary; every file the
    run writes, and what it prints, is scanned."""
    env_token = "hf_envTOKENvalue_with_underscores_123"
    pattern_token = "hf_" + "Zz9" * 12
    monkeypatch.setenv("HF_TOKEN", env_token)
    monkeypatch.setattr(pipeline, "STAGES", (toy.spec("extract"), toy.spec("pretrain")))
    monkeypatch.setattr(pipeline, "load_recipe", lambda path: {  # the recipe check is bypassed on purpose
        "extract": {"echo": f"token={env_token}"}, "pretrain": {"echo": [f"x {pattern_token} y"]}})
    run = tmp_path / "run"
    assert pipeline.main(["unused.yaml", "--output_dir", str(run)]) == 0
    out = capsys.readouterr().out
    written = [p for p in run.rglob("*") if p.is_file() and p.name != "made.json"]  # made.json: the toy's own file
    assert {p.name for p in written} >= {"summary.json", pipeline.DONE_FILE}
    for path in written:
        data = path.read_bytes()
        assert env_token.encode() not in data and pattern_token.encode() not in data, path
    assert env_token not in out and pattern_token not in out
    stages_written = json.loads((run / "summary.json").read_text())["stages"]
    assert stages_written["extract"]["echo"] == "token=***" and stages_written["pretrain"]["echo"] == ["x *** y"]


def test_stage_user_errors_are_messages_not_tracebacks(tmp_path, toy_stages, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {fail: data, message: train.csv does not exist}\n")
    assert pipeline.main([str(recipe), "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bortify run: error: toy data error: train.csv does not exist")
    recipe.write_text("extract: 5\n")
    assert pipeline.main([str(recipe), "--output_dir", str(tmp_path / "run")]) == 2
    assert "section 'extract' must be a mapping" in capsys.readouterr().err
    recipe.write_text("extract: {fail: boom}\n")  # a bug (RuntimeError) still shows its traceback
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.main([str(recipe), "--output_dir", str(tmp_path / "run")])


def test_recipe_yaml_errors_name_file_line_and_type(tmp_path):
    from bortify.extraction.arguments import EstimatorArguments, ExtractionArguments
    from bortify.recipes import args_from_dict, load_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text("extract:\n  epsilon: 0.1\n depths: [1]\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml is not valid YAML at line 3, column 2"):
        load_recipe(bad)
    classes = (ExtractionArguments, EstimatorArguments)
    for section, pattern in (({"epsilon": "0.1"}, r"`epsilon` must be float, got str '0\.1'"),
                             ({"depths": 1}, r"`depths` must be list of int, got int 1"),
                             ({"heads": ["two"]}, r"`heads` must be list of int, got list \['two'\]"),
                             ({"epsilon": True}, r"`epsilon` must be float, got bool True")):
        with pytest.raises(RecipeError, match=r"r\.yaml \[extract\].*" + pattern):
            args_from_dict(classes, {"output_dir": "x", **section}, where="r.yaml [extract]")
    ok, _ = args_from_dict(classes, {"output_dir": "x", "epsilon": 0, "depths": [1, 2]}, where="r.yaml [extract]")
    assert ok.epsilon == 0 and ok.depths == [1, 2]  # an int is a fine float
    with pytest.raises(RecipeError, match=r"r\.yaml \[extract\]: --epsilon must be in \[0, 1\)"):  # __post_init__
        args_from_dict(classes, {"output_dir": "x", "epsilon": 1}, where="r.yaml [extract]")


@pytest.mark.slow
def test_python_dash_m_bortify_runs_the_cli():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "bortify", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: bortify <command>" in proc.stdout


# ---- the stage contract (bortify/stages.py) ------------------------------------------------------------------

def test_every_stage_follows_the_contract():
    """One table: each stage's dataclasses parse, its library function exists, its inputs name earlier stages, and
    the options every stage shares mean the same (overwrite: bool = False; torch_threads: int | None = None)."""
    import dataclasses
    import typing

    from bortify.stages import PLANNED_STAGES, STAGE_NAMES, STAGES
    from bortify.utils import OVERWRITE_HELP, TORCH_THREADS_HELP

    assert STAGE_NAMES[:3] == ("extract", "pretrain", "finetune") and STAGE_NAMES[-2:] == ("card", "push")
    assert STAGE_NAMES.index("finetune") < STAGE_NAMES.index("compress") < STAGE_NAMES.index("card")
    assert "compress" not in PLANNED_STAGES
    for i, spec in enumerate(STAGES):
        assert callable(spec.function()) and spec.help and spec.description
        assert set(spec.inputs.values()) <= set(STAGE_NAMES[:i]), spec.name  # wired from earlier stages only
        fields = {f.name: f for dc in spec.argument_classes() for f in dataclasses.fields(dc)}
        hints = {k: v for dc in spec.argument_classes() for k, v in typing.get_type_hints(dc).items()}
        assert set(spec.inputs) | set(spec.borrow) <= set(fields), spec.name
        if "overwrite" in fields:
            assert hints["overwrite"] is bool and fields["overwrite"].default is False
            assert fields["overwrite"].metadata["help"] == OVERWRITE_HELP, spec.name
        if "torch_threads" in fields:
            assert hints["torch_threads"] == typing.Optional[int] and fields["torch_threads"].default is None
            assert fields["torch_threads"].metadata["help"] == TORCH_THREADS_HELP, spec.name
    assert {"extract", "pretrain", "finetune", "compress"} <= {
        s.name for s in STAGES if "torch_threads" in {f.name for dc in s.argument_classes() for f in dataclasses.fields(dc)}}


def test_torch_threads_means_the_same_everywhere_and_is_restored():
    import torch

    from bortify.extraction.arguments import ExtractionArguments
    from bortify.finetuning.arguments import FinetuneModelArguments
    from bortify.pretraining.arguments import ModelArguments
    from bortify.utils import torch_threads

    for make in (lambda n: ExtractionArguments(output_dir="x", torch_threads=n),
                 lambda n: FinetuneModelArguments(model="m", output_dir="x", torch_threads=n),
                 lambda n: ModelArguments(student_config="s", torch_threads=n)):
        assert make(None).torch_threads is None and make(1).torch_threads == 1
        with pytest.raises(ValueError, match=r"torch_threads must be >= 1, got 0 \(leave it unset"):
            make(0)
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("a failing stage")
    assert torch.get_num_threads() == before  # restored, also after an error
    with torch_threads(None):
        assert torch.get_num_threads() == before  # None: torch's own setting


def test_a_compress_section_is_a_stage_whose_unknown_keys_are_refused(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extract: {}\ncompress: {bits: 8}\n")
    assert pipeline.main([str(recipe), "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "[compress]" in err and "bits" in err and "not available" not in err
    assert not (tmp_path / "run").exists()


def test_card_inputs_are_wired_from_the_table_and_borrow_the_push_repo(tmp_path):
    from bortify.stages import BY_NAME

    card = BY_NAME["card"]
    outputs = {"extract": "R/extract", "finetune": "R/finetune"}
    config = pipeline.stage_config(card, {"card": {}, "push": {"repo_id": "team/bort-x"}}, outputs, tmp_path)
    assert config == {"output_dir": str(tmp_path / "card"), "extract_dir": "R/extract", "finetune_dir": "R/finetune",
                      "repo_id": "team/bort-x"}  # no pretrain stage: its optional input stays unset
    bare = pipeline.stage_config(card, {"card": {"finetune_dir": "mine"}, "push": {"repo_id": "bort-x"}}, outputs, tmp_path)
    assert bare["finetune_dir"] == "mine" and "repo_id" not in bare  # the recipe wins; a bare NAME is not borrowed
    with pytest.raises(RecipeError, match="Stage 'push' needs 'model_dir'.*run stage 'card' first"):
        pipeline.stage_config(BY_NAME["push"], {"push": {"repo_id": "a/b"}}, {}, tmp_path)


def test_a_stage_run_from_a_section_reports_missing_settings_and_tokens(tmp_path):
    with pytest.raises(RecipeError, match=r"recipe \[push\] needs `repo_id` \(Target repository"):
        pipeline.run_config("push", {"model_dir": str(tmp_path), "output_dir": str(tmp_path / "push")})
    with pytest.raises(RecipeError, match=r"recipe \[push\] sets token: tokens do not belong in recipes"):
        pipeline.run_config("push", {"model_dir": str(tmp_path), "repo_id": "a/b", "token": "secret"})
    with pytest.raises(RecipeError, match=r"recipe \[compress\] needs `model_dir`"):
        pipeline.run_config("compress", {"output_dir": str(tmp_path / "c")})
