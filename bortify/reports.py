"""Typed stage reports: what each stage writes to `<stage dir>/report.json` and what the model card reads.

One dataclass per stage (ExtractReport, PretrainReport, FinetuneReport, PushReport; CardReport is the card's
summary and has no file). Field names are report.json's keys, in the order the file lists them, so the files
keep the shape they always had. `write_report(dir, report)` writes the file atomically; `read_report(dir, kind)`
reads one back and is tolerant of older files: a missing key takes the field's default (and is listed in
`report.missing`), a value of the wrong type is treated as missing, and keys this version does not know are
kept in `report.extra` (and written back). The card therefore reads typed fields and never guesses shapes.

Each report knows its own summary (`summary_lines()`, printed by `bortify <stage>` and `bortify run`) and the
small record `bortify run` keeps in stage_done.json (`record()`). For callers written against the dicts these
reports used to be, a report is also a read-only mapping of its JSON form: `report["winner"]["W"]`.

Over 500 lines because it is the schema of every stage's report.json (one typed record per stage, read by the
card, `compare` and `bortify run`); a split would separate the records from the reading rules they share.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bortify.formatting import NOT_APPLICABLE as NA, fmt
from bortify.utils import BortifyError, write_json_atomic

REPORT_FILE = "report.json"  # every stage's report, in its output directory
PLOT_FILE = "pareto.png"  # the extraction's plot (report key "plot")
LOCAL = {"stored": False}  # field metadata: known in memory, not a report.json key
# Keys of Trainer metric dicts that are bookkeeping, not scores (older finetune reports stored Trainer dicts).
_NOT_SCORES = ("runtime", "per_second", "epoch", "step", "loss", "n_examples", "samples")


class ReportError(BortifyError):
    """A report.json that exists but cannot be read; the message names the file and the fix."""


def _local(default: Any = None, **kw):
    if "default_factory" not in kw:
        kw["default"] = default
    return field(metadata=LOCAL, repr=False, compare=False, **kw)


def _stored_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("stored", True)]


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _decode(tp: Any, value: Any, default: Any) -> Any:
    """`value` as field type `tp` (nested records decoded), or `default` when it does not fit."""
    from bortify.recipes import value_matches

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None if type(None) in args else default
        for arg in args:
            if arg is not type(None):
                decoded = _decode(arg, value, _MISS)
                if decoded is not _MISS:
                    return decoded
        return default
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(value) if isinstance(value, dict) else default
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], Record):
        return [args[0].from_dict(v) for v in value if isinstance(v, dict)] if isinstance(value, list) else default
    return value if value_matches(tp, value) else default


_MISS = object()


def _nested(tp: Any, value: Any) -> Any:
    """A computed value with its nested records (given as dicts) built by `make`; everything else as it is."""
    for arg in (tp, *typing.get_args(tp)):
        if isinstance(arg, type) and issubclass(arg, Record) and isinstance(value, dict):
            return arg.make(value)
        inner = typing.get_args(arg)
        if typing.get_origin(arg) is list and inner and isinstance(inner[0], type) and issubclass(inner[0], Record) \
                and isinstance(value, list):
            return [inner[0].make(v) if isinstance(v, dict) else v for v in value]
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


@dataclass
class Record(Mapping):
    """Base of reports and their typed parts (see the module docstring)."""

    extra: dict = _local(default=None)  # keys of the file this version does not know, kept as they were
    missing: frozenset = _local(default=frozenset())  # keys the file lacked (their fields hold the defaults)

    OMIT_NONE: ClassVar[bool] = False  # leave None-valued keys out of the JSON (push: a skip has no commit)

    @classmethod
    def from_dict(cls, data: dict, **local) -> "Record":
        """Tolerant reading of a stored report (missing keys -> defaults, listed in `missing`; a value of the wrong
        type -> the default; unknown keys -> `extra`)."""
        data = cls.normalize(dict(data))
        hints = typing.get_type_hints(cls)
        values = {f.name: _decode(hints[f.name], data[f.name], _default(f)) for f in _stored_fields(cls) if f.name in data}
        return cls._build(values, data, **local)

    @classmethod
    def make(cls, data: dict, **local) -> "Record":
        """A report from the values a stage computed (as they are; nested parts given as dicts become records;
        keys this class does not declare are kept in `extra`)."""
        data = cls.normalize(dict(data))
        hints = typing.get_type_hints(cls)
        values = {f.name: _nested(hints[f.name], data[f.name]) for f in _stored_fields(cls) if f.name in data}
        return cls._build(values, data, **local)

    @classmethod
    def _build(cls, values: dict, data: dict, **local) -> "Record":
        known = {f.name for f in _stored_fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra or None, missing=frozenset(known - set(data)), **local)

    @classmethod
    def normalize(cls, data: dict) -> dict:
        """Hook: rewrite an older file's keys/values into today's shape before the fields are read."""
        return data

    def to_dict(self) -> dict:
        out = {}
        for f in _stored_fields(type(self)):
            value = getattr(self, f.name)
            if f.name in self.missing or (value is None and self.OMIT_NONE):
                continue  # a key the file lacked stays out: an older report is written back as it was
            out[f.name] = _encode(value)
        return {**out, **(self.extra or {})}

    # ---- the mapping view: report["key"] is the JSON value, as when reports were dicts -------------------
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()


class Report(Record):
    """A stage's report: summary lines for people, a small record for `bortify run`."""

    kind: ClassVar[str] = ""

    def summary_lines(self) -> list[str]:
        raise NotImplementedError

    def record(self) -> dict:
        """What `bortify run` keeps of this stage in stage_done.json / summary.json."""
        return {"summary_lines": self.summary_lines()}


