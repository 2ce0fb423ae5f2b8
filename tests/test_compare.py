"""`bortify compare OLD NEW` (docs/methods/04-updates.md §4): flips against hand-checked predictions, label re-mapping by
name, the release gate (exit code 3), the bad-input case table, and the gate inside `bortify run`."""

import json
from pathlib import Path

import pytest
import torch

from casetable import Case, run_case
from helpers import DATA, compare_rows, compare_setup, copy_compare_models, write_data

pytestmark = pytest.mark.usefixtures("compare_models", "one_torch_thread")


def _predict(path, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        logits = model(**tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)).logits
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return [names[i] for i in logits.argmax(-1).tolist()]


def test_compare_matches_hand_checked_flips(tmp_path):
    from bortify.compare import FLIPS_FILE, CompareArguments, compare
    from bortify.finetuning.arguments import FinetuneDataArguments
    from bortify.metrics.flips.flips import flip_statistics

    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "new")
    report = compare(CompareArguments(old_model=paths["old"], new_model=paths["new"], output_dir=str(tmp_path / "cmp")),
                     FinetuneDataArguments(train_file=files["train"], dev_file=files["dev"], test_file=files["test"]))
    test = compare_rows(40, 60)
    gold = [r["label"] for r in test]
    old, new = _predict(paths["old"], [r["text"] for r in test]), _predict(paths["new"], [r["text"] for r in test])
    expected = flip_statistics(gold, old, new)
    assert report.nfr == pytest.approx(expected["nfr"]) and report.pfr == pytest.approx(expected["pfr"])
    assert report.relative_nfr == pytest.approx(expected["relative_nfr"])
    assert report.old["accuracy"] == pytest.approx(expected["accuracy_old"])
    assert report.new["accuracy"] == pytest.approx(expected["accuracy_new"])
    assert report.rows == 40 and report.split == "test" and report.passed is None
    flips = [json.loads(line) for line in (tmp_path / "cmp" / FLIPS_FILE).read_text().splitlines()]
    want = [i for i in range(40) if old[i] == gold[i] != new[i]]
    assert sorted(f["row"] for f in flips) == want and len(flips) == report.negative_flips > 0
    for f in flips:
        assert f["text"] == test[f["row"]]["text"] and f["gold"] == f["old"] != f["new"]
        assert 0.5 <= f["old_confidence"] <= 1 and 0.5 <= f["new_confidence"] <= 1
    saved = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert saved["nfr"] == report.nfr and saved["flips_file"] == FLIPS_FILE
    assert any("NFR" in line for line in report.summary_lines())


def test_same_names_in_another_order_are_remapped(tmp_path):
    from bortify.compare import CompareArguments, compare
    from bortify.finetuning.arguments import FinetuneDataArguments

    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "old_swapped")
    report = compare(CompareArguments(old_model=paths["old"], new_model=paths["old_swapped"],
                                      output_dir=str(tmp_path / "cmp")),
                     FinetuneDataArguments(train_file=files["train"], dev_file=files["dev"], test_file=files["test"]))
    # without the re-mapping by name every prediction would be read as the other class
    assert report.labels == ["fresh", "rotten"] and report.remapped == ["old"]  # csv labels: sorted names
    assert report.nfr == 0 and report.pfr == 0 and report.disagreement == 0
    assert report.old == report.new


