"""The release folder of a student trained with --compatible_with (docs/methods/04-updates.md §4): the card stage copies the
pretrained student's sentence-transformers files (encoder in 0_Transformer/ when the root holds the fine-tuned
model), renders the compatibility figures, the folder stays replaceable, and push uploads every file of it."""

import json

import pytest
import torch
from torch import nn

from bortify.compatible_embeddings.sentence import SentenceSpec, read_sentence_folder, write_sentence_folder
from bortify.reports import PretrainReport, write_report

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMPAT = {"old_model": "embedded:all-MiniLM-L6-v2", "pooling": "mean", "normalized": True, "projection": [32, 8],
          "loss": "cosine", "w_compat": 1.0, "train_texts": 100, "eval_dataset": "embedded:rotten-tomatoes",
          "gallery": 50, "queries": 20, "knn_k": 10, "new_old": {"knn_accuracy": 0.61, "recall@1": 0.55},
          "old_old": {"knn_accuracy": 0.66, "recall@1": 0.6}, "new_new": {"knn_accuracy": 0.63, "recall@1": 0.58},
          "criterion_met": False, "baseline": {"new_old": {"knn_accuracy": 0.5}}}


@pytest.fixture
def pretrain_dir(tmp_path, tiny_bert_config, minilm_path):
    from transformers import AutoTokenizer, BertForMaskedLM

    out = tmp_path / "pretrain"
    BertForMaskedLM(tiny_bert_config).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    write_sentence_folder(out, hidden_size=32, spec=SentenceSpec("mean", True, 64), projection=nn.Linear(32, 8))
    write_report(out, PretrainReport.make({"teacher": "embedded:all-MiniLM-L6-v2", "kd_mode": "representation",
                                           "parameters": 1000, "compatibility": COMPAT}))
    return out


@pytest.fixture
def finetune_dir(tmp_path, tiny_bert_config, minilm_path):
    from transformers import AutoTokenizer, BertForSequenceClassification

    out = tmp_path / "finetune"
    BertForSequenceClassification(tiny_bert_config).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out


def _release(out, **dirs):
    from bortify.hub.card import CardOptions
    from bortify.hub.card_stage import CardArguments, build_release

    dirs = {k: v if isinstance(v, bool) else str(v) for k, v in dirs.items()}
    return build_release(CardArguments(output_dir=str(out), **dirs),
                         CardOptions(measure_latency=False))


def test_release_carries_the_pretrained_encoder_and_projection(tmp_path, pretrain_dir, finetune_dir):
    from bortify.outputs import inspect
    from bortify.hub.push import release_files

    out = tmp_path / "card"
    _release(out, pretrain_dir=pretrain_dir, finetune_dir=finetune_dir)
    encoder, spec, proj = read_sentence_folder(out)
    assert encoder == "0_Transformer" and spec == SentenceSpec("mean", True, 64) and proj.out_features == 8
    # the encoder is the pretrained student's, byte for byte, not the fine-tuned one at the root
    assert (out / "0_Transformer/model.safetensors").read_bytes() == (pretrain_dir / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == (finetune_dir / "model.safetensors").read_bytes()
    assert inspect("card", out).state == "finished"  # a release folder the card may replace
    keep, left_out = release_files(out)
    for name in ("modules.json", "1_Pooling/config.json", "2_Dense/model.safetensors", "2_Dense/config.json",
                 "3_Normalize/config.json", "0_Transformer/model.safetensors",
                 "0_Transformer/sentence_bert_config.json",
                 "config_sentence_transformers.json"):
        assert name in keep
    card = (out / "README.md").read_text()
    assert "### Backward-compatible embeddings" in card
    assert "| this model → old model (no re-indexing) | knn accuracy 0.6100, recall@1 0.5500 |" in card
    assert "a student trained without the option → old model | knn accuracy 0.5000" in card
    assert "**not met**" in card
    _release(out, pretrain_dir=pretrain_dir, finetune_dir=finetune_dir, overwrite=True)  # replaceable


def test_release_of_the_student_itself_keeps_the_encoder_at_the_root(tmp_path, pretrain_dir):
    out = tmp_path / "card"
    _release(out, pretrain_dir=pretrain_dir)
    encoder, _, _ = read_sentence_folder(out)
    assert encoder == "" and not (out / "0_Transformer").exists()
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 64


def test_no_compat_section_without_the_option(tmp_path, finetune_dir):
    out = tmp_path / "card"
    _release(out, finetune_dir=finetune_dir)
    assert not (out / "modules.json").exists()
    assert "Backward-compatible" not in (out / "README.md").read_text()


@pytest.mark.slow
def test_release_loads_with_sentence_transformers_as_the_pretrained_student(tmp_path, pretrain_dir, finetune_dir):
    """SentenceTransformer(RELEASE) encodes with the pretrained encoder + projection (not the fine-tuned root), the
    same vectors as SentenceTransformer(PRETRAIN_DIR) and as bortify's own forward."""
    from sentence_transformers import SentenceTransformer

    from bortify.compatible_embeddings.sentence import load_sentence_encoder

    out = tmp_path / "card"
    _release(out, pretrain_dir=pretrain_dir, finetune_dir=finetune_dir)
    texts = ["A gripping, beautifully acted film.", "Dull and far too long."]
    released = torch.as_tensor(SentenceTransformer(str(out), device="cpu").encode(texts))
    student = torch.as_tensor(SentenceTransformer(str(pretrain_dir), device="cpu").encode(texts))
    assert released.shape == (2, 8)
    assert torch.allclose(released, student, atol=1e-5)
    assert torch.allclose(released, load_sentence_encoder(out)(texts), atol=1e-5)


def test_card_says_not_measured_when_the_test_was_skipped():
    from bortify.hub.card import _compat_values

    text = _compat_values(PretrainReport.make({"compatibility": {**COMPAT, "eval_dataset": None, "new_old": {},
                                                                 "old_old": {}, "new_new": {}}}))["compat_text"]
    assert "not measured (`--compat_eval_dataset none`)" in text and "criterion" not in text
    assert _compat_values(PretrainReport.make({}))["compat_text"] == ""