def clean_scores(metrics: Any) -> dict[str, float]:
    """Numeric scores of a metrics dict, with Trainer prefixes (eval_/test_/dev_) dropped and bookkeeping keys
    (runtime, loss, ...) removed: how older finetune reports stored them, read as today's {metric: score}."""
    if not isinstance(metrics, dict):
        return {}
    out = {}
    for key, value in metrics.items():
        name = key.split("_", 1)[1] if key.startswith(("eval_", "test_", "dev_")) else key
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not any(t in name for t in _NOT_SCORES):
            out[name] = float(value)
    return out


# ---- extract ------------------------------------------------------------------------------------------------

@dataclass
class Winner(Record):
    """The chosen architecture ⟨D, A, H, I⟩ with its size, cost and error (docs/methods/01-extraction.md §1)."""

    D: int | None = None
    A: int | None = None
    H: int | None = None
    I: int | None = None  # noqa: E741 - the paper's name
    parameters: int | None = None
    effective_parameters: int | None = None
    ops: int | None = None
    latency_s: float | None = None
    error: float | None = None
    W: float | None = None
    parameter_ratio: float | None = None
    ops_ratio: float | None = None

    def shape(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in "DAHI" if getattr(self, k) is not None}


@dataclass
class ExtractReport(Report):
    kind: ClassVar[str] = "extract"

    source: str | None = None
    source_shape: dict[str, int] = field(default_factory=dict)
    source_parameters: int | None = None
    source_effective_parameters: int | None = None
    source_ops: int | None = None
    source_latency_s: float | None = None
    source_error: float | None = None  # max_error_increase only: the source's own ê; else null
    objective: str = "W"
    constraint: dict = field(default_factory=dict)  # run.constraint_record: mode, bound, winner_reason, guarantee
    epsilon: float | None = None
    space: dict[str, list] = field(default_factory=dict)
    dropped_indivisible: int = 0
    dropped_larger_than_source: int = 0
    num_candidates: int | None = None
    num_trained: int = 0
    num_cached: int = 0
    num_skipped: int = 0
    error_estimator: str | None = None
    estimator_settings: dict = field(default_factory=dict)
    seq_len: int | None = None
    cost: str | None = None
    winner: Winner | None = None
    candidates: list[dict] = field(default_factory=list)
    plot: str | None = None
    error_spread: dict = field(default_factory=dict)
    seconds: float | None = None
    heldout: dict | None = None  # the run's test texts dropped from the estimator's data (docs/methods/09-heldout.md §9)
    output_dir: str | None = _local()

    def summary_lines(self) -> list[str]:
        w, s, spread, out = self.winner, self.source_shape, self.error_spread, Path(self.output_dir or ".")
        lines = [
            f"chosen ⟨D,A,H,I⟩ = ⟨{w.D},{w.A},{w.H},{w.I}⟩ from source {self.source} "
            f"⟨{s['D']},{s['A']},{s['H']},{s['I']}⟩",
            f"parameters {w.parameters / 1e6:.2f}M vs {self.source_parameters / 1e6:.2f}M "
            f"({100 * w.parameter_ratio:.1f}% of the source); effective (encoder) {w.effective_parameters / 1e6:.2f}M "
            f"vs {self.source_effective_parameters / 1e6:.2f}M",
            f"multiply-adds at L={self.seq_len}: {w.ops / 1e9:.3f}G vs {self.source_ops / 1e9:.3f}G "
            f"({100 * w.ops_ratio:.1f}%, {1 / w.ops_ratio:.1f}x fewer)",
            f"ê = {self.error_estimator}: winner {fmt(w.error, '.4g', missing=NA)}"
            + (f", source {fmt(self.source_error, '.4g', missing=NA)}" if self.source_error is not None else "")
            + f", W = {fmt(w.W, '.4g', missing=NA)}; spread over {spread['n']} evaluated candidates: min "
            f"{fmt(spread['min'], '.4g', missing=NA)} max "
            f"{fmt(spread['max'], '.4g', missing=NA)} std {fmt(spread['std'], '.3g', missing=NA)}",
            f"candidates: {self.num_candidates} ({self.dropped_indivisible} dropped H%A!=0), ε = {self.epsilon}: "
            f"{self.num_trained} trained, {self.num_cached} cached, {self.num_skipped} skipped",
            *([f"measured latency: winner {1e3 * w.latency_s:.3g} ms vs source {1e3 * self.source_latency_s:.3g} ms"]
              if w.latency_s is not None and self.source_latency_s is not None else []),
            f"objective {self.objective}{self._bound_text()}: {self.constraint['winner_reason']}",
            f"files: {out / 'config.json'}, {out / REPORT_FILE}, {out / (self.plot or PLOT_FILE)}",
        ]
        return lines

    def _bound_text(self) -> str:
        bound = self.constraint.get("bound") or {}
        return "".join(f" ({k} = {v:g})" for k, v in bound.items())

    def record(self) -> dict:
        w = self.winner.to_dict()
        return {
            "summary_lines": self.summary_lines(),
            "winner": {k: w[k] for k in ("D", "A", "H", "I", "parameters", "effective_parameters", "ops", "error", "W")},
            "source_parameters": self.source_parameters,
            "objective": self.objective,
            "error_spread": self.error_spread,
            "config": f"{self.output_dir}/config.json",
            "report": f"{self.output_dir}/{REPORT_FILE}",
        }


