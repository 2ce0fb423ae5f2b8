"""`bortify bench MODEL [--source MODEL]`: CPU latency and throughput, model and source side by side in one run.

docs/methods/05-compression.md §5 "Measuring speed". What is measured, and how:

- One timer for all of bortify (bortify.timing.time_calls): torch.utils.benchmark's blocked_autorange, the
  functions compared timed in alternation, medians. Extraction's measured costs, compress and the card use it too.
  The report names the CPU (bortify.timing.cpu_name).
- The grid: batch sizes x sequence lengths (default 1, 8 x 32, 128, 512), fp32 and each int8 CPU path, model and
  source in alternation. Each cell reports medians, the speedup (source / model, same path and against the source
  in fp32) and the multiply-add ratio (bortify.extraction.costs.operation_count): the limit of the speedup when
  both run the same kernels. Latency depends on the shape only, so the source is built from its config with
  random weights.
- Sentences per second on real texts (default: the packaged Rotten Tomatoes): the model with its own tokenizer,
  dynamic padding, fp32 and each int8 path, and how often each int8 path predicts what fp32 predicts. With a
  source, the source too in fp32 (random weights, its own tokenizer, else the model's when the vocabularies
  match), timed in alternation with the model's fp32 pass: the report's `source_sentences`, and the card's
  accuracy vs sentences/s plot (bortify.hub.card_plots).

The int8 CPU paths (`INT8_PATHS`; measured side by side in BENCHMARKS.md "CPU speed"):
- `torch-dynamic`: torch.ao.quantization.quantize_dynamic on the Linear layers (fbgemm int8 GEMMs, dynamic
  activation scales). Deprecated in torch 2.10+ (warns), still there in 2.13.
- `torchao`: torchao's Int8DynamicActivationInt8WeightConfig (its successor); needs `pip install torchao`, which is
  not in bortify's environment (transformers imports torchao whenever it is installed).
- `onnxruntime`: the release's own int8 file, run by ONNX Runtime's CPU provider: the model folder's (or
  --onnx_dir's) shipped `onnx/model_quantized.onnx` when it has one, else the model exported and quantised by the
  one ONNX path that compress and the release use (bortify.compression.onnx_export: torch.onnx.export with
  dynamo=True, onnxruntime.quantization.quantize_dynamic, int8 weights, MatMulInteger).
- `openvino`: OpenVINO running that same int8 ONNX file (OpenVINO's own int8 weight compression needs NNCF).
`int8_cpu_model(model)` gives the default one (`DEFAULT_INT8_PATH`), for the compress stage and for users.

Over 500 lines because it is one stage whose parts share its runners: the int8 CPU paths, the shape grid, the
real-text throughput and the plot; the int8 paths could move to their own module when a second user needs them.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from bortify.outputs import claim
from bortify.reports import BenchReport, write_report
from bortify.timing import Timing, cpu_name, time_call, time_calls  # noqa: F401  (time_call, Timing: re-exported)
from bortify.utils import (TOKENIZER_FILES, BortifyError, check_torch_threads, overwrite_field,
                           torch_threads, torch_threads_field)

SHIPPED_INT8 = "onnx/model_quantized.onnx"  # the release's int8 file (bortify.compression.onnx_export's layout)

INT8_PATHS = ("torch-dynamic", "torchao", "onnxruntime", "openvino")
PATHS = ("fp32", *INT8_PATHS)
# The default int8 CPU path: the fastest well-kept one measured side by side (BENCHMARKS.md "CPU speed").
DEFAULT_INT8_PATH = "onnxruntime"
PLOT_FILE = "bench.png"
INSTALL_HINT = {"torchao": "pip install torchao (measure it in its own environment: transformers imports torchao "
                           "whenever it is installed)",
                "onnxruntime": "pip install bortify[compress]", "openvino": "pip install bortify[bench]"}


class BenchError(BortifyError):
    """Bad bench input (model, sizes, paths); the message says what to fix."""


# ---- the int8 CPU paths ----------------------------------------------------------------------------------------

Runner = Callable[[dict], Any]  # batch of numpy-able tensors (input_ids, attention_mask) -> first output


def path_unavailable_reason(path: str) -> str | None:
    """None when `path` can run here, else why not (with the install command)."""
    import importlib.util

    module = {"torchao": "torchao", "onnxruntime": "onnxruntime", "openvino": "openvino"}.get(path)
    if path not in PATHS:
        return f"unknown path {path!r}; paths are {', '.join(PATHS)}"
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed; {INSTALL_HINT[path]}"
    if path in ("onnxruntime", "openvino"):
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} not installed (pip install bortify[compress])"
    return None


def _first_output(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else next(iter(out.values())) if isinstance(out, dict) else out


def torch_runner(model) -> Runner:
    import torch

    def run(batch: dict):
        with torch.inference_mode():
            return _first_output(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       return_dict=False))
    run.module = model  # type: ignore[attr-defined]
    return run


def quantize_torch_dynamic(model):
    """torch.ao.quantization.quantize_dynamic on every nn.Linear (int8 weights per tensor, dynamic activations),
    on a copy; its deprecation warning is silenced here (BENCHMARKS.md "CPU speed" says why we still use it)."""
    import copy

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def quantize_torchao(model):
    """torchao's int8 dynamic-activation / int8-weight config on every nn.Linear, on a copy."""
    import copy

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(model)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def onnxruntime_runner(onnx_path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(threads, 0)
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(batch: dict):
        return session.run(None, _feed(batch, names))[0]
    run.session = session  # type: ignore[attr-defined]
    return run


def openvino_runner(onnx_path: Path, threads: int) -> Runner:
    """OpenVINO on the CPU at fp32 inference precision (its default on CPUs with bf16 would be bf16)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]

    def run(batch: dict):
        return request.infer(_feed(batch, names))[0]
    return run


def _feed(batch: dict, names: list[str]) -> dict:
    """The graph's inputs from a batch, as int64 numpy; token_type_ids (the release graph's third input for
    models with token types) are zeros when the batch has none."""
    import numpy as np

    ids = _numpy(batch["input_ids"])
    return {n: np.asarray(_numpy(batch[n]), dtype=np.int64) if n in batch else np.zeros_like(ids, dtype=np.int64)
            for n in names}


def _numpy(x):
    return x.numpy() if hasattr(x, "numpy") else x


def make_runner(path: str, model, *, threads: int, workdir: Path, name: str = "model",
                shipped: Path | None = None) -> Runner:
    """A runner of `model` through `path` (fp32 or an int8 path). The ONNX paths run `shipped` (the release's
    onnx/model_quantized.onnx) when given, else the model exported and quantised into `workdir` by the one ONNX
    path of bortify (bortify.compression.onnx_export, as compress and the release)."""
    if path == "fp32":
        return torch_runner(model)
    if path == "torch-dynamic":
        return torch_runner(quantize_torch_dynamic(model))
    if path == "torchao":
        return torch_runner(quantize_torchao(model))
    int8 = Path(shipped) if shipped is not None else export_int8_onnx(model, workdir, name)
    return onnxruntime_runner(int8, threads) if path == "onnxruntime" else openvino_runner(int8, threads)


def export_int8_onnx(model, workdir: Path, name: str = "model") -> Path:
    """`workdir/NAME.int8.onnx`: the model through the release's export and quantisation (onnx_export)."""
    from bortify.compression.onnx_export import export_onnx, quantize_onnx

    int8 = workdir / f"{name}.int8.onnx"
    if not int8.exists():
        fp32 = export_onnx(model, workdir / f"{name}.onnx")
        quantize_onnx(fp32, int8)
        fp32.unlink()
        for extra in workdir.glob(f"{name}.onnx*"):  # external-data files of a large export
            extra.unlink()
    return int8


