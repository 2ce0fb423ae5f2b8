"""Task-specific distillation (docs/methods/07-task-distillation.md §7) on the demo split: how close does the student get to its teacher?

Setting (the demo recipe's fine-tuning split): Rotten Tomatoes (embedded), 600 gold train rows, 600 dev, 1,000
test (split seed 42), max 40 tokens. Teacher = all-MiniLM-L6-v2 fine-tuned on the 600 rows (build_labeler, 3
epochs, lr 1e-4; its test accuracy is the target). Students sliced from MiniLM with bortify.slicing (magnitude
importance, as the pretraining stage's init: teacher): the demo's shape D3 A4 H128 I768 (4.8M parameters) and
L3 A12 H384 I1536 (17M). Transfer-set sources: the 600 gold rows; k augmented variants of each (Agora's nearest-
neighbour substitution over the teacher's embeddings); the unused train rows (those max_train_samples=600 left
out; labels stripped, ~8.3k). The teacher's logits are computed once for the largest transfer set and shared by
every setting (each setting selects its rows); the "e2e" run instead calls `distill(...)` end to end (transfer set,
teacher pass, training) to time the product path. Each setting trains from the same sliced student, 1 torch
thread per process, seeds fixed; test accuracy is read once per trained model.

    .venv/bin/python benchmarks/bench_distill.py --jobs 2          # ~20-25 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_distill.py --quick           # smoke run, ~2 min
    .venv/bin/python benchmarks/bench_distill.py --summarize benchmarks/results/distill.json

Writes benchmarks/results/distill.json (after every finished setting) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, TEACHER, mean_sd  # first: the environment (benchmarks/common.py)

STUDENTS = {"demo": dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=128, intermediate_size=768),
            "l3h384": dict(num_hidden_layers=3, num_attention_heads=12, hidden_size=384, intermediate_size=1536)}


def settings(quick: bool = False, sweep: bool = False) -> list[dict]:
    """The settings, in table order: name, student, sources, augment_k, alpha, temperature, epochs, lr, seed, batch
    size, dropout override (warmup 0.1, weight decay 0.01). The default list is sized for ~20 min on 2 cores;
    `sweep` adds the exploration that chose the defaults (run as separate --only invocations, see the JSON)."""
    def s(name, student="demo", sources=("gold",), k=0, alpha=0.5, t=2.0, epochs=3.0, lr=5e-4, seed=0, batch=32,
          dropout=None, note=""):
        return dict(name=name, student=student, sources=list(sources), augment_k=k, alpha=alpha, temperature=t,
                    epochs=epochs, learning_rate=lr, seed=seed, batch_size=batch, dropout=dropout, note=note)
    if quick:
        return [s("gold-ce", alpha=1.0, epochs=2), s("gold+unl", sources=("gold", "unlabeled"), epochs=1),
                s("e2e")]
    U, AU = ("gold", "unlabeled"), ("gold", "augmented", "unlabeled")
    main = [
        s("gold-ce 4ep", alpha=1.0, epochs=4, lr=1e-3, note="the demo recipe's fine-tuning (one θ)"),
        s("gold-ce 10ep", alpha=1.0, epochs=10, lr=1e-3, note="plain fine-tuning, longer"),
        s("gold soft 10ep", epochs=10, lr=1e-3, note="soft labels on the gold rows only"),
        s("gold+aug4 5ep", sources=("gold", "augmented"), k=4, epochs=5, lr=1e-3),
        s("gold+unl lr 5e-4", sources=U, note="the default recipe"),
        s("gold+unl lr 5e-4 seed 1", sources=U, seed=1),
        s("gold+unl lr 5e-4 seed 2", sources=U, seed=2),
        s("gold+aug4+unl lr 5e-4", sources=AU, k=4),
        s("gold+unl lr 5e-4 5ep", sources=U, epochs=5),
        s("e2e", note="distill() end to end with TaskDistillArguments' defaults (+ --e2e overrides)"),
        s("l3h384 gold-ce 10ep", "l3h384", alpha=1.0, epochs=10, note="plain fine-tuning"),
        s("l3h384 gold+unl 2ep", "l3h384", U, epochs=2),
    ]
    if not sweep:
        return main
    return main + [
        s("gold+unl", sources=U, lr=1e-3),
        s("gold+unl seed 1", sources=U, lr=1e-3, seed=1),
        s("gold+unl seed 2", sources=U, lr=1e-3, seed=2),
        s("gold+aug4+unl", sources=AU, k=4, lr=1e-3),
        s("gold+unl a=0", sources=U, alpha=0.0, lr=1e-3),
        s("gold+unl T=1", sources=U, t=1.0, lr=1e-3),
        s("gold+unl T=4", sources=U, t=4.0, lr=1e-3),
        s("gold+unl 2ep", sources=U, epochs=2, lr=1e-3),
        s("gold+unl 4ep", sources=U, epochs=4, lr=1e-3),
        s("gold+unl 5ep", sources=U, epochs=5, lr=1e-3),
        s("gold+unl lr 2e-3", sources=U, lr=2e-3),
        s("gold+unl lr 3e-4 5ep", sources=U, lr=3e-4, epochs=5),
        s("gold+unl lr 5e-4 no dropout", sources=U, dropout=0.0),
        s("gold+unl lr 5e-4 batch 16", sources=U, batch=16),
        *[s(f"gold+unl lr 5e-4 batch 16 no dropout seed {i}", sources=U, batch=16, dropout=0.0, seed=i)
          for i in (0, 1, 2)],
        s("gold+unl, init from the fine-tuned teacher", "demo-ft", U, lr=1e-3,
          note="student sliced from the fine-tuned teacher instead of MiniLM"),
    ]


def cost(cfg: dict, counts: dict) -> float:
    """Rough training cost, to start the longest settings first (keeps both processes busy)."""
    rows = sum(counts.get(src, 0) for src in cfg["sources"]) or counts.get("gold", 0) + counts.get("unlabeled", 0)
    if cfg["name"] == "e2e":
        rows *= 2  # + its own teacher pass
    return rows * cfg["epochs"] * (6 if cfg["student"].startswith("l3") else 1)


# --- shared preparation (main process) ---------------------------------------------------------------------

def prepare_split(args):
    """The demo split and the train rows max_train_samples left out (what TaskData.unlabeled holds)."""
    from bortify.finetuning.tasks import prepare_task

    data = dict(dataset="embedded:rotten-tomatoes", max_dev_samples=args.dev, max_test_samples=args.test,
                split_seed=42)
    task = prepare_task(**data, max_train_samples=args.train)
    unused = getattr(task, "unlabeled", None)
    if unused is not None:
        pool = [{"text": r["text"]} for r in unused]
    else:  # computed here until TaskData.unlabeled exists: the full train split minus the 600 drawn rows
        full = prepare_task(**data)
        taken = {r["text"] for r in task.train}
        pool = [{"text": r["text"]} for r in full.train if r["text"] not in taken]
    if args.max_pool:
        pool = pool[:args.max_pool]
    return task, pool


def throughput(model, tokenizer, texts, max_length, batch_size=64):
    """(predictions, sentences per second) over `texts` in batches, 1 warm-up batch first."""
    import torch

    model.eval()
    preds = []
    with torch.no_grad():
        model(**tokenizer(texts[:batch_size], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt"))
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
            preds += model(**enc).logits.argmax(-1).tolist()
        dt = time.perf_counter() - t0
    return preds, len(texts) / dt


def accuracy(preds, gold):
    return sum(int(p == y) for p, y in zip(preds, gold)) / len(gold)


def build_teacher(args, task, work: Path) -> dict:
    from bortify.finetuning.labelers import build_labeler

    t0 = time.perf_counter()
    lab = build_labeler(task, labeler=None, teacher=TEACHER, max_length=args.max_length, seed=0,
                        epochs=args.teacher_epochs, learning_rate=args.teacher_learning_rate, batch_size=16,
                        min_dev_score=-1.0)
    seconds = time.perf_counter() - t0
    preds, sps = throughput(lab.model, lab.tokenizer, list(task.test["text"]), args.max_length)
    info = {"dev": lab.dev_score, "test": accuracy(preds, task.test["label"]), "seconds": round(seconds, 1),
            "sentences_per_s": round(sps, 1), "epochs": args.teacher_epochs,
            "learning_rate": args.teacher_learning_rate,
            "parameters": sum(p.numel() for p in lab.model.parameters())}
    lab.model.save_pretrained(work / "teacher")
    lab.tokenizer.save_pretrained(work / "teacher")
    (work / "teacher" / "teacher.json").write_text(json.dumps(info))
    print("teacher:", info, flush=True)
    return info


def load_teacher(work: Path, task, max_length: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bortify.finetuning.labelers import Labeler

    model = AutoModelForSequenceClassification.from_pretrained(work / "teacher", use_safetensors=True).eval()
    lab = Labeler(model, AutoTokenizer.from_pretrained(work / "teacher"), task, max_length=max_length,
                  source=f"{TEACHER} fine-tuned on {len(task.train)} train rows")
    info = json.loads((work / "teacher" / "teacher.json").read_text())
    lab.dev_score, lab.seconds = info["dev"], info["seconds"]
    return lab, info


def slice_students(task, work: Path) -> dict:
    """The students, sliced into a classifier with the task's labels (same head init for all runs): from MiniLM,
    and (demo-ft) the demo shape sliced from the fine-tuned teacher."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification

    from bortify.resources import resolve_model
    from bortify.slicing import init_from_teacher

    path = resolve_model(TEACHER)
    minilm = AutoModel.from_pretrained(path, use_safetensors=True)
    finetuned = AutoModel.from_pretrained(work / "teacher", use_safetensors=True)  # its encoder (+ pooler)
    out = {}
    for name, shape in [*STUDENTS.items(), ("demo-ft", STUDENTS["demo"])]:
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=minilm.config.vocab_size, max_position_embeddings=512, num_labels=2,
                         id2label=dict(enumerate(task.label_names)),
                         label2id={n: i for i, n in enumerate(task.label_names)}, **shape)
        student = BertForSequenceClassification(cfg)
        init_from_teacher(student, finetuned if name.endswith("-ft") else minilm, importance="magnitude")
        student.save_pretrained(work / f"student-{name}")
        AutoTokenizer.from_pretrained(path).save_pretrained(work / f"student-{name}")
        out[name] = {**shape, "parameters": sum(p.numel() for p in student.parameters())}
    return out


