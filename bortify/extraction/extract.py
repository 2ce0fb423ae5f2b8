"""`extract()`: the library function behind `bortify extract` and the pipeline's extract stage.

Order of work: validate everything cheap first (arguments, source config, space, output dir, candidate costs
and a latency budget, estimator data and models), then the search with a progress bar (objective W: the FPTAS,
fptas.py; max_error_increase / latency_budget: constraints.py), persisting each candidate's ê to
`partial_results.json` (atomically) so an interrupted run resumes without retraining, then config.json
(save_pretrained), report.json and pareto.png.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from bortify.extraction.arguments import EstimatorArguments, ExtractionArguments
from bortify.extraction.constraints import (
    GUARANTEES,
    Outcome,
    check_latency_budget,
    run_latency_budget,
    run_max_error_increase,
)
from bortify.extraction.costs import Shape, bert_config, measure_latency
from bortify.extraction.estimators import make_estimator
from bortify.extraction.fptas import Candidate, make_candidate, run_fptas
from bortify.extraction.report import build_report, plot_pareto
from bortify.extraction.space import InlineSource, SpaceError, build_space, load_source_config
from bortify.reports import PLOT_FILE, ExtractReport, write_report
from bortify.outputs import Output, claim
from bortify.utils import OutputExistsError, torch_threads, write_json_atomic

PARTIAL_NAME = "partial_results.json"


def _load_partial(path: Path, fingerprint: dict) -> dict:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("fingerprint") != fingerprint:
        raise OutputExistsError(
            f"{path} holds partial results of an extraction with different settings "
            f"({data.get('fingerprint')}); pass --overwrite to start again, or use another --output_dir."
        )
    return dict(data.get("results") or {})


def _check_objective(args: ExtractionArguments, estimator) -> None:
    """max_error_increase compares ê with the source's ê: an estimator that returns ê = 1 cannot tell them apart."""
    name = getattr(estimator, "name", None) if estimator is not None else args.error
    if args.objective == "max_error_increase" and name == "none":
        raise ValueError("--max_error_increase needs an error estimate ê of every candidate and of the source, but "
                         "--error none sets ê = 1 for all; use --error sliced-task (or mlm), or --latency_budget_ms.")


def extract(args: ExtractionArguments, est_args: EstimatorArguments | None = None, *, estimator=None) -> ExtractReport:
    """Run the search (args.objective: W, max_error_increase or latency_budget); write config.json, report.json,
    pareto.png to args.output_dir; return the report.

    `estimator` (any callable shape -> ê, see estimators.py) replaces the one named by args.error (tests).
    """
    start = time.perf_counter()
    _check_objective(args, estimator)
    est_args = est_args or EstimatorArguments()
    inline = InlineSource(args.source_layers, args.source_heads, args.source_hidden, args.source_intermediate,
                          args.source_vocab_size, args.source_max_position_embeddings, args.source_type_vocab_size,
                          args.source_layer_norm_eps)
    source_config = load_source_config(args.source, inline)
    if args.seq_len > source_config.max_position_embeddings:
        raise SpaceError(f"seq_len={args.seq_len} exceeds the source's max_position_embeddings="
                         f"{source_config.max_position_embeddings}.")
    space = build_space(source_config, args.depths, args.heads, args.hidden_sizes, args.intermediate_sizes)
    # the output folder (bortify.outputs): an unfinished extraction there resumes from its cached candidates; a
    # replacement (--overwrite) is built beside it and swapped in at the end
    with claim("extract", args.output_dir, overwrite=args.overwrite, inputs={"--source": args.source}) as output:
        return _extract(args, est_args, estimator, source_config, space, output, start)


def _extract(args, est_args, estimator, source_config, space, output: Output, start: float) -> ExtractReport:
    if estimator is None:
        estimator = make_estimator(args.error, source_config, args.source, est_args)
    name = getattr(estimator, "name", type(estimator).__name__)
    fingerprint = {**(estimator.fingerprint() if hasattr(estimator, "fingerprint") else {"error_estimator": name}),
                   "seq_len": args.seq_len, "cost": args.cost}
    if args.cost == "latency":  # measured latencies are cached too: only reuse them under the same settings
        fingerprint["latency"] = {"batch_size": args.latency_batch_size, "repeats": args.latency_repeats,
                                  "threads": args.latency_threads}
    cache = _load_partial(output.final / PARTIAL_NAME, fingerprint) if output.resuming else {}
    source_point, candidates = _candidates(args, source_config, space, cache)
    if args.objective == "latency_budget":  # cheap filter first: an impossible budget fails before any training
        check_latency_budget(candidates, budget_s(args, source_point), _budget_flag(args))
    if hasattr(estimator, "prepare"):
        estimator.prepare()  # loads data/teacher: fails here, before the loop, on bad input
    out = output.work_dir()
    with torch_threads(args.torch_threads):
        return _search(args, source_config, space, source_point, candidates, out, estimator, name, fingerprint, cache, start)