def shipped_int8(args_onnx_dir: str | None, model_path: str | Path) -> Path | None:
    """The shipped int8 ONNX file bench times: `--onnx_dir`'s onnx/model_quantized.onnx (an error when it has
    none), else the model folder's own, else None (bench exports one)."""
    if args_onnx_dir:
        path = Path(args_onnx_dir) / SHIPPED_INT8
        if not path.is_file():
            raise BenchError(f"--onnx_dir {args_onnx_dir} has no {SHIPPED_INT8}: pass the output directory of "
                             "`bortify compress` or a release folder that ships onnx/, or leave --onnx_dir unset.")
        return path
    path = Path(model_path) / SHIPPED_INT8
    return path if path.is_file() else None


def int8_cpu_model(model, path: str = DEFAULT_INT8_PATH, *, threads: int = 1, workdir: str | Path | None = None,
                   sample: dict | None = None) -> Runner:
    """`model` (a transformers BERT, eval mode) made int8 for the CPU by `path` (default: the measured fastest,
    DEFAULT_INT8_PATH). Returns a runner: `runner({"input_ids": ..., "attention_mask": ...})` -> the model's first
    output (logits of a task model) as a tensor or numpy array. Torch paths keep the quantised module as
    `runner.module`; ONNX Runtime keeps its session as `runner.session`. ONNX files are written to `workdir`
    (default: a temporary directory kept as long as the runner lives). `sample` is unused (the export makes its
    own example)."""
    why = path_unavailable_reason(path)
    if why:
        raise BenchError(f"int8 path {path!r} is not available: {why}.")
    keep = None
    if workdir is None:
        keep = tempfile.TemporaryDirectory(prefix="bortify-int8-")
        workdir = keep.name
    runner = make_runner(path, model.eval(), threads=threads, workdir=Path(workdir))
    if keep is not None:
        runner.tempdir = keep  # type: ignore[attr-defined]  # the ONNX file lives as long as the runner
    return runner