def build_transfer(args, task, pool, teacher, work: Path) -> dict:
    """The largest transfer set (gold + augment_k variants + the whole pool) and its teacher logits, once."""
    import numpy as np

    from bortify.finetuning.distill import build_transfer_set, teacher_logits_for
    from bortify.finetuning.generators import NearestNeighbourSubstitution

    t0 = time.perf_counter()
    gen = NearestNeighbourSubstitution(teacher.tokenizer, teacher.model.get_input_embeddings().weight)
    ts = build_transfer_set(task, augment_k=args.max_k, generator=gen, unlabeled_rows=pool, max_unlabeled=None,
                            seed=0)
    t1 = time.perf_counter()
    logits = teacher_logits_for(teacher, ts.rows, task.text_columns)
    t2 = time.perf_counter()
    with open(work / "transfer.jsonl", "w", encoding="utf-8") as f:
        for r in ts.rows:
            f.write(json.dumps(r) + "\n")
    np.save(work / "teacher_logits.npy", logits)
    info = {"counts": ts.counts, "generate_seconds": round(t1 - t0, 1), "teacher_logit_seconds": round(t2 - t1, 1),
            "teacher_rows_per_s": round(len(ts.rows) / (t2 - t1), 1)}
    print("transfer set:", info, flush=True)
    return info


