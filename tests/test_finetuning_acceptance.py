"""Agora's repair-step helpers (bortify/finetuning/acceptance.py) and their use in the loop: the repair /
selection split of dev, class-balanced and confident acceptance of labelled variants, dev gold never in train."""

import pytest

from collections import Counter

from bortify.finetuning.acceptance import (CLASS_CAP, LABELER_CONFIDENCE, accept_generated, class_caps, class_ratio,
                                           rejection_reasons, split_dev, wrong_class)
from bortify.finetuning.agora import agora


def test_split_dev_is_disjoint_covering_stratified_and_seeded():
    labels = [0] * 30 + [1] * 10
    repair, select = split_dev(labels, 0.5, seed=3)
    assert not set(repair) & set(select) and sorted(repair + select) == list(range(40))
    assert sum(labels[i] for i in repair) == 5 and sum(labels[i] for i in select) == 5  # each class halved
    assert len(repair) == 20
    assert split_dev(labels, 0.5, seed=3) == (repair, select)  # reproducible
    assert split_dev(labels, 0.5, seed=4) != (repair, select)  # the seed matters
    assert split_dev(labels, 1.0, seed=3) == (list(range(40)), list(range(40)))  # the paper: one dev set
    r, s = split_dev([0.1, 0.5, 0.9, 0.3], 0.25, seed=0)  # regression: no strata, still disjoint
    assert len(r) == 1 and len(s) == 3
    with pytest.raises(ValueError, match="repair_fraction"):
        split_dev(labels, 0.0, seed=0)
    with pytest.raises(ValueError, match="too small"):
        split_dev([1], 0.5, seed=0)


def test_class_ratio():
    assert class_ratio([0, 0, 0, 1], 3) == [0.75, 0.25, 0.0]


def test_accept_generated_caps_each_class_at_the_train_ratio_keeping_the_most_confident():
    # the labeler says class 0 for 8 rows and class 1 for 2; train is 50/50 -> 2 + 2 kept
    labels = [0] * 8 + [1] * 2
    conf = [0.6, 0.99, 0.7, 0.95, 0.8, 0.65, 0.9, 0.75, 0.9, 0.8]
    keep = accept_generated(labels, conf, [0.5, 0.5])
    assert sum(keep) == 4 and keep[8] and keep[9]
    assert [i for i in range(8) if keep[i]] == [1, 3]  # the two most confident class-0 rows
    # a 40/60 train ratio: N = min(8/0.4, 2/0.6) = 3.33 -> class 0 at most 1, class 1 at most 2
    assert [sum(k for k, y in zip(accept_generated(labels, conf, [0.4, 0.6]), labels) if y == c) for c in (0, 1)] == [1, 2]
    # no balancing: everything kept; a confidence floor drops the unsure ones
    assert all(accept_generated(labels, conf, [0.5, 0.5], balance=False))
    keep = accept_generated(labels, conf, [0.5, 0.5], min_confidence=0.85, balance=False)
    assert [i for i, k in enumerate(keep) if k] == [1, 3, 6, 8]
    # both: confident rows are 1,3,6 (class 0) and 8 (class 1) -> one per class
    keep = accept_generated(labels, conf, [0.5, 0.5], min_confidence=0.85)
    assert [i for i, k in enumerate(keep) if k] == [1, 8]
    # one-sided batch: a class the labeler never predicted no longer blocks the others (caps are relative to the
    # classes present: the only class present keeps its rows)
    assert all(accept_generated([0, 0, 0], [0.9] * 3, [0.5, 0.5]))
    with pytest.raises(ValueError):
        accept_generated([0], [0.9, 0.8], [1.0])


def _accepted_by_class(labels, keep):
    return Counter(y for y, k in zip(labels, keep) if k)


def test_a_class_the_labeler_never_predicts_does_not_reject_everything_16_of_16():
    # the user's first multi-class task: 16 variants, the labeler predicts 2 of the 4 train classes; the old cap
    # (N over every class with a train share) was 0 for the absent classes and so rejected 16/16
    ratio = [0.4, 0.3, 0.2, 0.1]
    labels = [0] * 12 + [2] * 4
    conf = [0.5 + i / 100 for i in range(16)]
    keep = accept_generated(labels, conf, ratio)
    # present classes {0, 2}: N = min(12 / 0.4, 4 / 0.2) = 20 -> caps 0.4 * 20 = 8 and 0.2 * 20 = 4
    assert _accepted_by_class(labels, keep) == {0: 8, 2: 4}
    assert [i for i in range(12) if keep[i]] == list(range(4, 12))  # the 8 most confident class-0 rows
    reasons = rejection_reasons(labels, conf, ratio)
    assert Counter(reasons) == {None: 12, CLASS_CAP: 4}
    assert class_caps({0: 12, 2: 4}, ratio) == {0: 8, 2: 4}


