"""Run every benchmark in turn (`make bench`); each writes benchmarks/results/<name>.json and prints its table.

    .venv/bin/python benchmarks/run_all.py                 # all of them (tens of minutes on 2 CPU cores)
    .venv/bin/python benchmarks/run_all.py extraction      # one of them

Run them alone on the machine: they time things, and a shared CPU makes timings noisy.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "extraction": HERE / "bench_extraction.py",
    "pretraining": HERE / "bench_pretraining.py",
    "agora": HERE / "bench_agora.py",
    "distill": HERE / "bench_distill.py",
    "pareto": HERE / "bench_pareto.py",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"=== benchmark: {name} ===", flush=True)
        if subprocess.run([sys.executable, str(BENCHMARKS[name])]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
