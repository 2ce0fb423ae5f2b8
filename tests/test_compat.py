"""Backward-compatible embeddings (bortify.compatible_embeddings, docs/methods/04-updates.md §4): losses, BCT's compatibility test and the
sentence-transformers folder writer, on tiny models and hand-computed cases."""

import json
import math

import pytest
import torch
from torch import nn

from bortify.compatible_embeddings.losses import compatibility_loss, influence_loss, mean_pool
from bortify.compatible_embeddings.metric import (compatibility_table, criterion_met, knn_accuracy, knn_predict, recall_at_k,
                                   run_compatibility_test, split_gallery_queries)
from bortify.compatible_embeddings.sentence import (SentenceFolderError, SentenceSpec, copy_sentence_folder, read_sentence_folder,
                                     sentence_embedding, write_sentence_folder)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- losses --------------------------------------------------------------------------------------------------

def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.allclose(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))
    assert torch.allclose(mean_pool(hidden, torch.tensor([[0, 0, 0]])), torch.zeros(1, 2))  # no NaN


def test_compatibility_loss_cosine_and_mse_by_hand():
    new = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    old = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # cosines 1 and 0 -> mean(1 - cos) = 0.5; scale-free
    assert compatibility_loss(new, old, "cosine").item() == pytest.approx(0.5)
    assert compatibility_loss(new * 7, old, "cosine").item() == pytest.approx(0.5)
    # squared errors (0, 0) and (1, 4) over 4 entries -> 1.25
    assert compatibility_loss(new, old, "mse").item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="project"):
        compatibility_loss(torch.zeros(2, 3), old)
    with pytest.raises(ValueError, match="cosine"):
        compatibility_loss(new, old, "l1")


def test_compatibility_loss_trains_only_the_new_side():
    new = torch.randn(4, 3, requires_grad=True)
    old = torch.randn(4, 3, requires_grad=True)
    compatibility_loss(new, old).backward()
    assert new.grad is not None and new.grad.abs().sum() > 0
    assert old.grad is None


def test_influence_loss_is_ce_through_the_frozen_old_classifier():
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    emb = torch.tensor([[2.0, 0.0], [0.0, 0.0]], requires_grad=True)
    with pytest.raises(ValueError, match="frozen"):
        influence_loss(emb, head, torch.tensor([0, 1]))
    head.requires_grad_(False)
    loss = influence_loss(emb, head, torch.tensor([0, 1]))
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert emb.grad.abs().sum() > 0 and head.weight.grad is None


# ---- BCT's compatibility test --------------------------------------------------------------------------------

def _toy():
    gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    g_labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    q_labels = torch.tensor([0, 1])
    return query, q_labels, gallery, g_labels


def test_knn_and_recall_by_hand():
    query, q_labels, gallery, g_labels = _toy()
    assert knn_predict(query, gallery, g_labels, 3).tolist() == [0, 1]
    assert knn_accuracy(query, q_labels, gallery, g_labels, 3) == 1.0
    assert knn_accuracy(query, 1 - q_labels, gallery, g_labels, 3) == 0.0
    assert recall_at_k(query, q_labels, gallery, g_labels, 1) == 1.0
    # recall@3 of the wrong labels: the 3 nearest always include one item of the other class
    assert recall_at_k(query, 1 - q_labels, gallery, g_labels, 3) == 1.0
    assert recall_at_k(query, 1 - q_labels, gallery, g_labels, 2) == 0.0


def test_knn_tie_broken_by_similarity():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # one vote each; the query is nearer to label 1's item
    assert knn_predict(torch.tensor([[0.2, 1.0]]), gallery, torch.tensor([0, 1]), 2).tolist() == [1]
    assert knn_predict(torch.tensor([[1.0, 0.2]]), gallery, torch.tensor([0, 1]), 2).tolist() == [0]


def test_compatibility_table_rotated_space_fails_and_same_space_passes():
    query, q_labels, gallery, g_labels = _toy()
    rotate = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # a new model in another space: swaps the axes
    table = compatibility_table(query @ rotate, query, q_labels, gallery, gallery @ rotate, g_labels, knn_k=3,
                                recall_ks=(1,))
    assert table["old_old"]["knn_accuracy"] == 1.0 and table["new_new"]["knn_accuracy"] == 1.0
    assert table["new_old"]["knn_accuracy"] == 0.0 and not criterion_met(table)
    same = compatibility_table(query, query, q_labels, gallery, gallery, g_labels, knn_k=3, recall_ks=(1,))
    assert criterion_met(same)
    with pytest.raises(ValueError, match="width"):
        knn_accuracy(torch.zeros(1, 3), q_labels[:1], gallery, g_labels)


def test_split_is_disjoint_and_seeded():
    texts = [f"t{i}" for i in range(20)]
    a = split_gallery_queries(texts, [i % 2 for i in range(20)], gallery_size=12, query_size=5, seed=1)
    b = split_gallery_queries(texts, [i % 2 for i in range(20)], gallery_size=12, query_size=5, seed=1)
    assert a.query_texts == b.query_texts and len(a.query_texts) == 5 and len(a.gallery_texts) == 12
    assert not set(a.query_texts) & set(a.gallery_texts)
    assert [int(t[1:]) % 2 for t in a.query_texts] == a.query_labels.tolist()