# ---- pretrain -----------------------------------------------------------------------------------------------

@dataclass
class PretrainReport(Report):
    kind: ClassVar[str] = "pretrain"

    teacher: str | None = None
    teacher_kind: str | None = None  # "mlm" or "encoder"
    student_config: str | None = None
    corpus: str | None = None
    kd_mode: str | None = None  # "logit" or "representation" (docs/methods/02-pretraining.md §2)
    loss: dict = field(default_factory=dict)  # the loss weights and settings as run
    init: str | None = None
    init_report: dict | None = None
    max_steps: int | None = None
    global_step: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    world_size: int | None = None
    learning_rate: float | None = None
    train_blocks: int | None = None
    heldout_blocks: int | None = None
    train_seconds: float | None = None
    train_loss: float | None = None
    parameters: int | None = None
    heldout_mlm_loss_before: float | None = None
    heldout_mlm_loss_after: float | None = None
    heldout_perplexity_after: float | None = None
    tokens_per_second: float | None = None
    resumed_from: str | None = None
    device: str | None = None
    compatibility: CompatibilityRecord | None = None  # --compatible_with (docs/methods/04-updates.md §4)
    heldout: dict | None = None  # the run's test texts dropped from the corpus (docs/methods/09-heldout.md §9)
    output_dir: str | None = _local()

    def summary_lines(self) -> list[str]:
        return [
            f"student BertForMaskedLM, {self.parameters / 1e6:.2f}M parameters -> {self.output_dir}",
            f"{self.kd_mode} KD from {self.teacher} ({self.teacher_kind}), init {self.init}, "
            f"{self.global_step} steps x {self.batch_size} x {self.seq_len} tokens "
            f"in {self.train_seconds:.0f} s ({self.tokens_per_second or 0:.0f} tokens/s)",
            f"held-out MLM loss {self.heldout_mlm_loss_before:.3f} -> {self.heldout_mlm_loss_after:.3f}",
        ] + ([self.compatibility.summary_line()] if self.compatibility else [])

    def record(self) -> dict:
        return {"output_dir": str(self.output_dir), "kd_mode": self.kd_mode, "init": self.init,
                "heldout_mlm_loss_before": self.heldout_mlm_loss_before,
                "heldout_mlm_loss_after": self.heldout_mlm_loss_after, "summary_lines": self.summary_lines()}


# ---- finetune -----------------------------------------------------------------------------------------------

@dataclass
class Round(Record):
    """One fine-tuning round (plain and distill: one round; Agora: one per repair round, docs/methods/03-agora.md §3)."""

    round: int | None = None
    thetas: list | None = None
    best_theta: dict | None = None
    dev_score: float | None = None
    mistakes: int | None = None
    examples_added: int | None = None
    train_size: int | None = None
    examples_seen: int | None = None
    replay: bool | None = None
    improved: bool | None = None
    seconds: float | None = None
    repair_dev_score: float | None = None
    examples_rejected: int | None = None
    mistakes_expanded: int | None = None
    generated: int | None = None
    rejections: dict | None = None
    stop_reason: str | None = None
    test_score: float | None = None


