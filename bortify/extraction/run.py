"""`extract()`: the library function behind `bortify extract` and the pipeline's extract stage.

Order of work: validate everything cheap first (arguments, source config, space, output dir, estimator
data and models), then the FPTAS loop with a progress bar, persisting each candidate's ê to
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
from bortify.extraction.costs import Shape, bert_config, measure_latency
from bortify.extraction.estimators import (
    MLMEstimator,
    NoneEstimator,
    SlicedTaskEstimator,
    TrainingBudget,
)
from bortify.extraction.fptas import Candidate, make_candidate, run_fptas
from bortify.extraction.report import PLOT_NAME, REPORT_NAME, build_report, plot_pareto, write_report
from bortify.extraction.space import InlineSource, SpaceError, build_space, load_source_config
from bortify.utils import OutputExistsError, check_output_dir, write_json_atomic

PARTIAL_NAME = "partial_results.json"


def make_estimator_from_args(args: ExtractionArguments, est: EstimatorArguments, source_config):
    budget = TrainingBudget(steps=est.train_steps, batch_size=est.train_batch_size,
                            learning_rates=tuple(est.learning_rates), max_seq_length=est.max_seq_length,
                            clip_value=est.clip_value, seed=est.seed)
    if args.error == "none":
        return NoneEstimator()
    if args.error == "mlm":
        return MLMEstimator(source_config, tokenizer=est.tokenizer or args.source, corpus=est.corpus,
                            corpus_config=est.corpus_config, text_column=est.text_column, budget=budget, train_samples=est.train_samples,
                            eval_samples=est.eval_samples)
    return SlicedTaskEstimator(source_config, source=args.source, task=est.task, text_column=est.text_column,
                               label_column=est.label_column, budget=budget, train_samples=est.train_samples,
                               eval_samples=est.eval_samples, importance=est.importance,
                               train_embeddings=est.train_embeddings)


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


def extract(args: ExtractionArguments, est_args: EstimatorArguments | None = None, *, estimator=None) -> dict:
    """Run the FPTAS; write config.json, report.json, pareto.png to args.output_dir; return the report.

    `estimator` (any callable shape -> ê, see estimators.py) replaces the one named by args.error (tests).
    """
    start = time.perf_counter()
    est_args = est_args or EstimatorArguments()
    inline = InlineSource(args.source_layers, args.source_heads, args.source_hidden, args.source_intermediate,
                          args.source_vocab_size, args.source_max_position_embeddings, args.source_type_vocab_size,
                          args.source_layer_norm_eps)
    source_config = load_source_config(args.source, inline)
    if args.seq_len > source_config.max_position_embeddings:
        raise SpaceError(f"seq_len={args.seq_len} exceeds the source's max_position_embeddings="
                         f"{source_config.max_position_embeddings}.")
    space = build_space(source_config, args.depths, args.heads, args.hidden_sizes, args.intermediate_sizes)
    out = check_output_dir(args.output_dir, args.overwrite, resumable=True, marker=REPORT_NAME)
    if args.overwrite:
        for name in (PARTIAL_NAME, REPORT_NAME):
            (out / name).unlink(missing_ok=True)
    if estimator is None:
        estimator = make_estimator_from_args(args, est_args, source_config)
    name = getattr(estimator, "name", type(estimator).__name__)
    fingerprint = {**(estimator.fingerprint() if hasattr(estimator, "fingerprint") else {"error_estimator": name}),
                   "seq_len": args.seq_len, "cost": args.cost}
    partial_path = out / PARTIAL_NAME
    cache = _load_partial(partial_path, fingerprint)
    if hasattr(estimator, "prepare"):
        estimator.prepare()  # loads data/teacher: fails here, before the loop, on bad input
    threads_before = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        return _search(args, source_config, space, out, estimator, name, fingerprint, cache, start)
    finally:
        torch.set_num_threads(threads_before)


def _search(args, source_config, space, out, estimator, name, fingerprint, cache, start) -> dict:
    partial_path = out / PARTIAL_NAME

    def latency(shape: Shape) -> float | None:
        if args.cost != "latency":
            return None
        key = "latency:" + shape.key()
        if key not in cache:
            cache[key] = measure_latency(bert_config(shape, source_config), args.latency_batch_size, args.seq_len,
                                         args.latency_repeats)
        return cache[key]

    T = make_candidate(space.maximum_point, args.seq_len, latency(space.maximum_point))
    candidates: list[Candidate] = []
    for shape in space.candidates:
        candidates.append(make_candidate(shape, args.seq_len, latency(shape)))
    results = {k: v for k, v in cache.items() if not k.startswith("latency:")}

    def persist(c: Candidate) -> None:
        results[c.shape.key()] = {"error": c.error, "details": c.details}
        lat = {k: v for k, v in cache.items() if k.startswith("latency:")}
        write_json_atomic(partial_path, {"fingerprint": fingerprint, "results": {**results, **lat}})

    winner = run_fptas(candidates, T, estimator, args.epsilon, cache=results, on_result=persist, progress=args.progress)

    config = bert_config(winner.shape, source_config)
    config.architectures = ["BertModel"]
    with tempfile.TemporaryDirectory(dir=out, prefix=".config.") as tmp:  # save_pretrained, then an atomic move
        config.save_pretrained(tmp)
        os.replace(Path(tmp) / "config.json", out / "config.json")
    report = build_report(
        source=args.source, T=T, epsilon=args.epsilon,
        space={"D": sorted(set(args.depths)), "A": sorted(set(args.heads)), "H": sorted(set(args.hidden_sizes)),
               "I": sorted(set(args.intermediate_sizes))},
        dropped_indivisible=space.dropped_indivisible, dropped_larger=space.dropped_larger, error_estimator=name,
        seq_len=args.seq_len, cost=args.cost, winner=winner, candidates=candidates,
        estimator_settings=fingerprint, seconds=time.perf_counter() - start,
    )
    plot_pareto(candidates, winner, T, out / PLOT_NAME,
                title=f"{args.source}: {len(candidates)} candidates, ε={args.epsilon}, ê={name}; "
                      f"winner {winner.shape.key()}")
    write_report(out, report)  # last: its presence marks a finished extraction
    return report


def summary_lines(report: dict, output_dir: str) -> list[str]:
    w, s = report["winner"], report["source_shape"]
    spread = report["error_spread"]
    lines = [
        f"chosen ⟨D,A,H,I⟩ = ⟨{w['D']},{w['A']},{w['H']},{w['I']}⟩ from source {report['source']} "
        f"⟨{s['D']},{s['A']},{s['H']},{s['I']}⟩",
        f"parameters {w['parameters'] / 1e6:.2f}M vs {report['source_parameters'] / 1e6:.2f}M "
        f"({100 * w['parameter_ratio']:.1f}% of the source); effective (encoder) {w['effective_parameters'] / 1e6:.2f}M "
        f"vs {report['source_effective_parameters'] / 1e6:.2f}M",
        f"multiply-adds at L={report['seq_len']}: {w['ops'] / 1e9:.3f}G vs {report['source_ops'] / 1e9:.3f}G "
        f"({100 * w['ops_ratio']:.1f}%, {1 / w['ops_ratio']:.1f}x fewer)",
        f"ê = {report['error_estimator']}: winner {w['error']:.4g}, W = {w['W']:.4g}; spread over "
        f"{spread['n']} evaluated candidates: min {spread['min']:.4g} max {spread['max']:.4g} std {spread['std']:.3g}",
        f"candidates: {report['num_candidates']} ({report['dropped_indivisible']} dropped H%A!=0), ε = {report['epsilon']}: "
        f"{report['num_trained']} trained, {report['num_cached']} cached, {report['num_skipped']} skipped",
        f"files: {Path(output_dir) / 'config.json'}, {Path(output_dir) / REPORT_NAME}, {Path(output_dir) / PLOT_NAME}",
    ]
    return lines
