"""Teacher selection on dev (bortify/finetuning/teachers.py, docs/methods/07-task-distillation.md §7.2): the candidates (linear probe,
fine-tuning with the source's pooling, LP-FT, the stock classifier, an ensemble) are built on train and the best on
dev teaches. Tiny random encoders; each selection test builds a task where one kind of candidate must win."""

import json

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel, BertTokenizerFast

from bortify.finetuning.labelers import build_labeler
from bortify.finetuning.pooled import (PooledClassifierConfig, PooledEncoderForSequenceClassification, pool,
                                       pooled_classifier, source_pooling)
from bortify.finetuning.tasks import TaskData
from bortify.finetuning.teachers import (BestEpoch, EnsembleModel, TeacherSettings, fit_probe,
                                         head_parameter_groups)

POS = "good great fine nice superb lovely".split()
NEG = "bad awful poor dull weak boring".split()
FILL = "the a film movie plot was is it".split()


def texts_and_labels(n: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(POS if label else NEG, size=2)) + list(rng.choice(FILL, size=3))
        rng.shuffle(words)
        rows.append((" ".join(words) + f" {seed}{i}", label))
    return rows


def binary_task() -> TaskData:
    feature = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})

    def split(n, seed):
        rows = texts_and_labels(n, seed)
        return datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]},
                                          features=feature)
    return TaskData(name="t", train=split(48, 1), dev=split(24, 2), test=split(12, 3), text_columns=["text"],
                    label_names=["neg", "pos"], regression=False, metrics=["accuracy"])


def tiny_encoder(path, *, sentence_transformers: bool, dead_output: bool = False, seed: int = 0):
    """A tiny random BertModel + tokenizer at `path`; with sentence-transformers' files (mean pooling) when asked.
    `dead_output`: the last LayerNorm's weight is 0, so every frozen token state is the same vector (a frozen probe
    learns nothing), while fine-tuning can still move that weight."""
    digits = [str(d) for d in range(10)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POS + NEG + FILL + digits
    path.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    if dead_output:
        with torch.no_grad():
            model.encoder.layer[-1].output.LayerNorm.weight.zero_()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if sentence_transformers:
        (path / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}))
    return str(path)


def settings(**kw):
    base = dict(candidates=("probe", "finetune"), epochs=1, learning_rate=1e-3, head_learning_rate=1e-2,
                batch_size=8, max_length=16, eval_batch_size=32, seed=0)
    return TeacherSettings(**{**base, **kw})


def teacher(task, source, s):
    return build_labeler(task, labeler=None, teacher=source, max_length=s.max_length, seed=s.seed,
                         min_dev_score=-1.0, role="teacher", selection=s)


# --- selection: the candidate that is better on dev teaches ----------------------------------------------------

def test_probe_wins_when_fine_tuning_cannot_move(tmp_path, one_torch_thread):
    """Frozen features separate the classes (distinct words per class); fine-tuning at a learning rate of 1e-9
    leaves its random head as it was. The probe must be chosen, and the labeler must BE the probe."""
    task = binary_task()
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True)
    lab = teacher(task, source, settings(learning_rate=1e-9, head_learning_rate=1e-9))
    sel = lab.selection
    scores = {c["name"]: c["dev_score"] for c in sel["candidates"]}
    assert sel["chosen"] == "probe", sel
    assert scores["probe"] > scores["finetune"]
    assert scores["probe"] >= 0.9
    assert lab.dev_score == pytest.approx(scores["probe"])  # accuracy = the task's metric here
    assert sel["source_pooling"] == "mean"
    assert "linear probe" in lab.source
    assert lab.describe()["selection"]["chosen"] == "probe"
    probe_test = lab.evaluate(task.test)
    lab.score_candidates(task.test)  # at the end of a run: every candidate on test, beside its dev score
    tests = {c["name"]: c["test_score"] for c in sel["candidates"]}
    assert set(tests) == {"probe", "finetune"}
    assert tests["probe"] == pytest.approx(probe_test, abs=1e-4)
    assert lab.candidates == {}  # released


def test_the_chosen_teacher_is_not_scored_on_test_twice(tmp_path, one_torch_thread):
    """The run's own test pass of the chosen teacher is handed to score_candidates and reused (a made-up score
    shows it was not re-measured); the other candidates are measured."""
    task = binary_task()
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True)
    lab = teacher(task, source, settings(learning_rate=1e-9, head_learning_rate=1e-9))
    chosen = lab.selection["chosen"]
    lab.score_candidates(task.test, {"accuracy": 0.123456, "pearsonr": 0.9})
    tests = {c["name"]: c["test_score"] for c in lab.selection["candidates"]}
    assert tests[chosen] == 0.1235
    others = [name for name in tests if name != chosen]
    assert others and all(0.0 <= tests[name] <= 1.0 for name in others)
    assert lab.candidates == {}  # released


