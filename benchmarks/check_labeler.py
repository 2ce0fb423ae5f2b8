"""How right is Agora's labeler on the student's dev mistakes? (the check behind `verify_mistakes`, BENCHMARKS.md)

Agora labels variants of the student's dev mistakes with the labeler (docs/methods/03-agora.md §3). This script compares the
labeler's accuracy on those mistakes with its accuracy on all of dev, and by confidence threshold, on the same
split as benchmarks/bench_agora.py.

    .venv/bin/python benchmarks/check_labeler.py --student DIR --labeler DIR
"""

from __future__ import annotations

import argparse
import json
import sys

import common  # noqa: F401  (the environment first, benchmarks/common.py)

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True, help="a fine-tuned student classifier (bortify finetune output)")
    p.add_argument("--labeler", required=True, help="the labeler classifier (e.g. bench_agora's <work>/labeler)")
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--dev", type=int, default=2000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--dev_fraction", type=float, default=0.2)
    p.add_argument("--max_length", type=int, default=32)
    args = p.parse_args(argv)

    from bortify.finetuning.labelers import Labeler
    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import load_classifier, predict, tokenize

    task = prepare_task("embedded:rotten-tomatoes", max_train_samples=args.train, max_dev_samples=args.dev,
                        max_test_samples=args.test, dev_fraction=args.dev_fraction, split_seed=42)
    student, tok = load_classifier(args.student, task.label_names, False)
    student_pred = predict(student, tok, tokenize(task.dev, tok, task.text_columns, args.max_length)).argmax(-1)
    lab_model, lab_tok = load_classifier(args.labeler, task.label_names, False)
    labeler = Labeler(lab_model, lab_tok, task, max_length=args.max_length)
    probs = labeler.probabilities(list(task.dev))
    lab_pred, conf = probs.argmax(1), probs.max(1)
    gold = np.asarray(task.dev["label"])
    mistake = student_pred != gold
    out = {
        "dev_rows": int(len(gold)),
        "student_dev_accuracy": float((~mistake).mean()),
        "labeler_dev_accuracy": float((lab_pred == gold).mean()),
        "student_mistakes": int(mistake.sum()),
        "labeler_accuracy_on_student_mistakes": float((lab_pred[mistake] == gold[mistake]).mean()),
        "labeler_accuracy_where_student_right": float((lab_pred[~mistake] == gold[~mistake]).mean()),
        "labeler_confidence_quantiles_10_50_90": [float(x) for x in np.quantile(conf, [0.1, 0.5, 0.9])],
        "by_confidence": [{"min_confidence": t, "mistakes": int((mistake & (conf >= t)).sum()),
                           "labeler_accuracy": float((lab_pred[mistake & (conf >= t)] == gold[mistake & (conf >= t)]).mean())}
                          for t in (0.6, 0.7, 0.8, 0.9) if (mistake & (conf >= t)).any()],
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
