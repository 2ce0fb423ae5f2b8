"""bortify's one latency timer, and the name of the CPU it ran on (docs/methods/05-compression.md §5 "Measuring speed").

`time_calls` is the only timing loop in bortify: `bortify bench`, the compress stage, the card's own latency
measurement and extraction's measured cost (bortify.extraction.costs.measure_latency) all call it, so their figures
are comparable. It uses torch.utils.benchmark.Timer.blocked_autorange, which picks a block size and times blocks of
calls for at least `min_run_time`; the functions compared are timed in alternation for `rounds` rounds (so load from
other processes hits them alike), after `warmup` untimed calls each, at a fixed thread count; each function's time
is the MEDIAN per-call time over all its blocks.

This module imports nothing from bortify, so every floor of the package may use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass
class Timing:
    """A function's median seconds per call, the interquartile range, and how much was timed."""

    median_s: float
    iqr_s: float
    blocks: int
    calls: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    """torch.set_num_threads(threads) for the block; the previous value is restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_calls(fns: dict[str, Callable[[], Any]], *, threads: int = 1, rounds: int = 3, min_run_time: float = 0.2,
               warmup: int = 1) -> dict[str, Timing]:
    """Median per-call seconds of each function, timed in alternation (the one timer, module docstring).

    Each round runs torch.utils.benchmark.Timer(...).blocked_autorange(min_run_time) for every function in turn, at
    `threads` torch threads (0: torch's current setting); the per-call times of all blocks of all rounds are pooled
    and the median kept (robust to the occasional pass a neighbour slowed down). `warmup` untimed calls first."""
    import torch
    from torch.utils.benchmark import Timer

    if rounds < 1 or warmup < 0 or min_run_time < 0:
        raise ValueError(f"rounds must be >= 1, warmup >= 0, min_run_time >= 0 (got {rounds}, {warmup}, "
                         f"{min_run_time}).")
    threads = threads if threads > 0 else torch.get_num_threads()
    times: dict[str, list[float]] = {name: [] for name in fns}
    calls = dict.fromkeys(fns, 0)
    with _threads(threads):
        for fn in fns.values():
            for _ in range(warmup):
                fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=min_run_time)
            times[name] += list(m.times)
            calls[name] += m.number_per_run * len(m.times)
    return {name: Timing(float(statistics.median(t)), _iqr(t), len(t), calls[name]) for name, t in times.items()}


def time_call(fn: Callable[[], Any], **kw) -> Timing:
    """`time_calls` for one function."""
    return time_calls({"fn": fn}, **kw)["fn"]


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return float(q[2] - q[0])


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU the timings ran on, as reports and cards name it: /proc/cpuinfo's "model name" on Linux, else
    platform.processor(), else the machine type; always with the architecture."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    name = value.strip()
                    break
    except OSError:
        pass
    name = " ".join((name or platform.processor() or "").split())
    machine = platform.machine() or "unknown architecture"
    return f"{name} ({machine})" if name and machine not in name else (name or f"unknown {machine} CPU")
