"""Agora vs plain fine-tuning vs the teacher on Rotten Tomatoes (Agora's claim, docs/methods/03-agora.md §3), side by side in one run.

Regime (defaults): 300 labelled train rows, a 2,000-row dev set (Agora: 1,000 repair + 1,000 selection), 1,000
test rows, max 32 tokens. For each seed, on the same data split and the same student checkpoint:
  - agora: the Agora loop (docs/methods/03-agora.md §3) with our changes (labeler-verified mistakes, soft labels, repair /
    selection dev split, class-balanced acceptance); the labeler is the teacher (all-MiniLM-L6-v2) fine-tuned on
    the same train subsample, so its test accuracy is the "teacher fine-tuned on the same data" baseline;
  - paper (ablation, unless --no_ablation): the paper's loop on the same Θ and k;
  - plain: every θ of the same Θ once on the original train set, with epochs scaled so that the total number
    of training examples processed equals Agora's (the same compute), best on dev.
Only the final models touch the test split. Writes benchmarks/results/agora_v3.json and prints a markdown table.

    .venv/bin/python benchmarks/bench_agora.py --jobs 3   # default student: MiniLM sliced to L2 here
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, mean_sd  # first: the environment (benchmarks/common.py)

from bortify.finetuning.arguments import (AgoraArguments, FinetuneDataArguments, FinetuneGridArguments,  # noqa: E402
                                          FinetuneModelArguments)
from bortify.finetuning.finetune import finetune  # noqa: E402
from bortify.utils import write_json_atomic  # noqa: E402



def sliced_student(out: Path, layers: int, intermediate: int) -> str:
    """A student sliced from MiniLM (bortify.slicing), used when no pretrained student is given."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    from bortify.resources import resolve_model
    from bortify.slicing import init_from_teacher

    teacher_path = resolve_model("embedded:all-MiniLM-L6-v2")
    teacher = AutoModel.from_pretrained(teacher_path)
    cfg = BertConfig(vocab_size=teacher.config.vocab_size, hidden_size=384, num_hidden_layers=layers,
                     num_attention_heads=12, intermediate_size=intermediate, max_position_embeddings=512)
    student = BertModel(cfg)
    init_from_teacher(student, teacher)
    student.save_pretrained(out)
    AutoTokenizer.from_pretrained(teacher_path).save_pretrained(out)
    return str(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=None, help="student checkpoint dir (default: MiniLM sliced to L2 I768)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--train", type=int, default=300, help="train subsample (small-data regime)")
    p.add_argument("--dev", type=int, default=2000, help="dev rows (Agora: half repair, half selection)")
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--dev_fraction", type=float, default=0.2,
                   help="fraction of the 12,808 rows set aside as the dev pool (--dev rows are drawn from it)")
    p.add_argument("--max_length", type=int, default=32)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--learning_rates", type=float, nargs="+", default=[1e-3, 5e-4, 2e-4],
                   help="Θ learning rates (a small sliced student needs large ones; 3 θ -> 2 repair rounds)")
    p.add_argument("--repair_fraction", type=float, default=0.5, help="Agora: dev fraction whose mistakes are expanded")
    p.add_argument("--no_balance", action="store_true", help="Agora: no class-balanced acceptance")
    p.add_argument("--min_labeler_confidence", type=float, default=None)
    p.add_argument("--train_k", type=int, default=0, help="Agora: variants of every train row after round 1")
    p.add_argument("--no_verify", action="store_true", help="Agora: expand every mistake (not only those the labeler gets right)")
    p.add_argument("--hard_labels", action="store_true", help="Agora: the labeler's hard label (not its distribution)")
    p.add_argument("--soft_label_temperature", type=float, default=1.0)
    p.add_argument("--no_ablation", action="store_true",
                   help="skip the extra Agora arm with the paper's settings (one dev set, every labelled row kept)")
    p.add_argument("--max_rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--labeler_epochs", type=float, default=6.0)
    p.add_argument("--labeler_learning_rate", type=float, default=1e-4)
    p.add_argument("--teacher_dir", default=None,
                   help="reuse a teacher/labeler saved by an earlier run (its dir, with teacher.json) instead of "
                        "fine-tuning MiniLM again")
    p.add_argument("--jobs", type=int, default=3, help="seeds run in this many parallel processes (1 = in turn)")
    p.add_argument("--torch_threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--out", default=str(RESULTS / "agora_v3.json"))
    p.add_argument("--summarize", default=None, help="only print the table of an existing results JSON")
    args = p.parse_args(argv)
    if args.summarize:
        summarize(json.loads(Path(args.summarize).read_text()), args.summarize)
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-agora-"))
    student = args.student or sliced_student(work / "student", 2, 768)
    data = dict(dataset="embedded:rotten-tomatoes", max_train_samples=args.train, max_dev_samples=args.dev,
                max_test_samples=args.test, dev_fraction=args.dev_fraction, split_seed=42)
    grid = dict(learning_rates=args.learning_rates, batch_sizes=[16], warmup_ratios=[0.1], weight_decays=[0.01],
                num_train_epochs=args.epochs)
    # The teacher (= the labeler) is fine-tuned once on the fixed train subsample and shared by every seed (on
    # 2 shared CPU cores, three MiniLM fine-tunings did not fit the time budget); its test accuracy is the
    # "teacher fine-tuned on the same data" baseline.
    from bortify.finetuning.tasks import prepare_task

    task = prepare_task(**data)
    if args.teacher_dir:
        teacher = json.loads((Path(args.teacher_dir) / "teacher.json").read_text())
        labeler_dir = Path(args.teacher_dir)
    else:
        teacher, labeler_dir = fine_tune_teacher(args, task, work), work / "labeler"
    results = {"teacher": teacher, "student": args.student or "all-MiniLM-L6-v2 sliced to L2 H384 A12 I768 (bortify.slicing)",
               "settings": vars(args), "runs": []}
    jobs = [(args, seed, student, data, grid, labeler_dir, work, teacher) for seed in args.seeds]
    if args.jobs > 1:  # seeds in parallel processes, one torch thread each
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            for run in ex.map(seed_run, *zip(*jobs)):
                results["runs"].append(run)
                write_json_atomic(args.out, results)
    else:
        for job in jobs:
            results["runs"].append(seed_run(*job))
            write_json_atomic(args.out, results)
    summarize(results, args.out)
    return 0


