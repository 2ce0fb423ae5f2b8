"""The card's evidence: every figure a card states, read from a run's reports into one typed `CardEvidence`.

Every figure comes from a run's own reports (extract/pretrain/finetune/compare/compress/bench `report.json`, read
as the typed reports of bortify.reports), from the checkpoint itself (parameters counted from model.safetensors,
the architecture from config.json) or from a measurement taken while the card is made (CPU latency against the
source model). Nothing is typed in; a figure that no report provides renders as "not measured". The release
folder keeps the evidence as card_evidence.json (bortify.hub.card_stage).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional

from bortify.hub.card_plots import accuracy_speed_evidence
from bortify.reports import (REPORT_TYPES, CompareReport, CompressReport, ExtractReport, FinetuneReport,
                             PretrainReport, ReportError, read_report)
from bortify.timing import cpu_name

STAGE_KINDS = ("extract", "pretrain", "finetune")


class CardError(ValueError):
    """The card cannot be made; the message says what to fix."""


@dataclass
class CardOptions:
    """What the card says beyond the reports: names, licence, tags, latency settings."""

    repo_id: Optional[str] = field(default=None, metadata={
        "help": "Hub repository the model will live in (NS/NAME); used in the card's how-to-load snippet and as "
                "the model name. Default: the placeholder YOUR_NAME/MODEL_NAME, which `bortify push` replaces "
                "with the real repository id in the uploaded card."})
    model_name: Optional[str] = field(default=None, metadata={
        "help": "Model name in the card title and model-index (default: NAME of --repo_id, else "
                "bortify-task-model / bortify-student-model)."})
    license: str = field(default="apache-2.0", metadata={
        "help": "Licence of the released weights (SPDX id as the Hub expects, e.g. apache-2.0, mit)."})
    language: str = field(default="en", metadata={"help": "Language code(s) of the model, comma-separated."})
    tags: Optional[str] = field(default=None, metadata={
        "help": "Extra comma-separated tags; 'bort' and 'bortify' are always added."})
    measure_latency: bool = field(default=True, metadata={
        "help": "Measure CPU latency of the released encoder against the source model's (random weights: latency "
                "depends only on the shape). Off: the card says 'not measured'."})
    latency_batch_size: int = field(default=8, metadata={"help": "Batch size for the latency measurement."})
    latency_seq_len: int = field(default=128, metadata={"help": "Sequence length for the latency measurement."})
    latency_threads: int = field(default=1, metadata={
        "help": "CPU threads for the latency measurement (0: torch's default, all cores). One thread is the default: "
                "on a loaded machine multi-threaded timings of small models are dominated by thread contention "
                "(measured here: 16 ms on 1 thread vs 642 ms on 2 for the same model)."})
    latency_repeats: int = field(default=5, metadata={
        "help": "Rounds of timing per model, alternating between the models (torch.utils.benchmark); the median "
                "per-pass time is reported."})


def _empty(kind: str):
    return field(default_factory=lambda: REPORT_TYPES[kind].from_dict({}))


@dataclass
class CardEvidence(Mapping):
    """Everything a card states. Read as a mapping too (`evidence["latency"]`), in the key order of
    card_evidence.json; `latency_error` is a key only when latency could not be measured."""

    kind: str = "student"  # "task" (a classifier: the finetune stage ran) or "student" (an encoder)
    stages: list[str] = field(default_factory=list)  # the run's stages with an output folder
    architecture: Optional[str] = None  # config.json's first architecture, else its model_type
    model_type: Optional[str] = None
    shape: dict = field(default_factory=dict)  # ⟨D, A, H, I⟩ (shape_of)
    vocab_size: Optional[int] = None
    parameters: Optional[dict] = None  # {"total", "effective", "bytes"} (count_parameters), None: no safetensors
    labels: list = field(default_factory=list)
    extract: ExtractReport = _empty("extract")
    pretrain: PretrainReport = _empty("pretrain")
    finetune: FinetuneReport = _empty("finetune")
    source: dict = field(default_factory=dict)  # the model compared against (resolve_source, without its config)
    latency: Optional[dict] = None  # compare_latency's measurement or the bench report's figure (bench_latency)
    compare: Optional[CompareReport] = None  # docs/methods/04-updates.md §4: NFR against the replaced model, when measured
    compress: Optional[CompressReport] = None  # docs/methods/05-compression.md §5: the compressed forms' sizes, scores, speed
    nfr: Optional[float] = None  # the compare stage's NFR when the run measured it, else the finetune report's
    accuracy_speed: Optional[dict] = None  # the accuracy vs sentences/s plot's points (bortify.hub.card_plots)
    latency_error: Optional[str] = None  # why latency is missing

    @property
    def is_task(self) -> bool:
        return self.kind == "task"

    @classmethod
    def from_dict(cls, data: Mapping) -> "CardEvidence":
        """Evidence from its mapping form (card_evidence.json read back: reports as dicts; other keys ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for kind in STAGE_KINDS:
            if not isinstance(values.get(kind), REPORT_TYPES[kind]):
                values[kind] = REPORT_TYPES[kind].from_dict(values.get(kind) or {})
        for key, report in (("compare", CompareReport), ("compress", CompressReport)):
            if isinstance(values.get(key), dict):
                values[key] = report.from_dict(values[key])
        return cls(**values)

    def __iter__(self) -> Iterator[str]:
        return (f.name for f in fields(self) if f.name != "latency_error" or self.latency_error is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __getitem__(self, key: str) -> Any:
        if key not in set(self):
            raise KeyError(key)
        return getattr(self, key)


def as_evidence(evidence: Mapping) -> CardEvidence:
    """Typed evidence, from CardEvidence or its mapping form (card_evidence.json holds the reports as dicts)."""
    return evidence if isinstance(evidence, CardEvidence) else CardEvidence.from_dict(evidence)


def read_reports(stage_dirs: dict[str, str]) -> tuple[ExtractReport, PretrainReport, FinetuneReport]:
    """The run's extract, pretrain and finetune reports (bortify.reports); a stage without a report gets an empty
    one, whose figures the card renders as "not measured"."""
    try:
        return tuple(read_report(stage_dirs.get(kind), kind) or REPORT_TYPES[kind].from_dict({})
                     for kind in STAGE_KINDS)
    except ReportError as exc:
        raise CardError(str(exc)) from exc


def _read_optional(stage_dirs: dict[str, str], stage: str, report_type):
    """The run's report of an optional stage (compare, compress, bench), or None when the stage did not run."""
    try:
        return read_report(stage_dirs.get(stage), report_type)
    except ReportError as exc:
        raise CardError(str(exc)) from exc


def read_compare(stage_dirs: dict[str, str]):
    """The run's `bortify compare` report (CompareReport), or None when no comparison was made."""
    return _read_optional(stage_dirs, "compare", CompareReport)


def read_compress(stage_dirs: dict[str, str]):
    """The run's `bortify compress` report (CompressReport), or None when the model was not compressed."""
    return _read_optional(stage_dirs, "compress", CompressReport)


def read_bench_report(stage_dirs: dict[str, str]):
    """The run's `bortify bench` report (BenchReport), or None when speed was not benchmarked."""
    from bortify.reports import BenchReport

    return _read_optional(stage_dirs, "bench", BenchReport)


def read_bench(stage_dirs: dict[str, str], options: CardOptions) -> dict | None:
    """The latency figure of the run's `bortify bench` report (the grid cell nearest the card's batch x length,
    fp32, with the default int8 path beside it), or None when there is no bench report with a source."""
    return bench_latency(read_bench_report(stage_dirs), options)


def bench_latency(report, options: CardOptions) -> dict | None:
    """`read_bench`'s figure from a bench report already read (None: no report, or no source in it)."""
    from bortify.bench import report_latency

    return report_latency(report, options.latency_batch_size, options.latency_seq_len) if report else None


def count_parameters(model_dir: str | Path) -> dict[str, int] | None:
    """Total and effective (encoder-only, docs/methods/01-extraction.md §1) parameter counts from the safetensors header."""
    from safetensors import safe_open

    model_dir = Path(model_dir)
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        return None
    total = effective = 0
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                n = math.prod(f.get_slice(name).get_shape())
                total += n
                if ".encoder.layer." in f".{name}":
                    effective += n
    return {"total": total, "effective": effective,
            "bytes": sum(s.stat().st_size for s in shards)}


def shape_of(config: dict) -> dict[str, int | None]:
    """⟨D, A, H, I⟩ of a BERT-family config.json (docs/methods/01-extraction.md §1)."""
    return {"D": config.get("num_hidden_layers"), "A": config.get("num_attention_heads"),
            "H": config.get("hidden_size"), "I": config.get("intermediate_size")}


def compare_latency(model_config, source_config, batch_size: int, seq_len: int, repeats: int,
                    threads: int = 0) -> tuple[float, float]:
    """Seconds of one forward pass of each bare encoder (random weights, fp32, CPU), side by side.

    bortify's one latency timer (bortify.timing.time_calls, as extraction's `measure_latency` and `bortify bench`):
    after a warm-up pass, the two models are timed in alternation for `repeats` rounds of torch.utils.benchmark's
    blocked_autorange, so load from other processes hits both alike, and each model's time is the median per-call
    time. `threads` > 0 pins torch's intra-op threads for the measurement (0: torch's current setting).
    -> (model s, source s)
    """
    import torch
    from transformers import AutoModel

    from bortify.timing import time_calls

    torch.manual_seed(0)
    models = [AutoModel.from_config(c).eval() for c in (model_config, source_config)]
    vocab = min(c.vocab_size for c in (model_config, source_config))
    ids = torch.randint(5, vocab, (batch_size, seq_len))
    mask = torch.ones_like(ids)

    def forward(model):
        def call():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
        return call

    timings = time_calls({"model": forward(models[0]), "source": forward(models[1])}, threads=threads,
                         rounds=repeats, min_run_time=0.0, warmup=1)
    return timings["model"].median_s, timings["source"].median_s


def resolve_source(extract: ExtractReport, pretrain: PretrainReport, model_config) -> dict:
    """The model this one is compared against: the extraction source, else the pretraining teacher.

    Its shape and size come from the extract report when it has them, else from the source's own
    config.json / safetensors (packaged defaults and local paths; a Hub name needs the Hub).
    -> {"name", "config" (or None), "shape", "parameters", "effective_parameters"}
    """
    from transformers import AutoConfig, BertConfig

    name = extract.source or pretrain.teacher
    source = {"name": name, "config": None, "shape": extract.source_shape or None,
              "parameters": extract.source_parameters,
              "effective_parameters": extract.source_effective_parameters}
    if name:
        try:
            from bortify.resources import resolve_model

            path = resolve_model(name)
            source["config"] = AutoConfig.from_pretrained(path)
            counted = count_parameters(path) if Path(path).is_dir() else None
        except Exception:  # e.g. a Hub name without the Hub: keep what the report says
            counted = None
        if source["config"] is not None and not source["shape"]:
            source["shape"] = shape_of(source["config"].to_dict())
        if counted and source["parameters"] is None:
            source["parameters"], source["effective_parameters"] = counted["total"], counted["effective"]
    shape = source["shape"] or {}
    if source["config"] is None and all(shape.get(k) for k in "DAHI"):
        source["config"] = BertConfig(vocab_size=model_config.vocab_size, num_hidden_layers=shape["D"],
                                      num_attention_heads=shape["A"], hidden_size=shape["H"],
                                      intermediate_size=shape["I"])
    return source


def collect_evidence(stage_dirs: dict[str, str], model_dir: str | Path,
                     options: CardOptions | None = None) -> CardEvidence:
    """Everything the card states: the typed reports and the measured figures (written next to the card as
    card_evidence.json)."""
    from transformers import AutoConfig

    options = options or CardOptions()
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise CardError(f"{model_dir} has no config.json: point the card at a saved checkpoint "
                        "(the finetune or pretrain stage's output directory).")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    extract, pretrain, finetune = read_reports(stage_dirs)
    architectures = config.get("architectures") or []
    is_task = bool(stage_dirs.get("finetune") or "ForSequenceClassification" in " ".join(architectures))
    params = count_parameters(model_dir)
    model_cfg = AutoConfig.from_pretrained(model_dir)
    source = resolve_source(extract, pretrain, model_cfg)
    id2label = config.get("id2label", {})
    evidence = CardEvidence(
        kind="task" if is_task else "student",
        stages=sorted(s for s in ("extract", "pretrain", "finetune") if stage_dirs.get(s)),
        architecture=(architectures or [config.get("model_type")])[0], model_type=config.get("model_type"),
        shape=shape_of(config), vocab_size=config.get("vocab_size"), parameters=params,
        labels=finetune.labels or [id2label.get(k) for k in sorted(id2label, key=int)],
        extract=extract, pretrain=pretrain, finetune=finetune,
        source={k: v for k, v in source.items() if k != "config"},
        compare=read_compare(stage_dirs), compress=read_compress(stage_dirs))
    # one NFR: the compare stage's when the run measured it (docs/methods/04-updates.md §4.2), else the finetune report's
    compared = evidence.compare.nfr if evidence.compare is not None else None
    evidence.nfr = compared if compared is not None else finetune.nfr
    bench_report = read_bench_report(stage_dirs)
    # docs/methods/05-compression.md §5.s: accuracy vs sentences/s of the run's models (bortify.hub.card_plots), None below 2 points
    evidence.accuracy_speed = accuracy_speed_evidence(finetune, evidence.compress, bench_report) \
        if bench_report is not None else None
    bench = bench_latency(bench_report, options)
    if bench is not None:  # the run measured speed with `bortify bench`: the card quotes it (docs/methods/05-compression.md §5)
        evidence.latency = bench
    elif options.measure_latency:
        evidence.latency, evidence.latency_error = measure_latency(model_cfg, source, options)
    return evidence


def measure_latency(model_cfg, source: dict, options: CardOptions) -> tuple[dict | None, str | None]:
    """The card's own CPU latency measurement against the source model (resolve_source's) -> (latency, None) or
    (None, why not)."""
    source_cfg = source["config"]
    if source_cfg is None:
        return None, "no source model known (no extract or pretrain report)"
    # Both models at the same shape; a sequence no longer than either model accepts.
    seq_len = min(options.latency_seq_len, *(getattr(c, "max_position_embeddings", None) or options.latency_seq_len
                                             for c in (model_cfg, source_cfg)))
    args = (options.latency_batch_size, seq_len, options.latency_repeats)
    try:
        threads = options.latency_threads if options.latency_threads > 0 else _threads()
        model_s, source_s = compare_latency(model_cfg, source_cfg, *args, threads=threads)
    except Exception as exc:  # the card must still be written; it says why latency is missing
        return None, f"{type(exc).__name__}: {exc}"
    return {"model_seconds": model_s, "source_seconds": source_s, "source": source["name"],
            "speedup": source_s / model_s, "batch_size": args[0], "seq_len": args[1], "repeats": args[2],
            "threads": threads, "cpu": cpu_name()}, None


def _threads() -> int:
    import torch

    return torch.get_num_threads()