# --- one setting (worker process) --------------------------------------------------------------------------

def run_setting(cfg: dict, args, work: str) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bortify.finetuning.distill import (TaskDistillArguments, TransferSet, distill, tokenize_transfer,
                                            train_distilled)

    torch.set_num_threads(args.torch_threads)
    work = Path(work)
    task, pool = prepare_split(args)
    sdir = work / f"student-{cfg['student']}"
    overrides = {} if cfg.get("dropout") is None else {"hidden_dropout_prob": cfg["dropout"],
                                                        "attention_probs_dropout_prob": cfg["dropout"]}
    student0 = AutoModelForSequenceClassification.from_pretrained(sdir, use_safetensors=True, **overrides)
    tok = AutoTokenizer.from_pretrained(sdir)
    t0 = time.perf_counter()
    if cfg["name"] == "e2e":
        teacher, tinfo = load_teacher(work, task, args.max_length)
        dargs = TaskDistillArguments(**json.loads(args.e2e or "{}"))
        model, info = distill(task, student0, tok, teacher, dargs, unlabeled_rows=pool, seed=cfg["seed"],
                              max_length=args.max_length)
        train_s = time.perf_counter() - t0
        counts, seen = info["transfer_set"], info["examples_seen"]
        extra = {"distill_info": info, "train_loss": info["train_loss"], "end_to_end_seconds": round(tinfo["seconds"] + train_s, 1),
                 "settings_used": info["settings"], "sources": [k for k in ("gold", "augmented", "unlabeled")
                                                                if counts.get(k)]}
    else:
        rows = [json.loads(line) for line in (work / "transfer.jsonl").read_text().splitlines()]
        logits = np.load(work / "teacher_logits.npy")
        for r, z in zip(rows, logits):
            r["_z"] = z
        sub = TransferSet(rows, {}).select(tuple(cfg["sources"]), augment_k=cfg["augment_k"])
        dargs = TaskDistillArguments(distill_alpha=cfg["alpha"], distill_temperature=cfg["temperature"],
                                     distill_epochs=cfg["epochs"], distill_learning_rate=cfg["learning_rate"],
                                     distill_augment_k=cfg["augment_k"], distill_batch_size=cfg.get("batch_size", 32))
        train_tok = tokenize_transfer(sub.rows, np.stack([r["_z"] for r in sub.rows]), tok, task.text_columns,
                                      args.max_length, False)
        model, train_loss = train_distilled(student0, tok, train_tok, dargs, seed=cfg["seed"])
        train_s = time.perf_counter() - t0
        counts, seen = sub.counts, int(round(cfg["epochs"] * len(sub.rows)))
        extra = {"train_loss": round(train_loss, 4)}
    dev_preds, _ = throughput(model, tok, list(task.dev["text"]), args.max_length)
    test_preds, sps = throughput(model, tok, list(task.test["text"]), args.max_length)
    result = {**cfg, **extra, "dev": accuracy(dev_preds, task.dev["label"]), "test": accuracy(test_preds, task.test["label"]),
              "sentences_per_s": round(sps, 1), "train_seconds": round(train_s, 1), "transfer_set": counts,
              "examples_seen": seen, "parameters": sum(p.numel() for p in model.parameters())}
    print(json.dumps({k: v for k, v in result.items() if k not in ("distill_info", "settings_used")}), flush=True)
    return result


