"""Positive-congruent fine-tuning (docs/methods/04-updates.md §4): the focal-distillation loss by hand, the old-model cache
(once per text) and the Trainer subclass on a tiny BERT."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bortify.finetuning.congruent import (FocalDistillation, OldOutputCache, divergence, fit_congruent,
                                          focal_distillation_loss, old_right_flags, with_old_outputs)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_l2_divergence_by_hand():
    new = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    old = torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    assert divergence(new, old, "l2").tolist() == pytest.approx([2.5, 5.0])  # ½(1+4), ½(9+1)


def test_kl_divergence_is_zero_on_equal_logits_and_tends_to_centred_l2_at_high_temperature():
    z = torch.tensor([[0.3, -1.2, 2.0]])
    assert divergence(z, z.clone(), "kl", 2.0).item() == pytest.approx(0.0, abs=1e-6)
    old = torch.tensor([[1.0, 0.0, -1.0]])
    # τ²·KL -> (1/2C)·Σ(d - mean d)² as τ -> ∞ (second-order expansion of the softmax around uniform)
    d = (z - old)[0]
    expected = 0.5 / 3 * ((d - d.mean()) ** 2).sum().item()
    assert divergence(z, old, "kl", 1000.0).item() == pytest.approx(expected, rel=1e-2)


def test_focal_loss_by_hand():
    new = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    labels = torch.tensor([1, 0])
    right = torch.tensor([1.0, 0.0])  # old right on row 0 only
    got = focal_distillation_loss(new, old, right, labels=labels, settings=FocalDistillation(lam=2.0, alpha=1, beta=5))
    ce = F.cross_entropy(new.detach(), labels).item()
    fd = ((1 + 5) * 2.5 + 1 * 5.0) / 2  # [α + β·1(old right)]·D, mean over the batch
    assert got.ce.item() == pytest.approx(ce)
    assert got.fd.item() == pytest.approx(fd)
    assert got.loss.item() == pytest.approx(ce + 2.0 * fd)
    got.loss.backward()
    assert new.grad is not None and old.grad is None


def test_alpha_one_beta_zero_is_plain_distillation_and_soft_one_hot_equals_labels():
    torch.manual_seed(0)
    new, old = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    plain = FocalDistillation(alpha=1.0, beta=0.0)
    a = focal_distillation_loss(new, old, torch.ones(5), labels=labels, settings=plain)
    b = focal_distillation_loss(new, old, torch.zeros(5), labels=labels, settings=plain)
    assert a.loss.item() == pytest.approx(b.loss.item())  # the old-right flag no longer matters
    assert a.fd.item() == pytest.approx(divergence(new, old).mean().item())
    soft = focal_distillation_loss(new, old, torch.ones(5), soft_targets=F.one_hot(labels, 3).float())
    hard = focal_distillation_loss(new, old, torch.ones(5), labels=labels)
    assert soft.loss.item() == pytest.approx(hard.loss.item())


@pytest.mark.parametrize("kwargs, message", [
    ({"divergence": "mse"}, "divergence"), ({"beta": -1.0}, "beta"), ({"temperature": 0.0}, "temperature")])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FocalDistillation(**kwargs)


def test_loss_refuses_mismatched_shapes_and_two_targets():
    with pytest.raises(ValueError, match="same label set"):
        focal_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2), labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="exactly one"):
        focal_distillation_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2))


def test_old_right_flags_generated_rows_get_alpha_only():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    assert old_right_flags(logits, [0, 0, 0]).tolist() == [1.0, 0.0, 1.0]
    assert old_right_flags(logits, [0, 0, 0], gold=[True, True, False]).tolist() == [1.0, 0.0, 0.0]


# ---- the cache and the Trainer on a tiny BERT ---------------------------------------------------------------

WORDS = "a an the great awful film good bad movie was is dull plot".split()


def _tiny(labels=("rotten", "fresh"), seed=0):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [str(i) for i in range(50)]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64,
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    return BertForSequenceClassification(config), tok


def _rows(n):
    return [{"text": f"{'a great' if i % 2 else 'an awful'} film {i % 50}", "label": i % 2} for i in range(n)]


class _Counting:
    """A real TaskClassifier whose logits() calls are counted."""

    def __init__(self, inner):
        self.inner, self.calls, self.id_map = inner, 0, inner.id_map

    def logits(self, split, text_columns, **kw):
        self.calls += len(split)
        return self.inner.logits(split, text_columns, **kw)


def test_cache_runs_the_old_model_once_per_text(tmp_path):
    from bortify.finetuning.old_model import load_task_classifier

    model, tok = _tiny(labels=("fresh", "rotten"))  # the task says (rotten, fresh): re-mapped by name
    model.save_pretrained(tmp_path / "old")
    tok.save_pretrained(tmp_path / "old")
    old = load_task_classifier(str(tmp_path / "old"), ["rotten", "fresh"])
    assert old.id_map == [1, 0] and old.remapped
    counting = _Counting(old)
    cache = OldOutputCache(counting, ["text"], max_length=16)
    rows = _rows(6)
    first = cache.logits_for(rows)
    again = cache.logits_for(rows + rows[:2] + [{"text": "a dull plot", "label": 0}])
    assert counting.calls == 7 and cache.computed == 7  # 6 texts, then only the new one
    assert np.allclose(again[:6], first)
    # columns follow the task's order: the old model's class 0 ("fresh") is the task's class 1
    raw = old.model(**tok(["a great film 1"], return_tensors="pt")).logits.detach().numpy()[0]
    assert np.allclose(cache.logits_for([{"text": "a great film 1"}])[0], raw[::-1], atol=1e-5)


def test_trainer_pulls_the_new_model_towards_the_old_on_old_right_rows(tmp_path):
    import datasets

    from bortify.finetuning.trainer import tokenize

    old, tok = _tiny(seed=1)
    new0, _ = _tiny(seed=2)
    rows = _rows(32)
    ds = datasets.Dataset.from_list(rows)
    train_tok = tokenize(ds, tok, ["text"], 16)
    with torch.no_grad():
        old_logits = old(**tok([r["text"] for r in rows], return_tensors="pt", padding=True)).logits.numpy()
    right = old_right_flags(old_logits, ds["label"])
    train = with_old_outputs(train_tok, old_logits, right)
    assert {"old_logits", "old_right"} <= set(train.column_names)
    theta = {"learning_rate": 1e-2, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 8}

    def distance(model):
        with torch.no_grad():
            z = model(**tok([r["text"] for r in rows], return_tensors="pt", padding=True)).logits
        return divergence(z, torch.tensor(old_logits)).mean().item()

    pulled = fit_congruent(new0, tok, train, theta, FocalDistillation(lam=5.0, alpha=1.0, beta=5.0), epochs=3, seed=0)
    free = fit_congruent(new0, tok, train, theta, FocalDistillation(lam=0.0), epochs=3, seed=0)  # λ = 0: CE only
    assert distance(pulled) < distance(free)
    assert distance(pulled) < distance(new0)


def test_congruent_runs_flags_only_original_train_rows_and_describes_itself(tmp_path):
    import datasets

    from bortify.finetuning.congruent import CongruentRuns
    from bortify.finetuning.tasks import TaskData
    from bortify.finetuning.trainer import tokenize

    model, tok = _tiny(labels=("rotten", "fresh"), seed=3)
    model.save_pretrained(tmp_path / "old")
    tok.save_pretrained(tmp_path / "old")
    train = datasets.Dataset.from_list(_rows(8))
    task = TaskData(name="t", train=train, dev=train, test=train, text_columns=["text"],
                    label_names=["rotten", "fresh"], regression=False, metrics=["accuracy"])
    runs = CongruentRuns(str(tmp_path / "old"), task, FocalDistillation(beta=5.0), max_length=16)
    generated = [{"text": "a dull plot", "label": 0}, {"text": "good movie", "label": 1}]
    rows = [dict(r) for r in train] + generated
    ds = tokenize(datasets.Dataset.from_list(rows), tok, ["text"], 16)
    out = runs.train_set(rows, ds)
    right = np.asarray(out["old_right"])
    old_pred = np.asarray(out["old_logits"]).argmax(1)
    assert right[:8].tolist() == (old_pred[:8] == np.asarray(train["label"])).astype(float).tolist()
    assert right[8:].tolist() == [0.0, 0.0]  # generated rows: α only, whatever the old model says
    info = runs.describe()
    assert info["old_rows_computed"] == 10 and info["beta"] == 5.0 and info["divergence"] == "l2"
    assert info["old_train_accuracy"] == pytest.approx(right[:8].mean())
