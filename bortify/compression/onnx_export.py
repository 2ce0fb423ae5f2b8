"""ONNX export of a task model and its dynamic int8 version (docs/methods/05-compression.md §5), in the layout Hub users load.

    <release>/onnx/model.onnx            fp32, dynamic batch and sequence axes
    <release>/onnx/model_quantized.onnx  int8 weights (ONNX Runtime dynamic quantisation, activations int8 at run time)

That is where optimum (`ORTModelForSequenceClassification.from_pretrained(repo, subfolder="onnx")`) and
transformers.js (`onnx/model.onnx`, `onnx/model_quantized.onnx`) look. optimum-onnx does not install next to
transformers 5.24, so the export is torch's own: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript).
The TorchScript exporter (dynamo=False) still runs on torch 2.13 but its trace of transformers 5's attention mask
gave logits off by 2e-2 on padded batches of another shape than the traced one (measured), so it is not used.
Inputs: input_ids, attention_mask (+ token_type_ids when the model has token types); output: logits.

Quantisation: `onnxruntime.quantization.quantize_dynamic` (QInt8 weights by default, per output channel off),
after ONNX Runtime's shape-inference pre-processing. Both files are checked with onnx.checker.

This is bortify's one ONNX path: compress writes the release's files with it, and `bortify bench` times the shipped
`model_quantized.onnx` (or, for a folder without one, a file made here), so the card's int8 figures are the shipped
file's (docs/methods/05-compression.md §5).

What the files carry: the graph and weights only. The dynamo exporter records, per node, metadata entries such as
`pkg.torch.onnx.stack_trace` and `pkg.torch.onnx.name_scopes` that hold this machine's source paths; `strip_metadata`
empties every `metadata_props` and `doc_string` (model, graph, nodes, functions, values) of both files before they
are written, and `bortify push` refuses any file that still holds a local path (bortify.hygiene).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from bortify.utils import BortifyError

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
ONNX_QUANTIZED_FILE = "model_quantized.onnx"
OPSET = 18
INSTALL_HINT = "pip install bortify[compress] (onnx, onnxscript, onnxruntime)"


class OnnxExportError(BortifyError):
    """The ONNX toolchain is missing or the export failed; the message names the fix."""


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxExportError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}.")


def check_available() -> None:
    """Raise OnnxExportError (before any long work) when onnx/onnxscript/onnxruntime are not installed."""
    _require("onnx", "onnxscript", "onnxruntime")


def input_names(model) -> list[str]:
    """The model inputs the export keeps: token_type_ids only for models that have token types."""
    names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 0):
        names.append("token_type_ids")
    return names


class LogitsOnly(torch.nn.Module):
    """A sequence classifier whose forward returns the logits tensor alone (the exported graph's one output); a bare
    encoder (`bortify bench` on a student) returns its first output, the last hidden state."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out[0]


def output_name(model) -> str:
    """`logits` for a model with a head, `last_hidden_state` for a bare encoder."""
    return "last_hidden_state" if getattr(model, "base_model", None) is model else "logits"


def strip_metadata(proto) -> int:
    """Empty every `metadata_props` and `doc_string` in an ONNX message and all messages inside it (model, graph,
    nodes, subgraphs, functions, inputs/outputs, initializers); -> how many entries were removed. The dynamo exporter
    writes stack traces and name scopes with local source paths there (module docstring)."""
    removed = 0
    for descriptor, value in proto.ListFields():
        if descriptor.name == "metadata_props":
            removed += len(value)
            proto.ClearField("metadata_props")
        elif descriptor.name == "doc_string":
            removed += 1
            proto.ClearField("doc_string")
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            repeated = (descriptor.is_repeated if hasattr(descriptor, "is_repeated")
                        else descriptor.label == descriptor.LABEL_REPEATED)
            for item in (value if repeated else [value]):
                removed += strip_metadata(item)
    return removed


def _strip_file(path: Path) -> None:
    """strip_metadata of an ONNX file, rewritten in place (a self-contained file, no external data)."""
    import onnx

    proto = onnx.load(str(path))
    if strip_metadata(proto):
        onnx.save(proto, str(path))


def export_onnx(model, path: str | os.PathLike, *, opset: int = OPSET) -> Path:
    """fp32 ONNX of a sequence classifier, dynamic batch and sequence axes, one self-contained file."""
    check_available()
    from torch.export import Dim

    path = Path(path)
    model = model.eval()
    names = input_names(model)
    example = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0, 0], [101, 2178, 6251, 102, 0, 0, 0, 0]])
    example = example.clamp(max=model.config.vocab_size - 1)
    mask = (example != 0).long()
    inputs = {"input_ids": example, "attention_mask": mask, "token_type_ids": torch.zeros_like(example)}
    batch, seq = Dim("batch"), Dim("sequence")
    dynamic = {name: {0: batch, 1: seq} for name in names}
    kwargs = {k: inputs[k] for k in names}
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=path.parent if path.parent.exists() else None))
    try:
        with torch.no_grad():
            program = torch.onnx.export(LogitsOnly(model).eval(), (), kwargs=kwargs, input_names=names,
                                        output_names=[output_name(model)], dynamic_shapes=dynamic, opset_version=opset,
                                        dynamo=True, optimize=True, verbose=False, external_data=False)
        program.save(str(tmp / path.name), external_data=False)
        _strip_file(tmp / path.name)
        _check(tmp / path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / path.name, path)
    except OnnxExportError:
        raise
    except Exception as exc:  # the exporter raises many kinds of errors; name the model and the step
        raise OnnxExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _check(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path))


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, *, weight_type: str = "qint8",
                  per_channel: bool = False) -> Path:
    """int8 ONNX by ONNX Runtime's dynamic quantisation: weights int8 (`qint8` or `quint8`) stored, activations
    quantised at run time (MatMul -> MatMulInteger / DynamicQuantizeLinear)."""
    check_available()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    if weight_type not in types:
        raise OnnxExportError(f"onnx weight_type must be one of {sorted(types)}, got {weight_type!r}.")
    src, dst = Path(src), Path(dst)
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-quant-", dir=dst.parent))
    try:
        pre = tmp / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(tmp / dst.name), weight_type=types[weight_type], per_channel=per_channel)
        _strip_file(tmp / dst.name)
        _check(tmp / dst.name)
        os.replace(tmp / dst.name, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def export_release_onnx(model, directory: str | os.PathLike, *, weight_type: str = "qint8") -> dict[str, Path]:
    """`<directory>/onnx/model.onnx` and `model_quantized.onnx`."""
    out = Path(directory) / ONNX_DIR
    out.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, out / ONNX_FILE)
    int8 = quantize_onnx(fp32, out / ONNX_QUANTIZED_FILE, weight_type=weight_type)
    return {"fp32": fp32, "int8": int8}


def session(path: str | os.PathLike, *, threads: int | None = None):
    """An ONNX Runtime CPU session (`threads` intra-op threads; None: ONNX Runtime's default)."""
    check_available()
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_forward(sess):
    """encodings (dict of numpy arrays) -> logits (numpy), feeding only the inputs the graph has, as int64."""
    names = [i.name for i in sess.get_inputs()]

    def forward(enc: dict) -> np.ndarray:
        feed = {n: np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(enc["input_ids"], dtype=np.int64)
                for n in names}
        return sess.run(["logits"], feed)[0]

    return forward
