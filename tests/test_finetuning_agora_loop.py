"""The Agora loop (bortify/finetuning/agora.py, docs/methods/03-agora.md §3) with fake models: pruning, stopping, replay,
the labeler's labels (never dev gold) entering train, and the loop's named steps. The generator has its own file
(test_finetuning_generators.py)."""

import pytest

from bortify.finetuning.acceptance import wrong_class
from bortify.finetuning.agora import agora, prune_worst


def make_data():
    train = [{"text": f"train {i}", "label": i % 2} for i in range(10)]
    dev = [{"text": f"dev {i}", "label": i % 2} for i in range(8)]
    return train, dev


class FakeWorld:
    """A 'model' is (θ index, train size); its dev predictions get better as train grows and with θ's quality."""

    def __init__(self, dev, quality):
        self.dev, self.quality, self.fits = dev, quality, []

    def fit(self, rows, theta):
        self.fits.append((theta["name"], len(rows), [dict(r) for r in rows]))
        return (theta["name"], len(rows))

    def dev_predict(self, model):
        name, n = model
        right = min(len(self.dev), self.quality[name] + (n - 10) // 4)
        return [row["label"] if i < right else 1 - row["label"] for i, row in enumerate(self.dev)]

    def dev_score(self, preds, golds):
        return sum(p == y for p, y in zip(preds, golds)) / len(golds)


def run(world, train, dev, thetas, label_value=1, **kw):
    generated_from = []

    def generate(rows, banned, rng):  # fresh texts on every call (a repeated text is a duplicate, never added)
        calls = len(generated_from)
        generated_from.extend(rows)
        return [{"text": f"{r['text']} variant {calls}.{j}"} for r in rows for j in range(2)]

    result = agora(train=train, dev=dev, thetas=thetas, fit=world.fit, dev_predict=world.dev_predict,
                   dev_score=world.dev_score, mistakes=wrong_class, generate=generate,
                   label=lambda rows: [label_value] * len(rows), key=lambda r: r["text"], **kw)
    return result, generated_from


def test_prune_worst_drops_ties_together_and_never_empties_on_a_full_tie():
    a, b, c = {"n": "a"}, {"n": "b"}, {"n": "c"}
    assert prune_worst([(a, 0.9), (b, 0.5), (c, 0.5)]) == [a]
    assert prune_worst([(a, 0.9), (b, 0.7), (c, 0.5)]) == [a, b]
    assert prune_worst([(a, 0.5), (b, 0.5), (c, 0.5)]) == [a, b]  # full tie: drop the last one (our choice)
    assert prune_worst([(a, 0.5)]) == []


def test_loop_prunes_until_theta_is_empty_and_keeps_the_best_model():
    train, dev = make_data()
    thetas = [{"name": "good"}, {"name": "mid"}, {"name": "bad"}]
    world = FakeWorld(dev, {"good": 4, "mid": 3, "bad": 1})
    result, _ = run(world, train, dev, thetas, max_rounds=10)
    assert [len(r.thetas) for r in result.rounds] == [3, 2, 1]  # |Θ| rounds, one θ dropped each
    assert [f[0] for f in world.fits] == ["good", "mid", "bad", "good", "mid", "good"]
    assert all(r.best_theta == {"name": "good"} for r in result.rounds)
    # train grows by the examples added in the previous round; nothing is generated after the last round
    assert [r.train_size for r in result.rounds] == [10, 10 + result.rounds[0].examples_added,
                                                     10 + result.rounds[0].examples_added + result.rounds[1].examples_added]
    assert result.rounds[-1].examples_added == 0 and result.rounds[0].examples_added > 0
    assert result.best_dev_score == max(r.dev_score for r in result.rounds)
    assert result.best_model == ("good", result.rounds[result.best_round - 1].train_size)
    assert result.examples_seen == sum(r.examples_seen for r in result.rounds)


def test_round_budget_stops_the_loop():
    train, dev = make_data()
    world = FakeWorld(dev, {"a": 2, "b": 2})
    result, _ = run(world, train, dev, [{"name": "a"}, {"name": "b"}], max_rounds=1, prune="none")
    assert len(result.rounds) == 1 and result.rounds[0].examples_added == 0


def test_dev_gold_labels_never_enter_train_only_labeler_labels():
    train, dev = make_data()
    world = FakeWorld(dev, {"a": 3, "b": 2})
    result, generated_from = run(world, train, dev, [{"name": "a"}, {"name": "b"}], label_value=7, max_rounds=3,
                                 prune="none")
    dev_texts = {r["text"] for r in dev}
    assert generated_from and all("label" not in r for r in generated_from)  # the generator never sees gold
    assert {r["text"] for r in generated_from} <= dev_texts
    for _, _, rows in world.fits:
        assert not dev_texts & {r["text"] for r in rows}  # no dev text in train
    added = result.added_rows
    assert added and all(r["label"] == 7 for r in added)  # every added label came from the labeler
    # the mistakes are exactly the dev rows the round's best model got wrong
    first = result.rounds[0]
    assert first.mistakes == sum(p != r["label"] for p, r in zip(world.dev_predict(("a", 10)), dev))


def test_replay_reruns_a_round_without_pruning():
    train, dev = make_data()

    class Flat(FakeWorld):  # never improves: every round scores the same
        def dev_predict(self, model):
            return [row["label"] if i < 4 else 1 - row["label"] for i, row in enumerate(self.dev)]

    world = Flat(dev, {})
    result, _ = run(world, train, dev, [{"name": "a"}, {"name": "b"}, {"name": "c"}], replay=1, max_rounds=10)
    # round 1 improves (from nothing); round 2 does not -> replayed (Θ kept); then pruning resumes
    assert [len(r.thetas) for r in result.rounds] == [3, 2, 2, 1]
    assert [r.replay for r in result.rounds] == [False, True, False, False]


def test_empty_theta_is_an_error():
    train, dev = make_data()
    with pytest.raises(ValueError, match="Θ is empty"):
        run(FakeWorld(dev, {}), train, dev, [])


def test_train_expansion_happens_once_after_round_one_and_dict_labels_carry_soft_targets():
    train, dev = make_data()
    world = FakeWorld(dev, {"a": 3, "b": 2, "c": 1})
    expanded = []

    def generate_train(rows, banned, rng):
        expanded.append([dict(r) for r in rows])
        return [{"text": f"{r['text']} paraphrase"} for r in rows]

    calls = []

    def generate(rows, banned, rng):
        calls.append(1)
        return [{"text": f"{r['text']} variant {len(calls)}"} for r in rows]

    result = agora(train=train, dev=dev, thetas=[{"name": "a"}, {"name": "b"}, {"name": "c"}], fit=world.fit,
                   dev_predict=world.dev_predict, dev_score=world.dev_score, mistakes=wrong_class,
                   generate=generate, generate_train=generate_train,
                   label=lambda rows: [{"label": 1, "soft_label": [0.3, 0.7]} for _ in rows], key=lambda r: r["text"],
                   max_rounds=3)
    assert len(expanded) == 1  # only after round 1
    assert [r["text"] for r in expanded[0]] == [r["text"] for r in train] and all("label" not in r for r in expanded[0])
    first = result.rounds[0]
    assert first.examples_added == first.mistakes + len(train)
    paraphrases = [r for r in result.added_rows if r["text"].endswith("paraphrase")]
    assert len(paraphrases) == len(train)
    assert all(r["label"] == 1 and r["soft_label"] == [0.3, 0.7] for r in result.added_rows)
    assert result.rounds[1].examples_added == result.rounds[1].mistakes  # round 2: dev mistakes only


def test_verify_expands_only_the_mistakes_the_labeler_gets_right():
    train, dev = make_data()
    world = FakeWorld(dev, {"a": 3, "b": 2})
    gold = {r["text"]: r["label"] for r in dev}
    asked = []

    def verify(rows):  # a labeler that is right on the even-numbered dev texts only
        asked.extend(rows)
        return [gold[r["text"]] if int(r["text"].split()[1]) % 2 == 0 else 1 - gold[r["text"]] for r in rows]

    result, generated_from = run(world, train, dev, [{"name": "a"}, {"name": "b"}], max_rounds=2, prune="none",
                                 verify=verify)
    first = result.rounds[0]
    assert asked and all("label" not in r for r in asked)  # the labeler never sees the gold label
    assert first.mistakes == len(asked) and first.mistakes > first.mistakes_expanded > 0
    assert generated_from and all(int(r["text"].split()[1]) % 2 == 0 for r in generated_from)
    assert first.mistakes_expanded == len(generated_from)


# --- never worse than plain round 1; no re-fit on unchanged data; rejections by reason ------------------------

def _scripted(train, dev, scores_by_round, *, label=None, generate=None, **kw):
    """agora() with injected callables: a model is (round, θ name, train size); its selection score is scripted
    per round and θ (round r is recognised by the train size, which grows by a fixed amount per round)."""
    fits, lines = [], []
    sizes = {}

    def fit(rows, theta):
        r = sizes.setdefault(len(rows), len(sizes) + 1)
        fits.append((r, theta["name"], len(rows)))
        return (r, theta["name"], len(rows))

    def dev_predict(model):
        return [model] * len(dev)  # the score is read from the model itself

    def dev_score(preds, golds):
        r, name, _ = preds[0]
        return scores_by_round[min(r, len(scores_by_round)) - 1][name]

    def mistakes(preds, golds):
        return [True] * len(preds)  # every repair row is a mistake: the loop always has something to expand

    counter = []

    def fresh(rows, banned, rng):
        counter.append(1)
        return [{"text": f"{r['text']} v{len(counter)}.{j}"} for r in rows for j in range(2)]

    result = agora(train=train, dev=dev, thetas=[{"name": n} for n in scores_by_round[0]], fit=fit,
                   dev_predict=dev_predict, dev_score=dev_score, mistakes=mistakes,
                   generate=generate or fresh, label=label or (lambda rows: [1] * len(rows)),
                   key=lambda r: r["text"], log=lines.append, **kw)
    return result, fits, lines


@pytest.mark.parametrize("later", [
    {"a": 0.20, "b": 0.23},  # worse: the user's 0.232 vs 0.295
    {"a": 0.295, "b": 0.10},  # a tie with round 1: the earlier round (plain) keeps it
    {"a": float("nan"), "b": float("nan")},  # NaN (e.g. Pearson r of constant predictions) never wins
])
@pytest.mark.parametrize("kw", [{}, {"replay": 2}, {"repair_fraction": 0.5}, {"prune": "none"}])
def test_the_result_is_never_worse_on_selection_dev_than_plain_round_one(later, kw):
    train, dev = make_data()
    result, fits, _ = _scripted(train, dev, [{"a": 0.295, "b": 0.25}, later, later, later], max_rounds=4, **kw)
    assert len(result.rounds) > 1  # later rounds did run (and were not better)
    assert result.best_round == 1 and result.best_model == (1, "a", len(train))
    assert result.best_dev_score == result.baseline_dev_score == result.rounds[0].dev_score == 0.295
    assert [r.improved for r in result.rounds] == [True] + [False] * (len(result.rounds) - 1)


def test_a_strictly_better_later_round_is_returned_and_a_nan_round_one_is_replaced():
    train, dev = make_data()
    result, _, _ = _scripted(train, dev, [{"a": 0.3, "b": 0.2}, {"a": 0.31, "b": 0.5}], max_rounds=2, prune="none")
    assert result.best_round == 2 and result.best_model[:2] == (2, "b") and result.best_dev_score == 0.5
    nan = float("nan")
    # a NaN θ listed first must not shadow a real score (max() with NaN kept the first item), and an all-NaN
    # round 1 is still the first best (it used to leave no best model at all: best_model None, best_round -1)
    result, _, _ = _scripted(train, dev, [{"a": nan, "b": nan}, {"a": nan, "b": 0.1}], max_rounds=2, prune="none")
    assert result.best_round == 2 and result.best_model[:2] == (2, "b") and result.rounds[1].best_theta == {"name": "b"}
    result, _, _ = _scripted(train, dev, [{"a": nan, "b": nan}], max_rounds=1)
    assert result.best_round == 1 and result.best_model == (1, "a", len(train))


def test_a_round_that_adds_no_rows_stops_the_loop_without_refitting_and_says_why():
    from bortify.finetuning.agora import Rejected

    train, dev = make_data()
    everything_capped = lambda rows: [Rejected("class_cap")] * len(rows)  # noqa: E731
    result, fits, lines = _scripted(train, dev, [{"a": 0.5, "b": 0.4, "c": 0.3}], label=everything_capped,
                                    max_rounds=4, prune="none")
    assert len(result.rounds) == 1 and len(fits) == 3  # Θ fitted once: train never changed
    first = result.rounds[0]
    assert first.generated == 2 * len(dev) and first.examples_added == 0 and first.examples_rejected == 16
    assert first.rejections == {"labeler_confidence": 0, "class_cap": 16, "duplicate": 0, "verify_failed": 0}
    assert "all 16 generated row(s) rejected (class_cap 16)" in first.stop_reason
    assert result.stop_reason == first.stop_reason and first.to_dict()["rejections"]["class_cap"] == 16
    assert len(lines) == 1 and "class_cap 16" in lines[0] and "stopping" in lines[0]


def test_no_rows_for_other_reasons_duplicates_verify_and_no_mistakes():
    train, dev = make_data()
    # the generator only repeats train and dev texts: all duplicates
    result, fits, _ = _scripted(train, dev, [{"a": 0.5, "b": 0.4}], max_rounds=3, prune="none",
                                generate=lambda rows, banned, rng: [{"text": "train 1"}, {"text": "dev 2"}] * 2)
    assert len(fits) == 2 and result.rounds[0].rejections["duplicate"] == 4
    assert "duplicate 4" in result.stop_reason
    # the labeler gets every mistake wrong too: nothing is expanded
    result, fits, _ = _scripted(train, dev, [{"a": 0.5, "b": 0.4}], max_rounds=3, prune="none",
                                verify=lambda rows: [None] * len(rows))
    assert len(fits) == 2 and result.rounds[0].rejections["verify_failed"] == len(dev)
    assert "verify" in result.stop_reason and result.rounds[0].mistakes_expanded == 0
    # a perfect model makes no mistake: nothing to repair
    world = FakeWorld(dev, {"a": 8, "b": 8})
    result, _ = run(world, train, dev, [{"name": "a"}, {"name": "b"}], max_rounds=3, prune="none")
    assert len(result.rounds) == 1 and len(world.fits) == 2 and "no mistake" in result.stop_reason


def test_duplicates_within_a_batch_are_added_once_and_counted():
    train, dev = make_data()
    result, _, _ = _scripted(train, dev, [{"a": 0.5}], max_rounds=2,
                             generate=lambda rows, banned, rng: [{"text": "same new text"}] * 3, prune="none")
    first = result.rounds[0]
    assert first.examples_added == 1 and first.rejections["duplicate"] == 2 and first.generated == 3


def test_one_progress_line_per_round_with_the_counts_by_reason():
    train, dev = make_data()

    def label(rows):  # rejects every other row for low confidence
        from bortify.finetuning.agora import Rejected
        return [Rejected("labeler_confidence") if i % 2 else 1 for i in range(len(rows))]

    result, _, lines = _scripted(train, dev, [{"a": 0.5, "b": 0.4, "c": 0.1}], label=label, max_rounds=5)
    assert len(lines) == len(result.rounds) == 3  # Θ empties after 3 rounds (one θ pruned per round)
    assert lines[0].startswith("Agora round 1: dev 0.5000 (new best)") and "labeler_confidence 8" in lines[0]
    assert result.rounds[0].rejections["labeler_confidence"] == 8 and result.rounds[0].examples_added == 8
    assert "stopping: Θ is empty" in lines[-1] and result.stop_reason == "Θ is empty after pruning"


# --- the loop's named steps ------------------------------------------------------------------------------------

def test_fit_round_scores_every_theta_on_the_selection_part_in_the_order_of_theta():
    from bortify.finetuning.agora import fit_round

    train, dev = make_data()
    world, said = FakeWorld(dev, {"a": 4, "b": 8}), []
    results = fit_round(1, train, [{"name": "a"}, {"name": "b"}], fit=world.fit, dev_predict=world.dev_predict,
                        dev_score=world.dev_score, select_idx=[4, 5, 6, 7], select_gold=[0, 1, 0, 1],
                        progress=said.append, theta_label=lambda t: t["name"])
    assert [(t["name"], s) for t, s, *_ in results] == [("a", 0.0), ("b", 1.0)]
    assert len(results[0][3]) == len(dev) and said == ["r1 a dev 0.000", "r1 b dev 1.000"]


@pytest.mark.parametrize("improved, replays_left, prune, first_round, expected", [
    (False, 1, "worst", False, (["a", "b", "c"], True)),  # no improvement, a replay left: same Θ again
    (False, 1, "worst", True, (["a", "b"], False)),  # round 1 is never a replay
    (True, 1, "worst", False, (["a", "b"], False)),  # improved: prune the worst
    (False, 0, "none", False, (["a", "b", "c"], False)),  # never prune
])
def test_next_thetas_replays_or_prunes(improved, replays_left, prune, first_round, expected):
    from bortify.finetuning.agora import next_thetas

    thetas = [{"name": n} for n in "abc"]
    results = [(t, s) for t, s in zip(thetas, [0.9, 0.8, 0.1])]
    got, replay = next_thetas(results, thetas, improved=improved, replays_left=replays_left, prune=prune,
                              first_round=first_round)
    assert ([t["name"] for t in got], replay) == expected


def test_repair_mistakes_are_judged_over_dev_and_kept_in_the_repair_part_only():
    from bortify.finetuning.acceptance import largest_errors
    from bortify.finetuning.agora import repair_mistakes

    dev = [{"text": str(i), "label": float(i)} for i in range(8)]
    preds = [float(i) + (3.0 if i in (1, 6) else 0.0) for i in range(8)]  # rows 1 and 6 are off by 3
    assert repair_mistakes(preds, dev, [0, 1, 2, 3], largest_errors) == [dev[1]]  # 6 is in the selection part
    assert repair_mistakes([0, 1, 1, 1], dev[:4], [0, 1, 2, 3], lambda p, y: wrong_class(p, [0, 1, 0, 0])) == dev[2:4]


def test_verified_mistakes_keeps_the_ones_the_labeler_gets_right_without_showing_it_the_label():
    from bortify.finetuning.agora import verified_mistakes

    seen = []
    rows = [{"text": "x", "label": 1}, {"text": "y", "label": 0}]
    kept = verified_mistakes(rows, lambda rs: seen.extend(rs) or [1, 1], wrong_class)
    assert kept == [rows[0]] and all("label" not in r for r in seen)


def test_labelled_rows_bans_duplicates_counts_rejections_and_adds_the_labelers_label():
    from bortify.finetuning.acceptance import CLASS_CAP
    from bortify.finetuning.agora import DUPLICATE, REASONS, REJECTED, Rejected, labelled_rows

    def generate(rows, banned, rng):
        return [{"text": "dup"}, {"text": "new1"}, {"text": "new1"}, {"text": "new2"}, {"text": "new3"}]

    banned, rejections = {"dup"}, dict.fromkeys(REASONS, 0)
    rows, generated, rejected = labelled_rows(
        [{"text": "m"}], None, generate=generate, generate_train=None, label=lambda rs: [7, Rejected(CLASS_CAP), None],
        key=lambda r: r["text"], banned=banned, rng=None, rejections=rejections)
    assert rows == [{"text": "new1", "label": 7}] and (generated, rejected) == (5, 2)
    assert rejections[DUPLICATE] == 2 and rejections[CLASS_CAP] == 1 and rejections[REJECTED] == 1
    assert "new1" in banned and "new2" not in banned


def test_repair_step_counts_verify_failures_and_expands_nothing_when_none_is_verified():
    from bortify.finetuning.agora import VERIFY_FAILED, repair_step

    wrong = [{"text": "x", "label": 1}]
    repair = repair_step(wrong, None, verify=lambda rs: [0], mistakes=wrong_class,
                         generate=lambda *a: pytest.fail("generated from an unverified mistake"), generate_train=None,
                         label=None, key=lambda r: r["text"], banned=set(), rng=None)
    assert repair.rows == [] and repair.expanded == 0 and repair.rejections[VERIFY_FAILED] == 1


def test_single_theta_agora_is_named_as_plain_fine_tuning_before_any_work():
    from bortify.finetuning.arguments import AgoraArguments
    from bortify.finetuning.modes import mode_of

    def single_theta_agora_note(mode, thetas, agora_args):
        return mode_of(mode, agora_args).thetas_note(thetas)

    one, two = [{"learning_rate": 5e-4}], [{"learning_rate": 5e-4}, {"learning_rate": 1e-3}]
    note = single_theta_agora_note("agora", one, AgoraArguments(max_rounds=3))
    assert note is not None and "plain fine-tuning" in note and "--prune none" in note
    assert prune_worst([(one[0], 0.7)]) == []  # why: the paper's rule empties a one-θ Θ after round 1
    assert single_theta_agora_note("agora", two, AgoraArguments(max_rounds=3)) is None
    assert single_theta_agora_note("agora", one, AgoraArguments(max_rounds=3, prune="none")) is None
    assert single_theta_agora_note("agora", one, AgoraArguments(max_rounds=1)) is None
    assert single_theta_agora_note("plain", one, AgoraArguments(max_rounds=3)) is None
