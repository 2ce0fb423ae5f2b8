"""BCT's influence loss in fine-tuning (docs/methods/04-updates.md §4.4): can the fine-tuned student's embedding
search an index built by the model it replaces?

Per task and seed: old = all-MiniLM-L6-v2 fine-tuned on the task's train rows (the demo's teacher: 3 epochs, lr
1e-4; its [CLS] embedding is the index's vector, its frozen head w_old). New = the bortify student (default: the
demo run's pretrained student) fine-tuned through the library's `finetune()` in plain mode (one θ: lr 5e-4, batch
32, 3 epochs) and in task-distillation mode (the default; teacher = the old model, TaskDistillArguments()
defaults), each **without** and **with** `--compatible_with old` (w_compat 1). BCT's compatibility test on the
test split (gallery embedded by the old model, queries by the new one through φ; kNN accuracy k = 10, recall@1):
new→old, old→old, new→new. A student trained without the option has no φ; its baseline φ is the ridge read-out
of the old [CLS] embeddings of the train texts from its own (the best linear map it can get without training for
it) — BCT's "should fail" baseline. A student trained WITH the option ships the better, on dev, of its trained φ and
that same ridge refit (docs/methods/04-updates.md §4.4, "Which φ ships"); the choice is recorded. Also test accuracy and
fine-tuning seconds of each arm (the cost).

    .venv/bin/python benchmarks/bench_influence.py --seeds 0 1 2 --tasks embedded:rotten-tomatoes \\
        --out benchmarks/results/influence_rotten-tomatoes.json

Writes --out after every run and prints a markdown table (mean ± sd over the seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS  # first: the environment (benchmarks/common.py)

ROOT = Path(__file__).resolve().parent
from bench_flips import TEACHER, _cell, run_grid  # noqa: E402 (same old model, table cells, seed loop)

ARMS = [(mode, compat) for mode in ("plain", "distill") for compat in (False, True)]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["embedded:rotten-tomatoes", "embedded:debates"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--student", default="runs/demo/pretrain", help="the new model's starting checkpoint")
    p.add_argument("--modes", nargs="+", default=["plain", "distill"], choices=["plain", "distill"])
    p.add_argument("--max_train", type=int, default=600)
    p.add_argument("--max_test", type=int, default=1000)
    p.add_argument("--max_length", type=int, default=40)
    p.add_argument("--w_compat", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "influence.json"))
    return p.parse_args(argv)


def baseline_table(out_dir: Path, old_dir: Path, task, seed: int, max_length: int) -> dict:
    """BCT's test for a student fine-tuned WITHOUT the option: its [CLS] embedding through the ridge read-out of the
    old [CLS] embeddings of the train texts — the library's φ start (CompatFinetune, init lstsq) computed on the
    trained student — on the report's split (split_gallery_queries, same seed)."""
    from bortify.finetuning.compatible import CompatFinetune, CompatSettings, cls_encoder
    from bortify.compatible_embeddings.metric import run_compatibility_test, split_gallery_queries
    from bortify.finetuning.old_model import load_task_classifier

    col = task.text_columns[0]
    new = load_task_classifier(str(out_dir), task.label_names, "new model")
    compat = CompatFinetune(CompatSettings(str(old_dir)), task, new.model, new.tokenizer, max_length=max_length)
    split = split_gallery_queries(list(task.test[col]), [int(x) for x in task.test["label"]], 2000, 500, seed)
    return run_compatibility_test(compat.old_encoder, cls_encoder(new.model, new.tokenizer, max_length,
                                                                  compat.projection0), split, knn_k=10, recall_ks=(1, 5))


def run_task(name: str, seed: int, args, work: Path) -> dict:
    from bortify.finetuning.arguments import (AgoraArguments, CompatibleArguments, FinetuneDataArguments,
                                              FinetuneGridArguments, FinetuneModelArguments)
    from bortify.finetuning.finetune import finetune
    from bortify.finetuning.labelers import build_labeler
    from bortify.finetuning.tasks import prepare_task

    task = prepare_task(name, max_train_samples=args.max_train, max_test_samples=args.max_test, split_seed=42)
    t0 = time.perf_counter()
    old = build_labeler(task, labeler=None, teacher=TEACHER, max_length=args.max_length, seed=seed, epochs=3.0,
                        learning_rate=1e-4, min_dev_score=0.0)
    old_dir = work / f"{name.split(':')[-1]}-s{seed}-old"
    old.model.save_pretrained(old_dir)
    old.tokenizer.save_pretrained(old_dir)
    out = {"task": name, "seed": seed, "train": len(task.train), "test": len(task.test),
           "old_seconds": round(time.perf_counter() - t0, 1)}
    for mode, compat in ARMS:
        if mode not in args.modes:
            continue
        key = f"{mode}_{'with' if compat else 'without'}"
        run_dir = work / f"{name.split(':')[-1]}-s{seed}-{key}"
        t = time.perf_counter()
        report = finetune(
            FinetuneModelArguments(model=args.student, output_dir=str(run_dir), mode=mode, seed=seed,
                                   max_length=args.max_length, overwrite=True),
            FinetuneDataArguments(dataset=name, max_train_samples=args.max_train, max_test_samples=args.max_test),
            FinetuneGridArguments(learning_rates=[5e-4], weight_decays=[0.01], warmup_ratios=[0.1], batch_sizes=[32],
                                  num_train_epochs=3.0),
            AgoraArguments(labeler=str(old_dir), labeler_min_dev_score=0.0), None, None,
            CompatibleArguments(compatible_with=str(old_dir) if compat else None, w_compat=args.w_compat))
        seconds = time.perf_counter() - t
        table = report.compatibility if compat else baseline_table(run_dir, old_dir, task, seed, args.max_length)
        out[key] = {"accuracy": report.test.get("accuracy"), "train_seconds": report.train_seconds,
                    "wall_seconds": round(seconds, 1),
                    **{row: table[row] for row in ("new_old", "old_old", "new_new")},
                    "criterion_met": table["criterion_met"],
                    "projection_choice": table.get("projection_choice") if compat else "ridge fit after training"}
        print(json.dumps({"task": name, "seed": seed, key: out[key]}), flush=True)
    return out


def table(results: list[dict]) -> str:
    def cell(rs, f, spec=".3f"):
        return _cell(rs)(f, spec)

    lines = ["| task | arm | seeds | test acc | old→old kNN | new→old kNN | new→new kNN | new→old R@1 | criterion met | "
             "fine-tuning s |", "|" + "---|" * 10]
    for name in dict.fromkeys(r["task"] for r in results):
        rs = [r for r in results if r["task"] == name]
        for key in [k for k in rs[0] if k.endswith(("_with", "_without"))]:
            knn = lambda row: (lambda r: r[key][row]["knn_accuracy"])  # noqa: E731
            lines.append(f"| {name} | {key.replace('_', ' ')} | {len(rs)} | {cell(rs, lambda r: r[key]['accuracy'])} "
                         f"| {cell(rs, knn('old_old'))} | {cell(rs, knn('new_old'))} | {cell(rs, knn('new_new'))} "
                         f"| {cell(rs, lambda r: r[key]['new_old']['recall@1'])} "
                         f"| {sum(r[key]['criterion_met'] for r in rs)}/{len(rs)} "
                         f"| {cell(rs, lambda r: r[key]['train_seconds'], '.0f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="bench-influence-") as tmp:
        results = run_grid(args, lambda name, seed: run_task(name, seed, args, Path(tmp)))
    if results is None:
        return 2
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