def test_gate_fails_with_exit_code_3_naming_the_flips_file(tmp_path, monkeypatch, capsys):
    from bortify.cli import main

    values = compare_setup("old", "new")(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["compare", values["old"], values["new"], "--output_dir", str(tmp_path / "cmp"),
            *[a.format(**values) for a in DATA]]
    assert main([*argv, "--max_nfr", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "release gate NFR <= 1: passed" in out
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert report["nfr"] > 0, "the tiny random models must disagree for this test to mean anything"
    rc = main([*argv, "--max_nfr", "0", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "release gate failed" in err and str(tmp_path / "cmp" / "negative_flips.jsonl") in err
    assert "Traceback" not in err


CASES = [
    Case("no-new-model", ["compare", "--output_dir", "{root}/cmp", *DATA], r"new model", setup=compare_setup()),
    Case("no-old-model", ["compare", "--new_model", "{new}", "--output_dir", "{root}/cmp", *DATA],
         r"Give the old model.*save_teacher", setup=compare_setup("new")),
    Case("max-nfr-out-of-range", ["compare", "{old}", "{new}", "--output_dir", "{root}/cmp", "--max_nfr", "2", *DATA],
         r"max_nfr is a rate in \[0, 1\]", setup=compare_setup("old", "new")),
    Case("bad-split", ["compare", "{old}", "{new}", "--output_dir", "{root}/cmp", "--split", "train", *DATA],
         r"split must be one of test, dev", setup=compare_setup("old", "new")),
    Case("label-names-differ", ["compare", "{old}", "{other_labels}", "--output_dir", "{root}/cmp", *DATA],
         r"\['rotten', 'fresh'\].*\['neg', 'pos'\].*same label names", setup=compare_setup("old", "other_labels")),
    Case("labels-not-the-tasks", ["compare", "{other_labels}", "{other_labels}", "--output_dir", "{root}/cmp", *DATA],
         r"task's labels are \[.*fresh.*\].*match by name", setup=compare_setup("other_labels")),
    Case("not-a-classifier", ["compare", "{old}", "{mlm}", "--output_dir", "{root}/cmp", *DATA],
         r"not a sequence classifier", setup=compare_setup("old", "mlm")),
    Case("missing-model", ["compare", "{old}", "{root}/nowhere", "--output_dir", "{root}/cmp", *DATA],
         r"Cannot read the config of the new model", setup=compare_setup("old")),
    Case("output-inside-input", ["compare", "{old}", "{new}", "--output_dir", "{new}/cmp", *DATA],
         r"is inside the input new model", setup=compare_setup("old", "new")),
    Case("finished-output", ["compare", "{old}", "{new}", "--output_dir", "{root}/cmp", *DATA],
         r"already holds results.*--overwrite",
         setup=lambda root: {**compare_setup("old", "new")(root), **_finished(root / "cmp")}),
    # the output contract (bortify.outputs): a user's own flips file is never replaced, even with --overwrite
    Case("users-own-flips-file", ["compare", "{old}", "{new}", "--output_dir", "{root}/cmp", "--overwrite", *DATA],
         r"cmp is not an output of `bortify compare`: it holds negative_flips\.jsonl but no \.bortify-output\.json",
         setup=lambda root: {**compare_setup("old", "new")(root), **_users_flips(root / "cmp")}),
    Case("users-notes-beside-a-comparison", ["compare", "{old}", "{new}", "--output_dir", "{root}/cmp", "--overwrite",
                                             *DATA], r"is not an output of `bortify compare` \(it holds notes\.md\)",
         setup=lambda root: {**compare_setup("old", "new")(root), **_finished(root / "cmp", notes=True)}),
    Case("output-is-another-stages", ["compare", "{old}", "{new}", "--output_dir", "{root}/bench", "--overwrite",
                                      *DATA], r"holds the output of `bortify bench`.*even with --overwrite",
         setup=lambda root: {**compare_setup("old", "new")(root), **_finished(root / "bench", stage="bench")}),
]


def _users_flips(out: Path) -> dict:
    out.mkdir()
    (out / "negative_flips.jsonl").write_text('{"my": "own hand-labelled flips"}\n')
    return {}


def _finished(out: Path, notes: bool = False, stage: str | None = None) -> dict:
    out.mkdir()
    (out / "report.json").write_text('{"nfr": 0.5}\n')
    if notes:
        (out / "notes.md").write_text("my notes on this comparison\n")
    if stage:
        (out / ".bortify-output.json").write_text(json.dumps({"stage": stage, "files": ["report.json"]}))
    return {}


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    import bortify.finetuning.trainer as trainer

    def no_inference(*a, **k):
        raise AssertionError("predicted before the error")

    monkeypatch.setattr(trainer, "predict", no_inference)  # every error comes before any inference
    run_case(case, tmp_path, monkeypatch, capsys)


def _recipe(root: Path, values: dict, max_nfr: float) -> Path:
    import yaml

    recipe = {"compare": {"old_model": values["old"], "new_model": values["new"], "train_file": values["train"],
                          "dev_file": values["dev"], "test_file": values["test"], "max_nfr": max_nfr},
              "card": {"model_dir": values["new"], "measure_latency": False, "model_name": "tiny"}}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_gate_stops_before_the_card_and_names_the_flips_file(tmp_path, monkeypatch, capsys):
    from bortify.pipeline import main

    values = compare_setup("old", "new")(tmp_path)
    rc = main([str(_recipe(tmp_path, values, 0.0)), "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 3
    assert "release gate failed" in err and str(tmp_path / "run" / "compare" / "negative_flips.jsonl") in err
    assert not (tmp_path / "run" / "card").exists()  # the card (and push) never ran
    assert not (tmp_path / "run" / "compare" / "stage_done.json").exists()  # a re-run redoes the comparison


def test_run_gate_passes_and_the_card_states_the_nfr(tmp_path, capsys):
    from bortify.pipeline import main

    values = compare_setup("old", "new")(tmp_path)
    assert main([str(_recipe(tmp_path, values, 1.0)), "--output_dir", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "compare" / "report.json").read_text())
    card = (tmp_path / "run" / "card" / "README.md").read_text()
    line = next(x for x in card.splitlines() if x.startswith("Negative flip rate against the model"))
    assert f"**{report['nfr']:.4f}**" in line and "release gate NFR <= 1: passed" in line
    assert str(tmp_path) not in card  # the old model is a local path: the card names no local path


@pytest.mark.slow
def test_real_models_compare_on_rotten_tomatoes(tmp_path, minilm_path, splade_path):
    """Real packaged models: MiniLM and splade-tiny, each fine-tuned briefly on the embedded sentiment task, saved,
    then compared by the command on 300 test rows."""
    from bortify.cli import main
    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import fit, load_classifier, tokenize

    task = prepare_task("embedded:rotten-tomatoes", max_train_samples=200, max_test_samples=300)
    theta = {"learning_rate": 1e-4, "weight_decay": 0.0, "warmup_ratio": 0.1, "batch_size": 16}
    for name, path in (("old", minilm_path), ("new", splade_path)):
        model0, tok = load_classifier(path, task.label_names, False)
        model = fit(model0, tok, tokenize(task.train, tok, ["text"], 40), theta, epochs=1, seed=0)
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    rc = main(["compare", str(tmp_path / "old"), str(tmp_path / "new"), "--output_dir", str(tmp_path / "cmp"),
               "--max_train_samples", "200", "--max_test_samples", "300", "--max_length", "40", "--max_nfr", "1"])
    assert rc == 0
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert report["rows"] == 300 and report["labels"] == ["rotten", "fresh"] and report["passed"] is True
    assert report["new"]["accuracy"] - report["old"]["accuracy"] == pytest.approx(report["pfr"] - report["nfr"])
    flips = (tmp_path / "cmp" / "negative_flips.jsonl").read_text().splitlines()
    assert len(flips) == report["negative_flips"]


def test_demo_recipe_compare_section_parses_and_keeps_the_teacher():
    from bortify.compare import CompareArguments
    from bortify.finetuning.arguments import FinetuneDataArguments
    from bortify.recipes import args_from_dict, load_recipe

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "demo.yaml")
    args, _ = args_from_dict((CompareArguments, FinetuneDataArguments), {**recipe["compare"], "output_dir": "o"})
    assert args.old_model is None and 0 < args.max_nfr < 1  # old model: the teacher the finetune stage keeps
    assert recipe["finetune"]["save_teacher"] is True
    names = [s for s in recipe if s in ("finetune", "compress", "compare", "card", "push")]
    assert names.index("compare") > names.index("finetune") and names.index("compare") < names.index("card")