def test_many_classes_with_most_absent_still_accept_the_balanced_part_172_of_172():
    # the user's second task: 45 classes, 172 variants labelled into 9 of them, unevenly; the old rule rejected
    # 172/172. Now every present class is capped at its train share of the largest balanced total.
    train = [c for c in range(45) for _ in range(10 + (7 * c) % 23)]
    ratio = class_ratio(train, 45)
    present = {3: 60, 7: 40, 11: 25, 19: 15, 20: 12, 28: 8, 33: 6, 40: 4, 44: 2}
    assert sum(present.values()) == 172
    labels = [c for c, n in present.items() for _ in range(n)]
    keep = accept_generated(labels, [0.9] * len(labels), ratio)
    got = _accepted_by_class(labels, keep)
    total = min(n / ratio[c] for c, n in present.items())
    binding = min(present, key=lambda c: present[c] / ratio[c])
    assert sum(got.values()) > 0 and got[binding] == present[binding]  # the binding class keeps all its rows
    for c, n in present.items():
        assert got.get(c, 0) == min(n, int(ratio[c] * total + 1e-9)) <= n
    # among the present classes the kept rows follow the train ratio (to within the floor of one row)
    kept = sum(got.values())
    share = sum(ratio[c] for c in present)
    assert all(abs(got.get(c, 0) - kept * ratio[c] / share) <= len(present) for c in present)
    assert set(got) <= set(present)


def test_rejection_reasons_name_the_confidence_floor_and_the_class_cap():
    labels = [0, 0, 0, 1, 2]
    conf = [0.95, 0.9, 0.3, 0.8, 0.99]
    reasons = rejection_reasons(labels, conf, [0.5, 0.5, 0.0], min_confidence=0.5)
    # row 2 is unsure; class 2 has no train share (cap 0); class 0 is capped at 1 by class 1's single row
    assert reasons == [None, CLASS_CAP, LABELER_CONFIDENCE, None, CLASS_CAP]
    assert rejection_reasons(labels, conf, [0.5, 0.5, 0.0], balance=False) == [None] * 5
    assert not any(accept_generated([], [], [0.5, 0.5])) and accept_generated([], [], [0.5, 0.5]) == []
    assert not any(accept_generated([0, 1], [0.9, 0.9], [0.0, 0.0]))  # no train shares at all: nothing to match


def _world(train, dev):
    fits = []

    def fit(rows, theta):
        fits.append([dict(r) for r in rows])
        return (theta["name"], len(rows))

    def dev_predict(model):  # right on the first 6 dev rows, wrong on the rest
        return [r["label"] if i < 6 else 1 - r["label"] for i, r in enumerate(dev)]

    return fits, fit, dev_predict


def test_loop_expands_only_repair_mistakes_and_selects_on_the_other_half():
    train = [{"text": f"train {i}", "label": i % 2} for i in range(10)]
    dev = [{"text": f"dev {i}", "label": i % 2} for i in range(16)]
    fits, fit, dev_predict = _world(train, dev)
    generated_from, scored = [], []

    def dev_score(preds, golds):
        scored.append(len(golds))
        return sum(p == y for p, y in zip(preds, golds)) / len(golds)

    def generate(rows, banned, rng):
        generated_from.extend(rows)
        return [{"text": f"{r['text']} v{j}"} for r in rows for j in range(3)]

    def label(rows):  # the labeler: labels 5, rejects every third row
        return [None if i % 3 == 2 else 5 for i in range(len(rows))]

    result = agora(train=train, dev=dev, thetas=[{"name": "a"}, {"name": "b"}], fit=fit, dev_predict=dev_predict,
                   dev_score=dev_score, mistakes=wrong_class, generate=generate, label=label,
                   key=lambda r: r["text"], max_rounds=2, prune="none", repair_fraction=0.5, seed=1)
    repair_idx, select_idx = split_dev([r["label"] for r in dev], 0.5, seed=1)
    repair_texts = {dev[i]["text"] for i in repair_idx}
    wrong = {dev[i]["text"] for i in range(6, 16)}
    first = result.rounds[0]
    assert set(scored[:2]) == {8}  # θ scored on the 8 selection rows only
    assert first.mistakes == len(repair_texts & wrong)  # mistakes counted on the repair half only
    assert {r["text"] for r in generated_from} == repair_texts & wrong  # only repair-half mistakes expanded
    assert all("label" not in r for r in generated_from)  # the generator never sees gold labels
    exp_sel = sum(i < 6 for i in select_idx) / 8
    assert first.dev_score == exp_sel and first.repair_dev_score == sum(i < 6 for i in repair_idx) / 8
    assert first.examples_added == 2 * first.mistakes and first.examples_rejected == first.mistakes
    dev_texts = {r["text"] for r in dev}
    for rows in fits:  # dev texts and dev gold labels never enter train: only the labeler's label 5 is added
        assert not dev_texts & {r["text"] for r in rows}
        assert all(r["label"] == 5 for r in rows if r["text"].startswith("dev"))
    assert len(fits[-1]) == 10 + first.examples_added


