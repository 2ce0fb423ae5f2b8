"""CPU speed benchmark (docs/methods/05-compression.md §5.s): the int8 CPU paths measured side by side before choosing bortify's default,
and the speed goals, all in one run with bortify's own bench (bortify/bench.py, docs/methods/05-compression.md §5).

    .venv/bin/python benchmarks/bench_speed.py                  # writes benchmarks/results/speed.json (+ speed_*.png)
    # torchao as well (it must not live in bortify's .venv: transformers imports it whenever it is installed):
    python3 -m venv /tmp/taovenv && /tmp/taovenv/bin/pip install --no-deps torchao
    echo $PWD/.venv/lib/python3.11/site-packages > /tmp/taovenv/lib/python3.11/site-packages/zz_bortify.pth
    PYTHONPATH=$PWD /tmp/taovenv/bin/python benchmarks/bench_speed.py

(a) shapes: the Bort shape ⟨4, 8, 768, 1024⟩ against BERT-large ⟨24, 16, 1024, 4096⟩, random weights
    (latency depends on the shape only), BertForSequenceClassification with 2 labels, the grid batch {1, 8} x
    length {32, 128, 512}, fp32 and every int8 path installed, Bort and BERT-large timed in alternation cell by cell (torch.utils.benchmark
    blocked_autorange, medians), at 1 thread.
(b) demo: `bortify bench` on the demo task model (runs/demo/finetune; else a random model of the demo student's
    shape, 3/4/128/768) against its extraction source all-MiniLM-L6-v2, the same grid, and sentences/s on 256 real
    texts of the packaged Rotten Tomatoes test rows (the model's own tokenizer, batches of 8, dynamic padding).
Goals: Bort fp32 >= 18x BERT-large (multiply-add ratio ~19x); int8 Bort >= 30x fp32 BERT-large; demo int8
sentences/s >= 1.5x fp32. BERT-large at 8 x 512 takes tens of seconds a pass on one core: its cells get one round
(the Timer's block-size estimate is their warm-up), and the paths that were no faster than fp32 in a first run
(torchao, OpenVINO on the int8 ONNX file) are timed on the shapes only up to length 128, which keeps the run
under ~15 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bortify.bench import (DEFAULT_INT8_PATH, BenchArguments, add_ratios, bench, chosen_paths,  # noqa: E402
                           plot_grid, run_grid)
from bortify.reports import BenchReport  # noqa: E402
from bortify.utils import write_json_atomic  # noqa: E402

BORT = dict(num_hidden_layers=4, num_attention_heads=8, hidden_size=768, intermediate_size=1024)
BERT_LARGE = dict(num_hidden_layers=24, num_attention_heads=16, hidden_size=1024, intermediate_size=4096)
DEMO_STUDENT = dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=128, intermediate_size=768)


def random_task_model(shape: dict):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(num_labels=2, **shape)).eval()


def shapes_part(args, paths: list[str], unavailable: dict) -> dict:
    """Bort against BERT-large, side by side (bortify.bench.run_grid, in memory)."""
    bench_args = BenchArguments(model="bort-shape", output_dir="-", batch_sizes=args.batch_sizes,
                                seq_lens=args.seq_lens, threads=args.threads, rounds=args.rounds,
                                min_run_time=args.min_run_time, warmup=0, dataset=None)
    start = time.time()
    full = [p for p in paths if p not in args.short_paths]
    short = [p for p in paths if p in args.short_paths]
    bort, large = random_task_model(BORT), random_task_model(BERT_LARGE)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        grid = run_grid(bench_args, full, bort, large, Path(tmp), True)
        if short:  # paths already slower than fp32 at short lengths: not worth BERT-large's long cells
            short_args = dataclasses.replace(bench_args, seq_lens=[L for L in args.seq_lens if L <= args.short_max_len])
            grid += run_grid(short_args, short, bort, large, Path(tmp), True)
    add_ratios(grid)
    report = BenchReport.make({"model": "Bort shape 4/8/768/1024 (random weights)",
                               "source": "BERT-large shape 24/16/1024/4096 (random weights)", "threads": args.threads,
                               "rounds": args.rounds, "min_run_time": args.min_run_time, "paths": paths,
                               "unavailable": unavailable, "int8_default": DEFAULT_INT8_PATH, "grid": grid,
                               "plot": "speed_shapes.png"})
    plot_grid(report, ROOT / "benchmarks" / "results" / "speed_shapes.png")
    return {**report.to_dict(), "wall_s": round(time.time() - start, 1), "summary_lines": report.summary_lines()}


def demo_part(args, paths: list[str]) -> dict:
    """`bortify bench` on the demo task model against all-MiniLM-L6-v2, with sentences/s on real texts."""
    model = ROOT / "runs" / "demo" / "finetune"
    note = "runs/demo/finetune (the demo recipe's task model)"
    with tempfile.TemporaryDirectory(prefix="bench-speed-demo-") as tmp:
        if not (model / "model.safetensors").is_file():  # no demo run here: the demo student's shape, random weights
            from transformers import AutoTokenizer

            from bortify.resources import resolve_model

            model = Path(tmp) / "student"
            random_task_model(DEMO_STUDENT).save_pretrained(model)
            AutoTokenizer.from_pretrained(resolve_model("embedded:all-MiniLM-L6-v2")).save_pretrained(model)
            note = "random weights in the demo student's shape 3/4/128/768 (no runs/demo/finetune here)"
        start = time.time()
        report = bench(BenchArguments(model=str(model), source="embedded:all-MiniLM-L6-v2",
                                      output_dir=str(Path(tmp) / "bench"), batch_sizes=args.batch_sizes,
                                      seq_lens=args.seq_lens, paths=paths, threads=args.threads,
                                      rounds=args.demo_rounds, min_run_time=args.min_run_time, max_texts=256))
        plot_grid(report, ROOT / "benchmarks" / "results" / "speed_demo.png")
    return {**report.to_dict(), "model_note": note, "wall_s": round(time.time() - start, 1),
            "summary_lines": report.summary_lines()}


def goals(shapes: dict, demo: dict) -> dict:
    """The goals at batch 8 x 128 (and their range over the grid)."""
    grid = shapes["grid"]
    fp32 = {(c["batch_size"], c["seq_len"]): c for c in grid if c["path"] == "fp32"}
    best_int8 = {}
    for c in grid:
        if c["path"] != "fp32":
            key = (c["batch_size"], c["seq_len"])
            if key not in best_int8 or c["speedup_vs_source_fp32"] > best_int8[key]["speedup_vs_source_fp32"]:
                best_int8[key] = c
    default_int8 = {(c["batch_size"], c["seq_len"]): c for c in grid if c["path"] == DEFAULT_INT8_PATH}
    key = (8, 128) if (8, 128) in fp32 else max(fp32)
    s = demo.get("sentences") or {}
    demo_int8 = s.get(DEFAULT_INT8_PATH, {}).get("sentences_per_s")
    return {
        "cell": list(key),
        "bort_fp32_vs_large_fp32": fp32[key]["speedup"], "macs_ratio": fp32[key]["macs_ratio"], "goal_fp32": 18.0,
        "bort_fp32_vs_large_fp32_range": [min(c["speedup"] for c in fp32.values()),
                                          max(c["speedup"] for c in fp32.values())],
        "bort_int8_vs_large_fp32": {p: c["speedup_vs_source_fp32"] for p, c in
                                    ((c["path"], c) for c in grid if (c["batch_size"], c["seq_len"]) == key
                                     and c["path"] != "fp32")},
        "bort_default_int8_vs_large_fp32_range": [min(c["speedup_vs_source_fp32"] for c in default_int8.values()),
                                                  max(c["speedup_vs_source_fp32"] for c in default_int8.values())]
        if default_int8 else None,
        "best_int8_per_cell": {f"{b}x{L}": c["path"] for (b, L), c in sorted(best_int8.items())},
        "goal_int8": 30.0,
        "demo_int8_vs_fp32_sentences_per_s": demo_int8 / s["fp32"]["sentences_per_s"] if demo_int8 else None,
        "goal_demo_int8": 1.5,
    }


def machine() -> dict:
    load = os.getloadavg()
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "loadavg_1_5_15": [round(x, 2) for x in load], "torch": torch.__version__,
            "python": platform.python_version()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seq_lens", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per cell for Bort vs BERT-large")
    parser.add_argument("--demo_rounds", type=int, default=3, help="rounds per cell for the demo model vs MiniLM")
    parser.add_argument("--min_run_time", type=float, default=0.3)
    parser.add_argument("--short_paths", nargs="*", default=["torchao", "openvino"],
                        help="paths timed only up to --short_max_len in the shapes part (slower than fp32 or no faster "
                             "in every cell of a first run: BENCHMARKS.md)")
    parser.add_argument("--short_max_len", type=int, default=128)
    parser.add_argument("--parts", nargs="+", default=["demo", "shapes"], choices=["demo", "shapes"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    args = parser.parse_args(argv)
    paths, unavailable = chosen_paths(["auto"])
    out = {"command": "benchmarks/bench_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine_before": machine(), "paths": paths, "unavailable": unavailable,
           "int8_default": DEFAULT_INT8_PATH}
    start = time.time()
    if "demo" in args.parts:
        out["demo"] = demo_part(args, paths)
        print("\n".join(["demo:", *out["demo"]["summary_lines"]]), flush=True)
    if "shapes" in args.parts:
        out["shapes"] = shapes_part(args, paths, unavailable)
        print("\n".join(["shapes:", *out["shapes"]["summary_lines"]]), flush=True)
    if "demo" in out and "shapes" in out:
        out["goals"] = goals(out["shapes"], out["demo"])
        print("goals:", out["goals"])
    out["machine_after"], out["wall_s"] = machine(), round(time.time() - start, 1)
    write_json_atomic(args.out, out)
    print(f"wrote {args.out} ({out['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
