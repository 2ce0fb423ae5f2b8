"""The Agora loop (de Wynter 2020, arXiv 2010.07990; docs/methods/03-agora.md §3), independent of models and data formats.

    AGORA(model0, labeler, train, dev, Θ, gen):
      while Θ not empty:
        for θ in Θ: m_θ = finetune(copy(model0), train, θ); acc[θ] = eval(m_θ, dev)      # paper
        m* = best; keep the best model so far                                              # paper
        M = dev points that m* gets wrong                                                  # paper
        N = gen(x) for x in M (never x itself)                                             # paper
        train += {(x', labeler(x')) : x' in N}   (labeler, never the dev gold label)       # paper
        prune Θ: drop the worst-scoring θ (ties together)                                  # paper
      return best

Our choices (configurable): a round budget (`max_rounds`, replays included); `replay` re-runs a round without
pruning when it did not improve the best dev score (the author needed replay to converge); no new data is
generated after the last round (it could not be used); `generate_train` (optional, ours) also expands every
original train row once, after round 1, labelled by the same labeler (augmentation + distillation around the whole
train set, not only around the dev mistakes); `repair_fraction` < 1 splits dev into a repair part
(its mistakes are expanded) and a disjoint selection part (θ and the best round are chosen on it only), so that
dev stays an unbiased judge after its mistakes' variants enter train (acceptance.split_dev); `label` may return
`Rejected(reason)` (or None) for a generated row to reject it (labeler confidence / class cap,
acceptance.rejection_reasons). The loop only sees train and dev: the test split is not an argument, so it cannot be
looked at before the end.

Guarantees (ours): round 1 is plain fine-tuning (every θ on the original train), and a later round replaces the
best model only when it scores strictly higher on the selection part (NaN counts as the lowest score), so the
returned model is never worse there than round 1. A round that adds no rows leaves train unchanged, and the next
round would re-fit the remaining θ on the same data: the loop stops instead, and the round's `stop_reason` says
why (no mistakes, none verified, nothing generated, everything rejected, with the counts by reason).

`verify` (optional, ours): expand only the mistakes whose ORIGINAL text the labeler labels correctly. The variants
of a mistake are labelled by the labeler, so where the labeler is wrong at the centre of the neighbourhood it
labels the variants wrong too: measured on Rotten Tomatoes (BENCHMARKS.md), the labeler (the teacher fine-tuned
on the same 300 rows) is right on only 42% of the student's dev mistakes, although it is right on 75% of dev,
and its confidence does not tell them apart. Dev gold labels are used as the paper uses them, to choose which
texts to expand (a mistake is already a comparison with gold); they never become train labels.

Everything model-specific comes in as callables, so the loop's logic is unit-tested with fakes.

Long function agora because a third of it is the signature (the loop's 20 documented callables and settings);
the body is the paper's one round loop, its steps named (fit_round, next_thetas, repair_step).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from bortify.finetuning.acceptance import CLASS_CAP, LABELER_CONFIDENCE, split_dev

# Why generated rows (or, for VERIFY_FAILED, dev mistakes) were not added: RoundRecord.rejections' keys.
DUPLICATE = "duplicate"  # the text repeats a train, dev, earlier generated or same-batch text
VERIFY_FAILED = "verify_failed"  # a repair-part MISTAKE (not a row) the labeler gets wrong too: not expanded
REJECTED = "rejected"  # `label` returned None (no reason given)
REASONS = (LABELER_CONFIDENCE, CLASS_CAP, DUPLICATE, VERIFY_FAILED)


@dataclass(frozen=True)
class Rejected:
    """What `label` returns for a generated row that is not added, with the reason (acceptance.py's names)."""
    reason: str


@dataclass
class RoundRecord:
    round: int
    thetas: list[dict]  # [{"theta": θ, "dev_score": s}] for every θ run this round
    best_theta: dict
    dev_score: float  # on the selection part of dev (all of dev when repair_fraction = 1)
    mistakes: int | None  # in the repair part of dev (Agora); None where no mistakes are counted (plain, distill)
    examples_added: int
    train_size: int  # the training set this round's models were trained on
    examples_seen: int  # training examples processed this round (all θ)
    replay: bool = False
    improved: bool = False
    seconds: float = 0.0
    repair_dev_score: float | None = None  # the best θ's score on the repair part (when dev is split)
    examples_rejected: int = 0  # generated rows the labeler step rejected (Rejected / None labels)
    mistakes_expanded: int = 0  # mistakes whose variants were generated (fewer than `mistakes` with `verify`)
    generated: int = 0  # candidate rows the generator(s) returned this round
    # counts by reason (REASONS): rows for labeler_confidence / class_cap / duplicate, MISTAKES for verify_failed
    rejections: dict = field(default_factory=dict)
    stop_reason: str | None = None  # set on the last round: why the loop stopped

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AgoraResult:
    best_model: Any
    best_round: int
    best_dev_score: float
    rounds: list[RoundRecord]
    round_models: dict[int, Any] = field(default_factory=dict)  # round -> its best model (when kept)
    added_rows: list[dict] = field(default_factory=list)  # every generated, labelled row, in order
    examples_seen: int = 0
    stop_reason: str = ""
    baseline_dev_score: float | None = None  # round 1 (plain fine-tuning) on the selection part


def _rank(score: float) -> float:
    """A score for comparisons: NaN (e.g. Pearson r of constant predictions) ranks below every number."""
    return float("-inf") if score is None or math.isnan(score) else score


def round_line(rec: RoundRecord) -> str:
    """One progress line per round: score, mistakes, what was generated, added and rejected (by reason)."""
    why = ", ".join(f"{k} {v}" for k, v in rec.rejections.items() if v) or "none"
    line = (f"Agora round {rec.round}{' (replay)' if rec.replay else ''}: dev {rec.dev_score:.4f}"
            f"{' (new best)' if rec.improved else ''}, {rec.mistakes} mistake(s), {rec.mistakes_expanded} expanded, "
            f"{rec.generated} generated, {rec.examples_added} added; not added: {why}")
    return line + (f"; stopping: {rec.stop_reason}" if rec.stop_reason else "")


def _no_rows_reason(n_mistakes: int, expanded: int, generated: int, rejections: dict, expand_train: bool) -> str:
    """Why a round added no rows (the loop stops: the next round would re-fit on unchanged data)."""
    if not n_mistakes and not expand_train:
        return "no rows added: the round's best model makes no mistake on the repair part of dev"
    if not expanded and not expand_train:
        return (f"no rows added: the labeler gets all {n_mistakes} mistake(s) wrong too (verify_mistakes), so none "
                "was expanded")
    if not generated:
        return "no rows added: the generator produced no new text"
    counts = ", ".join(f"{k} {v}" for k, v in rejections.items() if v and k != VERIFY_FAILED)
    return f"no rows added: all {generated} generated row(s) rejected ({counts}); train is unchanged"


def _unlabelled(rows: list[dict]) -> list[dict]:
    """The rows without their gold label (what the generator and the labeler may see)."""
    return [{k: v for k, v in row.items() if k != "label"} for row in rows]


def prune_worst(scores: list[tuple[dict, float]]) -> list[dict]:
    """Θ after dropping the worst-scoring θ; ties for worst are dropped together (docs/methods/03-agora.md §3).

    Our choice: when EVERY θ ties (common on small dev sets, e.g. all predict the majority class), the paper's
    rule would empty Θ and end Agora before any repair; we drop only the last θ of Θ instead."""
    worst = min(s for _, s in scores)
    kept = [theta for theta, s in scores if s != worst]
    if not kept and len(scores) > 1:
        kept = [theta for theta, _ in scores[:-1]]
    return kept


def fit_round(r: int, train: list[dict], thetas: list[dict], *, fit, dev_predict, dev_score, select_idx: list[int],
              select_gold: list, progress=None, theta_label: Callable[[dict], str] = str) -> list[tuple]:
    """One round's `for θ in Θ: m_θ = finetune(copy(model0), train, θ); acc[θ] = eval(m_θ, dev)` (the paper),
    scored on the selection part: [(θ, score, model, predictions on all of dev)] in the order of Θ."""
    results = []
    for theta in thetas:
        model = fit(train, theta)
        preds = dev_predict(model)
        results.append((theta, dev_score([preds[i] for i in select_idx], select_gold), model, preds))
        if progress:
            progress(f"r{r} {theta_label(theta)} dev {results[-1][1]:.3f}")
    return results


def next_thetas(results: list[tuple], thetas: list[dict], *, improved: bool, replays_left: int, prune: str,
                first_round: bool) -> tuple[list[dict], bool]:
    """(Θ of the next round, whether this round is a replay). Replay (our reading of the author's note): a round
    that did not improve is re-run once more on the grown train set without pruning Θ, while replays remain;
    otherwise `prune='worst'` drops the worst θ (prune_worst), 'none' keeps Θ."""
    if not improved and replays_left > 0 and not first_round:
        return thetas, True
    if prune == "worst":
        return prune_worst([(t, s) for t, s, *_ in results]), False
    return thetas, False


def repair_mistakes(preds: list, dev: list[dict], repair_idx: list[int], mistakes) -> list[dict]:
    """`M = dev points that m* gets wrong` (the paper), within the repair part. `mistakes(preds, golds)` is judged
    over all of dev (acceptance.largest_errors' quantile is of dev's errors), then restricted to the repair part."""
    flags = mistakes(list(preds), [row["label"] for row in dev])
    return [dev[i] for i in repair_idx if flags[i]]


def verified_mistakes(mistake_rows: list[dict], verify, mistakes) -> list[dict]:
    """Ours: the mistakes whose original text the labeler (`verify`) labels correctly (see the module docstring)."""
    verdicts = verify(_unlabelled(mistake_rows))
    flags = mistakes(list(verdicts), [row["label"] for row in mistake_rows])
    return [row for row, wrong in zip(mistake_rows, flags) if not wrong]


def labelled_rows(mistake_rows: list[dict], train_rows: list[dict] | None, *, generate, generate_train, label, key,
                  banned: set, rng: random.Random, rejections: dict) -> tuple[list[dict], int, int]:
    """`N = gen(x) for x in M; train += {(x', labeler(x'))}` (the paper), plus variants of `train_rows` when given
    (generate_train, ours). Returns (accepted rows, candidates generated, rows rejected by `label`); `banned` grows
    by the accepted texts and `rejections` counts why the others were dropped."""
    candidates = generate(_unlabelled(mistake_rows), banned, rng) if mistake_rows else []
    if train_rows is not None:
        candidates += generate_train(_unlabelled(train_rows), banned | {key(c) for c in candidates}, rng)
    generated = len(candidates)
    candidates = _fresh(candidates, key, banned, rejections)
    labels = label(candidates) if candidates else []
    rows, rejected = [], 0
    for row, y in zip(candidates, labels):
        if y is None or isinstance(y, Rejected):  # the acceptance rule (confidence / class cap)
            rejected += 1
            why = y.reason if isinstance(y, Rejected) else REJECTED
            rejections[why] = rejections.get(why, 0) + 1
            continue
        # the labeler's label, never a dev gold label; a dict carries more of the labeler's output
        # (e.g. {"label": 1, "soft_label": [0.2, 0.8]} with soft labels)
        row = {**row, **y} if isinstance(y, dict) else {**row, "label": y}
        banned.add(key(row))
        rows.append(row)
    return rows, generated, rejected


@dataclass
class Repair:
    """What one round's repair step did: the accepted rows, and the counts its RoundRecord reports."""

    mistakes: list[dict]  # the repair part's mistakes
    expanded: int = 0  # mistakes whose variants were generated (after `verify`)
    rows: list[dict] = field(default_factory=list)  # generated, labelled and accepted rows
    generated: int = 0
    rejected: int = 0
    rejections: dict = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


def repair_step(wrong: list[dict], train_rows: list[dict] | None, *, verify, mistakes, generate, generate_train,
                label, key, banned: set, rng: random.Random) -> Repair:
    """After a round that is not the last: verify the mistakes (optional, ours), then generate, label and accept
    variants of them (and of `train_rows`, generate_train)."""
    repair = Repair(wrong)
    to_expand = wrong
    if verify is not None and wrong:
        to_expand = verified_mistakes(wrong, verify, mistakes)
        repair.rejections[VERIFY_FAILED] = len(wrong) - len(to_expand)
    repair.expanded = len(to_expand)
    if to_expand or train_rows is not None:
        repair.rows, repair.generated, repair.rejected = labelled_rows(
            to_expand, train_rows, generate=generate, generate_train=generate_train, label=label, key=key,
            banned=banned, rng=rng, rejections=repair.rejections)
    return repair


def agora(
    *,
    train: list[dict],
    dev: list[dict],
    thetas: list[dict],
    fit: Callable[[list[dict], dict], Any],
    dev_predict: Callable[[Any], list],
    dev_score: Callable[[list, list], float],
    mistakes: Callable[[list, list], list[bool]],
    generate: Callable[[list[dict], set, random.Random], list[dict]],
    label: Callable[[list[dict]], list],
    key: Callable[[dict], Any],
    examples_seen: Callable[[int, dict], int] = lambda n, theta: n,
    max_rounds: int = 4,
    prune: str = "worst",
    replay: int = 0,
    repair_fraction: float = 1.0,
    generate_train: Callable[[list[dict], set, random.Random], list[dict]] | None = None,
    verify: Callable[[list[dict]], list] | None = None,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
    theta_label: Callable[[dict], str] = str,
    log: Callable[[str], None] | None = None,
) -> AgoraResult:
    """Run Agora. `train`/`dev` are rows (dicts with the text columns and "label"); `fit(train_rows, θ)` returns a
    model trained from a fresh copy of model0; `dev_predict(model)` its predictions on all of dev; `dev_score(preds,
    golds)` the main metric (higher is better) of predictions against gold labels (a subset of dev);
    `mistakes(preds, golds)` one flag per row (acceptance.wrong_class / largest_errors); `generate(mistake_rows,
    banned_keys, rng)` new unlabelled rows; `label(rows)` the labeler's labels (a label, or a dict of fields to set
    with "label" among them; `Rejected(reason)` or None = reject the row); `key(row)` the text key used to ban
    duplicates. `progress` gets a short text per θ run, `log` one line per round (`round_line`). Every round's
    best model is returned in `round_models` (the caller scores them on test at the end)."""
    if not thetas:
        raise ValueError("Θ is empty: give at least one hyperparameter set.")
    rng = random.Random(seed)
    repair_idx, select_idx = split_dev([r["label"] for r in dev], repair_fraction, seed)
    select_gold = [dev[i]["label"] for i in select_idx]
    repair_gold = [dev[i]["label"] for i in repair_idx]
    train, original_train, theta_set = list(train), list(train), list(thetas)
    banned = {key(r) for r in train} | {key(r) for r in dev}  # generated texts never duplicate train or dev texts
    rounds: list[RoundRecord] = []
    result = AgoraResult(best_model=None, best_round=-1, best_dev_score=float("-inf"), rounds=rounds)
    replays_left = replay
    r = 0
    while theta_set and r < max_rounds:
        r += 1
        start = time.perf_counter()
        results = fit_round(r, train, theta_set, fit=fit, dev_predict=dev_predict, dev_score=dev_score,
                            select_idx=select_idx, select_gold=select_gold, progress=progress, theta_label=theta_label)
        seen = sum(examples_seen(len(train), t) for t, *_ in results)
        result.examples_seen += seen
        # m* = best on dev (the first θ wins ties, so the order of Θ decides them reproducibly)
        theta_b, score_b, model_b, preds_b = max(results, key=lambda x: _rank(x[1]))
        # Round 1 (plain fine-tuning) is always the first best; a later round must be STRICTLY better on the
        # selection part to replace it (ties keep the earlier round), so the result is never below plain round 1.
        improved = r == 1 or _rank(score_b) > _rank(result.best_dev_score)
        if improved:
            result.best_model, result.best_round, result.best_dev_score = model_b, r, score_b
        result.round_models[r] = model_b
        new_theta_set, do_replay = next_thetas(results, theta_set, improved=improved, replays_left=replays_left,
                                               prune=prune, first_round=not rounds)
        replays_left -= do_replay
        stop_reason = (f"round budget reached (max_rounds {max_rounds})" if r >= max_rounds else
                       "Θ is empty after pruning" if not new_theta_set else None)
        last_round = stop_reason is not None  # nothing is generated after the last round (it could not be used)
        wrong = repair_mistakes(preds_b, dev, repair_idx, mistakes)
        expand_train = generate_train is not None and r == 1  # ours: variants of the original train rows, once
        repair = Repair(wrong) if last_round else repair_step(
            wrong, original_train if expand_train else None, verify=verify, mistakes=mistakes, generate=generate,
            generate_train=generate_train, label=label, key=key, banned=banned, rng=rng)
        if not last_round and not repair.rows:
            # train would be unchanged: the next round would re-fit the remaining θ on the same data (ours: stop)
            stop_reason = _no_rows_reason(len(wrong), repair.expanded, repair.generated, repair.rejections,
                                          expand_train)
        rec = RoundRecord(
            round=r, thetas=[{"theta": t, "dev_score": s} for t, s, *_ in results], best_theta=theta_b,
            dev_score=score_b, mistakes=len(wrong), examples_added=len(repair.rows), train_size=len(train),
            examples_seen=seen, replay=do_replay, improved=improved, seconds=time.perf_counter() - start,
            repair_dev_score=(dev_score([preds_b[i] for i in repair_idx], repair_gold) if repair_fraction < 1
                              else None),
            examples_rejected=repair.rejected, mistakes_expanded=repair.expanded, generated=repair.generated,
            rejections=repair.rejections, stop_reason=stop_reason)
        rounds.append(rec)
        if log:
            log(round_line(rec))
        train.extend(repair.rows)
        result.added_rows.extend(repair.rows)
        theta_set = new_theta_set
        del results
        if stop_reason is not None:
            break
    result.stop_reason = rounds[-1].stop_reason or "Θ is empty"
    result.baseline_dev_score = rounds[0].dev_score
    return result


def _fresh(candidates: list[dict], key: Callable[[dict], Any], banned: set, rejections: dict) -> list[dict]:
    """The candidates whose text is new (not banned, not repeated within the batch); the rest count as DUPLICATE."""
    out, seen = [], set()
    for c in candidates:
        k = key(c)
        if k in banned or k in seen:
            rejections[DUPLICATE] += 1
            continue
        seen.add(k)
        out.append(c)
    return out
