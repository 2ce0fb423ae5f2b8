"""`bortify finetune --compatible_with OLD` (BCT's influence loss in fine-tuning, docs/methods/04-updates.md §4.4): the pure loss,
the old model's head split off and checked, plain and Agora runs on tiny models, the sentence-transformers files,
the bad-input rows, and one real-model run."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from casetable import Case, run_case
from helpers import COMPARE_MODELS, DATA, compare_setup, copy_compare_models, finetune_cli, write_data

pytestmark = pytest.mark.usefixtures("compare_models", "one_torch_thread")

FAST = ["--learning_rates", "1e-3", "--num_train_epochs", "1", "--batch_sizes", "8", "--max_length", "16"]


# ---- the pure loss ---------------------------------------------------------------------------------------------

def _frozen_linear(d_in, d_out, seed=0):
    torch.manual_seed(seed)
    head = nn.Linear(d_in, d_out)
    return head.requires_grad_(False)


def test_bct_loss_is_ce_plus_weighted_influence_by_hand():
    from bortify.compatible_embeddings.losses import bct_finetune_loss

    new_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    proj = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, 1.0]], requires_grad=True)
    head = _frozen_linear(3, 2)
    y = torch.tensor([0, 1])
    parts = bct_finetune_loss(new_logits, proj, head, labels=y, w_compat=0.5)
    ce = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    old = head(proj)
    infl = -(F.log_softmax(old, -1)[0, 0] + F.log_softmax(old, -1)[1, 1]).item() / 2
    assert parts.ce.item() == pytest.approx(ce, rel=1e-5)
    assert parts.influence.item() == pytest.approx(infl, rel=1e-5)
    assert parts.loss.item() == pytest.approx(ce + 0.5 * infl, rel=1e-5)
    parts.loss.backward()
    assert proj.grad.abs().sum() > 0 and new_logits.grad.abs().sum() > 0  # the new side learns
    assert all(p.grad is None for p in head.parameters())  # w_old does not


def test_bct_loss_soft_targets_equal_one_hot_labels_and_w_zero_is_plain_ce():
    from bortify.compatible_embeddings.losses import bct_finetune_loss

    torch.manual_seed(1)
    logits, proj, head = torch.randn(4, 3), torch.randn(4, 5), _frozen_linear(5, 3)
    y = torch.tensor([0, 2, 1, 2])
    hard = bct_finetune_loss(logits, proj, head, labels=y, w_compat=2.0)
    soft = bct_finetune_loss(logits, proj, head, soft_targets=F.one_hot(y, 3).float(), w_compat=2.0)
    assert hard.loss.item() == pytest.approx(soft.loss.item(), rel=1e-6)
    plain = bct_finetune_loss(logits, proj, head, labels=y, w_compat=0.0)
    assert plain.loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_distill_influence_uses_gold_labels_where_given_and_the_teacher_elsewhere_by_hand():
    from bortify.compatible_embeddings.losses import distill_influence_loss

    proj = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, 1.0], [0.3, 0.1, -0.2]], requires_grad=True)
    head = _frozen_linear(3, 2)
    teacher = torch.tensor([[0.0, 3.0], [1.0, -1.0], [2.0, 0.5]])
    labels = torch.tensor([0, -100, 1])  # rows 0 and 2 gold, row 1 unlabelled (a transfer-set row)
    loss = distill_influence_loss(proj, head, labels, teacher)
    log_p = F.log_softmax(head(proj), -1)
    soft = F.softmax(teacher[1], -1)  # the teacher at temperature 1, for the unlabelled row only
    want = -(log_p[0, 0] + (soft * log_p[1]).sum() + log_p[2, 1]) / 3  # the gold rows ignore the teacher
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert proj.grad.abs().sum() > 0 and all(p.grad is None for p in head.parameters())
    none_gold = distill_influence_loss(proj, head, torch.full((3,), -100), teacher)
    assert none_gold.item() == pytest.approx(-(F.softmax(teacher, -1) * log_p).sum(-1).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="frozen"):
        distill_influence_loss(proj, nn.Linear(3, 2), labels, teacher)
    with pytest.raises(ValueError, match="same label set"):
        distill_influence_loss(proj, head, labels, torch.zeros(3, 3))


def test_bct_loss_refuses_a_trainable_old_head_and_other_label_sets():
    from bortify.compatible_embeddings.losses import bct_finetune_loss

    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="frozen"):
        bct_finetune_loss(torch.randn(2, 2), torch.randn(2, 3), nn.Linear(3, 2), labels=y)
    with pytest.raises(ValueError, match="same label set"):
        bct_finetune_loss(torch.randn(2, 2), torch.randn(2, 3), _frozen_linear(3, 4), labels=y)
    with pytest.raises(ValueError, match="exactly one"):
        bct_finetune_loss(torch.randn(2, 2), torch.randn(2, 3), _frozen_linear(3, 2))


# ---- the old model's head -----------------------------------------------------------------------------------

def _load(name):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = COMPARE_MODELS[name]
    return AutoModelForSequenceClassification.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


TEXTS = ["a great film", "the plot was dull", "bad movie", "good good 7"]


def test_old_head_reproduces_the_old_logits_in_task_order():
    from bortify.finetuning.compatible import find_old_head

    model, tok = _load("old")
    head = find_old_head(model, tok, [0, 1], TEXTS, "old")
    assert head.kind == "pooler+classifier" and not any(p.requires_grad for p in head.parameters())
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        emb = model.base_model(**batch).last_hidden_state[:, 0]
        torch.testing.assert_close(head(emb), model(**batch).logits)
    # the same classifier stored with its classes in the other order: re-mapped to the task's order by name
    swapped, tok2 = _load("old_swapped")
    head2 = find_old_head(swapped, tok2, [1, 0], TEXTS, "old_swapped")
    with torch.no_grad():
        torch.testing.assert_close(head2(emb), model(**batch).logits)
    head.train()
    assert not head.training  # dropout stays off


def test_old_head_that_cannot_be_split_is_refused_by_name():
    from bortify.finetuning.compatible import CompatFinetuneError, find_old_head

    model, tok = _load("old")

    class Shifted(nn.Module):  # a model whose logits are not classifier(pooler(cls)): an extra offset
        def __init__(self, inner):
            super().__init__()
            self.inner, self.classifier = inner, inner.classifier

        @property
        def base_model(self):
            return self.inner.base_model

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = out.logits + 1.0
            return out

    with pytest.raises(CompatFinetuneError, match="cannot split it"):
        find_old_head(Shifted(model), tok, [0, 1], TEXTS, "shifted")


# ---- whole runs on tiny models ------------------------------------------------------------------------------

def test_plain_mode_trains_with_the_influence_loss_and_writes_a_sentence_folder(tmp_path, monkeypatch):
    from bortify.finetuning import compatible as compat_ft
    from bortify.finetuning.compatible import cls_encoder
    from bortify.compatible_embeddings.sentence import load_sentence_encoder

    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    seen = []
    original = compat_ft.bct_finetune_loss

    def spy(*a, **k):
        parts = original(*a, **k)
        seen.append(parts)
        return parts

    monkeypatch.setattr(compat_ft, "bct_finetune_loss", spy)
    out = tmp_path / "out"
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(out), "--mode", "plain",
                      "--compatible_with", paths["old"], "--w_compat", "0.5", "--compat_eval_gallery", "20",
                      "--compat_eval_queries", "10",
                      "--compat_eval_k", "3", *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    assert seen and all(p.influence.item() > 0 for p in seen)  # the loss ran, with the influence term
    report = json.loads((out / "report.json").read_text())
    c = report["compatibility"]
    assert c["old_model"] == paths["old"] and c["w_compat"] == 0.5 and c["loss"] == "influence"
    assert c["pooling"] == "cls" and c["projection"] == [16, 16] and c["old_head"] == "pooler+classifier"
    assert c["train_texts"] == 40 and c["gallery"] == 20 and c["queries"] == 10 and c["knn_k"] == 3
    for row in ("new_old", "old_old", "new_new"):
        assert set(c[row]) == {"knn_accuracy", "recall@1", "recall@5"} and 0 <= c[row]["knn_accuracy"] <= 1
    assert isinstance(c["criterion_met"], bool)
    choice = c["projection_choice"]
    assert choice["chosen"] in ("trained", "refit") and set(choice["dev_new_old"]) == {"trained", "refit"}
    assert (out / "2_Dense" / "model.safetensors").is_file() and (out / "modules.json").is_file()
    # the folder's sentence embedding is the one the loss trained: [CLS] of the fine-tuned encoder through φ
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = load_sentence_encoder(out)
    model, tok = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    torch.testing.assert_close(folder(TEXTS), cls_encoder(model, tok, 16, folder.projection)(TEXTS))
    assert folder.projection.out_features == 16 and folder.spec.pooling == "cls" and not folder.spec.normalize


def test_card_renders_the_compatibility_table_and_ships_the_projection(tmp_path):
    from bortify.cli import main
    from bortify.compatible_embeddings.sentence import load_sentence_encoder

    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    out = tmp_path / "out"
    assert finetune_cli("--model", paths["mlm"], "--output_dir", str(out), "--mode", "plain",
                        "--compatible_with", paths["old"], *[a.format(**files) for a in DATA], *FAST) == 0
    c = json.loads((out / "report.json").read_text())["compatibility"]
    rel = tmp_path / "release"
    assert main(["card", "--finetune_dir", str(out), "--output_dir", str(rel), "--measure_latency", "false"]) == 0
    card = (rel / "README.md").read_text()
    assert "Fine-tuned with `--compatible_with" in card and "BCT's influence loss" in card
    assert "chosen on the dev split by new→old kNN accuracy + recall@1" in card
    assert f"knn accuracy {c['new_old']['knn_accuracy']:.4f}" in card
    assert f"**{'met' if c['criterion_met'] else 'not met'}**" in card
    torch.testing.assert_close(load_sentence_encoder(rel)(TEXTS), load_sentence_encoder(out)(TEXTS))


def test_projection_trains_and_starts_at_the_ridge_solution(tmp_path):
    from bortify.finetuning.compatible import CompatFinetune, CompatSettings, cls_encoder
    from bortify.compatible_embeddings.losses import least_squares_projection
    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import load_classifier, tokenize

    files = write_data(tmp_path)
    task = prepare_task(None, data_files={"train": files["train"], "validation": files["dev"], "test": files["test"]})
    student0, tok = load_classifier(str(COMPARE_MODELS["mlm"]), task.label_names, False)
    compat = CompatFinetune(CompatSettings(str(COMPARE_MODELS["old"])), task, student0, tok, max_length=16)
    texts = list(task.train["text"])
    w, b = least_squares_projection(cls_encoder(student0, tok, 16)(texts), compat.old_encoder(texts))
    torch.testing.assert_close(compat.projection0.weight.detach(), w)
    model = compat.fit(student0, tok, tokenize(task.train, tok, ["text"], 16),
                       {"learning_rate": 1e-2, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 8}, epochs=1)
    trained = compat.projection_of(model)
    assert not torch.allclose(trained.weight, compat.projection0.weight)  # φ is in the optimizer
    assert torch.equal(compat.projection0.weight.detach(), w)  # the start is kept for the next θ


@pytest.mark.parametrize("scores, chosen", [
    ({"trained": (0.7, 0.6), "refit": (0.75, 0.7)}, "refit"),
    ({"trained": (0.7, 0.7), "refit": (0.6, 0.6)}, "trained"),
    ({"trained": (0.78, 0.34), "refit": (0.77, 0.72)}, "refit"),  # a fair 10-NN vote, nearest neighbours below chance
    ({"trained": (0.5, 0.6), "refit": (0.6, 0.5)}, "trained")])  # a tie keeps the trained φ
def test_the_better_projection_on_dev_ships(tmp_path, monkeypatch, scores, chosen):
    from bortify.finetuning import compatible as compat_ft
    from bortify.finetuning.compatible import CompatFinetune, CompatSettings
    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import load_classifier, tokenize

    files = write_data(tmp_path)
    task = prepare_task(None, data_files={"train": files["train"], "validation": files["dev"], "test": files["test"]})
    student0, tok = load_classifier(str(COMPARE_MODELS["mlm"]), task.label_names, False)
    compat = CompatFinetune(CompatSettings(str(COMPARE_MODELS["old"]), gallery=10, queries=5), task, student0, tok,
                            max_length=16)
    model = compat.fit(student0, tok, tokenize(task.train, tok, ["text"], 16),
                       {"learning_rate": 1e-2, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 8}, epochs=1)
    trained, refit = compat.projection_of(model), compat.ridge_projection(model, tok)
    seen = []

    def fake_test(old, new, split, **kw):  # score each candidate by which φ it carries
        seen.append(split.query_texts)
        knn, r1 = scores["trained" if torch.equal(new.projection.weight, trained.weight) else "refit"]
        return {"new_old": {"knn_accuracy": knn, "recall@1": r1}}

    monkeypatch.setattr(compat_ft, "run_compatibility_test", fake_test)
    record = compat.choose_projection(model, tok, seed=0)
    assert record["chosen"] == chosen
    assert record["dev_new_old"] == {k: {"knn_accuracy": v[0], "recall@1": v[1]} for k, v in scores.items()}
    assert len(seen) == 2 and set(seen[0]) <= set(task.dev["text"])  # judged on dev, never on test
    want = trained if chosen == "trained" else refit
    torch.testing.assert_close(compat.projection_of(model).weight, want.weight)


def test_the_refit_is_the_ridge_read_out_of_the_final_encoder(tmp_path):
    from bortify.finetuning.compatible import CompatFinetune, CompatSettings, cls_encoder
    from bortify.compatible_embeddings.losses import least_squares_projection
    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import load_classifier, tokenize

    files = write_data(tmp_path)
    task = prepare_task(None, data_files={"train": files["train"], "validation": files["dev"], "test": files["test"]})
    student0, tok = load_classifier(str(COMPARE_MODELS["mlm"]), task.label_names, False)
    compat = CompatFinetune(CompatSettings(str(COMPARE_MODELS["old"])), task, student0, tok, max_length=16)
    model = compat.fit(student0, tok, tokenize(task.train, tok, ["text"], 16),
                       {"learning_rate": 1e-2, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 8}, epochs=1)
    texts = list(task.train["text"])
    w, b = least_squares_projection(cls_encoder(model, tok, 16)(texts), compat.old_encoder(texts))
    refit = compat.ridge_projection(model, tok)
    torch.testing.assert_close(refit.weight.detach(), w.float())
    torch.testing.assert_close(refit.bias.detach(), b.float())
    assert not torch.allclose(refit.weight, compat.projection0.weight)  # the final encoder, not the initial one


def test_agora_mode_with_compatible_with_runs(tmp_path):
    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(tmp_path / "out"), "--mode", "agora",
                      "--compatible_with", paths["old"], "--labeler", paths["old"], "--labeler_min_dev_score", "0",
                      "--max_rounds", "2", "--k", "2", "--verify_mistakes", "false", "--balance_classes", "false",
                      *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["compatibility"]["new_old"] and (tmp_path / "out" / "2_Dense" / "model.safetensors").is_file()


def test_distill_mode_adds_the_influence_term_and_writes_the_trained_projection(tmp_path, monkeypatch):
    """The product's default mode: task distillation with BCT's influence term (docs/methods/04-updates.md §4.4); the φ the
    loss trained is the one the folder ships and the report's test used."""
    from bortify.finetuning import compatible as compat_ft
    from bortify.finetuning.compatible import cls_encoder
    from bortify.compatible_embeddings.sentence import load_sentence_encoder

    seen = []
    original = compat_ft.distill_influence_loss

    def spy(*a, **k):
        seen.append((a[2] == -100).float().mean().item())  # the share of rows without a gold label
        return original(*a, **k)

    monkeypatch.setattr(compat_ft, "distill_influence_loss", spy)
    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    out = tmp_path / "out"
    rc = finetune_cli("--model", paths["mlm"], "--output_dir", str(out), "--mode", "distill", "--teacher", paths["mlm"],
                      "--compatible_with", paths["old"], "--compat_eval_gallery", "20", "--compat_eval_queries", "10",
                      "--compat_eval_k", "3", "--labeler_epochs", "1", "--labeler_min_dev_score", "0",
                      "--distill_epochs", "1", "--distill_min_examples", "0", "--distill_augment_k", "2",
                      "--distill_batch_size", "8", *[a.format(**files) for a in DATA], *FAST)
    assert rc == 0
    assert seen and max(seen) > 0  # batches with generated (unlabelled) rows went through the influence term
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "distill" and report["distill"]["transfer_set"]["augmented"] > 0
    c = report["compatibility"]
    assert c["loss"] == "influence" and c["old_head"] == "pooler+classifier" and c["queries"] == 10
    assert 0 <= c["new_old"]["knn_accuracy"] <= 1
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = load_sentence_encoder(out)
    model, tok = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    torch.testing.assert_close(folder(TEXTS), cls_encoder(model, tok, 16, folder.projection)(TEXTS))