def fine_tune_teacher(args, task, work: Path) -> dict:
    from bortify.finetuning.labelers import build_labeler

    t0 = time.perf_counter()
    lab = build_labeler(task, labeler=None, teacher="embedded:all-MiniLM-L6-v2", max_length=args.max_length, seed=0,
                        epochs=args.labeler_epochs, learning_rate=args.labeler_learning_rate, batch_size=16,
                        min_dev_score=-1.0)
    teacher = {"dev": lab.dev_score, "test": lab.evaluate(task.test), "seconds": round(time.perf_counter() - t0, 1),
               "epochs": args.labeler_epochs, "learning_rate": args.labeler_learning_rate}
    print("teacher:", teacher, flush=True)
    lab.model.save_pretrained(work / "labeler")
    lab.tokenizer.save_pretrained(work / "labeler")
    write_json_atomic(work / "labeler" / "teacher.json", teacher)
    return teacher


def seed_run(args, seed, student, data, grid, labeler_dir: Path, work: Path, teacher: dict) -> dict:
    import torch

    torch.set_num_threads(args.torch_threads)
    common = dict(max_length=args.max_length, seed=seed, overwrite=True)
    t0 = time.perf_counter()
    ag = finetune(FinetuneModelArguments(model=student, output_dir=str(work / f"agora-{seed}"), mode="agora", **common),
                  FinetuneDataArguments(**data), FinetuneGridArguments(**grid),
                  AgoraArguments(max_rounds=args.max_rounds, k=args.k, labeler=str(labeler_dir),
                                 repair_fraction=args.repair_fraction, balance_classes=not args.no_balance,
                                 min_labeler_confidence=args.min_labeler_confidence, soft_labels=not args.hard_labels, train_k=args.train_k,
                                 verify_mistakes=not args.no_verify,
                                 soft_label_temperature=args.soft_label_temperature))
    t_agora = time.perf_counter() - t0
    added = [json.loads(line)["label"] for line in (work / f"agora-{seed}" / "agora_added.jsonl").read_text().splitlines()] \
        if (work / f"agora-{seed}" / "agora_added.jsonl").exists() else []
    paper = None
    if not args.no_ablation:  # the paper's loop on the same Θ: one dev set repairs and selects, every mistake is
        # expanded and every labelled row kept with the labeler's hard label
        t0 = time.perf_counter()
        paper = finetune(FinetuneModelArguments(model=student, output_dir=str(work / f"paper-{seed}"), mode="agora",
                                                **common),
                         FinetuneDataArguments(**data), FinetuneGridArguments(**grid),
                         AgoraArguments(max_rounds=args.max_rounds, k=args.k, labeler=str(labeler_dir),
                                        repair_fraction=1.0, balance_classes=False, min_labeler_confidence=None,
                                        soft_labels=False, verify_mistakes=False, train_k=0))
        t_paper = time.perf_counter() - t0
    n_train = ag["splits"]["train"]
    n_theta = len(ag["theta"])
    plain_epochs = ag["examples_seen"] / (n_theta * n_train)  # same total examples processed as Agora
    t0 = time.perf_counter()
    pl = finetune(FinetuneModelArguments(model=student, output_dir=str(work / f"plain-{seed}"), mode="plain", **common),
                  FinetuneDataArguments(**data), FinetuneGridArguments(**{**grid, "num_train_epochs": plain_epochs}),
                  AgoraArguments())
    t_plain = time.perf_counter() - t0
    run = {"seed": seed, "agora_test": ag["test"]["accuracy"], "plain_test": pl["test"]["accuracy"],
           "teacher_test": teacher["test"], "teacher_dev": teacher["dev"],
           "agora_dev": ag["dev"]["accuracy"], "plain_dev": pl["dev"]["accuracy"],
           "examples_added": [r["examples_added"] for r in ag["rounds"]],
           "round_dev": [r["dev_score"] for r in ag["rounds"]], "round_test": [r.get("test_score") for r in ag["rounds"]],
           "best_round": ag["best_round"], "examples_rejected": [r["examples_rejected"] for r in ag["rounds"]],
           "added_by_label": [added.count(c) for c in range(len(ag["labels"]))],
           "round_repair_dev": [r["repair_dev_score"] for r in ag["rounds"]],
           "mistakes": [r["mistakes"] for r in ag["rounds"]],
           "mistakes_labeler_right": [r["mistakes_expanded"] for r in ag["rounds"]], "agora_examples_seen": ag["examples_seen"],
           "plain_examples_seen": pl["examples_seen"], "plain_epochs": plain_epochs,
           "agora_seconds": round(t_agora, 1), "labeler_seconds": teacher["seconds"],
           "plain_seconds": round(t_plain, 1), "student_parameters": ag["num_parameters"]}
    if paper is not None:
        run.update({"paper_test": paper["test"]["accuracy"], "paper_examples_seen": paper["examples_seen"],
                    "paper_examples_added": [r["examples_added"] for r in paper["rounds"]],
                    "paper_round_dev": [r["dev_score"] for r in paper["rounds"]],
                    "paper_round_test": [r.get("test_score") for r in paper["rounds"]],
                    "paper_seconds": round(t_paper, 1)})
    print(json.dumps(run), flush=True)
    return run