def test_fine_tuning_wins_when_frozen_features_are_empty(tmp_path, one_torch_thread):
    """Every frozen token state is the same vector (the last LayerNorm's weight is 0): the probe can only predict
    one class. Fine-tuning moves that weight and learns the task. Fine-tuning must be chosen."""
    task = binary_task()
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True, dead_output=True)
    lab = teacher(task, source, settings(epochs=8, learning_rate=5e-3, head_learning_rate=5e-2))
    scores = {c["name"]: c["dev_score"] for c in lab.selection["candidates"]}
    assert scores["probe"] <= 0.6, scores  # a constant feature: the majority class at best
    assert lab.selection["chosen"] == "finetune", scores
    assert scores["finetune"] > scores["probe"]
    fine = next(c for c in lab.selection["candidates"] if c["name"] == "finetune")
    assert len(fine["dev_by_epoch"]) == 8 and fine["best_epoch"] == int(np.argmax(fine["dev_by_epoch"])) + 1
    assert fine["pooling"] == "mean"


def test_lp_ft_starts_from_the_probe_and_the_ensemble_is_a_candidate(tmp_path, one_torch_thread):
    """LP-FT at a learning rate of 1e-9 is the probe (its head came from the probe and nothing moved); the ensemble
    of the best two is one more candidate scored on dev."""
    task = binary_task()
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True)
    lab = teacher(task, source, settings(candidates=("probe", "lp-ft", "stock"), learning_rate=1e-9, ensemble=2))
    rec = {c["name"]: c for c in lab.selection["candidates"]}
    assert rec["lp-ft"]["dev_score"] == pytest.approx(rec["probe"]["dev_score"])
    ens = [c for c in lab.selection["candidates"] if c["name"].startswith("ensemble(")]
    assert len(ens) == 1 and len(ens[0]["members"]) == 2
    assert rec["stock"]["pooling"].startswith("cls")


def test_a_source_without_sentence_transformers_files_pools_by_cls(tmp_path):
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=False)
    pooling, normalize, why = source_pooling(source)
    assert (pooling, normalize) == ("cls", False) and "[CLS]" in why


def test_source_pooling_reads_the_pooling_config(tmp_path):
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True)
    assert source_pooling(source)[:2] == ("mean", False)
    modules = json.loads((tmp_path / "enc" / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (tmp_path / "enc" / "modules.json").write_text(json.dumps(modules))
    assert source_pooling(source)[:2] == ("mean", True)
    (tmp_path / "enc" / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    assert source_pooling(source)[0] == "cls"


def test_the_packaged_minilm_is_a_mean_pooling_sentence_encoder(minilm_path):
    assert source_pooling(minilm_path)[:2] == ("mean", True)


# --- the pieces ------------------------------------------------------------------------------------------------

def test_pool_is_the_masked_mean_or_the_first_token():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, "mean", False), hidden[0, :2].mean(0, keepdim=True))
    assert torch.allclose(pool(hidden, mask, "cls", False), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, "mean", True).norm(dim=-1), torch.ones(1))


def test_pooled_classifier_saves_and_loads_with_the_auto_class(tmp_path):
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True)
    model = pooled_classifier(source, ["neg", "pos"], False, pooling="mean", normalize=False).eval()
    tok = BertTokenizerFast.from_pretrained(source)
    batch = tok(["good film", "bad plot was dull"], padding=True, return_tensors="pt")
    model.save_pretrained(tmp_path / "saved")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved", use_safetensors=True).eval()
    assert isinstance(again, PooledEncoderForSequenceClassification)
    assert isinstance(again.config, PooledClassifierConfig) and again.config.pooling == "mean"
    assert again.config.num_hidden_layers == 2  # the encoder's shape reads through
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, again(**batch).logits, atol=1e-6)


