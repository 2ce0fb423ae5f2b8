"""Regression-free updates (docs/methods.md §4): does focal distillation cut the negative flips of a student that
replaces its fine-tuned teacher?

Per task and seed: old = all-MiniLM-L6-v2 fine-tuned on the task's train rows (build_labeler, as the demo's
teacher); new = the bortify student (default: the demo run's pretrained student, runs/demo/pretrain) fine-tuned
on the same rows (a) plainly (CE) and (b) with focal distillation against the old model (congruent.py; λ α β and
D as given). Same θ, epochs and seed for both; the old model's logits are computed once per train text (the
cache) and that pass is timed apart. Reported per run: test accuracy of old and new, NFR, relative NFR, PFR,
training seconds.

    .venv/bin/python benchmarks/bench_flips.py --seeds 0 --max_train 600 --max_test 1000      # ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_flips.py --seeds 0 1 2 --tasks embedded:rotten-tomatoes embedded:debates

Writes benchmarks/results/flips.json (after every run) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent
TEACHER = "embedded:all-MiniLM-L6-v2"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["embedded:rotten-tomatoes", "embedded:debates"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--student", default="runs/demo/pretrain", help="the new model's starting checkpoint")
    p.add_argument("--max_train", type=int, default=600)
    p.add_argument("--max_test", type=int, default=1000)
    p.add_argument("--max_length", type=int, default=40)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--teacher_epochs", type=float, default=3.0)
    p.add_argument("--teacher_learning_rate", type=float, default=1e-4)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=5.0)
    p.add_argument("--divergence", default="l2", choices=["l2", "kl"])
    p.add_argument("--agora", action="store_true", help="also Agora mode (labeler = the old model), with and "
                   "without --old_model, through the library's finetune() (max_rounds 3, k 4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "flips.json"))
    return p.parse_args(argv)


def run_task(name: str, seed: int, args) -> dict:
    import transformers

    from bortify.finetuning.congruent import (FocalDistillation, OldOutputCache, fit_congruent, old_right_flags,
                                              with_old_outputs)
    from bortify.finetuning.labelers import build_labeler
    from bortify.finetuning.old_model import TaskClassifier
    from bortify.finetuning.tasks import prepare_task
    from bortify.finetuning.trainer import fit, load_classifier, predict, tokenize
    from bortify.metrics.flips.flips import flip_statistics

    task = prepare_task(name, max_train_samples=args.max_train, max_test_samples=args.max_test, split_seed=42)
    cols = task.text_columns
    t0 = time.perf_counter()
    labeler = build_labeler(task, labeler=None, teacher=TEACHER, max_length=args.max_length, seed=seed,
                            epochs=args.teacher_epochs, learning_rate=args.teacher_learning_rate, min_dev_score=0.0)
    teacher_s = time.perf_counter() - t0
    old = TaskClassifier(labeler.model, labeler.tokenizer, TEACHER, list(range(task.num_labels)))
    old_test = old.logits(task.test, cols, max_length=args.max_length).argmax(1)

    transformers.set_seed(seed)
    student0, tok = load_classifier(args.student, task.label_names, False)
    train_tok = tokenize(task.train, tok, cols, args.max_length)
    test_tok = tokenize(task.test, tok, cols, args.max_length)
    theta = {"learning_rate": args.learning_rate, "weight_decay": 0.01, "warmup_ratio": 0.1,
             "batch_size": args.batch_size}
    gold = list(task.test["label"])
    out = {"task": name, "seed": seed, "train": len(task.train), "test": len(task.test), "labels": task.label_names,
           "teacher_seconds": round(teacher_s, 1), "old_accuracy": float((old_test == gold).mean())}

    def evaluate(model, key, seconds):
        new_test = predict(model, tok, test_tok).argmax(1)
        stats = flip_statistics(gold, old_test.tolist(), new_test.tolist())
        out[key] = {"accuracy": stats["accuracy_new"], "nfr": stats["nfr"], "relative_nfr": stats["relative_nfr"],
                    "pfr": stats["pfr"], "train_seconds": round(seconds, 1)}

    t = time.perf_counter()
    evaluate(fit(student0, tok, train_tok, theta, epochs=args.epochs, seed=seed, desc="plain"), "plain",
             time.perf_counter() - t)

    t = time.perf_counter()
    cache = OldOutputCache(old, cols, max_length=args.max_length)
    rows = [{c: r[c] for c in cols} for r in task.train]
    logits = cache.logits_for(rows)
    right = old_right_flags(logits, task.train["label"])
    cache_s = time.perf_counter() - t
    focal = FocalDistillation(lam=args.lam, alpha=args.alpha, beta=args.beta, divergence=args.divergence)
    t = time.perf_counter()
    model = fit_congruent(student0, tok, with_old_outputs(train_tok, logits, right), theta, focal, epochs=args.epochs,
                          seed=seed, desc="focal")
    evaluate(model, "focal", time.perf_counter() - t)
    out["focal"]["old_pass_seconds"] = round(cache_s, 1)
    out["focal"]["settings"] = {"lam": args.lam, "alpha": args.alpha, "beta": args.beta, "divergence": args.divergence}
    if args.agora:
        for key, old_model in (("agora", None), ("agora_focal", "old")):
            t = time.perf_counter()
            new_test = agora_run(name, task, labeler, old_model, seed, args)
            stats = flip_statistics(gold, old_test.tolist(), new_test.tolist())
            out[key] = {"accuracy": stats["accuracy_new"], "nfr": stats["nfr"], "relative_nfr": stats["relative_nfr"],
                        "pfr": stats["pfr"], "train_seconds": round(time.perf_counter() - t, 1)}
    return out


def agora_run(name: str, task, labeler, old_model, seed: int, args):
    """Agora (docs/methods.md §3) through `finetune()`, the labeler being the old model (saved once), optionally with
    focal distillation against it; returns the best model's test predictions (task label order)."""
    import tempfile

    from bortify.finetuning.arguments import (AgoraArguments, CongruentArguments, FinetuneDataArguments,
                                              FinetuneGridArguments, FinetuneModelArguments)
    from bortify.finetuning.finetune import finetune
    from bortify.finetuning.old_model import load_task_classifier

    with tempfile.TemporaryDirectory(prefix="bench-flips-") as tmp:
        old_dir = Path(tmp) / "old"
        labeler.model.save_pretrained(old_dir)
        labeler.tokenizer.save_pretrained(old_dir)
        report = finetune(
            FinetuneModelArguments(model=args.student, output_dir=str(Path(tmp) / "new"), mode="agora", seed=seed,
                                   max_length=args.max_length),
            FinetuneDataArguments(dataset=name, max_train_samples=args.max_train,
                                  max_test_samples=args.max_test),
            FinetuneGridArguments(learning_rates=[args.learning_rate], weight_decays=[0.01], warmup_ratios=[0.1],
                                  batch_sizes=[args.batch_size], num_train_epochs=args.epochs),
            AgoraArguments(labeler=str(old_dir), max_rounds=3, k=4, labeler_min_dev_score=0.0), None,
            CongruentArguments(old_model=str(old_dir) if old_model else None, pc_lambda=args.lam, pc_alpha=args.alpha,
                               pc_beta=args.beta, pc_divergence=args.divergence))
        new = load_task_classifier(report.output_dir, task.label_names, "new model")
        return new.logits(task.test, task.text_columns, max_length=args.max_length).argmax(1)