# ---- the stage ---------------------------------------------------------------------------------------------

@dataclass
class BenchArguments:
    model: str = field(metadata={"help": "Checkpoint to measure (a directory with config.json + safetensors, or an "
                                         "`embedded:` model)."})
    output_dir: str = field(metadata={"help": "Directory for report.json and bench.png."})
    source: Optional[str] = field(default=None, metadata={
        "help": "Model to compare against (e.g. the extraction source); measured from its config with random weights "
                "(latency depends on the shape only). Unset: the model alone, no ratios."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8], metadata={"help": "Batch sizes of the grid."})
    seq_lens: list[int] = field(default_factory=lambda: [32, 128, 512], metadata={
        "help": "Sequence lengths of the grid (each <= both models' max_position_embeddings)."})
    paths: list[str] = field(default_factory=lambda: ["auto"], metadata={
        "help": f"What to time: fp32 and int8 CPU paths ({', '.join(INT8_PATHS)}); 'auto': fp32 and every int8 path "
                "installed here (the others are listed as unavailable)."})
    threads: int = field(default=1, metadata={
        "help": "Torch/ONNX Runtime/OpenVINO threads for every timing (fixed, so runs compare; 0: torch's default)."})
    rounds: int = field(default=3, metadata={"help": "Rounds of alternation between model and source per grid cell."})
    min_run_time: float = field(default=0.2, metadata={
        "help": "Seconds each blocked_autorange of a round runs at least (torch.utils.benchmark)."})
    warmup: int = field(default=1, metadata={"help": "Untimed calls of each runner before a grid cell is timed."})
    onnx_dir: Optional[str] = field(default=None, metadata={
        "help": f"Folder whose {SHIPPED_INT8} the onnxruntime/openvino paths time (the output of `bortify compress` "
                "or a release folder: the file that ships). Default: the model folder's own, if it has one; else "
                "bench exports and quantises the model by the same path as compress."})
    dataset: Optional[str] = field(default="embedded:rotten-tomatoes", metadata={
        "help": "Real texts for sentences/s (a dataset spec as finetune takes; its first text column). Empty: skip."})
    text_column: Optional[str] = field(default=None, metadata={
        "help": "Text column (default: 'text', 'sentence', else the first string column)."})
    max_texts: int = field(default=256, metadata={"help": "Texts timed for sentences/s."})
    text_batch_size: int = field(default=8, metadata={"help": "Batch size for sentences/s (dynamic padding)."})
    max_length: int = field(default=128, metadata={"help": "Truncation length for sentences/s."})
    overwrite: bool = overwrite_field()
    torch_threads: Optional[int] = torch_threads_field()

    def __post_init__(self):
        check_torch_threads(self.torch_threads)
        for name in ("batch_sizes", "seq_lens"):
            values = getattr(self, name)
            if not values or any((not isinstance(v, int)) or v < 1 for v in values):
                raise ValueError(f"--{name} must be positive integers; got {values}.")
        for name in ("rounds", "max_texts", "text_batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(self, name)}.")
        if self.threads < 0 or self.warmup < 0 or self.min_run_time < 0:
            raise ValueError("--threads, --warmup and --min_run_time must be >= 0.")
        unknown = [p for p in self.paths if p not in (*PATHS, "auto")]
        if unknown:
            raise ValueError(f"--paths: unknown {unknown}; choose from auto, {', '.join(PATHS)}.")


