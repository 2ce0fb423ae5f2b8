"""The task-distilled student's dev and test scores after every epoch, with a saved teacher: how long the student
should train, and whether the dev-chosen epoch (`--distill_best_epoch`) is a good one.

The steps are bortify's own (bortify.finetuning.distill: unlabeled_pool, build_transfer_set, teacher_logits_for,
tokenize_transfer, train_distilled), in the order `distill()` runs them, on one panel seed of bench_panels.py
(benchmarks/panels.py builds the CSVs) and the teacher that seed's `bortify finetune` chose and saved. The curve is
for reading, not for choosing: the product never looks at test. Not bit-identical to a CLI run (the student's head
is initialised from another random state).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_student_curve.py --panel many-class --seed 1 --epochs 8

Writes benchmarks/results/student_curve_<panel>_seed<seed>_e<epochs>.json after every epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from transformers import TrainerCallback

import panels as panel_data
from bortify.finetuning import distill as D
from bortify.finetuning.arguments import FinetuneDataArguments, TaskDistillArguments
from bortify.finetuning.labelers import build_labeler
from bortify.finetuning.tasks import load_task
from bortify.finetuning.trainer import load_classifier_with_note, predict, tokenize

RESULTS = Path(__file__).parent / "results"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--panel", required=True, choices=list(panel_data.PANELS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=float, default=8.0)
    p.add_argument("--student", default="runs/demo/pretrain")
    p.add_argument("--teacher", default=None, help="default: runs/panels-work/<panel>/seed<seed>/bortify/teacher")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--cache", default=str(panel_data.CACHE))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.teacher = args.teacher or f"runs/panels-work/{args.panel}/seed{args.seed}/bortify/teacher"
    args.out = Path(args.out or RESULTS / f"student_curve_{args.panel}_seed{args.seed}_e{args.epochs:g}.json")
    return args


class Curve(TrainerCallback):
    """Dev and test accuracy (and test macro-F1) after every epoch, written to `out` each time."""

    def __init__(self, tok, dev_tok, test_tok, task, record: dict, out: Path):
        self.tok, self.dev_tok, self.test_tok, self.task, self.record, self.out = (tok, dev_tok, test_tok, task,
                                                                                   record, out)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        dev = predict(model, self.tok, self.dev_tok).argmax(1)
        test = predict(model, self.tok, self.test_tok).argmax(1)
        model.train()
        gold_dev, gold_test = np.array(self.task.dev["label"]), np.array(self.task.test["label"])
        self.record["curve"].append({"epoch": round(state.epoch, 2), "dev": round(float(np.mean(dev == gold_dev)), 4),
                                     "test": round(float(np.mean(test == gold_test)), 4),
                                     "test_macro_f1": round(float(f1_score(gold_test, test, average="macro")), 4),
                                     "time": round(time.time())})
        print(self.record["curve"][-1], flush=True)
        self.out.write_text(json.dumps(self.record, indent=1))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    folder = panel_data.build_panel(args.panel, args.seed, cache=Path(args.cache))
    task = load_task(FinetuneDataArguments(train_file=str(folder / "train.csv"), dev_file=str(folder / "dev.csv"),
                                           test_file=str(folder / "test.csv"), text_columns=["text"],
                                           label_column="label"))
    teacher = build_labeler(task, labeler=args.teacher, teacher="embedded:all-MiniLM-L6-v2", max_length=args.max_length,
                            seed=args.seed, min_dev_score=-1.0)
    student0, tok, _ = load_classifier_with_note(args.student, task.label_names, False)
    dargs = replace(TaskDistillArguments(distill_unlabeled_file=str(folder / "pool.csv")), distill_epochs=args.epochs)
    pool, _ = D.unlabeled_pool(task, dargs, None)
    transfer = D.build_transfer_set(task, unlabeled_rows=pool, max_unlabeled=dargs.distill_max_unlabeled,
                                    seed=args.seed)
    logits = D.teacher_logits_for(teacher, transfer.rows, ["text"])
    train_tok = D.tokenize_transfer(transfer.rows, logits, tok, ["text"], args.max_length, False)
    record = {"panel": args.panel, "seed": args.seed, "epochs": args.epochs, "teacher": args.teacher,
              "teacher_dev": teacher.dev_score, "transfer_rows": len(train_tok), "curve": [],
              "command": "python benchmarks/bench_student_curve.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    curve = Curve(tok, tokenize(task.dev, tok, ["text"], args.max_length),
                  tokenize(task.test, tok, ["text"], args.max_length), task, record, args.out)
    model, loss = D.train_distilled(student0, tok, train_tok, dargs, seed=args.seed, callbacks=[curve])
    record["agreement"] = D.teacher_agreement(model, tok, train_tok, logits, regression=False, seed=args.seed)
    record["train_loss"] = round(loss, 4)
    best = max(range(len(record["curve"])), key=lambda i: (record["curve"][i]["dev"], -i))  # the first best, as BestEpoch
    record["best_dev_epoch"] = record["curve"][best]
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["best_dev_epoch"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
