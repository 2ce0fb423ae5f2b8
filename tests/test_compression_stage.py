"""`bortify compress DIR` (bortify.compression.compress): the stage end to end on a tiny task model, its bad-input
case table, the offline bundle's format checks, and the card/push side (onnx/ shipped, sizes on the card)."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from casetable import Case, run_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = "a an the great awful film good bad movie number was is wonderful dull plot acting and of cat dog".split()
MODELS: dict[str, Path] = {}


def _tokenizer():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ly"] + [str(i) for i in range(100)]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}), len(vocab)


def _rows(n):
    return [{"text": f"{'a great' if i % 2 else 'an awful'} film number {i % 100} {WORDS[i % len(WORDS)]}s",
             "label": "fresh" if i % 2 else "rotten"} for i in range(n)]


@pytest.fixture(scope="module", autouse=True)
def tiny_models(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    root = tmp_path_factory.mktemp("compress-models")
    tok, n = _tokenizer()
    cfg = dict(vocab_size=n, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64)
    data = root / "data.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(_rows(200))
    torch.manual_seed(0)
    labels = {"id2label": {0: "fresh", 1: "rotten"}, "label2id": {"fresh": 0, "rotten": 1}}
    task = root / "task"
    BertForSequenceClassification(BertConfig(**cfg, **labels)).save_pretrained(task)
    tok.save_pretrained(task)
    # as `bortify run` records the finetune stage: its recipe section names the data
    (task / "stage_done.json").write_text(json.dumps({"recipe_section": {
        "dataset": str(data), "max_test_samples": 30, "max_length": 24, "seed": 1}}))
    BertForMaskedLM(BertConfig(**cfg)).save_pretrained(root / "mlm")
    tok.save_pretrained(root / "mlm")
    MODELS.update(task=task, mlm=root / "mlm", data=data)
    yield
    MODELS.clear()


def copy_model(root: Path, name="task", dest="model") -> str:
    shutil.copytree(MODELS[name], root / dest)
    return str(root / dest)


FAST = ["--latency_seconds", "0.05", "--eval_batch_size", "16"]


def test_compress_writes_every_form_scores_them_and_reruns_safely(tmp_path, capsys):
    from bortify.cli import main
    from bortify.reports import CompressReport, read_report

    model = copy_model(tmp_path)
    out = tmp_path / "compress"
    assert main(["compress", model, "--output_dir", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "8-bit weights (per tensor)" in printed and "onnx_int8: test accuracy" in printed
    for name in ("model.q8.safetensors", "config.json", "tokenizer.json", "onnx/model.onnx",
                 "onnx/model_quantized.onnx", "bundle/bundle.json", "bundle/model.q8.safetensors.xz",
                 "bundle/tokenizer/vocab.phash", "report.json"):
        assert (out / name).is_file(), name
    assert not (out / "bundle" / "tokenizer.json").exists() and not (out / "bundle" / "vocab.txt").exists()
    report = read_report(out, CompressReport)
    assert 10 <= report.test_rows <= 30 and report.metric == "accuracy" and report.dataset
    assert set(report.forms) == {"fp32", "q8", "onnx_fp32", "onnx_int8", "bundle"}
    assert report.forms["onnx_fp32"]["max_logit_diff"] < 1e-4  # the fp32 export computes the same function
    assert report.forms["bundle"]["agreement"] >= 0.9 and report.forms["q8"]["agreement"] >= 0.9
    assert report.ratio("q8") > 2 and report.sizes["fp32_parts"]["tokenizer"] > 0
    assert set(report.sizes["q8_parts"]) == {"embeddings", "encoder", "head"}
    assert set(report.latency["seconds"]) == {"torch_fp32", "onnx_fp32", "onnx_int8"}
    assert all(v > 0 for v in report.latency["seconds"].values())
    before = (out / "report.json").read_bytes()
    assert main(["compress", model, "--output_dir", str(out), *FAST]) == 2  # a finished output needs --overwrite
    assert "--overwrite" in capsys.readouterr().err and (out / "report.json").read_bytes() == before
    assert main(["compress", model, "--output_dir", str(out), "--overwrite", "--no_onnx", "--no_bundle",
                 "--latency_seconds", "0"]) == 0
    assert not (out / "onnx").exists() and not (out / "bundle").exists()
    assert read_report(out, CompressReport).latency is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".compress")]  # no temp folders left
    assert json.loads((out / ".bortify-output.json").read_text())["stage"] == "compress"


def test_the_report_names_the_task_when_there_is_no_run_record(tmp_path):
    """A standalone `bortify finetune` leaves only report.json: its dataset, seed and sizes reload the split."""
    from bortify.compression.arguments import CompressArguments
    from bortify.compression.compress import CompressError, recorded_data_options

    model = Path(copy_model(tmp_path))
    (model / "stage_done.json").unlink()
    with pytest.raises(CompressError, match="has no report.json: its test split is unknown.*--dataset"):
        from bortify.compression.compress import load_test_split

        load_test_split(model, CompressArguments(model_dir=str(model), output_dir=str(tmp_path / "o")))
    from bortify.reports import FinetuneReport

    report = FinetuneReport.make({"dataset": "embedded:rotten-tomatoes", "task": "rotten-tomatoes",
                                  "text_columns": ["text"], "splits": {"seed": 7, "max_samples": {"test": 50}}})
    assert recorded_data_options(model, report) == {"dataset": "embedded:rotten-tomatoes", "task": "rotten-tomatoes",
                                                    "text_columns": ["text"], "split_seed": 7, "max_test_samples": 50}
    local = FinetuneReport.make({"dataset": "data.csv", "splits": {"files": {"train": ["data.csv"]}}})
    with pytest.raises(CompressError, match="local files.*pass --dataset PATH"):
        recorded_data_options(model, local)


def _setup_mlm(root):
    return {"model": copy_model(root, "mlm")}


def _setup_task(root):
    return {"model": copy_model(root)}


def _setup_foreign_output(root):
    (root / "out").mkdir()
    (root / "out" / "notes.txt").write_text("mine")
    return {"model": copy_model(root)}


def _setup_no_weights(root):
    model = copy_model(root)
    (Path(model) / "model.safetensors").unlink()
    return {"model": model}


def _setup_other_labels(root):
    model = copy_model(root)
    cfg = json.loads((Path(model) / "config.json").read_text())
    cfg["id2label"] = {"0": "neg", "1": "pos"}
    (Path(model) / "config.json").write_text(json.dumps(cfg))
    return {"model": model}


CASES = [
    Case("missing-model", ["compress", "{root}/nope", "--output_dir", "{root}/out"], r"nope does not exist.*bortify finetune"),
    Case("no-weights", ["compress", "{model}", "--output_dir", "{root}/out"], r"not a saved checkpoint.*model.safetensors",
         setup=_setup_no_weights),
    Case("not-a-task-model", ["compress", "{model}", "--output_dir", "{root}/out"],
         r"BertForMaskedLM.*not a task model.*bortify finetune", setup=_setup_mlm),
    Case("output-inside-input", ["compress", "{model}", "--output_dir", "{model}/compressed"],
         r"is inside the input model.*directory of its own", setup=_setup_task),
    Case("foreign-output-overwrite", ["compress", "{model}", "--output_dir", "{root}/out", "--overwrite"],
         r"is not an output of `bortify compress` \(it holds notes\.txt\).*even with --overwrite",
         setup=_setup_foreign_output),
    Case("output-is-the-finetune-output", ["compress", "{model}", "--output_dir", "{model}", "--overwrite"],
         r"is the input model.*never replaces an input", setup=_setup_task),
    Case("bad-onnx-type", ["compress", "{model}", "--output_dir", "{root}/out", "--onnx_weight_type", "int4"],
         r"onnx_weight_type must be one of qint8, quint8", setup=_setup_task),
    Case("negative-zero-threshold", ["compress", "{model}", "--output_dir", "{root}/out", "--zero_threshold", "-1"],
         r"zero_threshold must be >= 0", setup=_setup_task),
    Case("labels-of-another-task", ["compress", "{model}", "--output_dir", "{root}/out", *FAST],
         r"labels \['neg', 'pos'\] are not the task's \['fresh', 'rotten'\].*--dataset", setup=_setup_other_labels),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path, monkeypatch, capsys)
    assert not (tmp_path / "out" / "report.json").exists()


def test_bundle_checks_its_files_and_refuses_an_mlm(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    from bortify.compression.bundle import BundleError, OfflineBundle, write_bundle

    model = AutoModelForSequenceClassification.from_pretrained(MODELS["task"]).eval()
    write_bundle(model, MODELS["task"], tmp_path / "b", coding="none", max_length=24)
    bundle = OfflineBundle.load(tmp_path / "b")
    texts = [r["text"] for r in _rows(20)]
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(MODELS["task"])(texts, padding=True, truncation=True, max_length=24,
                                                          return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits.numpy()
    assert np.abs(bundle.logits(texts) - expected).max() < 0.05  # rows reordered, 8-bit weights: same function
    assert bundle.predict(texts[:2]) == [model.config.id2label[int(i)] for i in expected[:2].argmax(-1)]
    (tmp_path / "b" / "model.q8.safetensors").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="changed since the bundle was written"):
        OfflineBundle.load(tmp_path / "b")
    with pytest.raises(BundleError, match="not an offline bundle"):
        OfflineBundle.load(tmp_path)
    with pytest.raises(BundleError, match="output embedding.*task model"):
        write_bundle(AutoModelForMaskedLM.from_pretrained(MODELS["mlm"]), MODELS["mlm"], tmp_path / "m")


def test_the_card_ships_onnx_and_states_the_compressed_sizes(tmp_path):
    from bortify.compression.arguments import CompressArguments
    from bortify.compression.compress import compress
    from bortify.hub.card import CardOptions
    from bortify.hub.card_stage import CardArguments, build_release
    from bortify.outputs import inspect
    from bortify.hub.push import release_files
    from bortify.reports import FinetuneReport, write_report

    model = Path(copy_model(tmp_path))
    write_report(model, FinetuneReport.make({"dataset": str(MODELS["data"]), "labels": ["fresh", "rotten"],
                                             "metric": "accuracy", "test": {"accuracy": 0.5}}))
    compress(CompressArguments(model_dir=str(model), output_dir=str(tmp_path / "compress"), bundle=False,
                               latency_seconds=0.05))
    build_release(CardArguments(output_dir=str(tmp_path / "card"), finetune_dir=str(model),
                                compress_dir=str(tmp_path / "compress")), CardOptions(measure_latency=False))
    card = tmp_path / "card"
    assert (card / "onnx" / "model.onnx").is_file() and (card / "onnx" / "model_quantized.onnx").is_file()
    readme = (card / "README.md").read_text()
    assert "## Smaller and offline" in readme and "onnx/model_quantized.onnx" in readme and "8-bit weights" in readme
    assert inspect("card", card).state == "finished"  # the card may replace it again
    keep, _ = release_files(card)
    assert {"onnx/model.onnx", "onnx/model_quantized.onnx"} <= set(keep)  # push uploads them
    build_release(CardArguments(output_dir=str(tmp_path / "card2"), finetune_dir=str(model)),
                  CardOptions(measure_latency=False))
    assert "Smaller and offline" not in (tmp_path / "card2" / "README.md").read_text()


def test_run_wires_compress_from_finetune_and_card_from_compress(tmp_path):
    from bortify import pipeline
    from bortify.stages import BY_NAME

    outputs = {"finetune": "R/finetune", "compress": "R/compress"}
    config = pipeline.stage_config(BY_NAME["compress"], {"compress": {"bundle": False}}, outputs, tmp_path)
    assert config == {"bundle": False, "model_dir": "R/finetune", "output_dir": str(tmp_path / "compress")}
    card = pipeline.stage_config(BY_NAME["card"], {"card": {}}, outputs, tmp_path)
    assert card["compress_dir"] == "R/compress"