def test_a_saved_pooled_teacher_is_an_old_model_in_a_fresh_process(tmp_path):
    """`bortify compare --old_model <run>/teacher`: the old model's config is read first (label names, length),
    in a process where nothing else has imported bortify's pooled classifier yet."""
    import subprocess
    import sys

    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True)
    model = pooled_classifier(source, ["neg", "pos"], False, pooling="mean", normalize=False)
    model.save_pretrained(tmp_path / "teacher")
    BertTokenizerFast.from_pretrained(source).save_pretrained(tmp_path / "teacher")
    code = ("import sys; from bortify.finetuning.old_model import label_names, check_max_length; "
            "print(label_names(sys.argv[1], 'old model')); check_max_length(sys.argv[1], 'old model', 16)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "teacher")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['neg', 'pos']"


@pytest.mark.parametrize("num_labels", [2, 4])
def test_the_probe_folded_into_a_linear_head_predicts_like_scikit_learn(num_labels):
    """W' = W/σ, b' = b − W'·μ: the head on RAW features gives the standardised logistic regression's classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    y = np.arange(80) % num_labels
    x = rng.normal(size=(80, 6)) * 3 + 5 + y[:, None] * np.linspace(0.5, 2, 6)
    task = TaskData(name="t", train=None, dev=None, test=None, text_columns=["text"],
                    label_names=[str(i) for i in range(num_labels)], regression=False, metrics=["accuracy"])
    x = np.hstack([x, np.full((80, 1), 0.1, dtype=np.float32)])  # a constant feature (MiniLM has one)
    weight, bias, details = fit_probe(x[:60], y[:60].tolist(), x[60:], y[60:].tolist(), task, seed=0)
    assert weight.shape == (num_labels, 7)
    assert np.isfinite(weight).all() and np.isfinite(bias).all()  # W/σ with σ ≈ 0 overflowed to inf
    clf = LogisticRegression(C=details["C"], max_iter=2000, random_state=0)
    scaler = StandardScaler().fit(x[:60, :6])
    clf.fit(scaler.transform(x[:60, :6]), y[:60])
    np.testing.assert_array_equal((x @ weight.T + bias).argmax(1), clf.predict(scaler.transform(x[:, :6])))


def test_calibration_temperature_softens_an_over_confident_probe_and_keeps_its_classes():
    from bortify.finetuning.teachers import calibration_temperature

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    right = rng.random(300) < 0.7  # 70% right, but every prediction at ~100% confidence
    pred = np.where(right, labels, (labels + 1) % 3)
    logits = np.eye(3)[pred] * 40.0
    t = calibration_temperature(logits, labels)
    assert t > 10  # far softer than T = 1
    conf = torch.softmax(torch.tensor(logits / t), -1).max(-1).values.mean().item()
    assert 0.55 < conf < 0.85  # close to the accuracy (0.7): calibrated
    assert calibration_temperature(np.eye(3)[labels] * 2.0, labels) < 1  # an under-confident, always-right one sharpens


def test_head_parameter_groups_put_only_the_head_at_the_head_rate(tmp_path):
    source = tiny_encoder(tmp_path / "enc", sentence_transformers=True)
    model = pooled_classifier(source, ["neg", "pos"], False, pooling="mean", normalize=False)
    body, head = head_parameter_groups(model, 1e-4, 1e-2, 0.01)
    assert body["lr"] == 1e-4 and head["lr"] == 1e-2
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
    assert len(body["params"]) + len(head["params"]) == len(list(model.parameters()))


def test_best_epoch_restores_the_best_weights():
    model = torch.nn.Linear(2, 1)
    scores = iter([0.5, 0.9, 0.7])
    best = BestEpoch(lambda m: next(scores))
    kept = None
    for epoch in range(3):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        best.on_epoch_end(None, None, None, model=model)
        if epoch == 1:
            kept = model.weight.detach().clone()
    best.restore(model)
    assert best.best_epoch == 2 and best.scores == [0.5, 0.9, 0.7]
    assert torch.equal(model.weight, kept)


def test_the_ensemble_averages_class_distributions():
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.value = torch.tensor(logits)
            self.config = None
            self.emb = torch.nn.Embedding(2, 2)

        def get_input_embeddings(self):
            return self.emb

        def forward(self, **inputs):
            from transformers.modeling_outputs import SequenceClassifierOutput

            return SequenceClassifierOutput(logits=self.value.expand(inputs["input_ids"].shape[0], -1))

    ens = EnsembleModel([Fixed([0.0, 10.0]), Fixed([10.0, 0.0]), Fixed([0.0, 0.0])])
    probs = torch.softmax(ens(input_ids=torch.zeros(2, 3, dtype=torch.long)).logits, -1)
    assert torch.allclose(probs, torch.full((2, 2), 0.5), atol=1e-4)


def test_unknown_candidates_are_refused():
    with pytest.raises(ValueError, match="unknown.*'distil'.*choose from"):
        TeacherSettings(candidates=("probe", "distil"))
    from bortify.finetuning.arguments import AgoraArguments

    with pytest.raises(ValueError, match="teacher_candidates"):
        AgoraArguments(teacher_candidates=["probes"])
    with pytest.raises(ValueError, match="teacher_ensemble must be >= 1"):
        AgoraArguments(teacher_ensemble=0)