@dataclass
class FinetuneReport(Report):
    kind: ClassVar[str] = "finetune"

    base_model: str | None = None
    dataset: str | None = None  # as given; local files by their names only
    dataset_hub_id: str | None = None  # None: not a Hub dataset (older reports lack the key: see `missing`)
    task: str | None = None
    text_columns: list[str] = field(default_factory=list)
    labels: list = field(default_factory=list)
    positive_label: Any = None  # binary F1 scores class 1: its name
    regression: bool = False
    metric: str | None = None  # the main metric (model selection)
    metrics: list[str] = field(default_factory=list)
    mode: str | None = None  # "plain", "agora" or "distill"
    labeler: dict | None = None  # name, dev_<metric>, test_<metric>, threshold, seconds (labelers.describe)
    generator: dict | None = None  # Agora's generator settings
    agora: dict | None = None  # Agora's settings (repair_fraction, soft_labels, dev rows by part, ...)
    distill: dict | None = None  # task distillation: transfer_set counts, settings, teacher, seconds
    theta: list | None = None
    num_train_epochs: float | None = None
    max_steps: int | None = None
    max_length: int | None = None
    seed: int | None = None
    rounds: list[Round] = field(default_factory=list)
    best_round: int | None = None
    best_theta: dict | None = None
    examples_added: int | None = None
    examples_seen: int | None = None
    dev: dict[str, float] = field(default_factory=dict)  # {metric: score} on the selection part of dev
    dev_repair: dict[str, float] | None = None  # the repair part of dev (Agora with repair_fraction < 1)
    dev_note: str | None = None
    test: dict[str, float] = field(default_factory=dict)
    splits: dict = field(default_factory=dict)  # sizes, how each split was made, test_official, test_source
    example_text: str | list[str] | None = None  # a train text (a [text, text] pair for pair tasks)
    load_note: str | None = None
    train_seconds: float | None = None
    labeler_seconds: float | None = None
    num_parameters: int | None = None
    nfr: float | dict | None = None  # docs/methods/04-updates.md §4: negative flip rate against the replaced model (if measured)
    congruent: dict | None = None  # --old_model: focal distillation settings and old-model pass (docs/methods/04-updates.md §4.3)
    compatibility: CompatibilityRecord | None = None  # --compatible_with: BCT's influence loss + test (§4.4)
    # test texts seen by any stage: counts per input, what was dropped, what was not checked (docs/methods/09-heldout.md §9)
    overlap: dict | None = None
    # predicting the train majority class for every test row: {"class", "test": {metric: score}, "test_share"}
    baseline: dict | None = None
    output_dir: str | None = _local()

    @classmethod
    def normalize(cls, data: dict) -> dict:
        for split in ("dev", "dev_repair", "test"):  # older reports: Trainer dicts (eval_accuracy, eval_runtime)
            if isinstance(data.get(split), dict):
                data[split] = clean_scores(data[split])
        return data

    def overlap_line(self) -> str:
        """'test overlap: 0 of 1000 test rows seen by any stage; dropped 3 train rows ...' (docs/methods/09-heldout.md §9)."""
        o = self.overlap or {}
        n, k = o.get("test_rows"), o.get("seen_by_any_stage")
        seen = (f"{k} of {n} test rows seen by any stage" if k is not None else
                f"at least {o.get('seen_by_any_stage_at_least', 0)} of {n} test rows seen by a stage (not checked: "
                f"{', '.join(o.get('not_checked') or [])})")
        dropped = ", ".join(f"{v} {k}" for k, v in (o.get("dropped") or {}).items() if v)
        return f"test overlap: {seen}" + (f"; dropped rows repeating test/dev rows: {dropped}" if dropped else "")

    def labeler_scores(self, split: str) -> dict[str, float]:
        """The labeler's (Agora) or teacher's (distill) scores on `split` ("dev" or "test"): the report stores
        them as `<split>_<metric>` keys of `labeler`."""
        prefix = f"{split}_"
        return {k[len(prefix):]: v for k, v in (self.labeler or {}).items()
                if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool)}

    def transfer_set(self) -> dict:
        """Task distillation's transfer-set sizes by source (gold, augmented, unlabeled, total); {} otherwise."""
        return (self.distill or {}).get("transfer_set") or {}

    def metrics_text(self, metrics: dict) -> str:
        """'accuracy 0.8120, f1 0.8034 (positive class 'fresh')' — every metric of the task; F1 is binary for two
        classes (it scores the positive class, named) and macro-averaged otherwise."""
        parts = []
        for name, value in metrics.items():
            if name == "f1" and self.positive_label is not None:
                parts.append(f"f1 {value:.4f} (positive class {self.positive_label!r})")
            elif name == "f1" and not self.regression and len(self.labels) > 2:
                parts.append(f"macro-f1 {value:.4f}")
            else:
                parts.append(f"{name} {value:.4f}")
        return ", ".join(parts)

    def summary_lines(self) -> list[str]:
        splits = self.splits
        lines = [f"{self.mode} fine-tuning of {self.base_model} on {self.dataset} "
                 f"(train {splits['train']}, dev {splits['dev']}, test {splits['test']})",
                 f"test: {self.metrics_text(self.test)} (test = {splits['how']['test']})",
                 f"dev:  {self.metrics_text(self.dev)} (best round {self.best_round} of "
                 f"{len(self.rounds)}, {self.train_seconds:.0f} s)"]
        if self.dev_repair:
            lines.append(f"dev repair part (inflated: its mistakes were expanded): {self.metrics_text(self.dev_repair)}")
        if self.mode == "agora":
            added = ", ".join(str(r.examples_added) for r in self.rounds)
            lines.append(f"examples added per round: {added}; labeler dev score "
                         f"{next(iter(self.labeler_scores('dev').values())):.4f}")
        if self.mode == "distill" and self.distill:
            counts = self.transfer_set()
            teacher_test = next(iter(self.labeler_scores("test").values()), None)
            lines.append(f"transfer set: {counts['gold']} gold + {counts['augmented']} augmented + "
                         f"{counts['unlabeled']} unlabelled rows under the teacher's soft labels; teacher "
                         f"({self.labeler['name']}) test score "
                         + (f"{teacher_test:.4f}" if teacher_test is not None else "not measured"))
            if self.distill.get("dev_by_epoch"):
                lines.append(f"student dev score by epoch: {', '.join(f'{v:.4f}' for v in self.distill['dev_by_epoch'])}"
                             f" (epoch {self.distill['best_epoch']} kept)")
            selection = (self.labeler or {}).get("selection")
            if selection:  # finetuning/teachers.py: every candidate's dev score and the one that taught
                scores = ", ".join(f"{c['name']} {c['dev_score']:.4f}" for c in selection["candidates"])
                lines.append(f"teacher chosen on dev ({selection['metric']}): {selection['chosen']}; candidates: "
                             f"{scores}")
        if self.congruent:  # --old_model (docs/methods/04-updates.md §4.3)
            c = self.congruent
            lines.append(f"focal distillation against {c.get('old_model')} (λ {c.get('lambda')}, α {c.get('alpha')}, "
                         f"β {c.get('beta')}, D {c.get('divergence')}); old model right on "
                         f"{fmt(c.get('old_train_accuracy'), '.1%', missing=NA)} of the train rows; measure the "
                         "flips with `bortify compare`")
        if self.compatibility:  # --compatible_with (docs/methods/04-updates.md §4.4)
            lines.append(self.compatibility.summary_line())
        if splits.get("dropped_empty"):
            lines.append(f"{splits['dropped_empty']} train row(s) with an empty text were dropped")
        if self.overlap:  # docs/methods/09-heldout.md §9
            lines.append(self.overlap_line())
        lines.append(f"checkpoint, {REPORT_FILE}, rounds.png in {self.output_dir}")
        return lines

    def record(self) -> dict:
        return {"model_dir": self.output_dir, "mode": self.mode, "metric": self.metric,
                "dev": self.dev[self.metric], "test": self.test[self.metric],
                "examples_added": [r.examples_added for r in self.rounds], "summary_lines": self.summary_lines()}


