"""Compression of the demo task model (docs/methods/05-compression.md §5; BENCHMARKS.md "Compression").

One `bortify compress` run with the defaults (8-bit weights, ONNX fp32/int8, the offline bundle: sizes, test
scores, agreement, latency), then the quantisation settings side by side on the same test split: per tensor vs per
output channel, and zero-dropping thresholds (how far toward the paper's 14x zero-dropping and entropy coding get).

    .venv/bin/python benchmarks/bench_compress.py [--model runs/demo/finetune] [--work_dir runs/bench-compress]

Uses the finished demo run's task model (make demo) when there is one. Writes benchmarks/results/compress.json.
"""

from __future__ import annotations

import argparse
import json
import lzma
import time
from pathlib import Path

import numpy as np
import torch

import common  # noqa: E402  (the environment, benchmarks/common.py)

RESULTS = common.RESULTS / "compress.json"
SETTINGS = [  # (per_channel, zero_threshold)
    (False, 0.5), (True, 0.5), (False, 2.0), (False, 4.0), (False, 8.0), (False, 16.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo/finetune")
    parser.add_argument("--work_dir", default="runs/bench-compress")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from bortify.compression import quantize as q
    from bortify.compression.arguments import CompressArguments
    from bortify.compression.compress import (all_logits, compress, encodings, load_test_split, score_logits,
                                              torch_forward)

    if not (Path(args.model) / "model.safetensors").is_file():
        raise SystemExit(f"{args.model} has no task model: run `make demo` first (or pass --model).")
    work = Path(args.work_dir)
    started = time.perf_counter()
    report = compress(CompressArguments(model_dir=args.model, output_dir=str(work / "compress"), overwrite=True,
                                        latency_seconds=1.0, latency_threads=args.threads))
    stage_seconds = time.perf_counter() - started
    print("\n".join(report.summary_lines()))

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cargs = CompressArguments(model_dir=args.model, output_dir=str(work / "unused"))
    task, ft = load_test_split(Path(args.model), cargs)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    batches = list(encodings(tokenizer, [list(task.test[c]) for c in task.text_columns], ft.max_length or 128, 64))
    labels = np.asarray(task.test["label"])
    fp32 = all_logits(torch_forward(model), batches)
    fp32_bytes = (Path(args.model) / "model.safetensors").stat().st_size
    rows = []
    for per_channel, threshold in SETTINGS:
        quant = q.QuantConfig(per_channel=per_channel, zero_threshold=threshold)
        weights = q.quantize_model(model, quant)
        path = q.save_quantized(weights, work / "variant.safetensors")
        rebuilt = q.model_from_state(model.config, q.dequantize_state_dict(q.load_quantized(path)))
        scored = score_logits(all_logits(torch_forward(rebuilt), batches), labels, task, fp32)
        coded = len(lzma.compress(path.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
        row = {"per_channel": per_channel, "zero_threshold": threshold, "zero_fraction": weights.zero_fraction(),
               "code_entropy_bits": q.code_entropy_bits(weights), "bytes": path.stat().st_size, "lzma_bytes": coded,
               "ratio": fp32_bytes / path.stat().st_size, "lzma_ratio": fp32_bytes / coded,
               "accuracy": scored["scores"]["accuracy"], "agreement": scored["agreement"]}
        rows.append(row)
        print(f"per_channel={per_channel} zero_threshold={threshold}: zeros {row['zero_fraction']:.1%}, "
              f"{row['ratio']:.2f}x (lzma {row['lzma_ratio']:.2f}x), accuracy {row['accuracy']:.4f} "
              f"(fp32 {report.score('fp32'):.4f}), agreement {row['agreement']:.2%}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": args.model, "threads": args.threads, "stage_seconds": round(stage_seconds, 1),
                                   "report": report.to_dict(), "settings": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
