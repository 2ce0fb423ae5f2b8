"""Run every benchmark in turn (`make bench`); each writes benchmarks/results/<name>.json and prints its table.

    .venv/bin/python benchmarks/run_all.py                 # those `make bench` runs (tens of minutes on 2 CPU cores)
    .venv/bin/python benchmarks/run_all.py extraction      # one of them, or one `make bench` skips

Every script in benchmarks/ is listed below: `make bench` runs it, or prints why not (run those by name, or by hand
with the flags in the script's docstring). Run them alone on the machine: they time things, and a shared CPU makes
timings noisy. What they share (environment, teacher, results folder, mean ± sd, timer): benchmarks/common.py.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEEDS_DEMO = "needs a prior `make demo` (its student, runs/demo/pretrain)"
# name -> (script, why `make bench` skips it; None: it runs)
BENCHMARKS = {
    "extraction": (HERE / "bench_extraction.py", None),
    "pretraining": (HERE / "bench_pretraining.py", None),
    "agora": (HERE / "bench_agora.py", None),
    "distill": (HERE / "bench_distill.py", None),
    "pareto": (HERE / "bench_pareto.py", None),
    "compat": (HERE / "bench_compat.py", "too long for `make bench`: pretraining runs with and without "
                                         "--compatible_with per task, step count and seed"),
    "compress": (HERE / "bench_compress.py", "needs a prior `make demo` (its task model, runs/demo/finetune)"),
    "flips": (HERE / "bench_flips.py", f"{NEEDS_DEMO}; too long for `make bench` (a teacher and students per seed)"),
    "influence": (HERE / "bench_influence.py", f"{NEEDS_DEMO}; too long for `make bench` (four arms per seed)"),
    "panels": (HERE / "bench_panels.py", f"{NEEDS_DEMO}; too long for `make bench` (hours: two panels, 3 seeds, "
                                         "peers and students)"),
    "student_curve": (HERE / "bench_student_curve.py", "needs a finished panel seed of bench_panels.py (its saved "
                                                         "teacher) and the demo's student; an hour a curve on CPU"),
    "phash": (HERE / "bench_phash.py", "needs a separate venv with the reference hashers (--ref-python; see the "
                                       "script's docstring)"),
    "speed": (HERE / "bench_speed.py", "too long for `make bench` (Bort against BERT-large over a grid of batch "
                                       "sizes and lengths); run it alone on a quiet machine"),
    "check_labeler": (HERE / "check_labeler.py", "not a benchmark: a check that needs --student and --labeler"),
}
# Modules the scripts import, not benchmarks: common.py, panels.py, pareto_peers.py.


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        script, skip = BENCHMARKS[name]
        if skip and not argv:
            print(f"=== benchmark: {name} === skipped: {skip} (run: {sys.executable} {script.relative_to(HERE.parent)})",
                  flush=True)
            continue
        print(f"=== benchmark: {name} ===", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