# ---- card and push ------------------------------------------------------------------------------------------

@dataclass
class CardReport(Report):
    """What `bortify card` / the card stage made (no file of its own: card_evidence.json holds the figures)."""

    kind: ClassVar[str] = "card"

    release_dir: str | None = None
    kind_of_model: str | None = None  # "task" or "student" (recorded as "kind")
    parameters: int | None = None
    test: dict[str, float] = field(default_factory=dict)
    dev: dict[str, float] = field(default_factory=dict)
    latency_speedup: float | None = None
    lines: list[str] = _local(default_factory=list)  # made by bortify.hub.card_stage (it knows the evidence)

    def summary_lines(self) -> list[str]:
        return list(self.lines)

    def record(self) -> dict:
        return {"release_dir": self.release_dir, "kind": self.kind_of_model, "parameters": self.parameters,
                "test": self.test, "dev": self.dev, "latency_speedup": self.latency_speedup,
                "summary_lines": self.summary_lines()}


@dataclass
class PushReport(Report):
    """A push (or why it was skipped). Written to `<run>/push/report.json` by `bortify run`."""

    kind: ClassVar[str] = "push"
    OMIT_NONE: ClassVar[bool] = True  # a skipped push has no commit; a push no skip reason

    skipped: bool = False
    reason: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    commit_oid: str | None = None
    commit_url: str | None = None
    repo_url: str | None = None
    files: list[str] | None = None
    left_out: list[str] | None = None
    attempts: int | None = None
    retries_logged: list[str] | None = None
    private: bool | None = None  # --private / push.private: the follow-up command keeps it
    model_dir: str | None = _local()

    @classmethod
    def normalize(cls, data: dict) -> dict:
        data.pop("summary_lines", None)  # written for people reading the file; derived, not read back
        return data

    def summary_lines(self) -> list[str]:
        if self.skipped:
            return [f"{self.reason}; push later with `{self.push_command()}`"]
        lines = [
            f"pushed {len(self.files or [])} files to {self.repo_url} (revision {self.revision}, commit "
            f"{(self.commit_oid or '')[:10]})",
            f"load it: from_pretrained({self.repo_id!r}"
            + (f", revision={self.revision!r})" if self.revision != "main" else ")")
            + " (AutoModel*/AutoTokenizer/pipeline)",
        ]
        if self.left_out:
            lines.append(left_out_text(self.left_out))
        return lines

    def push_command(self) -> str:
        """The `bortify push` command that does this push (private stays private, the branch stays the branch)."""
        return (f"bortify push {self.model_dir} --repo-id {self.repo_id}" + (" --private" if self.private else "")
                + (f" --revision {self.revision}" if self.revision and self.revision != "main" else ""))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "summary_lines": self.summary_lines()}

    def record(self) -> dict:
        return self.to_dict()


# ---- bench --------------------------------------------------------------------------------------------------

@dataclass
class BenchCell(Record):
    """One grid cell of `bortify bench`: medians (ms per batch) of the model and the source on one path."""

    path: str | None = None  # fp32 or an int8 CPU path (bortify.bench.INT8_PATHS)
    batch_size: int | None = None
    seq_len: int | None = None
    model_ms: float | None = None
    model_iqr_ms: float | None = None
    model_calls: int | None = None
    source_ms: float | None = None
    source_iqr_ms: float | None = None
    source_calls: int | None = None
    macs_ratio: float | None = None  # source / model multiply-adds: the speedup's limit on the same kernels
    speedup: float | None = None  # source / model, same path
    speedup_vs_source_fp32: float | None = None  # source fp32 / model on this path
    int8_gain: float | None = None  # model fp32 / model on this path