def test_a_plain_rerun_without_the_option_removes_the_sentence_files(tmp_path):
    files = write_data(tmp_path)
    paths = copy_compare_models(tmp_path, "old", "mlm")
    out = tmp_path / "out"
    args = ["--model", paths["mlm"], "--output_dir", str(out), "--mode", "plain", *[a.format(**files) for a in DATA],
            *FAST]
    assert finetune_cli(*args, "--compatible_with", paths["old"]) == 0
    assert finetune_cli(*args, "--overwrite", "true") == 0
    assert not (out / "modules.json").exists() and not (out / "2_Dense").exists()
    assert json.loads((out / "report.json").read_text())["compatibility"] is None


# ---- bad input ---------------------------------------------------------------------------------------------

def ft(*argv):
    return ["finetune", "--model", "{mlm}", "--output_dir", "{root}/out", "--mode", "plain", *DATA, *FAST, *argv]


CASES = [
    Case("compat-old-without-classifier-head", ft("--compatible_with", "{mlm}"), r"not a sequence classifier",
         setup=compare_setup("mlm")),
    Case("compat-old-other-labels", ft("--compatible_with", "{other_labels}"),
         r"predicts labels \['neg', 'pos'\].*match by name", setup=compare_setup("other_labels", "mlm")),
    Case("compat-with-old-model", ft("--compatible_with", "{old}", "--old_model", "{old}"), r"cannot be combined",
         setup=compare_setup("old", "mlm")),
    Case("compat-old-is-the-output", ["finetune", "--model", "{mlm}", "--output_dir", "{old}", "--mode", "plain",
                                      *DATA, *FAST, "--compatible_with", "{old}"], r"old model",
         setup=compare_setup("old", "mlm")),
    Case("compat-bad-init", ft("--compatible_with", "{old}", "--compat_init", "pca"), r"compat_init must be one of",
         setup=compare_setup("old", "mlm")),
    Case("compat-negative-weight", ft("--compatible_with", "{old}", "--w_compat", "-1"), r"w_compat must be >= 0",
         setup=compare_setup("old", "mlm")),
    Case("compat-missing-old-model", ft("--compatible_with", "{root}/nope"), r"Cannot read the config",
         setup=compare_setup("mlm")),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path, monkeypatch, capsys)