def test_run_compatibility_test_with_a_baseline_of_another_width():
    words = {"good": [1.0, 0.0], "bad": [0.0, 1.0]}
    texts = [f"{w} {i}" for i in range(10) for w in words]
    labels = [0 if t.startswith("good") else 1 for t in texts]

    def old(batch):
        return torch.tensor([words[t.split()[0]] for t in batch])

    def new(batch):  # the same space, scaled: compatible
        return 3 * old(batch)

    def baseline(batch):  # another width: cannot query the old index
        return torch.cat([old(batch), old(batch)], dim=1)

    split = split_gallery_queries(texts, labels, 10, 6, seed=0)
    result = run_compatibility_test(old, new, split, knn_k=3, recall_ks=(1, 5), baseline=baseline)
    assert result["criterion_met"] and result["new_old"]["knn_accuracy"] == 1.0
    assert result["mean_cosine_new_old"] == pytest.approx(1.0)
    assert result["baseline"]["new_old"]["knn_accuracy"] is None  # not measurable: null in report.json
    assert result["baseline"]["new_new"]["recall@1"] == 1.0


# ---- sentence-transformers folders ---------------------------------------------------------------------------

def test_sentence_embedding_is_pool_dense_normalize():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    dense = nn.Linear(2, 3)
    out = sentence_embedding(hidden, torch.tensor([[1, 1]]), SentenceSpec("mean", True), dense)
    expected = torch.nn.functional.normalize(dense(torch.tensor([[2.0, 3.0]])), dim=-1)
    assert torch.allclose(out, expected)
    assert torch.allclose(sentence_embedding(hidden, None, SentenceSpec("cls", False)), hidden[:, 0])


def test_write_then_read_sentence_folder(tmp_path):
    dense = nn.Linear(4, 6)
    files = write_sentence_folder(tmp_path, hidden_size=4, spec=SentenceSpec("mean", True, 64), projection=dense)
    assert files[-1] == "modules.json"
    mods = json.loads((tmp_path / "modules.json").read_text())
    assert [m["path"] for m in mods] == ["", "1_Pooling", "2_Dense", "3_Normalize"]
    assert json.loads((tmp_path / "1_Pooling/config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert json.loads((tmp_path / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    encoder, spec, proj = read_sentence_folder(tmp_path)
    assert (encoder, spec) == ("", SentenceSpec("mean", True, 64))
    assert torch.equal(proj.weight, dense.weight) and torch.equal(proj.bias, dense.bias)
    assert read_sentence_folder(tmp_path / "nothing") is None


def test_read_refuses_unknown_modules_and_pooling(tmp_path):
    write_sentence_folder(tmp_path, hidden_size=4, spec=SentenceSpec("cls", False))
    (tmp_path / "1_Pooling/config.json").write_text(json.dumps({"pooling_mode": "lasttoken"}))
    with pytest.raises(SentenceFolderError, match="lasttoken"):
        read_sentence_folder(tmp_path)
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.LSTM", "path": ""}]))
    with pytest.raises(SentenceFolderError, match="LSTM"):
        read_sentence_folder(tmp_path)


def test_copy_into_release_puts_encoder_in_subfolder(tmp_path, tiny_bert_config):
    from transformers import BertModel

    src, dst = tmp_path / "pretrain", tmp_path / "release"
    BertModel(tiny_bert_config, add_pooling_layer=False).save_pretrained(src)
    write_sentence_folder(src, hidden_size=32, spec=SentenceSpec(), projection=nn.Linear(32, 8))
    copied = copy_sentence_folder(src, dst, ["config.json", "model.safetensors"])
    assert "0_Transformer/model.safetensors" in copied and "2_Dense/model.safetensors" in copied
    encoder, spec, proj = read_sentence_folder(dst)
    assert encoder == "0_Transformer" and proj.out_features == 8
    assert (dst / "0_Transformer/sentence_bert_config.json").is_file()
    assert copy_sentence_folder(tmp_path / "empty", dst, []) == []


def test_dense_weights_use_sentence_transformers_key_names(tmp_path):
    from safetensors.torch import load_file

    write_sentence_folder(tmp_path, hidden_size=4, spec=SentenceSpec(), projection=nn.Linear(4, 2))
    assert set(load_file(tmp_path / "2_Dense/model.safetensors")) == {"linear.weight", "linear.bias"}


def test_least_squares_projection_recovers_a_linear_map():
    from bortify.compatible_embeddings.losses import least_squares_projection

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    w_true, b_true = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    w, b = least_squares_projection(x, x @ w_true.T + b_true, ridge=0.0)
    assert torch.allclose(w, w_true, atol=1e-4) and torch.allclose(b, b_true, atol=1e-4)
    w_r, _ = least_squares_projection(x, x @ w_true.T + b_true, ridge=10.0)
    assert w_r.norm() < w.norm()  # the ridge shrinks
    with pytest.raises(ValueError, match="same number"):
        least_squares_projection(x, x[:5])
