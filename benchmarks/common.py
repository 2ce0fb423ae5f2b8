"""What every benchmark shares: the environment, the teacher, where results go, mean ± sd, and the timer.

Import it before bortify or transformers (`import common` from a script in benchmarks/; the tests see benchmarks/ on
pytest's pythonpath): importing it sets the environment below, which those libraries read when imported.

Timing: latency goes through bortify's one timer, `bortify.timing.time_calls` (re-exported here as `time_calls`,
`time_call`): medians of blocks of calls, in alternation, after warm-up. Loops that time something else keep their
own clock, on purpose:
- bench_pretraining.py times training steps: each step takes the next batch and updates the weights, so a step
  cannot be re-run in blocks; the median of the per-step wall times after warm-up is the figure;
- bench_phash.py's `rate` is the best of passes of a pure-Python lookup over many strings (tokens/s), compared with
  other tokenizers' published best-of figures; a median per block would be another statistic;
- pareto_peers.py's `throughput` keeps every pass's sentences/s and the last pass's predictions (both written to
  the results), which time_calls does not return;
- wall-clock seconds of whole stages or training runs (time.perf_counter around one call) are durations, not
  latencies.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bortify.timing import time_call, time_calls  # noqa: E402,F401  (the one timer, re-exported)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # benchmarks/results/<name>.json (+ plots)
TEACHER = "embedded:all-MiniLM-L6-v2"  # the packaged teacher the benchmarks distil and compare against


def mean_sd(xs) -> tuple[float, float]:
    """Mean and sample standard deviation of `xs` (sd 0.0 for a single value)."""
    xs = list(xs)
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def format_mean_sd(xs, spec: str = ".3f") -> str:
    """'mean ± sd' with `spec` (the mean alone for a single value)."""
    xs = list(xs)
    mean, sd = mean_sd(xs)
    return f"{mean:{spec}}" + (f" ± {sd:{spec}}" if len(xs) > 1 else "")