# ---- a real model ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_models_influence_loss(tmp_path, minilm_path, splade_path):
    """splade-tiny fine-tuned with BCT's influence loss against MiniLM fine-tuned on the embedded sentiment task;
    the release folder loads with sentence-transformers and gives the vectors the report's test used."""
    from sentence_transformers import SentenceTransformer

    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import fit, load_classifier, tokenize

    task = prepare_task("embedded:rotten-tomatoes", max_train_samples=200, max_test_samples=200)
    old0, tok = load_classifier(minilm_path, task.label_names, False)
    old = fit(old0, tok, tokenize(task.train, tok, ["text"], 40),
              {"learning_rate": 1e-4, "weight_decay": 0.0, "warmup_ratio": 0.1, "batch_size": 16}, epochs=1, seed=0)
    old.save_pretrained(tmp_path / "old")
    tok.save_pretrained(tmp_path / "old")
    out = tmp_path / "out"
    rc = finetune_cli("--model", splade_path, "--output_dir", str(out), "--mode", "plain",
                      "--compatible_with", str(tmp_path / "old"),
                      "--max_train_samples", "200", "--max_test_samples", "200", "--max_length", "40",
                      "--num_train_epochs", "1", "--learning_rates", "1e-4", "--torch_threads", "2")
    assert rc == 0
    c = json.loads((out / "report.json").read_text())["compatibility"]
    assert c["projection"] == [128, 384] and c["old_head"] == "pooler+classifier" and c["queries"] == 100
    assert 0 <= c["new_old"]["knn_accuracy"] <= 1 and 0 <= c["old_old"]["knn_accuracy"] <= 1
    from bortify.compatible_embeddings.sentence import load_sentence_encoder

    texts = ["a gripping, beautifully shot film", "a dull mess"]
    st = torch.as_tensor(SentenceTransformer(str(out), device="cpu").encode(texts))
    torch.testing.assert_close(st, load_sentence_encoder(out)(texts), atol=1e-5, rtol=1e-4)
    assert st.shape == (2, 384)