@dataclass
class SourceSentences(Record):
    """The source's fp32 sentences/s on bench's real texts, timed in alternation with the model's fp32 pass
    (docs/methods/05-compression.md §5.s), or why it was not timed."""

    sentences_per_s: float | None = None
    seconds: float | None = None
    tokenizer: str | None = None  # "source" (its own) or "model" (the model's: the vocabulary sizes match)
    skipped: str | None = None  # why the source was not timed on the texts


@dataclass
class BenchReport(Report):
    """`bortify bench`: the latency grid, sentences/s on real texts, the int8 paths (docs/methods/05-compression.md §5)."""

    kind: ClassVar[str] = "bench"

    model: str | None = None
    source: str | None = None
    threads: int | None = None
    rounds: int | None = None
    min_run_time: float | None = None
    paths: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # int8 path -> why it was not timed
    int8_default: str | None = None
    int8_onnx: str | None = None  # which int8 ONNX file the ONNX paths timed: the shipped one, or bench's export
    cpu: str | None = None  # the CPU the timings ran on (bortify.timing.cpu_name)
    grid: list[BenchCell] = field(default_factory=list)
    dataset: str | None = None
    sentences: dict = field(default_factory=dict)  # {"texts", "batch_size", "max_length", <path>: {...}}
    source_sentences: SourceSentences | None = None  # with --source and real texts: the source in fp32
    plot: str | None = None

    def cell(self, path: str, batch_size: int, seq_len: int) -> BenchCell | None:
        return next((c for c in self.grid if (c.path, c.batch_size, c.seq_len) == (path, batch_size, seq_len)), None)

    def sentences_per_s(self, path: str = "fp32") -> float | None:
        """The model's sentences/s on the real texts through `path`; None when not measured."""
        value = (self.sentences.get(path) or {}).get("sentences_per_s") if isinstance(self.sentences, dict) else None
        return value if isinstance(value, (int, float)) and value > 0 else None

    def source_speed_ratio(self) -> float | None:
        """Model fp32 sentences/s over the source's, both from the same alternated timing; None without both."""
        model, src = self.sentences_per_s("fp32"), self.source_sentences
        return model / src.sentences_per_s if model and src and src.sentences_per_s else None

    def summary_lines(self) -> list[str]:
        lines = [f"timed {len(self.grid)} cells ({', '.join(self.paths)}) at {self.threads} thread(s) of "
                 f"{self.cpu or 'an unrecorded CPU'}, medians" + (f"; int8 ONNX: {self.int8_onnx}" if self.int8_onnx else "")]
        for path in self.paths:
            lines += self._path_lines(path)
        rows = [(p, v) for p, v in self.sentences.items() if isinstance(v, dict)]
        if rows:
            lines.append(f"real texts ({self.sentences.get('texts')} from {self.dataset}, batch "
                         f"{self.sentences.get('batch_size')}): " + ", ".join(
                             f"{p} {v['sentences_per_s']:.0f}/s" + (f" (agrees {v['agreement_with_fp32']:.1%})"
                                                                   if 'agreement_with_fp32' in v else "")
                             for p, v in rows))
        lines += self._source_sentences_lines()
        if self.unavailable:
            lines.append("not timed: " + "; ".join(f"{p} ({why})" for p, why in self.unavailable.items()))
        return lines

    def _source_sentences_lines(self) -> list[str]:
        src = self.source_sentences
        if src is None:
            return []
        if not src.sentences_per_s:
            return [f"source on real texts: not timed ({src.skipped or 'no figure'})"]
        ratio = self.source_speed_ratio()
        return [f"source {self.source} fp32 on the same texts ({src.tokenizer}'s tokenizer, in alternation with the "
                f"model's fp32): {src.sentences_per_s:.0f}/s; the model's fp32 is "
                f"{fmt(ratio, '.1f', missing=NA)}x the source's sentences/s"]

    def _path_lines(self, path: str) -> list[str]:
        cells = [c for c in self.grid if c.path == path]
        if not cells:
            return []
        c = max(cells, key=lambda c: (c.batch_size, c.seq_len == 128, c.seq_len))  # batch 8 x 128 when there
        text = f"{path}: batch {c.batch_size} x {c.seq_len}: {c.model_ms:.1f} ms"
        if c.source_ms is not None:
            text += (f" vs source {c.source_ms:.1f} ms, {fmt(c.speedup, '.1f', missing=NA)}x (multiply-adds "
                     f"{fmt(c.macs_ratio, '.1f', missing=NA)}x)")
            if path != "fp32" and c.speedup_vs_source_fp32 is not None:
                text += f", {c.speedup_vs_source_fp32:.1f}x vs source fp32"
        if path != "fp32" and c.int8_gain is not None:
            text += f", {c.int8_gain:.2f}x the model's fp32"
        return [text]


# ---- compare ------------------------------------------------------------------------------------------------

