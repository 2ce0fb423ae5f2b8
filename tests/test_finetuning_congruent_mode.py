"""`bortify finetune --old_model` (focal distillation, docs/methods/04-updates.md §4.3) in plain and Agora mode (distill mode:
test_finetuning_congruent_distill.py), save_teacher
+ `bortify compare`'s default old model, and the bad-input rows, on tiny models (plus one real-model run)."""

import json

import pytest

from casetable import Case, run_case
from helpers import DATA, compare_setup, copy_compare_models, finetune_cli, write_data

pytestmark = pytest.mark.usefixtures("compare_models", "one_torch_thread")

FAST = ["--learning_rates", "1e-3", "--num_train_epochs", "1", "--batch_sizes", "8", "--max_length", "16"]


def test_plain_mode_with_old_model_trains_with_focal_distillation(tmp_path, monkeypatch):
    from bortify.finetuning import congruent

    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    losses = []
    original = congruent.focal_distillation_loss

    def spy(*a, **k):
        parts = original(*a, **k)
        losses.append(parts)
        return parts

    monkeypatch.setattr(congruent, "focal_distillation_loss", spy)
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(tmp_path / "out"), "--mode", "plain",
                      "--old_model", paths["old"], "--pc_beta", "3", *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    info = report["congruent"]
    assert info["old_model"] == paths["old"] and info["beta"] == 3.0 and info["lambda"] == 1.0
    assert info["old_rows_computed"] == report["splits"]["train"] == 40  # once per train text
    assert losses and all(p.fd.item() > 0 for p in losses)  # the loss ran, with a distillation term


def test_agora_mode_with_old_model_computes_generated_rows_once(tmp_path):
    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(tmp_path / "out"), "--mode", "agora",
                      "--old_model", paths["old"], "--labeler", paths["old"], "--labeler_min_dev_score", "0",
                      "--max_rounds", "2", "--k", "2", "--verify_mistakes", "false", "--balance_classes", "false",
                      *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    added = report["examples_added"]
    assert report["congruent"]["old_rows_computed"] == 40 + added  # train + each generated text, once


def test_save_teacher_is_compares_default_old_model(tmp_path, capsys):
    from bortify.cli import main

    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "mlm")
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(tmp_path / "out"), "--mode", "distill",
                      "--teacher", paths["mlm"], "--labeler_epochs", "1", "--labeler_min_dev_score", "0",
                      "--distill_epochs", "1", "--distill_min_examples", "0", "--save_teacher", "true", *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["labeler"]["saved_to"] == "teacher"
    assert (tmp_path / "out" / "teacher" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["compare", "--new_model", str(tmp_path / "out"), "--output_dir", str(tmp_path / "cmp"),
                 *[a.format(**files) for a in DATA]]) == 0
    cmp = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert cmp["old_model"] == str(tmp_path / "out" / "teacher")
    # the teacher's test accuracy in the finetune report is the compare report's old accuracy
    assert cmp["old"]["accuracy"] == pytest.approx(report["labeler"]["test_accuracy"])


def ft(*argv):
    return ["finetune", "--model", "{mlm}", "--output_dir", "{root}/out", *DATA, *FAST, *argv]


CASES = [
    Case("old-model-teacher-outside-distill", ft("--mode", "plain", "--old_model", "teacher"),
         r"old_model teacher names the teacher of --mode distill", setup=compare_setup("mlm")),
    Case("old-model-other-labels", ft("--mode", "plain", "--old_model", "{other_labels}"),
         r"old model predicts labels \['neg', 'pos'\].*match by name", setup=compare_setup("other_labels", "mlm")),
    Case("old-model-not-a-classifier", ft("--mode", "plain", "--old_model", "{mlm}"), r"not a sequence classifier",
         setup=compare_setup("mlm")),
    Case("old-model-is-the-output", ["finetune", "--model", "{mlm}", "--output_dir", "{old}", *DATA, *FAST, "--mode",
                                     "plain", "--old_model", "{old}"], r"old model", setup=compare_setup("old", "mlm")),
    Case("bad-divergence", ft("--old_model", "{old}", "--pc_divergence", "mse"), r"pc_divergence must be one of",
         setup=compare_setup("old", "mlm")),
    Case("negative-beta", ft("--old_model", "{old}", "--pc_beta", "-1"), r"pc_beta must be >= 0",
         setup=compare_setup("old", "mlm")),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
def test_real_models_focal_distillation(tmp_path, minilm_path, splade_path):
    """splade-tiny fine-tuned with focal distillation against MiniLM fine-tuned on the embedded sentiment task."""
    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import fit, load_classifier, tokenize

    task = prepare_task("embedded:rotten-tomatoes", max_train_samples=200, max_test_samples=200)
    old0, tok = load_classifier(minilm_path, task.label_names, False)
    old = fit(old0, tok, tokenize(task.train, tok, ["text"], 40),
              {"learning_rate": 1e-4, "weight_decay": 0.0, "warmup_ratio": 0.1, "batch_size": 16}, epochs=1, seed=0)
    old.save_pretrained(tmp_path / "old")
    tok.save_pretrained(tmp_path / "old")
    rc = finetune_cli("--model", splade_path, "--output_dir", str(tmp_path / "out"), "--mode", "plain",
                      "--old_model", str(tmp_path / "old"), "--max_train_samples", "200", "--max_test_samples", "200",
                      "--max_length", "40", "--num_train_epochs", "1", "--learning_rates", "1e-4", "--torch_threads", "2")
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["congruent"]["old_rows_computed"] == 200 and 0 < report["congruent"]["old_train_accuracy"] <= 1
    assert 0 <= report["test"]["accuracy"] <= 1


def test_run_wires_finetune_teacher_into_compare_and_the_card(tmp_path):
    """`bortify run` with finetune (save_teacher) -> compare (no models named: the student and its teacher) ->
    card: the compare stage borrows the finetune section's data, and the card states the NFR."""
    import yaml

    from bortify.pipeline import main

    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "mlm")
    recipe = {
        "finetune": {"model": paths["mlm"], "mode": "distill", "teacher": paths["mlm"], "labeler_epochs": 1,
                     "labeler_min_dev_score": 0, "distill_epochs": 1, "save_teacher": True,
                     "train_file": files["train"], "dev_file": files["dev"], "test_file": files["test"],
                     "learning_rates": [1e-3], "batch_sizes": [8], "max_length": 16},
        "compare": {"max_nfr": 1.0},
        "card": {"measure_latency": False, "model_name": "tiny"},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main([str(tmp_path / "recipe.yaml"), "--output_dir", str(tmp_path / "run")]) == 0
    cmp = json.loads((tmp_path / "run" / "compare" / "report.json").read_text())
    assert cmp["old_model"] == str(tmp_path / "run" / "finetune" / "teacher")
    assert cmp["new_model"] == str(tmp_path / "run" / "finetune") and cmp["rows"] == 40 and cmp["passed"] is True
    card = (tmp_path / "run" / "card" / "README.md").read_text()
    # the run's own teacher folder is named for what it is (a `<run>/...` path means nothing on the Hub)
    assert f"**{cmp['nfr']:.4f}** against the teacher fine-tuned in this run" in card
    assert "<run>/" not in card
    assert not (tmp_path / "run" / "card" / "teacher").exists()  # the release folder does not carry the teacher
