"""The `bortify compress` options, read from flags or a recipe's `compress:` section (docs/methods/05-compression.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bortify.utils import check_torch_threads, help_field, overwrite_field, torch_threads_field

ONNX_WEIGHT_TYPES = ("qint8", "quint8")
BUNDLE_CODINGS = ("lzma", "none")


@dataclass
class CompressArguments:
    model_dir: str = help_field("The task model to compress: the output directory of `bortify finetune` (config.json, "
                           "model.safetensors, tokenizer files, report.json). Its report and run record name the "
                           "task, whose test split scores every compressed form.")
    output_dir: str = help_field("Where model.q8.safetensors, onnx/, bundle/ and report.json are written.")
    per_channel: bool = help_field("One quantisation range (min, step) per output channel (row) of each weight matrix; "
                              "false: one per tensor (smaller, a little less accurate).", default=False)
    drop_zeros: bool = help_field("Store a weight matrix sparse (bit mask + the non-zero bytes) when enough of its "
                             "weights round to zero that this is smaller (the paper's zero-dropping).", default=True)
    zero_threshold: float = help_field("Weights with |w| <= zero_threshold x the quantisation step become exactly 0 "
                                  "(0.5 = plain rounding; larger drops more small weights).", default=0.5)
    onnx: bool = help_field("Also export onnx/model.onnx (fp32) and onnx/model_quantized.onnx (ONNX Runtime dynamic "
                       "int8), the layout optimum and transformers.js load; the card stage ships them.", default=True)
    onnx_weight_type: str = help_field("Weight type of model_quantized.onnx: qint8 or quint8.", default="qint8")
    bundle: bool = help_field("Also write bundle/: the 8-bit weights, the perfect-hashed vocabulary and the settings an "
                         "offline loader needs (bortify.compression.bundle), no tokenizer files.", default=True)
    bundle_coding: str = help_field("Entropy coding of the bundle's weights file: lzma (smaller on disk, decoded at "
                               "load) or none.", default="lzma")
    dataset: Optional[str] = help_field("Evaluate on this dataset instead of the one the fine-tuning report names "
                                   "(needed when it was fine-tuned on local files and only their names were "
                                   "recorded).", default=None)
    max_eval_samples: Optional[int] = help_field("Score at most this many test rows (default: the whole test split "
                                            "the fine-tuning run used).", default=None)
    max_length: Optional[int] = help_field("Tokens per example when scoring (default: the fine-tuning run's).",
                                      default=None)
    eval_batch_size: int = help_field("Batch size when scoring.", default=64)
    latency_batch_size: int = help_field("Batch size of the latency measurement (random token ids).", default=8)
    latency_seq_len: int = help_field("Sequence length of the latency measurement.", default=128)
    latency_seconds: float = help_field("Measuring time per model form, in seconds (torch.utils.benchmark "
                                   "blocked_autorange); 0 skips the latency measurement.", default=1.0)
    latency_threads: int = help_field("CPU threads for the latency measurement (torch and ONNX Runtime alike).",
                                 default=1)
    overwrite: bool = overwrite_field()
    torch_threads: Optional[int] = torch_threads_field()

    def __post_init__(self):
        if self.onnx_weight_type not in ONNX_WEIGHT_TYPES:
            raise ValueError(f"onnx_weight_type must be one of {', '.join(ONNX_WEIGHT_TYPES)}, got "
                             f"{self.onnx_weight_type!r}.")
        if self.bundle_coding not in BUNDLE_CODINGS:
            raise ValueError(f"bundle_coding must be one of {', '.join(BUNDLE_CODINGS)}, got {self.bundle_coding!r}.")
        if not self.zero_threshold >= 0:
            raise ValueError(f"zero_threshold must be >= 0 (in quantisation steps; 0.5 = plain rounding), got "
                             f"{self.zero_threshold}.")
        for name in ("eval_batch_size", "latency_batch_size", "latency_seq_len", "latency_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("max_eval_samples", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}.")
        if not self.latency_seconds >= 0:
            raise ValueError(f"latency_seconds must be >= 0 (0 skips the measurement), got {self.latency_seconds}.")
        check_torch_threads(self.torch_threads)