# --- main ---------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=600)
    p.add_argument("--dev", type=int, default=600)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--max_length", type=int, default=40)
    p.add_argument("--max_pool", type=int, default=None, help="cap the unlabelled pool (default: every unused row)")
    p.add_argument("--max_k", type=int, default=4, help="augmented variants per train row generated (settings use <=)")
    p.add_argument("--teacher_epochs", type=float, default=3.0)
    p.add_argument("--teacher_learning_rate", type=float, default=1e-4)
    p.add_argument("--only", nargs="+", default=None, help="run only these settings (names)")
    p.add_argument("--e2e", default=None, help="JSON of TaskDistillArguments overrides for the e2e run")
    p.add_argument("--work_dir", default=None, help="reuse the teacher / students / transfer set kept here")
    p.add_argument("--jobs", type=int, default=2, help="settings run in this many processes (at most 2 here)")
    p.add_argument("--torch_threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (100 train rows, 300 pool rows, 1 epoch)")
    p.add_argument("--sweep", action="store_true", help="also the settings explored to choose the defaults (~+25 min)")
    p.add_argument("--out", default=None)
    p.add_argument("--summarize", default=None, help="only print the table of an existing results JSON")
    args = p.parse_args(argv)
    if args.summarize:
        summarize(json.loads(Path(args.summarize).read_text()))
        return 0
    if args.quick:
        args.train, args.max_pool, args.max_k, args.teacher_epochs = 100, 300, 1, 1.0
        args.e2e = args.e2e or json.dumps({"distill_epochs": 1.0, "distill_max_unlabeled": 300})
    out = Path(args.out or RESULTS / ("distill_quick.json" if args.quick else "distill.json"))
    known = settings(args.quick, sweep=True)
    unknown = sorted(set(args.only or ()) - {c["name"] for c in known})
    if unknown:  # before any long work
        raise SystemExit(f"--only: unknown setting(s) {unknown}; known: {[c['name'] for c in known]}")
    args.jobs = max(1, min(args.jobs, 2))
    import torch

    from bortify.utils import write_json_atomic

    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    task, pool = prepare_split(args)
    previous = json.loads(out.read_text()) if args.only and out.exists() else {}
    if (work / "teacher" / "teacher.json").exists():
        teacher, tinfo = load_teacher(work, task, args.max_length)
    else:
        tinfo = build_teacher(args, task, work)
        teacher, _ = load_teacher(work, task, args.max_length)
    if not (work / "students.json").exists():
        (work / "students.json").write_text(json.dumps(slice_students(task, work)))
    students = json.loads((work / "students.json").read_text())
    if (work / "transfer.jsonl").exists():
        transfer = json.loads((work / "transfer.json").read_text())
    else:
        transfer = build_transfer(args, task, pool, teacher, work)
        (work / "transfer.json").write_text(json.dumps(transfer))
    del teacher
    todo = [c for c in (known if args.only else settings(args.quick, args.sweep)) if not args.only or c["name"] in args.only]
    todo.sort(key=lambda c: -cost(c, transfer["counts"]))
    results = {"setting": {"dataset": "embedded:rotten-tomatoes", "train": len(task.train), "dev": len(task.dev),
                           "test": len(task.test), "unused_train_rows": len(pool), "max_length": args.max_length,
                           "split_seed": 42, "batch_size": 32, "warmup": 0.1, "weight_decay": 0.01, "seed": 0,
                           "torch_threads": args.torch_threads, "jobs": args.jobs},
               "teacher": tinfo, "students": students, "transfer": transfer,
               "runs": [r for r in previous.get("runs", []) if r["name"] not in {c["name"] for c in todo}],
               "invocations": previous.get("invocations", [])}
    invocation = {"command": " ".join([".venv/bin/python benchmarks/bench_distill.py",
                                       *(argv if argv is not None else sys.argv[1:])]),
                  "settings": [c["name"] for c in todo], "load_average_at_start": os.getloadavg()[0]}
    results["invocations"].append(invocation)
    write_json_atomic(out, results)
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            futures = [ex.submit(run_setting, c, args, str(work)) for c in todo]
            for fut in as_completed(futures):
                results["runs"].append(fut.result())
                write_json_atomic(out, results)
    else:
        for c in todo:
            results["runs"].append(run_setting(c, args, str(work)))
            write_json_atomic(out, results)
    invocation.update(wall_seconds=round(time.perf_counter() - t_start, 1), load_average_at_end=os.getloadavg()[0])
    order = {c["name"]: i for i, c in enumerate(settings(args.quick, sweep=True))}
    results["runs"].sort(key=lambda r: order.get(r["name"], 99))
    write_json_atomic(out, results)
    summarize(results)
    print(f"\nwork dir (teacher, students, transfer set): {work}; results: {out}")
    return 0