@dataclass
class CompareReport(Report):
    """`bortify compare OLD NEW` (docs/methods/04-updates.md §4): both models' scores on one split, the flip metrics and the
    release gate. The negative flips are listed in `flips_file` beside report.json."""

    kind: ClassVar[str] = "compare"

    old_model: str | None = None
    new_model: str | None = None
    dataset: str | None = None
    task: str | None = None
    split: str | None = None  # "test" or "dev"
    split_how: str | None = None
    rows: int | None = None
    labels: list = field(default_factory=list)
    metric: str | None = None
    remapped: list[str] = field(default_factory=list)  # models whose class order differed from the task's
    old: dict[str, float] = field(default_factory=dict)
    new: dict[str, float] = field(default_factory=dict)
    nfr: float | None = None
    relative_nfr: float | None = None
    pfr: float | None = None
    disagreement: float | None = None
    negative_flips: int | None = None
    positive_flips: int | None = None
    max_nfr: float | None = None
    passed: bool | None = None  # None: no gate
    flips_file: str | None = None
    seconds: float | None = None
    output_dir: str | None = _local()

    def gate_text(self) -> str:
        if self.max_nfr is None:
            return "no release gate (max_nfr unset)"
        return f"release gate NFR <= {self.max_nfr:g}: {'passed' if self.passed else 'FAILED'}"

    def summary_lines(self) -> list[str]:
        def scores(d):
            return ", ".join(f"{k} {v:.4f}" for k, v in d.items())
        return [
            f"{self.split} split of {self.dataset} ({self.rows} rows): old {self.old_model}: {scores(self.old)}; "
            f"new {self.new_model}: {scores(self.new)}",
            f"NFR {fmt(self.nfr, '.4f', missing=NA)} ({self.negative_flips} negative flips), relative NFR "
            f"{fmt(self.relative_nfr, '.3f', missing=NA)}, PFR {fmt(self.pfr, '.4f', missing=NA)} "
            f"({self.positive_flips} positive flips), "
            f"disagreement {fmt(self.disagreement, '.4f', missing=NA)}",
            f"{self.gate_text()}; negative flips in {Path(self.output_dir or '.') / (self.flips_file or '')}",
        ]

    def record(self) -> dict:
        return {"nfr": self.nfr, "relative_nfr": self.relative_nfr, "pfr": self.pfr, "max_nfr": self.max_nfr,
                "passed": self.passed, "summary_lines": self.summary_lines()}


# ---- backward-compatible embeddings (part of the pretrain report) ------------------------------------------

@dataclass
class CompatibilityRecord(Record):
    """`bortify pretrain --compatible_with OLD` (BCT, docs/methods/04-updates.md §4): how the student was trained into the old
    model's embedding space and BCT's empirical compatibility test (gallery by the old model, queries by the new):
    kNN-classification accuracy and recall@k for new→old, old→old and new→new."""

    old_model: str | None = None
    pooling: str | None = None
    normalized: bool | None = None  # unit-length embeddings (sentence-transformers Normalize)
    projection: list | None = None  # [student width, old width] of the Dense layer (sentence-transformers 2_Dense)
    loss: str | None = None  # "cosine" or "mse"
    w_compat: float | None = None
    init: str | None = None  # the projection's start: "lstsq" (ridge read-out) or "random"
    train_texts: int | None = None  # texts whose old embeddings were computed once, before training
    targets_seconds: float | None = None
    eval_dataset: str | None = None
    gallery: int | None = None
    queries: int | None = None
    knn_k: int | None = None
    new_old: dict[str, float] = field(default_factory=dict)
    old_old: dict[str, float] = field(default_factory=dict)
    new_new: dict[str, float] = field(default_factory=dict)
    criterion_met: bool | None = None  # BCT: kNN accuracy new→old >= old→old
    mean_cosine_new_old: float | None = None
    baseline: dict | None = None  # a student trained without the option, when one was given

    def summary_line(self) -> str:
        def acc(d):
            return fmt(d.get("knn_accuracy"), ".4f", missing=NA)
        return (f"compatible with {self.old_model}: kNN accuracy new->old {acc(self.new_old)} vs old->old "
                f"{acc(self.old_old)} (new->new {acc(self.new_new)}; recall@1 new->old "
                f"{fmt(self.new_old.get('recall@1'), '.4f', missing=NA)}) on {self.eval_dataset}: BCT criterion "
                f"{'met' if self.criterion_met else 'not met'}")


# ---- compress -----------------------------------------------------------------------------------------------

