"""The labeler's dev gate (bortify/finetuning/labelers.py, docs/methods/03-agora.md §3.2): the bar is the dev majority-class
rate m plus a third of the rest, m + (1 - m)/3 (2/3 for a balanced binary task, the paper's bar), so a labeler that
only predicts the most frequent class can never pass it, on a skewed binary task or a many-class one. Also the
labeler's probabilities in the task's label order and Agora's labelling of generated rows (GeneratedRowLabeler)."""

from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from bortify.finetuning.acceptance import CLASS_CAP, LABELER_CONFIDENCE
from bortify.finetuning.agora import Rejected
from bortify.finetuning.labelers import (GeneratedRowLabeler, Labeler, LabelerError, build_labeler, default_threshold,
                                         majority_rate, tempered)
from bortify.finetuning.losses import softmax_with_temperature
from bortify.finetuning.tasks import TaskData

WORDS = "a the film good bad movie plot was".split()


def make_task(dev_labels, num_labels, regression=False):
    names = [f"class{i:02d}" for i in range(num_labels)]
    feature = datasets.Value("float32") if regression else datasets.ClassLabel(names=names)

    def split(labels):
        texts = [f"{WORDS[i % len(WORDS)]} film {i}" for i in range(len(labels))]
        return datasets.Dataset.from_dict({"text": texts, "label": labels},
                                          features=datasets.Features({"text": datasets.Value("string"),
                                                                      "label": feature}))

    train = split([i % max(num_labels, 1) for i in range(20)] if not regression else [0.1 * i for i in range(20)])
    return TaskData(name="t", train=train, dev=split(dev_labels), test=split(dev_labels[:4]), text_columns=["text"],
                    label_names=[] if regression else names, regression=regression,
                    metrics=["pearsonr"] if regression else ["accuracy"])