def table(results: list[dict]) -> str:
    lines = ["| task | runs | old acc | plain acc | plain NFR | plain rNFR | focal acc | focal NFR | focal rNFR | "
             "NFR cut | plain s | focal s (+ old pass) |", "|" + "---|" * 12]
    for name in dict.fromkeys(r["task"] for r in results):
        rs = [r for r in results if r["task"] == name]

        def m(f):
            vals = [f(r) for r in rs]
            return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

        def cell(f, spec=".3f"):
            mu, sd = m(f)
            return f"{mu:{spec}}" + (f" ± {sd:{spec}}" if len(rs) > 1 else "")
        plain_nfr = m(lambda r: r["plain"]["nfr"])[0]
        cut = f"{1 - m(lambda r: r['focal']['nfr'])[0] / plain_nfr:.0%}" if plain_nfr > 0 else "n/a"
        lines.append(f"| {name} | {len(rs)} | {cell(lambda r: r['old_accuracy'])} "
                     f"| {cell(lambda r: r['plain']['accuracy'])} "
                     f"| {cell(lambda r: r['plain']['nfr'])} | {cell(lambda r: r['plain']['relative_nfr'], '.2f')} "
                     f"| {cell(lambda r: r['focal']['accuracy'])} | {cell(lambda r: r['focal']['nfr'])} "
                     f"| {cell(lambda r: r['focal']['relative_nfr'], '.2f')} | {cut} "
                     f"| {cell(lambda r: r['plain']['train_seconds'], '.0f')} "
                     f"| {cell(lambda r: r['focal']['train_seconds'], '.0f')} "
                     f"(+{cell(lambda r: r['focal']['old_pass_seconds'], '.0f')}) |")
    for r in results:  # Agora mode (--agora), per run
        if "agora" in r:
            lines.append(f"| {r['task']} seed {r['seed']} Agora | | | {r['agora']['accuracy']:.3f} | "
                         f"{r['agora']['nfr']:.3f} | {r['agora']['relative_nfr']:.2f} | "
                         f"{r['agora_focal']['accuracy']:.3f} | {r['agora_focal']['nfr']:.3f} | "
                         f"{r['agora_focal']['relative_nfr']:.2f} | | {r['agora']['train_seconds']:.0f} | "
                         f"{r['agora_focal']['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not Path(args.student).is_dir() and ":" not in args.student:
        print(f"--student {args.student} does not exist: run `make demo` (its pretrain stage) or give a checkpoint.",
              file=sys.stderr)
        return 2
    results = []
    for name in args.tasks:
        for seed in args.seeds:
            results.append(run_task(name, seed, args))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
            print(json.dumps(results[-1]), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
