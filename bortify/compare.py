"""`bortify compare OLD NEW`: what replacing OLD by NEW breaks, and a release gate (docs/methods/04-updates.md §4).

Both classifiers predict the same split of a task (the test split by default; the data options are
`bortify finetune`'s, and the task is loaded by bortify.finetuning.tasks.prepare_task, so the same options give
the same split). The report holds both models' scores and the flip metrics of the shipped `flips` module (NFR,
relative NFR, PFR, disagreement); the negative flips (old right, new wrong) are written to
`negative_flips.jsonl` (text(s), gold, old, new, both confidences), most confident new mistakes first.

Order of work, cheap checks first: output directory, both models' label names (config.json only) against each
other and against the task's labels — BY NAME: a different set is an error before any inference, the same names
in another order are re-mapped —, then weights and predictions.

Release gate: `--max_nfr 0.02` makes `bortify compare` (and `bortify run`, which stops before card/push) fail with
exit code 3 (`GATE_EXIT_CODE`; bad input exits 2) when NFR exceeds it, naming the flips file. The report and the
flips file are written first, so the failure can be inspected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bortify.outputs import Output, claim
from bortify.reports import CompareReport, read_report, write_report
from bortify.utils import help_field, json_text
from bortify.utils import (BortifyError, check_torch_threads, overwrite_field, torch_threads,
                           torch_threads_field, write_bytes_atomic)

FLIPS_FILE = "negative_flips.jsonl"
GATE_EXIT_CODE = 3  # `bortify compare` / `bortify run` exit code when the NFR gate fails (bad input: 2)
SPLITS = ("test", "dev")


class CompareError(BortifyError):
    """Inputs `bortify compare` cannot use (named, with the fix)."""


class GateError(BortifyError):
    """The release gate failed: NFR above --max_nfr. `exit_code` is what `bortify` exits with."""

    exit_code = GATE_EXIT_CODE


@dataclass
class CompareArguments:
    old_model: str | None = help_field(
        "The model being replaced: a fine-tuned classifier (directory, Hub or embedded name) whose id2label names are "
        "the task's labels. Default: the teacher the new model was distilled from, when its `bortify finetune` output "
        "kept it (save_teacher).", default=None)
    new_model: str | None = help_field("The replacing classifier (e.g. a `bortify finetune` output directory).",
                                  default=None)
    output_dir: str = help_field("Where report.json and negative_flips.jsonl are written.", default=None)
    max_nfr: float | None = help_field(
        "Release gate: fail (exit code 3) when the negative flip rate exceeds this, e.g. 0.02. Unset: report only.",
        default=None)
    split: str = help_field("Which split of the task both models predict: 'test' (default) or 'dev'.", default="test")
    max_length: int = help_field("Maximum tokens per example (text pairs together).", default=128)
    eval_batch_size: int = help_field("Prediction batch size.", default=64)
    overwrite: bool = overwrite_field()
    torch_threads: int | None = torch_threads_field()

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}.")
        if self.max_nfr is not None and not 0 <= self.max_nfr <= 1:
            raise ValueError(f"max_nfr is a rate in [0, 1], got {self.max_nfr} (0.02 = 2% of the examples).")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}.")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}.")
        check_torch_threads(self.torch_threads)


# ---- steps -----------------------------------------------------------------------------------------------------

def default_old_model(new_model: str) -> str | None:
    """The teacher kept beside a `bortify finetune` output (report.json's labeler.saved_to), if any."""
    try:
        report = read_report(new_model, "finetune") if Path(new_model).is_dir() else None
    except BortifyError:
        return None
    saved = ((report.labeler or {}).get("saved_to") if report is not None else None)
    return str(Path(new_model) / saved) if saved and (Path(new_model) / saved).is_dir() else None


def resolve_models(args: CompareArguments) -> tuple[str, str]:
    if not args.new_model:
        raise CompareError("Give the new model: `bortify compare OLD NEW` (or --new_model).")
    old = args.old_model or default_old_model(args.new_model)
    if not old:
        raise CompareError(f"Give the old model (the one {args.new_model!r} replaces): `bortify compare OLD NEW`, or "
                           "--old_model. Only a `bortify finetune` output that kept its teacher (save_teacher) "
                           "has a default.")
    return old, args.new_model


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def negative_flip_rows(split, text_columns: list[str], label_names: list[str], old_logits: np.ndarray,
                       new_logits: np.ndarray) -> list[dict]:
    """One record per negative flip (old right, new wrong): text(s), gold/old/new label names, each model's
    confidence in its own prediction; the new model's most confident mistakes first."""
    gold = np.asarray(split["label"])
    p_old, p_new = softmax(old_logits), softmax(new_logits)
    old, new = p_old.argmax(1), p_new.argmax(1)
    rows = []
    for i in np.flatnonzero((old == gold) & (new != gold)):
        texts = {c: split[int(i)][c] for c in text_columns}
        rows.append({"row": int(i), **texts, "gold": label_names[gold[i]], "old": label_names[old[i]],
                     "new": label_names[new[i]], "old_confidence": round(float(p_old[i, old[i]]), 4),
                     "new_confidence": round(float(p_new[i, new[i]]), 4)})
    return sorted(rows, key=lambda r: -r["new_confidence"])


def write_flips(path: Path, rows: list[dict]) -> None:
    write_bytes_atomic(path, "".join(json_text(r, what=str(path), ensure_ascii=False) + "\n" for r in rows).encode())


def gate(report: CompareReport, flips_path: Path) -> None:
    """Raise GateError when the report's NFR exceeds its max_nfr."""
    if report.max_nfr is not None and report.nfr > report.max_nfr:
        raise GateError(f"release gate failed: negative flip rate {report.nfr:.4f} ({report.negative_flips} of "
                        f"{report.rows} {report.split} examples the old model got right are now wrong) exceeds "
                        f"max_nfr {report.max_nfr:g}; the negative flips are listed in {flips_path}. Retrain with "
                        "focal distillation (`bortify finetune --old_model OLD`), or raise max_nfr deliberately.")


# ---- the stage -------------------------------------------------------------------------------------------------

def compare(args: CompareArguments, data_args) -> CompareReport:
    """Compare OLD and NEW on the task's split; write report.json and negative_flips.jsonl; apply the gate."""
    if not args.output_dir:
        raise CompareError("Give --output_dir (where report.json and the flips file go).")
    old_name, new_name = resolve_models(args)
    with torch_threads(args.torch_threads), claim("compare", args.output_dir, overwrite=args.overwrite,
                                                  inputs={"old model": old_name, "new model": new_name}) as output:
        return _compare(args, data_args, output)


def _compare(args: CompareArguments, data_args, output: Output) -> CompareReport:
    from bortify.finetuning.old_model import label_names, label_order, load_task_classifier, model_config
    from bortify.utils import fit_sequence_length
    from bortify.finetuning.tasks import dataset_display, load_task
    from bortify.finetuning.trainer import score
    from bortify.metrics import load_metric

    start = time.perf_counter()
    old_name, new_name = resolve_models(args)
    old_labels, new_labels = label_names(old_name, "old model"), label_names(new_name, "new model")
    if sorted(old_labels) != sorted(new_labels):
        raise CompareError(f"The old model predicts labels {old_labels} and the new model {new_labels}: a comparison "
                           "needs the same label names (config.id2label). Compare models of the same task.")
    task = load_task(data_args)
    if task.regression:
        raise CompareError("The task is regression: flips are defined for classifiers. Compare classifiers.")
    for names, what in ((old_labels, "old model"), (new_labels, "new model")):
        label_order(names, task.label_names, what)  # a LabelSetError before any weights are read
    default = next(f.default for f in fields(CompareArguments) if f.name == "max_length")
    models = [(model_config(n, w), f"the {w} {n!r}") for n, w in ((old_name, "old model"), (new_name, "new model"))]
    args.max_length = fit_sequence_length(args.max_length, default, models, "--max_length")  # a default: shortened
    split = task.test if args.split == "test" else task.dev
    kw = {"max_length": args.max_length, "batch_size": args.eval_batch_size}
    old = load_task_classifier(old_name, task.label_names, "old model")
    old_logits = old.logits(split, task.text_columns, **kw)
    del old.model
    new = load_task_classifier(new_name, task.label_names, "new model")
    new_logits = new.logits(split, task.text_columns, **kw)
    gold = list(split["label"])
    old_pred, new_pred = old_logits.argmax(1).tolist(), new_logits.argmax(1).tolist()
    flips = load_metric("flips").compute(references=gold, old_predictions=old_pred, new_predictions=new_pred)
    rows = negative_flip_rows(split, task.text_columns, task.label_names, old_logits, new_logits)

    out = output.work_dir()  # built beside --output_dir, swapped in by commit() (bortify.outputs)
    write_flips(out / FLIPS_FILE, rows)
    report = CompareReport.make({
        "old_model": old_name, "new_model": new_name,
        "dataset": dataset_display(data_args.resolved_dataset(), data_args.data_files()), "task": task.name,
        "split": args.split, "split_how": task.splits.get("how", {}).get(args.split), "rows": len(split),
        "labels": task.label_names, "metric": task.main_metric,
        "remapped": [what for what, m in (("old", old), ("new", new)) if m.remapped],
        "old": score(old_pred, gold, task.metrics, task.num_labels),
        "new": score(new_pred, gold, task.metrics, task.num_labels),
        **{k: flips[k] for k in ("nfr", "relative_nfr", "pfr", "disagreement", "negative_flips", "positive_flips")},
        "max_nfr": args.max_nfr,
        "passed": None if args.max_nfr is None else bool(flips["nfr"] <= args.max_nfr),
        "flips_file": FLIPS_FILE,
        "seconds": round(time.perf_counter() - start, 1),
    }, output_dir=str(args.output_dir))
    write_report(out, report)
    output.commit()  # the report and flips stay for inspection when the gate fails
    gate(report, Path(args.output_dir) / FLIPS_FILE)
    return report
