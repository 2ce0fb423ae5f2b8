"""benchmarks/run_all.py (`make bench`): every script in benchmarks/ is listed, and each either runs or says why not."""

from pathlib import Path

import run_all

HELPERS = {"common.py", "panels.py", "pareto_peers.py", "run_all.py"}  # modules the benchmarks import


def test_every_benchmark_is_listed_and_runs_or_says_why_not(monkeypatch, capsys):
    scripts = {p.name for p in Path(run_all.HERE).glob("*.py")} - HELPERS
    assert {script.name for script, _ in run_all.BENCHMARKS.values()} == scripts
    ran = []
    monkeypatch.setattr(run_all.subprocess, "run",
                        lambda cmd, **kw: ran.append(Path(cmd[1]).name) or type("Done", (), {"returncode": 0})())
    assert run_all.main([]) == 0
    printed = capsys.readouterr().out
    for name, (script, skip) in run_all.BENCHMARKS.items():
        assert (script.name in ran) == (skip is None)
        assert skip is None or f"=== benchmark: {name} === skipped: {skip}" in printed
    assert ran == ["bench_extraction.py", "bench_pretraining.py", "bench_agora.py", "bench_distill.py",
                   "bench_pareto.py"]  # what `make bench` has always run