def chosen_paths(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """(paths to time, {path: why not} for 'auto' paths not installed). An explicitly requested path that cannot
    run is an error naming the install command."""
    if "auto" in requested:
        skipped = {p: why for p in INT8_PATHS if (why := path_unavailable_reason(p))}
        return ["fp32", *[p for p in INT8_PATHS if p not in skipped]], skipped
    for p in requested:
        if why := path_unavailable_reason(p):
            raise BenchError(f"--paths {p}: {why}.")
    return list(dict.fromkeys(requested)), {}


def load_model(spec: str):
    """The checkpoint's model (task head kept), eval mode, from safetensors only; its config."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from bortify.resources import resolve_model

    path = resolve_model(spec)
    if not (Path(path) / "config.json").is_file():
        raise BenchError(f"{spec} is not a checkpoint (no config.json): pass a directory saved by bortify "
                         "(e.g. <run>/finetune) or an embedded: model.")
    from bortify.utils import check_finite_weights

    if not any(Path(path).glob("*.safetensors")):
        others = sorted(p.name for p in Path(path).glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".h5"))
        raise BenchError(f"{spec} has no model.safetensors" + (f" (only {others[:3]}: pickle-based weights, which "
                         "bortify never loads)" if others else "") + ": pass a directory saved by bortify (e.g. "
                         "<run>/finetune), or re-save the model with save_pretrained(..., safe_serialization=True).")
    try:
        config = AutoConfig.from_pretrained(path)
        task = any("ForSequenceClassification" in a for a in (config.architectures or []))
        cls = AutoModelForSequenceClassification if task else AutoModel
        model = cls.from_pretrained(path, use_safetensors=True).eval()
    except Exception as exc:  # noqa: BLE001 - a broken folder is the user's to fix, not a traceback
        raise BenchError(f"Cannot load {spec} from its safetensors weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}): pass a directory saved by bortify "
                         "(e.g. <run>/finetune).") from None
    check_finite_weights(model, f"The model {spec} ({path})")
    return model, path


def source_model(spec: str, like) -> Any:
    """The source built from its config, random weights, with the model's head class and labels."""
    import torch
    from transformers import AutoConfig

    from bortify.resources import resolve_model

    try:
        config = AutoConfig.from_pretrained(resolve_model(spec))
    except Exception as exc:
        raise BenchError(f"--source {spec}: cannot read its config ({type(exc).__name__}: {exc}). Pass a local "
                         "checkpoint or an embedded: model.") from exc
    config.num_labels = like.config.num_labels
    torch.manual_seed(0)
    return type(like)(config).eval()


def check_lengths(seq_lens: list[int], *models) -> None:
    """Every length within both models' position tables (utils.position_limit: less the RoBERTa padding offset)."""
    from bortify.utils import position_limit

    limit = min(position_limit(m.config) or 512 for m in models)
    if max(seq_lens) > limit:
        table = min(getattr(m.config, "max_position_embeddings", None) or limit for m in models)
        raise BenchError(f"--seq_lens {max(seq_lens)} exceeds max_position_embeddings={table}"
                         f"{' less the padding offset' if table != limit else ''}; pass lengths <= {limit}.")


def macs(model, seq_len: int) -> int:
    """Encoder multiply-adds per sequence (docs/methods/01-extraction.md §1, bortify.extraction.costs.operation_count)."""
    from bortify.extraction.costs import Shape, operation_count

    return operation_count(Shape.from_config(model.config), seq_len)


def random_batch(model, batch_size: int, seq_len: int) -> dict:
    import torch

    generator = torch.Generator().manual_seed(batch_size * 1000 + seq_len)
    ids = torch.randint(5, model.config.vocab_size, (batch_size, seq_len), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def bench(args: BenchArguments, *, progress: bool = True) -> BenchReport:
    """Run the grid and the real-text throughput; write report.json and bench.png to args.output_dir."""
    paths, unavailable = chosen_paths(args.paths)  # before any long work
    if args.onnx_dir and any(p in ("onnxruntime", "openvino") for p in paths):
        shipped_int8(args.onnx_dir, args.onnx_dir)  # a --onnx_dir without the file: refused before loading anything
    if args.source is None and not paths:
        raise BenchError("Nothing to time.")
    # the output folder first (bortify.outputs): never an input, another stage's folder or foreign files
    with torch_threads(args.torch_threads), claim("bench", args.output_dir, overwrite=args.overwrite,
                                                  inputs={"model": args.model, "--source": args.source}) as output:
        model, model_path = load_model(args.model)
        source = source_model(args.source, model) if args.source else None
        check_lengths(args.seq_lens, *([model, source] if source is not None else [model]))
        texts = real_texts(args) if args.dataset else None
        shipped = shipped_int8(args.onnx_dir, model_path) if any(p in ("onnxruntime", "openvino") for p in paths) \
            else None
        out = output.work_dir()  # built beside --output_dir and swapped in when the report is written
        with tempfile.TemporaryDirectory(prefix="bortify-bench-", dir=out) as tmp:
            grid = run_grid(args, paths, model, source, Path(tmp), progress, shipped=shipped)
            sentences, source_sentences = (sentences_per_second(args, paths, model, model_path, texts, Path(tmp),
                                                                source=source, shipped=shipped)
                                           if texts else ({}, None))
        report = BenchReport.make({
            "model": args.model, "source": args.source, "threads": args.threads, "rounds": args.rounds,
            "min_run_time": args.min_run_time, "paths": paths, "unavailable": unavailable, "cpu": cpu_name(),
            "int8_onnx": None if not any(p in ("onnxruntime", "openvino") for p in paths) else
            (f"shipped {SHIPPED_INT8}" if shipped is not None
             else "exported by bench (bortify.compression.onnx_export)"),
            "int8_default": DEFAULT_INT8_PATH, "grid": grid, "dataset": args.dataset,
            "sentences": sentences, "source_sentences": source_sentences, "plot": PLOT_FILE})
        save_plot(report, out / PLOT_FILE)
        write_report(out, report)  # last: a report.json marks a finished output
    return report


@contextlib.contextmanager
def _bar(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="bench", unit="cell", disable=not enabled) as bar:
        yield bar


def run_grid(args: BenchArguments, paths: list[str], model, source, workdir: Path, progress: bool, *,
             shipped: Path | None = None) -> list[dict]:
    """Every (path, batch, length) cell: model and source timed in alternation (`time_calls`)."""
    rows = []
    with _bar(len(paths) * len(args.batch_sizes) * len(args.seq_lens), progress) as bar:
        for path in paths:
            runners = {"model": make_runner(path, model, threads=args.threads, workdir=workdir, shipped=shipped)}
            if source is not None:
                runners["source"] = make_runner(path, source, threads=args.threads, workdir=workdir, name="source")
            for batch_size in args.batch_sizes:
                for seq_len in args.seq_lens:
                    bar.set_postfix_str(f"{path} b{batch_size} L{seq_len}")
                    rows.append(time_cell(args, path, runners, model, source, batch_size, seq_len))
                    bar.update()
            del runners
    add_ratios(rows)
    return rows


def time_cell(args, path, runners, model, source, batch_size, seq_len) -> dict:
    batch = random_batch(model, batch_size, seq_len)
    fns = {name: (lambda r=r: r(batch)) for name, r in runners.items()}
    timings = time_calls(fns, threads=args.threads, rounds=args.rounds, min_run_time=args.min_run_time,
                         warmup=args.warmup)
    row = {"path": path, "batch_size": batch_size, "seq_len": seq_len,
           "model_ms": 1e3 * timings["model"].median_s, "model_iqr_ms": 1e3 * timings["model"].iqr_s,
           "model_calls": timings["model"].calls}
    if source is not None:
        row.update(source_ms=1e3 * timings["source"].median_s, source_iqr_ms=1e3 * timings["source"].iqr_s,
                   source_calls=timings["source"].calls, macs_ratio=macs(source, seq_len) / macs(model, seq_len))
    return row


def add_ratios(rows: list[dict]) -> None:
    """speedup = source / model on the same path; speedup_vs_source_fp32 = source fp32 / model on this path;
    int8_gain = model fp32 / model on this path."""
    fp32 = {(r["batch_size"], r["seq_len"]): r for r in rows if r["path"] == "fp32"}
    for r in rows:
        base = fp32.get((r["batch_size"], r["seq_len"]))
        if "source_ms" in r:
            r["speedup"] = r["source_ms"] / r["model_ms"]
            if base is not None:
                r["speedup_vs_source_fp32"] = base["source_ms"] / r["model_ms"]
        if base is not None:
            r["int8_gain"] = base["model_ms"] / r["model_ms"]


# ---- sentences per second on real texts ----------------------------------------------------------------------

def real_texts(args: BenchArguments) -> list[str]:
    """Up to max_texts non-empty texts of the dataset's test split if it has one, else its first split."""
    from bortify.data import load_any_dataset

    dsd = load_any_dataset(args.dataset)
    split = next((s for s in ("test", "validation", "train") if s in dsd), next(iter(dsd)))
    ds = dsd[split]
    column = args.text_column or next((c for c in ("text", "sentence", "sentence1") if c in ds.column_names), None)
    column = column or next((c for c in ds.column_names if ds.features[c].dtype == "string"), None)
    if column not in ds.column_names:
        raise BenchError(f"--dataset {args.dataset}: no text column {column!r} (columns: {ds.column_names}); "
                         "pass --text_column.")
    texts = [t for t in ds[column][: 4 * args.max_texts] if isinstance(t, str) and t.strip()][: args.max_texts]
    if not texts:
        raise BenchError(f"--dataset {args.dataset}: no non-empty texts in column {column!r}.")
    return texts


def sentences_per_second(args, paths, model, model_path, texts, workdir: Path, *,
                         source=None, shipped: Path | None = None) -> tuple[dict, dict | None]:
    """Sentences/s of the whole pass over `texts` (tokenised once, batches padded to their longest), per path, and
    agreement of each int8 path's predictions (argmax) with fp32. With a `source` (random weights, `source_model`),
    its fp32 pass over the same texts is timed in alternation with the model's fp32 pass (docs/methods/05-compression.md §5.s).
    -> (the report's `sentences`, its `source_sentences`: None without a source)"""
    import numpy as np

    tokenizer = model_tokenizer(args, model_path)
    batches = tokenize_texts(tokenizer, texts, args)
    source_batches, source_info = (source_text_batches(args, source, model, tokenizer, texts, paths)
                                   if source is not None else (None, None))
    out, predictions = {"texts": len(texts), "batch_size": args.text_batch_size, "max_length": args.max_length}, {}
    for path in paths:
        runner = make_runner(path, model, threads=args.threads, workdir=workdir, shipped=shipped)
        fns = {"model": lambda runner=runner: [runner(b) for b in batches]}
        if path == "fp32" and source_batches is not None:
            source_runner = torch_runner(source)
            fns["source"] = lambda: [source_runner(b) for b in source_batches]
        timings = time_calls(fns, threads=args.threads, rounds=args.rounds, min_run_time=0.0, warmup=args.warmup)
        predictions[path] = np.concatenate([np.asarray(runner(b)).reshape(len(b["input_ids"]), -1).argmax(-1)
                                            for b in batches])
        out[path] = _rate(len(texts), timings["model"])
        if path != "fp32" and "fp32" in predictions:
            out[path]["agreement_with_fp32"] = float((predictions[path] == predictions["fp32"]).mean())
        if "source" in timings:
            source_info.update(_rate(len(texts), timings["source"]))
    return out, source_info


def _rate(texts: int, timing: Timing) -> dict:
    return {"sentences_per_s": texts / timing.median_s, "seconds": timing.median_s}


def model_tokenizer(args, model_path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:
        raise BenchError(f"{args.model} has no tokenizer ({type(exc).__name__}): sentences/s needs one; save the "
                         "tokenizer with the checkpoint or pass --dataset '' to skip.") from exc


def tokenize_texts(tokenizer, texts: list[str], args) -> list[dict]:
    """`texts` in batches of text_batch_size, each padded to its longest, truncated to max_length."""
    return [dict(tokenizer(texts[i:i + args.text_batch_size], padding=True, truncation=True,
                           max_length=args.max_length, return_tensors="pt", return_token_type_ids=False))
            for i in range(0, len(texts), args.text_batch_size)]


def source_text_batches(args, source, model, fallback, texts: list[str], paths: list[str]) -> tuple[list | None, dict]:
    """The real texts as the source reads them: (batches, {"tokenizer": "source" | "model"}), or (None,
    {"skipped": why}) when the source cannot be timed on them (the report says why; the rest of bench runs)."""
    if "fp32" not in paths:
        return None, {"skipped": "the source is timed in alternation with the model's fp32 pass; --paths has no fp32"}
    limit = getattr(source.config, "max_position_embeddings", None)
    if limit is not None and args.max_length > limit:
        return None, {"skipped": f"--max_length {args.max_length} exceeds the source's max_position_embeddings={limit}"}
    tokenizer, which = source_tokenizer(args.source, source), "source"
    if tokenizer is None and source.config.vocab_size == model.config.vocab_size:
        tokenizer, which = fallback, "model"  # same vocabulary size: the model's tokenizer gives the source's ids
    if tokenizer is None:
        return None, {"skipped": f"{args.source} has no tokenizer and its vocabulary ({source.config.vocab_size}) is "
                                 f"not the model's ({model.config.vocab_size}); save a tokenizer with the source"}
    return tokenize_texts(tokenizer, texts, args), {"tokenizer": which}


def source_tokenizer(spec: str, source):
    """The source's own tokenizer, or None when it has none: a local directory without tokenizer files (transformers
    would build an empty one from config.json), a tokenizer that does not load, or one whose ids do not fit the
    source's embeddings."""
    from transformers import AutoTokenizer

    from bortify.resources import resolve_model

    try:
        path = resolve_model(spec)
        if Path(path).is_dir() and not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
            return None
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception:  # no tokenizer here (e.g. a Hub name offline): the caller falls back or says why
        return None
    return tokenizer if len(tokenizer) <= source.config.vocab_size else None


# ---- the plot ----------------------------------------------------------------------------------------------------

def plot_grid(report: BenchReport, path: Path) -> None:
    """Median latency against sequence length, one panel per batch size; model solid, source dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch_sizes = sorted({r.batch_size for r in report.grid})
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(5 * len(batch_sizes), 4), squeeze=False)
    for ax, b in zip(axes[0], batch_sizes):
        for i, p in enumerate(report.paths):
            rows = sorted((r for r in report.grid if r.batch_size == b and r.path == p), key=lambda r: r.seq_len)
            color = f"C{i}"
            ax.plot([r.seq_len for r in rows], [r.model_ms for r in rows], "o-", c=color, label=f"model {p}")
            if rows and rows[0].source_ms is not None:
                ax.plot([r.seq_len for r in rows], [r.source_ms for r in rows], "s--", c=color, label=f"source {p}")
        ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="median ms per batch",
               title=f"batch {b}, {report.threads} thread(s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_plot(report: BenchReport, path: Path) -> None:
    """plot_grid written atomically (a temporary file in the same directory, then renamed)."""
    import os

    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        plot_grid(report, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def report_latency(report: BenchReport, batch_size: int = 8, seq_len: int = 128, path: str = "fp32") -> dict | None:
    """The card's latency figure from a bench report: the grid cell (batch, length, path) nearest the one asked
    for (fp32 first), as {model_seconds, source_seconds, speedup, macs_ratio, batch_size, seq_len, threads, ...}."""
    rows = [r for r in report.grid if r.path == path and r.source_ms is not None]
    if not rows:
        return None
    row = min(rows, key=lambda r: (abs(math.log(r.batch_size / batch_size)), abs(math.log(r.seq_len / seq_len))))
    int8 = next((r for r in report.grid if r.path == report.int8_default and r.batch_size == row.batch_size
                 and r.seq_len == row.seq_len), None)
    return {"model_seconds": row.model_ms / 1e3, "source_seconds": row.source_ms / 1e3, "source": report.source,
            "speedup": row.speedup, "macs_ratio": row.macs_ratio, "batch_size": row.batch_size,
            "seq_len": row.seq_len, "threads": report.threads, "rounds": report.rounds, "timer": "bench",
            "int8_path": report.int8_default if int8 else None,
            "int8_model_seconds": int8.model_ms / 1e3 if int8 else None, "cpu": report.cpu,
            "int8_file": report.int8_onnx if int8 and report.int8_default in ("onnxruntime", "openvino") else None,
            "int8_speedup_vs_source_fp32": int8.speedup_vs_source_fp32 if int8 else None}