def seed_spread(runs: list[dict], prefix: str) -> str | None:
    """mean ± sample sd of the test accuracy over the seeds of one setting ('NAME', 'NAME seed 1', ...)."""
    xs = [r["test"] for r in runs if r["name"] == prefix or r["name"].startswith(prefix + " seed ")]
    if len(xs) < 2:
        return None
    mean, sd = mean_sd(xs)
    return f"{prefix}: test {mean:.4f} ± {sd:.4f} over {len(xs)} seeds ({xs})"


def summarize(results: dict) -> None:
    order = {c["name"]: i for i, c in enumerate(settings(sweep=True))}
    results["runs"].sort(key=lambda r: order.get(r["name"], 99))
    t = results["teacher"]
    print(f"\nteacher MiniLM-L6 fine-tuned ({t['parameters'] / 1e6:.1f}M): test {t['test']:.4f}, dev {t['dev']:.4f}, "
          f"{t['sentences_per_s']:.0f} sentences/s, fine-tuned in {t['seconds']:.0f} s; "
          f"transfer set {results['transfer']['counts']}, teacher pass {results['transfer']['teacher_logit_seconds']} s")
    print("\n| setting | student | transfer set (gold / aug / unlabelled) | α | T | epochs | examples seen | test acc. "
          "| dev acc. | gap to teacher | train s | sentences/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["runs"]:
        c = r["transfer_set"]
        s = r.get("settings_used")
        alpha, temp, ep = ((s["distill_alpha"], s["distill_temperature"], s["distill_epochs"]) if s else
                           (r["alpha"], r["temperature"], r["epochs"]))
        print(f"| {r['name']} | {r['student']} ({r['parameters'] / 1e6:.1f}M) | {c.get('gold', 0)} / "
              f"{c.get('augmented', 0)} / {c.get('unlabeled', 0)} | {alpha:g} | {temp:g} | {ep:g} | "
              f"{r['examples_seen']} | {r['test']:.4f} | {r['dev']:.4f} | {100 * (r['test'] - t['test']):+.1f} | "
              f"{r['train_seconds']:.0f} | {r['sentences_per_s']:.0f} |")
    for prefix in ("gold+unl lr 5e-4", "gold+unl", "gold+unl lr 5e-4 batch 16 no dropout"):
        line = seed_spread(results["runs"], prefix)
        if line:
            print(line)
    e2e = next((r for r in results["runs"] if r["name"] == "e2e"), None)
    if e2e:
        sec = e2e["distill_info"]["seconds"]
        print(f"\ne2e (distill() with {e2e['settings_used']}): teacher fine-tuning {t['seconds']:.0f} s + transfer set "
              f"{sec['transfer_set']} s + teacher logits {sec['teacher_logits']} s + student {sec['train']} s = "
              f"{e2e['end_to_end_seconds']:.0f} s; test {e2e['test']:.4f} ({100 * (e2e['test'] - t['test']):+.1f} "
              "points vs the teacher)")
    for inv in results.get("invocations", []):
        print(f"{inv['command']}: {inv.get('wall_seconds', '?')} s wall (load average {inv['load_average_at_start']:.1f} "
              f"at start, {inv.get('load_average_at_end', float('nan')):.1f} at end)")


if __name__ == "__main__":
    sys.exit(main())
