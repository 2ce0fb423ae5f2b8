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
import shutil
import statistics
import tempfile
import time
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


def distil_model2vec(work: Path, source: str = TEACHER) -> tuple[str, float]:
    """The model2vec static model distilled from `source` (PCA to 256 dims) under `work`/model2vec, made once and
    reused: (its folder, the seconds the distillation took; 0.0 when it was already there). Written to a temporary
    folder and renamed into place, so two benchmark processes racing for it both end with one whole model."""
    out = work / "model2vec"
    if (out / "model.safetensors").exists():
        return str(out), 0.0
    from model2vec.distill import distill

    from bortify.resources import resolve_model

    t0 = time.perf_counter()
    model = distill(model_name=resolve_model(source), pca_dims=256)
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=".model2vec-"))
    model.save_pretrained(str(tmp))
    try:
        os.replace(tmp, out)
    except OSError:  # the other process distilled it first (the same model: the distillation is deterministic)
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out), time.perf_counter() - t0