def summarize(results: dict, out: str | None = None) -> None:
    """Mean ± sample sd over seeds, and the markdown table for BENCHMARKS.md."""
    runs = results["runs"]
    for r in runs:  # Agora's round 1 is plain grid-search fine-tuning at the base epochs (no added data yet)
        r["plain_base_epochs_test"] = r["round_test"][0]
    rows = (("plain_test", "student, plain: Θ grid, epochs scaled to Agora's examples seen"),
            ("plain_base_epochs_test", "student, Agora round 1 = Θ grid at base epochs, no added data (θ picked on the "
                                       "selection half of dev)"),
            ("agora_test", "student, Agora (ours: labeler-verified mistakes, soft labels, repair/selection dev split, "
                           "balanced labels; best round)"),
            ("paper_test", "student, Agora as in the paper (one dev set, every mistake expanded, hard labels, all kept; "
                           "ablation)"),
            ("teacher_test", "teacher all-MiniLM-L6-v2 fine-tuned on the same train (= the labeler; one run)"))
    rows = tuple((n, lab) for n, lab in rows if all(n in r for r in runs))
    summary = {name: mean_sd([r[name] for r in runs]) for name, _ in rows}
    results["summary"] = {k: {"mean": m, "stdev": s} for k, (m, s) in summary.items()}
    if out:
        write_json_atomic(out, results)
    seeds = ",".join(str(r["seed"]) for r in runs)
    print(f"\n| model | test accuracy, mean ± sd (seeds {seeds}) | per seed |")
    print("|---|---|---|")
    for name, label in rows:
        m, s = summary[name]
        print(f"| {label} | {m:.4f} ± {s:.4f} | {', '.join(f'{r[name]:.4f}' for r in runs)} |")
    print("\nexamples added per round:", [r["examples_added"] for r in runs],
          "rejected:", [r.get("examples_rejected") for r in runs], "added by label:", [r.get("added_by_label") for r in runs])
    if all("paper_test" in r for r in runs):
        print("paper-loop: added", [r["paper_examples_added"] for r in runs], "dev", [r["paper_round_dev"] for r in runs],
              "test", [r["paper_round_test"] for r in runs], "seconds", [r["paper_seconds"] for r in runs])
    print("selection-dev by round:", [r["round_dev"] for r in runs], " repair-dev by round:",
          [r.get("round_repair_dev") for r in runs])
    print("dev by round:", [r["round_dev"] for r in runs], " test by round:", [r["round_test"] for r in runs])
    print("examples seen (agora = plain):", [(r["agora_examples_seen"], r["plain_examples_seen"]) for r in runs])
    print("wall seconds per seed (agora / plain); teacher fine-tuning once:",
          [(r["agora_seconds"], r["plain_seconds"]) for r in runs], runs[0]["labeler_seconds"] if runs else None)


if __name__ == "__main__":
    sys.exit(main())
