"""The card and push stages inside `bortify run` (bortify.pipeline), on a run whose earlier stages are done."""

import json

import pytest

from helpers import build_run_dirs
from hub_server import HubServer

TOKEN = "hf_pipelineSECRET_987654321"


@pytest.fixture
def finished_run(tmp_path, minilm_path):
    """A run directory whose extract/pretrain/finetune stages finished (stage_done.json), plus its recipe."""
    run = tmp_path / "run"
    dirs = build_run_dirs(run, minilm_path)
    for stage in dirs:
        (run / stage / "stage_done.json").write_text(json.dumps({"stage": stage}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("extract: {}\npretrain: {}\nfinetune: {}\n"
                      "card:\n  repo_id: tester/bort-pipeline\n  measure_latency: false\n"
                      "push:\n  repo_id: tester/bort-pipeline\n")
    return run, recipe


@pytest.mark.slow
def test_run_card_and_push_stages_offline(finished_run, monkeypatch, capsys):
    from bortify.pipeline import print_summary, run_recipe

    run, recipe = finished_run
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(run.parent / "hf"))
    result = run_recipe(recipe, run, stages=["card", "push"])
    card, push = result["stages"]["card"], result["stages"]["push"]
    assert card["release_dir"] == str(run / "card") and (run / "card" / "README.md").is_file()
    assert "tester/bort-pipeline" in (run / "card" / "README.md").read_text()
    assert push["skipped"] and push["summary_lines"][0].startswith("skipped: no Hub configured")
    print_summary(result)
    out = capsys.readouterr().out
    assert "release folder:" in out and "how to load:" in out and "skipped: no Hub configured" in out
    # The card's record sits beside the release folder, which holds only the release; the skipped push has none.
    assert (run / "card.stage_done.json").is_file() and not (run / "card" / "stage_done.json").exists()
    assert not (run / "push" / "stage_done.json").exists()
    assert json.loads((run / "summary.json").read_text())["stages"]["push"]["skipped"] is True
    # Re-running skips finished stages (resume) and tries the skipped push again.
    again = run_recipe(recipe, run, stages=["card", "push"])
    assert again["stages"]["card"]["seconds"] == card["seconds"]
    out = capsys.readouterr().out
    assert "card: already done" in out and "push: starting" in out


@pytest.mark.slow
def test_skipped_push_runs_once_a_token_is_set(finished_run, monkeypatch):
    """After an offline run (`make demo`), the same command with a token pushes: the skip was not recorded."""
    from huggingface_hub import constants

    from bortify.pipeline import run_recipe

    run, recipe = finished_run
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(run.parent / "hf"))
    assert run_recipe(recipe, run)["stages"]["push"]["skipped"]
    server = HubServer(token=TOKEN).start()
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        recipe.write_text(recipe.read_text() + f"  endpoint: {server.url}\n")
        push = run_recipe(recipe, run)["stages"]["push"]
        assert not push["skipped"] and "model.safetensors" in server.files("tester/bort-pipeline")
    finally:
        server.stop()
    assert (run / "push" / "stage_done.json").is_file()
    for path in run.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_push_stage_pushes_when_a_hub_is_configured(finished_run, monkeypatch):
    """In-process: point huggingface_hub at the loopback server (constants patched, since it read the env at import)."""
    from huggingface_hub import constants

    from bortify.pipeline import run_recipe

    run, recipe = finished_run
    server = HubServer(token=TOKEN).start()
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        recipe.write_text(recipe.read_text() + f"  endpoint: {server.url}\n  revision: v1\n")
        result = run_recipe(recipe, run, stages=["card", "push"])
        push = result["stages"]["push"]
        assert not push["skipped"] and push["revision"] == "v1" and push["attempts"] == 1
        files = server.files("tester/bort-pipeline", "v1")
        assert files["model.safetensors"] == (run / "finetune" / "model.safetensors").read_bytes()
        assert "stage_done.json" not in files and "README.md" in files
        stored = (run / "push" / "report.json").read_bytes() + (run / "push" / "stage_done.json").read_bytes()
        assert TOKEN.encode() not in stored
    finally:
        server.stop()


def test_demo_recipe_card_and_push_sections_parse():
    from bortify.hub.card import CardOptions
    from bortify.hub.card_stage import CardArguments
    from bortify.hub.push import PushArguments
    from bortify.recipes import args_from_dict, load_recipe

    from pathlib import Path

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "demo.yaml")
    _, options = args_from_dict((CardArguments, CardOptions), {**recipe["card"], "output_dir": "unused"})
    (push,) = args_from_dict((PushArguments,), {**recipe["push"], "model_dir": "unused"})
    assert options.measure_latency and options.license
    assert push.repo_id and push.token is None  # tokens never live in recipes