def _candidates(args, source_config, space, cache: dict) -> tuple[Candidate, list[Candidate]]:
    """T and every candidate with p, ops and (cost=latency) measured latency, at `latency_threads` threads.

    Latencies go into `cache` under "latency:<key>" (persisted with the partial results)."""

    def latency(shape: Shape) -> float | None:
        if args.cost != "latency":
            return None
        key = "latency:" + shape.key()
        if key not in cache:
            threads = torch.get_num_threads()
            torch.set_num_threads(args.latency_threads)
            try:
                cache[key] = measure_latency(bert_config(shape, source_config), args.latency_batch_size, args.seq_len,
                                             args.latency_repeats)
            finally:
                torch.set_num_threads(threads)
        return cache[key]

    source_point = make_candidate(space.maximum_point, args.seq_len, latency(space.maximum_point))
    return source_point, [make_candidate(shape, args.seq_len, latency(shape)) for shape in space.candidates]


def _run_objective(args, source_point, candidates, estimator, cache, persist) -> Outcome:
    """Dispatch on args.objective; every mode returns the winner and why it won (constraints.py, fptas.py)."""
    kw = dict(cache=cache, on_result=persist, progress=args.progress)
    if args.objective == "max_error_increase":
        return run_max_error_increase(candidates, source_point, estimator, args.max_error_increase, args.epsilon, **kw)
    if args.objective == "latency_budget":
        return run_latency_budget(candidates, source_point, estimator, budget_s(args, source_point), args.epsilon, flag=_budget_flag(args),
                                  **kw)
    winner = run_fptas(candidates, source_point, estimator, args.epsilon, **kw)
    n = sum(c.W is not None for c in candidates)
    return Outcome(winner, [], f"largest W ({winner.W:.4g}) among the {n} evaluated candidates", {})


def _search(args, source_config, space, source_point, candidates, out, estimator, name, fingerprint, cache, start) -> ExtractReport:
    partial_path = out / PARTIAL_NAME
    results = {k: v for k, v in cache.items() if not k.startswith("latency:")}

    def persist(c: Candidate) -> None:
        results[c.shape.key()] = {"error": c.error, "details": c.details}
        lat = {k: v for k, v in cache.items() if k.startswith("latency:")}
        write_json_atomic(partial_path, {"fingerprint": fingerprint, "results": {**results, **lat}})

    outcome = _run_objective(args, source_point, candidates, estimator, results, persist)
    winner = outcome.winner

    config = bert_config(winner.shape, source_config)
    config.architectures = ["BertModel"]
    with tempfile.TemporaryDirectory(dir=out, prefix=".config.") as tmp:  # save_pretrained, then an atomic move
        config.save_pretrained(tmp)
        os.replace(Path(tmp) / "config.json", out / "config.json")
    report = build_report(
        source=args.source, source_point=source_point, epsilon=args.epsilon,
        space={"D": sorted(set(args.depths)), "A": sorted(set(args.heads)), "H": sorted(set(args.hidden_sizes)),
               "I": sorted(set(args.intermediate_sizes))},
        dropped_indivisible=space.dropped_indivisible, dropped_larger=space.dropped_larger,
        error_estimator=name, seq_len=args.seq_len, cost=args.cost, winner=winner, candidates=candidates,
        estimator_settings=fingerprint, seconds=time.perf_counter() - start,
        constraint=constraint_record(args, outcome), output_dir=args.output_dir,
        heldout=getattr(estimator, "heldout_record", None),
    )
    plot_pareto(candidates, winner, source_point, out / PLOT_FILE,
                title=f"{args.source}: {len(candidates)} candidates, ε={args.epsilon}, ê={name}, "
                      f"{objective_text(args)}; winner {winner.shape.key()}",
                budget_s=budget_s(args, source_point))
    write_report(out, report)  # last: its presence marks a finished extraction
    return report


def budget_s(args, source_point: Candidate) -> float | None:
    """The latency budget in seconds: --latency_budget_ms, or the source's measured latency / --min_speedup."""
    if args.min_speedup is not None:
        return source_point.latency_s / args.min_speedup
    return args.latency_budget_ms / 1e3 if args.latency_budget_ms is not None else None


def _budget_flag(args) -> str:
    return f"--min_speedup {args.min_speedup:g}" if args.min_speedup is not None else \
        f"--latency_budget_ms {args.latency_budget_ms:g}"


def objective_text(args) -> str:
    if args.objective == "max_error_increase":
        return f"cheapest with ê <= ê(source) + {args.max_error_increase:g}"
    if args.min_speedup is not None:
        return f"lowest ê at >= {args.min_speedup:g}x the source's speed"
    if args.objective == "latency_budget":
        return f"lowest ê within {args.latency_budget_ms:g} ms"
    return "max W"


def constraint_record(args, outcome: Outcome) -> dict:
    """report.json's "constraint": the mode, its bound, who satisfied it, why the winner won, the guarantee."""
    bound = {"max_error_increase": args.max_error_increase, "latency_budget_ms": args.latency_budget_ms,
             "min_speedup": args.min_speedup}
    return {
        "mode": args.objective,
        "bound": {k: v for k, v in bound.items() if v is not None} or None,
        "satisfied": [c.shape.key() for c in outcome.satisfied],
        "num_satisfied": len(outcome.satisfied),
        "winner_reason": outcome.why,
        "guarantee": GUARANTEES[args.objective],
        **outcome.fields,
    }