@pytest.mark.slow
def test_finetune_agora_on_a_three_class_task_adds_balanced_rows_and_reports_why_rows_were_rejected(
        tmp_path, tiny_bert_config, minilm_path, capsys):
    """Through the real finetune(): a random tiny labeler predicts few of the 3 classes; class balancing used to
    reject every generated row then. Now rows are added, report.json counts the rejections by reason per round,
    says why the loop stopped, and one progress line per round is printed."""
    import csv
    import json

    import torch
    from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification

    from bortify.finetuning.arguments import (AgoraArguments, FinetuneDataArguments, FinetuneGridArguments,
                                              FinetuneModelArguments)
    from bortify.finetuning.finetune import finetune

    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    BertForMaskedLM(tiny_bert_config).save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    names = ["alpha", "beta", "gamma"]
    cfg = tiny_bert_config.__class__(**{**tiny_bert_config.to_dict(), "id2label": dict(enumerate(names)),
                                        "label2id": {n: i for i, n in enumerate(names)}})
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "labeler")
    tok.save_pretrained(tmp_path / "labeler")
    words = ["good film", "bad movie", "dull plot"]
    with open(tmp_path / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(60):
            w.writerow([f"a {words[i % 3]} with scene {i} and actor {i * 7 % 13}", names[i % 3]])
    report = finetune(
        FinetuneModelArguments(model=str(tmp_path / "student"), output_dir=str(tmp_path / "out"), mode="agora",
                               max_length=16, eval_batch_size=32, torch_threads=1),
        FinetuneDataArguments(dataset=str(tmp_path / "data.csv"), dev_fraction=0.3),
        FinetuneGridArguments(learning_rates=[1e-3], num_train_epochs=1, batch_sizes=[16]),
        AgoraArguments(labeler=str(tmp_path / "labeler"), labeler_min_dev_score=0.0, max_rounds=2, k=2,
                       prune="none", verify_mistakes=False, generator_embeddings="student"))
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    first = saved["rounds"][0]
    assert first["mistakes_expanded"] > 0 and first["generated"] > 0
    assert set(first["rejections"]) >= {"labeler_confidence", "class_cap", "duplicate", "verify_failed"}
    assert first["examples_added"] > 0  # the old rule: 0 whenever the labeler missed a class
    assert first["examples_added"] + first["examples_rejected"] + first["rejections"]["duplicate"] == first["generated"]
    assert saved["agora"]["stop_reason"] and saved["agora"]["round1_dev_score"] == first["dev_score"]
    assert saved["dev"][saved["metric"]] >= first["dev_score"]  # never below plain round 1 (selection part)
    assert saved["labeler"]["majority_rate"] is not None and saved["labeler"]["threshold"] == 0.0
    out = capsys.readouterr().out
    assert out.count("Agora round ") == len(saved["rounds"]) and "Agora round 1:" in out
    assert report["rounds"][0]["rejections"] == first["rejections"]


# --- what counts as a mistake ----------------------------------------------------------------------------------

@pytest.mark.parametrize("regression, preds, golds, expected", [
    (False, [0, 1, 2, 1], [0, 2, 2, 0], [False, True, False, True]),  # a wrong class (the paper)
    # regression (ours): the quarter with the largest absolute error, ties at the quantile included
    (True, [0.0, 1.0, 2.5, 3.0], [0.0, 1.1, 2.0, 5.0], [False, False, False, True]),
    (True, [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [True, True, True, True]),
    (True, [], [], []),
])
def test_mistake_rule_of_the_task(regression, preds, golds, expected):
    from bortify.finetuning.acceptance import mistake_rule

    assert mistake_rule(regression)(preds, golds) == expected


@pytest.mark.parametrize("rule", ["wrong_class", "largest_errors"])
def test_mistake_rules_refuse_mismatched_lengths(rule):
    import bortify.finetuning.acceptance as acceptance

    with pytest.raises(ValueError, match="same length"):
        getattr(acceptance, rule)([1, 2], [1])
