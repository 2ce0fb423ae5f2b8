"""Backward-compatible embeddings benchmark (docs/methods/04-updates.md §4, BCT), side by side in one run.

The old model is all-MiniLM-L6-v2 (the demo's teacher, a sentence-transformers encoder: mean pooling +
normalisation). The new model is the demo-size student (recipes/demo.yaml's pick, D3 A4 H256 I768 since the demo
extracts with --min_speedup 4; `--hidden_size 128` gives the earlier pick; sliced out of MiniLM, representation KD on
the packaged corpus) pretrained twice with the same budget, for every seed of `--seeds`:

- **without** the option (a plain bortify student; its query embedding is mean_pool(student) through the
  representation-KD projection of the last layer — the best projection a student trained without the option has);
- **with** `--compatible_with embedded:all-MiniLM-L6-v2` (BCT-style: Dense(mean_pool(student)) trained onto the
  old model's sentence embedding of the same corpus sentences).

For each labelled task BCT's empirical compatibility test runs with a gallery embedded by the OLD model and queries
by the new one: kNN-classification accuracy and recall@1/5 for new->old, old->old, new->new. BCT's criterion is
kNN accuracy new->old >= old->old. Training time with and without the option is reported.

    .venv/bin/python benchmarks/bench_compat.py                      # ~60 steps x 2 runs (the demo's size)
    .venv/bin/python benchmarks/bench_compat.py --steps 60 200 --tasks embedded:rotten-tomatoes embedded:debates

Writes benchmarks/results/compat.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import common  # first: the environment (benchmarks/common.py)

import torch  # noqa: E402

from bortify.utils import write_json_atomic  # noqa: E402

RESULTS = common.RESULTS / "compat.json"
OLD = "embedded:all-MiniLM-L6-v2"
STUDENT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 256, "num_hidden_layers": 3,
           "num_attention_heads": 4, "intermediate_size": 768, "max_position_embeddings": 512}  # the demo's pick
DEMO_PRETRAIN = {"teacher": OLD, "kd_mode": "representation", "init": "teacher", "corpus": "embedded:corpus",
                 "seq_len": 64, "max_heldout_blocks": 64, "per_device_train_batch_size": 16,
                 "learning_rate": 5e-4, "warmup_steps": 0.06, "logging_steps": 10, "use_cpu": True,
                 "torch_threads": 1, "seed": 0, "save_strategy": "no", "report_to": "none"}


def pretrain_run(out: Path, steps: int, compatible: bool, student_config: Path, extra: dict) -> dict:
    from bortify.pipeline import run_config

    config = {**DEMO_PRETRAIN, **extra, "student_config": str(student_config), "output_dir": str(out),
              "max_steps": steps}
    if compatible:
        config["compatible_with"] = OLD
        config["compat_eval_dataset"] = "none"  # the benchmark runs the test itself, on every task
    start = time.perf_counter()
    report = run_config("pretrain", config, overwrite=True)
    return {"seconds": round(time.perf_counter() - start, 1), "train_seconds": report.train_seconds,
            "heldout_mlm_loss_after": report.heldout_mlm_loss_after,
            "compat_targets_seconds": report.compatibility.targets_seconds if report.compatibility else None}


def baseline_encoder(folder: Path, old):
    """A student trained without the option: mean_pool(student) through its last layer's representation-KD
    projection (kd_projections.safetensors), normalised like the old model."""
    import safetensors.torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    from bortify.compatible_embeddings.sentence import SentenceEncoder

    model = AutoModel.from_pretrained(str(folder), use_safetensors=True).eval()
    projection = None
    proj_file = folder / "kd_projections.safetensors"
    if proj_file.is_file():
        state = safetensors.torch.load_file(str(proj_file))
        last = max(int(k.split(".")[0]) for k in state)
        w, b = state[f"{last}.weight"], state[f"{last}.bias"]
        projection = nn.Linear(w.shape[1], w.shape[0])
        projection.load_state_dict({"weight": w, "bias": b})
    return SentenceEncoder(model, AutoTokenizer.from_pretrained(str(folder)), old.spec, projection)


def memoized(encoder):
    """The old encoder with its gallery/query embeddings kept between runs (the same texts every time)."""
    cache = {}

    def encode(texts):
        key = tuple(texts)
        if key not in cache:
            cache[key] = encoder(texts)
        return cache[key]

    encode.spec = encoder.spec
    return encode


def run(args) -> dict:
    from bortify.compatible_embeddings.sentence import load_sentence_encoder
    from bortify.pretraining.compat import compatibility_evaluation, labelled_texts, load_old_encoder

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-compat-"))
    work.mkdir(parents=True, exist_ok=True)
    student = {**STUDENT, "hidden_size": args.hidden_size or STUDENT["hidden_size"]}
    student_config = work / "student_config.json"
    write_json_atomic(student_config, student)
    old = memoized(load_old_encoder(__import__("bortify.data", fromlist=["resolve_model"]).resolve_model(OLD)))
    tasks = {t: labelled_texts(t) for t in args.tasks}
    corpus = {}
    if args.in_domain:  # pretrain (both runs) on the first task's texts that are in neither its gallery nor its queries
        from bortify.compatible_embeddings.metric import split_gallery_queries

        texts, labels = tasks[args.tasks[0]]
        split = split_gallery_queries(texts, labels, args.gallery, args.queries, seed=0)
        held = set(split.gallery_texts) | set(split.query_texts)
        (work / "in_domain.txt").write_text("\n".join(t.replace("\n", " ") for t in texts if t not in held) + "\n")
        corpus = {"corpus": str(work / "in_domain.txt")}
    results = {"command": " ".join(sys.argv), "old_model": OLD, "student": student, "pretrain": DEMO_PRETRAIN,
               "compat": {"w_compat": args.w_compat, "compat_batch_size": args.compat_batch_size,
                          "compat_init": args.compat_init, "compat_texts": args.compat_texts},
               "in_domain": args.in_domain,
               "gallery": args.gallery,
               "queries": args.queries, "knn_k": args.knn_k, "runs": []}
    for seed, steps in [(seed, steps) for seed in args.seeds for steps in args.steps]:
        extra = {**corpus, "w_compat": args.w_compat, "compat_batch_size": args.compat_batch_size,
                 "compat_init": args.compat_init, "compat_texts": args.compat_texts, "seed": seed}
        row = {"steps": steps, "seed": seed}
        for compatible in (False, True):
            out = work / f"{'compat' if compatible else 'plain'}-{steps}-s{seed}"
            row["with" if compatible else "without"] = pretrain_run(out, steps, compatible, student_config, extra)
            print(f"[bench_compat] seed {seed} steps {steps} {'with' if compatible else 'without'}: "
                  f"{row['with' if compatible else 'without']}", flush=True)
        new = load_sentence_encoder(work / f"compat-{steps}-s{seed}")
        base = baseline_encoder(work / f"plain-{steps}-s{seed}", old)
        row["tasks"] = {}
        for name, (texts, labels) in tasks.items():
            ev = compatibility_evaluation(old, new, texts, labels, gallery_size=args.gallery,
                                          query_size=args.queries, knn_k=args.knn_k, seed=0, baseline=base)
            row["tasks"][name] = ev
            print(f"[bench_compat] seed {seed} steps {steps} {name}: new->old {ev['new_old']} old->old {ev['old_old']} "
                  f"new->new {ev['new_new']} baseline new->old {ev['baseline']['new_old']} "
                  f"criterion {'met' if ev['criterion_met'] else 'not met'}", flush=True)
        results["runs"].append(row)
        write_json_atomic(args.output, results)
    print(summary(results))
    return results


def summary(results: dict) -> str:
    """Markdown: kNN accuracy per task and step count, mean ± sd over the seeds."""
    def cell(vals):
        return common.format_mean_sd(vals)

    lines = ["| task | steps | seeds | old→old | with: new→old | with: new→new | without: new→old | without: new→new "
             "| criterion met |", "|" + "---|" * 9]
    for steps in dict.fromkeys(r["steps"] for r in results["runs"]):
        rows = [r for r in results["runs"] if r["steps"] == steps]
        for name in rows[0]["tasks"]:
            ev = [r["tasks"][name] for r in rows]
            knn = lambda f: cell([f(e)["knn_accuracy"] for e in ev])  # noqa: E731
            lines.append(f"| {name} | {steps} | {len(ev)} | {knn(lambda e: e['old_old'])} | {knn(lambda e: e['new_old'])} "
                         f"| {knn(lambda e: e['new_new'])} | {knn(lambda e: e['baseline']['new_old'])} "
                         f"| {knn(lambda e: e['baseline']['new_new'])} | {sum(e['criterion_met'] for e in ev)}/{len(ev)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[60])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="pretraining seeds (the split stays seed 0)")
    parser.add_argument("--hidden_size", type=int, default=None,
                        help=f"the student's width (default {STUDENT['hidden_size']}, the demo's pick)")
    parser.add_argument("--tasks", nargs="+", default=["embedded:rotten-tomatoes", "embedded:debates"])
    parser.add_argument("--gallery", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--knn_k", type=int, default=10)
    parser.add_argument("--w_compat", type=float, default=1.0)
    parser.add_argument("--compat_batch_size", type=int, default=32)
    parser.add_argument("--compat_init", default="lstsq", choices=["lstsq", "random"])
    parser.add_argument("--compat_texts", type=int, default=None,
                        help="old-model embeddings computed before training (default: steps x batch, each seen once)")
    parser.add_argument("--in_domain", action="store_true",
                        help="pretrain on the first task's texts outside its gallery and queries instead of "
                             "embedded:corpus")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