def constant_classifier(tmp_path, num_labels, always):
    """A real (tiny, random-bodied) sequence classifier whose head bias makes it predict class `always` for every
    text: what a labeler that learned only the majority class does."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [str(i) for i in range(100)]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    names = [f"class{i:02d}" for i in range(num_labels)]
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels,
                        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[always] = 10.0
    path = tmp_path / "labeler"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_default_threshold_is_a_third_of_the_way_from_the_dev_majority_rate_to_one():
    assert majority_rate([0, 1, 0, 1]) == 0.5 and majority_rate([2, 2, 2, 0]) == 0.75 and majority_rate([]) == 0.0
    assert default_threshold(make_task([0, 1] * 10, 2)) == pytest.approx(2 / 3)  # balanced binary: the paper's bar
    # the user's binary task: a 65% majority class was above the old (uniform-chance) bar of 2/3 - 0.667
    assert default_threshold(make_task([0] * 65 + [1] * 35, 2)) == pytest.approx(0.65 + 0.35 / 3)
    # the user's 45-class task: chance + (1 - chance)/3 was 0.348 and a 0.355 labeler passed; with a 36% majority
    # class the bar is 0.36 + 0.64/3
    dev = [0] * 36 + [c % 44 + 1 for c in range(64)]
    assert default_threshold(make_task(dev, 45)) == pytest.approx(0.36 + 0.64 / 3)
    assert default_threshold(make_task([0.1, 0.5, 0.9], 1, regression=True)) == 0.5


def test_a_distillation_teacher_must_only_beat_the_trivial_predictor():
    # debates at 300 rows: a teacher at dev 0.585 was refused by Agora's bar (0.41 + 0.59/3 = 0.607) although the
    # student distilled from it matched it on test; as a teacher it needs only beat the majority rate 0.41
    dev = [0] * 41 + [1] * 30 + [2] * 29
    assert default_threshold(make_task(dev, 3), role="teacher") == pytest.approx(0.41)
    assert default_threshold(make_task(dev, 3), role="labeler") == pytest.approx(0.41 + 0.59 / 3)
    assert default_threshold(make_task([0.1, 0.5, 0.9], 1, regression=True), role="teacher") == 0.0
    with pytest.raises(ValueError, match="role"):
        default_threshold(make_task(dev, 3), role="student")


@pytest.mark.parametrize("dev, num_labels", [
    ([0] * 70 + [1] * 30, 2),  # a skewed binary dev: always "0" scores 0.70, above the old bar 0.667
    ([0] * 36 + [c % 44 + 1 for c in range(64)], 45),  # 45 classes: always "0" scores 0.36, above the old 0.348
])
def test_a_labeler_that_only_predicts_the_majority_class_is_refused_naming_the_majority_rate(tmp_path, dev,
                                                                                             num_labels):
    task = make_task(dev, num_labels)
    path = constant_classifier(tmp_path, num_labels, always=0)
    m = majority_rate(dev)
    with pytest.raises(LabelerError) as err:
        build_labeler(task, labeler=path, teacher="unused", max_length=16, seed=0)
    text = str(err.value)
    assert f"dev accuracy {m:.3f}, not above the threshold {m + (1 - m) / 3:.3f}" in text
    assert f"majority-class rate {m:.3f}" in text and "labeler_min_dev_score" in text


def test_an_explicit_bar_still_applies_and_the_gate_is_recorded(tmp_path):
    dev = [0] * 70 + [1] * 30
    task = make_task(dev, 2)
    path = constant_classifier(tmp_path, 2, always=0)
    labeler = build_labeler(task, labeler=path, teacher="unused", max_length=16, seed=0, min_dev_score=0.6)
    assert labeler.dev_score == pytest.approx(0.7)
    described = labeler.describe()
    assert described["threshold"] == 0.6 and described["majority_rate"] == pytest.approx(0.7)
    with pytest.raises(LabelerError, match=r"threshold 0\.750 \(labeler_min_dev_score; the dev majority-class rate "
                                           r"is 0\.700\)"):
        build_labeler(task, labeler=path, teacher="unused", max_length=16, seed=0, min_dev_score=0.75)


# --- the labeler's probabilities and Agora's labelling of generated rows ---------------------------------------

def test_labeler_probabilities_follow_the_task_label_order():
    task = SimpleNamespace(regression=False, text_columns=["text"], num_labels=2)
    lab = Labeler(None, None, task, max_length=8, id_map=[1, 0])  # labeler class 0 = task class 1
    lab.logits = lambda rows: np.array([[3.0, 0.0]] * len(rows))
    probs = lab.probabilities([{"text": "x"}])
    assert probs[0, 1] > 0.9 and np.isclose(probs.sum(), 1)
    both = lab.probabilities([{"text": "x"}, {"text": "y"}])
    labels, conf = both.argmax(axis=1).tolist(), both.max(axis=1)
    assert labels == [1, 1] and conf[0] == pytest.approx(probs[0, 1])


def fixed_labeler(logits, id_map=None):
    task = SimpleNamespace(regression=False, text_columns=["text"], num_labels=len(logits[0]))
    lab = Labeler(None, None, task, max_length=8, id_map=id_map)
    lab.logits = lambda rows: np.array(logits[:len(rows)], dtype=float)
    return lab


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 5.0])
def test_tempered_probabilities_equal_the_softmax_of_the_logits_over_t(temperature):
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    assert np.allclose(tempered(softmax_with_temperature(logits), temperature),
                       softmax_with_temperature(logits, temperature))


def test_tempered_refuses_a_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        tempered(np.array([[0.5, 0.5]]), 0)


def test_generated_rows_get_the_labelers_class_and_soft_label_in_one_pass():
    lab = fixed_labeler([[3.0, 0.0], [0.0, 1.0]], id_map=[1, 0])  # labeler class 0 = task class 1
    calls = []
    real = lab.logits
    lab.logits = lambda rows: calls.append(len(rows)) or real(rows)
    label = GeneratedRowLabeler(lab, [0.5, 0.5], balance=False, soft_labels=True, temperature=2.0)
    out = label([{"text": "x"}, {"text": "y"}])
    assert calls == [2]  # one labeler pass for labels, confidences and soft labels
    assert [o["label"] for o in out] == [1, 0]
    expected = softmax_with_temperature(np.array([[0.0, 3.0], [1.0, 0.0]]), 2.0)
    assert np.allclose([o["soft_label"] for o in out], expected)
    assert label([]) == []


@pytest.mark.parametrize("kw, expected", [
    ({"balance": False, "soft_labels": False}, [0, 0, 1]),  # hard labels, nothing rejected
    ({"balance": False, "soft_labels": False, "min_confidence": 0.9},
     [0, Rejected(LABELER_CONFIDENCE), Rejected(LABELER_CONFIDENCE)]),
    ({"balance": True, "soft_labels": False}, [0, Rejected(CLASS_CAP), 1]),  # train ratio 1:1 -> one row per class
])
def test_generated_rows_follow_the_acceptance_rules(kw, expected):
    lab = fixed_labeler([[4.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert GeneratedRowLabeler(lab, [0.5, 0.5], **kw)([{"text": t} for t in "abc"]) == expected
