"""What a card says about the data a model was scored on: where dev and test came from, the notes under the
evaluation table, the test set's overlap with earlier stages' data (docs/methods/09-heldout.md §9), the majority-class
baseline, and the example the usage snippet classifies. Each reads a typed FinetuneReport (bortify.reports).
"""

from __future__ import annotations

import json
import re

from bortify.reports import FinetuneReport

DEFAULT_EXAMPLE = "Replace this with a text like the ones the model was trained on."
STUDENT_EXAMPLE = "A small encoder distilled from a larger one."


def split_facts(ft: FinetuneReport) -> dict:
    """Where dev and test came from, per part ("test", "dev"): `{part}_name` (the dataset's own split it is, or
    None), `{part}_carved` (True: a seeded split carved from train by bortify; None: the report does not say),
    `{part}_how` (the report's sentence), and `test_official` (the dataset's official test split)."""
    splits = ft.splits
    how = splits.get("how") or {}
    facts = {}
    for part in ("test", "dev"):
        text = how.get(part)
        own = re.search(r"the dataset's '([^']+)' split", text or "")
        source = splits.get(f"{part}_source")
        carved = True if source == "carved" or (text and "seeded" in text and not own) else (False if own or source else None)
        facts.update({f"{part}_name": own.group(1) if own else None, f"{part}_carved": carved, f"{part}_how": text})
    official = splits.get("test_official")  # True / False, or None: the report does not say
    facts["test_official"] = official if official is not None else (
        facts["test_name"] == "test" if facts["test_name"] else (False if facts["test_carved"] else None))
    if facts["test_official"] is False and facts["test_carved"] is None and not facts["test_name"]:
        facts["test_carved"] = True  # test_official False and no own split named: carved from train
    return facts


def split_labels(ft: FinetuneReport) -> dict[str, str]:
    """Report key -> the name a card gives its scores: the dataset's own split name, 'test (held out from train)'
    for a carved split, 'dev (selection half)' when Agora kept the other half for repairs."""
    facts = split_facts(ft)
    halves = bool(ft.dev_repair)  # Agora kept a repair part of dev apart from the selection part
    dev = facts["dev_name"] or "dev"
    test = facts["test_name"] or ("test (held out from train)" if facts["test_carved"] else "test")
    return {"dev": f"{dev} (selection half)" if halves else dev, "dev_repair": f"{dev} (repair half)", "test": test}


def evaluation_notes(ft: FinetuneReport) -> list[str]:
    """Sentences under the evaluation table: where each split came from, what the dev score is, F1's class."""
    facts, notes = split_facts(ft), []
    if facts["test_name"] and facts["test_official"]:
        notes.append(f"Test scores are on the dataset's own `{facts['test_name']}` split.")
    elif facts["test_name"]:
        notes.append(f"Test scores are on the dataset's own `{facts['test_name']}` split, held out from training and "
                     "model selection (the dataset's official test split was not used).")
    elif facts["test_carved"]:
        notes.append("\"test (held out from train)\" is a " + (facts["test_how"] or "seeded split of the training data")
                     + ", carved from the training data by bortify: it is not the dataset's official test split.")
    if ft.dev_note and ft.dev_note.strip():
        notes.append(ft.dev_note.strip().rstrip(".") + ".")
    elif facts["dev_how"]:
        notes.append(f"The dev split is {facts['dev_how']}; it selected the model, so its score is optimistic.")
    if ft.positive_label not in (None, "") and any(k.endswith("f1") for k in ft.test):
        notes.append(f"F1 counts `{ft.positive_label}` as the positive class.")
    return notes


def baseline_line(ft: FinetuneReport) -> str | None:
    """'Majority-class baseline (always `fresh`): test accuracy 0.5780.' — the floor the scores above beat."""
    b = ft.baseline
    if not b or not isinstance(b.get("test"), dict):
        return None
    scores = ", ".join(f"{k} {v:.4f}" for k, v in b["test"].items())
    return f"Majority-class baseline (always `{b.get('class')}`, the most frequent train label): test {scores}."


def overlap_lines(ft: FinetuneReport) -> list[str]:
    """The card's statement of test-set overlap (docs/methods/09-heldout.md §9): one line with the count of test texts any
    stage saw, and one for user files whose test rows repeated train rows."""
    o = ft.overlap
    if not ft:
        return []
    if not o:
        return ["Overlap of the test texts with the data of earlier stages: not measured (the fine-tuning report "
                "predates this check)."]
    n, seen = o.get("test_rows"), o.get("seen") or {}
    names = {"train": "fine-tuning train", "dev": "dev", "transfer": "the distillation transfer set",
             "corpus": "the pretraining corpus", "extraction": "the extraction estimator's data"}
    held = ", ".join(f"{names.get(k, k)} {v:,}" for k, v in seen.items() if v)
    if o.get("seen_by_any_stage") is not None:
        k = o["seen_by_any_stage"]
        line = f"**{k:,} of {n:,} test texts were seen by any stage**" + (f" ({held})" if k else "")
    else:
        missing = ", ".join(names.get(k, k) for k in o.get("not_checked") or [])
        line = (f"**At least {o.get('seen_by_any_stage_at_least', 0):,} of {n:,} test texts were seen by a stage**"
                + (f" ({held})" if held else "") + f"; not checked: {missing}")
    dropped = [(names.get(k, k), (v or {}).get("dropped")) for k, v in (o.get("upstream") or {}).items()]
    kept = [f"{what} ({d:,})" for what, d in dropped if d]
    in_stage = sum(v for v in (o.get("dropped") or {}).values() if isinstance(v, int))
    if in_stage:
        kept.append(f"fine-tuning's train, dev and unlabelled rows ({in_stage:,})")
    line += (" (texts compared after lower-casing and collapsing white space"
             + (f"; the run kept the test texts out of {', '.join(kept)}" if kept else "") + ").")
    lines = [line]
    if o.get("user_files_test_repeats_train"):
        lines.append(f"{o['user_files_test_repeats_train']:,} of the {n:,} test rows of the supplied data files "
                     "repeated train rows; those train rows were dropped before training.")
    return lines


def example_text(ft: FinetuneReport, kind: str) -> str | list[str]:
    """What the usage snippet classifies: the report's `example_text` (a text, or a [text, text] pair for pair
    tasks; each one line of at most 200 characters), else a neutral placeholder sentence."""
    value = ft.example_text if kind == "task" else None
    texts = [value] if isinstance(value, str) else value
    if not texts or not 1 <= len(texts) <= 2 or not all(t.strip() for t in texts):
        return DEFAULT_EXAMPLE if kind == "task" else STUDENT_EXAMPLE
    texts = [" ".join(t.split()) for t in texts]
    texts = [t if len(t) <= 200 else t[:197].rstrip() + "..." for t in texts]
    return texts[0] if len(texts) == 1 else texts


def example_literal(ft: FinetuneReport, kind: str) -> str:
    """The example as a Python literal for the snippet: "text", or {"text": ..., "text_pair": ...} for a pair
    (what the text-classification pipeline takes)."""
    example = example_text(ft, kind)
    if isinstance(example, list):
        return "{" + f'"text": {json.dumps(example[0], ensure_ascii=False)}, ' \
                     f'"text_pair": {json.dumps(example[1], ensure_ascii=False)}' + "}"
    return json.dumps(example, ensure_ascii=False)