@dataclass
class CompressReport(Report):
    """`bortify compress` (docs/methods/05-compression.md §5): bytes on disk per part and per form (fp32, 8-bit, entropy-coded,
    ONNX fp32/int8, offline bundle), each form's scores on the test split and agreement with the fp32 model, and
    CPU latency. `sizes` and `forms` are keyed by form: fp32, q8, onnx_fp32, onnx_int8, bundle."""

    kind: ClassVar[str] = "compress"

    model_dir: str | None = None
    dataset: str | None = None
    test_rows: int | None = None
    metric: str | None = None
    quantization: dict = field(default_factory=dict)  # QuantConfig + levels + scheme
    sizes: dict = field(default_factory=dict)  # fp32_file, fp32_parts, q8_file, q8_parts, q8_zlib/lzma, onnx_*, bundle
    zero_fraction: float | None = None  # quantised weights that are exactly 0
    code_entropy_bits: float | None = None  # empirical entropy of the stored codes, bits per weight
    max_weight_error: float | None = None
    forms: dict = field(default_factory=dict)  # form -> {"scores": {...}, "agreement", "max_logit_diff"}
    latency: dict | None = None  # batch_size, seq_len, threads, seconds: {torch_fp32, onnx_fp32, onnx_int8}, timer
    seconds: float | None = None
    output_dir: str | None = _local()

    def ratio(self, form: str) -> float | None:
        """How many times smaller than the fp32 model.safetensors a form's weights are on disk."""
        s = self.sizes
        size = {"q8": s.get("q8_file"), "q8_lzma": s.get("q8_lzma"), "onnx_int8": s.get("onnx_int8"),
                "bundle": (s.get("bundle") or {}).get("weights")}.get(form)
        return s["fp32_file"] / size if size and s.get("fp32_file") else None

    def score(self, form: str) -> float | None:
        return ((self.forms.get(form) or {}).get("scores") or {}).get(self.metric)

    def speedup(self, form: str = "onnx_int8") -> float | None:
        seconds = (self.latency or {}).get("seconds") or {}
        return seconds["torch_fp32"] / seconds[form] if seconds.get(form) and seconds.get("torch_fp32") else None

    def summary_lines(self) -> list[str]:
        s, mib = self.sizes, 2 ** 20
        lines = [f"8-bit weights ({'per channel' if self.quantization.get('per_channel') else 'per tensor'}): "
                 f"{s['q8_file'] / mib:.2f} MiB vs {s['fp32_file'] / mib:.2f} MiB fp32 "
                 f"({fmt(self.ratio('q8'), '.2f', missing=NA)}x; "
                 f"lzma-coded {fmt(self.ratio('q8_lzma'), '.2f', missing=NA)}x); {self.zero_fraction:.1%} of weights "
                 "are 0, codes "
                 f"{self.code_entropy_bits:.2f} bits of entropy a weight"]
        fp32 = self.score("fp32")
        for form in ("q8", "onnx_fp32", "onnx_int8", "bundle"):
            f = self.forms.get(form)
            if f:
                lines.append(f"{form}: test {self.metric} {fmt(self.score(form), '.4f', missing=NA)} "
                             f"(fp32 {fmt(fp32, '.4f', missing=NA)}), "
                             f"agrees with fp32 on {fmt(f.get('agreement'), '.2%', missing=NA)} of "
                             f"{self.test_rows} rows"
                             + (f", {fmt(self.ratio(form), '.2f', missing=NA)}x smaller" if self.ratio(form) else ""))
        if s.get("bundle"):
            lines.append(f"offline bundle: {s['bundle']['total'] / mib:.2f} MiB in all (weights "
                         f"{s['bundle']['weights'] / mib:.2f} MiB, hashed vocabulary {s['bundle']['vocab'] / 1024:.0f} KiB "
                         f"vs tokenizer files {s['fp32_parts']['tokenizer'] / 1024:.0f} KiB)")
        if self.latency:
            sec = self.latency["seconds"]
            lines.append(f"CPU latency, batch {self.latency['batch_size']} x {self.latency['seq_len']}, "
                         f"{self.latency['threads']} thread(s): " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sec.items())
                         + (f" (int8 {self.speedup():.2f}x torch fp32)" if self.speedup() else ""))
        lines.append(f"files in {self.output_dir}: model.q8.safetensors"
                     + (", onnx/" if "onnx_fp32" in self.forms else "") + (", bundle/" if "bundle" in self.forms else "")
                     + f", {REPORT_FILE}")
        return lines

    def record(self) -> dict:
        return {"output_dir": self.output_dir, "q8_ratio": self.ratio("q8"), "bundle_ratio": self.ratio("bundle"),
                "scores": {form: self.score(form) for form in self.forms}, "int8_speedup": self.speedup(),
                "summary_lines": self.summary_lines()}


def left_out_text(left_out: list[str]) -> str:
    return (f"left out {len(left_out)} file(s) that a release does not carry (pickle-based weights or states, "
            f"run bookkeeping): {', '.join(left_out)}")


# ---- reading and writing ------------------------------------------------------------------------------------

REPORT_TYPES: dict[str, type[Report]] = {r.kind: r for r in (ExtractReport, PretrainReport, FinetuneReport, PushReport,
                                                             CompareReport, CompressReport)}


def write_report(directory: str | Path, report: Report) -> Path:
    """`<directory>/report.json`, written atomically (a stage writes it last: it marks a finished output)."""
    path = Path(directory) / REPORT_FILE
    write_json_atomic(path, report.to_dict())
    return path


def read_report(directory: str | Path | None, kind: str | type[Report]) -> Report | None:
    """The stage report in `directory`, or None when the directory or its report.json is missing. Older files load
    (missing keys take defaults); a file that is not a JSON object raises ReportError naming it."""
    cls = REPORT_TYPES[kind] if isinstance(kind, str) else kind
    if not directory:
        return None
    path = Path(directory) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} is not valid JSON ({exc}); re-run that stage or fix the file.") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path} holds {type(data).__name__}, not a report (a JSON object); re-run that stage.")
    return cls.from_dict(data, output_dir=str(directory)) if _has_local(cls, "output_dir") else cls.from_dict(data)


def _has_local(cls, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))
