"""Linear 8-bit quantisation of a model's weights, as Strimel et al. (2018) define it (docs/methods/05-compression.md §5).

Each weight matrix (per tensor, or per output channel = per row) is split into 256 equal intervals over its
range [min, max]; a weight is stored as the one byte k of its nearest grid point and read back as

    w' = min + k · step,   step = (max − min) / 255,   k = round((w − min) / step) ∈ {0, …, 255}

so the stored "interval table" is (min, step) per tensor or row: the 256 values min + k·step. Our one choice on
top of the paper: the range is widened to include 0 and min is moved onto the grid (min = −z·step for an
integer z, at most half a step), so that 0 is exactly representable (code z) — then small weights *round to
zero*, and with `drop_zeros` they are *dropped*: a tensor with enough zeros is stored sparse, as a bit mask of
the non-zero positions plus the codes of the non-zero weights only. `zero_threshold` (in steps; 0.5 = plain
rounding) sends more small weights to zero. Every weight is within step/2 of its original, except the ones a
larger `zero_threshold` sets to 0.

Storage: one safetensors file (no pickle) holding, per quantised tensor `NAME`, `NAME::codes` (uint8),
`NAME::step` (float32) and `NAME::zero` (uint8, the code of 0) — per row or one each — and `NAME::mask`
(packed bits) when sparse; biases, LayerNorm and other small tensors stay float32 under their own names. The
header's metadata names the format, the shapes and the tied weights (one copy stored). `load_quantized_model`
rebuilds a normal transformers model (AutoModelForSequenceClassification, AutoModelForMaskedLM or AutoModel,
from the architectures in config.json) from it: dequantised float32 weights, no custom code.

This module needs only torch, numpy and safetensors (the offline bundle's loader uses it too).
"""

from __future__ import annotations

import json
import lzma
import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bortify.utils import BortifyError, json_text

Q8_FILE = "model.q8.safetensors"
FORMAT = "bortify-q8"
FORMAT_VERSION = "1"
LEVELS = 256  # the paper's 256 intervals: one byte a weight
SEP = "::"  # NAME::codes / ::step / ::zero / ::mask; tensor names of transformers models never contain it


class QuantizeError(BortifyError):
    """A quantised-weights file that cannot be read, or settings that cannot work; the message says the fix."""


@dataclass(frozen=True)
class QuantConfig:
    """How weights are quantised (docs/methods/05-compression.md §5).

    per_channel: one (min, step) per output channel (row) instead of one per tensor: more accurate, 5 bytes a row.
    drop_zeros: store a tensor sparse (bit mask + non-zero codes) when that is smaller than one byte a weight.
    zero_threshold: weights with |w| <= zero_threshold · step become exactly 0 (0.5 = plain rounding to the grid;
        larger values drop more small weights, trading accuracy for size).
    min_numel: tensors with fewer elements (biases, LayerNorm) and 1-D tensors stay float32.
    """

    per_channel: bool = True
    drop_zeros: bool = True
    zero_threshold: float = 0.5
    min_numel: int = 1024

    def __post_init__(self):
        if not (self.zero_threshold >= 0 and math.isfinite(self.zero_threshold)):
            raise QuantizeError(f"zero_threshold must be a number >= 0 (in quantisation steps; 0.5 = plain "
                                f"rounding), got {self.zero_threshold}.")
        if self.min_numel < 1:
            raise QuantizeError(f"min_numel must be >= 1, got {self.min_numel}.")


@dataclass
class TensorQ8:
    """One quantised tensor: codes (uint8, dense or the non-zero ones), per-row or per-tensor step and zero code."""

    shape: tuple[int, ...]
    codes: np.ndarray
    step: np.ndarray
    zero: np.ndarray
    mask: np.ndarray | None = None  # packed bits of the non-zero positions (sparse layout), else None

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        out = {f"{name}{SEP}codes": self.codes, f"{name}{SEP}step": self.step, f"{name}{SEP}zero": self.zero}
        if self.mask is not None:
            out[f"{name}{SEP}mask"] = self.mask
        return out

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays("").values())


@dataclass
class QuantizedWeights:
    """A quantised state dict: `quantized` tensors, `kept` float tensors, `aliases` (tied name -> stored name)."""

    quantized: dict[str, TensorQ8] = field(default_factory=dict)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    config: QuantConfig = field(default_factory=QuantConfig)

    def bytes_by_name(self) -> dict[str, int]:
        """Stored bytes of every tensor (codes + interval table + mask; float tensors at their size)."""
        sizes = {name: q.nbytes for name, q in self.quantized.items()}
        sizes.update({name: t.numel() * t.element_size() for name, t in self.kept.items()})
        return sizes

    def zero_fraction(self) -> float:
        """Fraction of the quantised weights that are exactly 0 after quantisation."""
        total = sum(math.prod(q.shape) for q in self.quantized.values())
        zeros = sum(_count_zeros(q) for q in self.quantized.values())
        return zeros / total if total else 0.0

    def num_quantized(self) -> int:
        return sum(math.prod(q.shape) for q in self.quantized.values())


def _count_zeros(q: TensorQ8) -> int:
    if q.mask is not None:
        return math.prod(q.shape) - q.codes.size
    zero = q.zero.reshape(-1, *([1] * (len(q.shape) - 1))) if q.zero.size > 1 else q.zero
    return int((q.codes == zero).sum())


# ---- the arithmetic ---------------------------------------------------------------------------------------------

def grid(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(step, zero code) of the 256-interval grid over [min(w, 0), max(w, 0)], per row or for the whole tensor."""
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    lo = np.minimum(rows.min(axis=1), 0.0).astype(np.float64)
    hi = np.maximum(rows.max(axis=1), 0.0).astype(np.float64)
    step = (hi - lo) / (LEVELS - 1)
    step[step == 0] = 1.0  # an all-zero row: any step works
    zero = np.clip(np.round(-lo / step), 0, LEVELS - 1)
    return step.astype(np.float32), zero.astype(np.uint8)


def quantize_array(w: np.ndarray, config: QuantConfig) -> TensorQ8:
    """One tensor to codes: k = clip(round(w / step) + z, 0, 255); |w| <= zero_threshold·step -> k = z (exact 0)."""
    w = np.asarray(w, dtype=np.float32)
    step, zero = grid(w, config.per_channel)
    rows = w.reshape(step.size, -1)
    s, z = step[:, None].astype(np.float64), zero[:, None].astype(np.float64)
    codes = np.clip(np.round(rows / s) + z, 0, LEVELS - 1)
    codes = np.where(np.abs(rows) <= config.zero_threshold * s, z, codes).astype(np.uint8)
    nonzero = codes != zero[:, None]
    q = TensorQ8(tuple(w.shape), codes.reshape(w.shape), step, zero)
    if config.drop_zeros:
        mask = np.packbits(nonzero.reshape(-1))
        sparse_bytes = mask.nbytes + int(nonzero.sum())
        if sparse_bytes < codes.size:  # dropping the zeros pays once more than 1 weight in 8 is 0
            q = TensorQ8(tuple(w.shape), codes[nonzero], step, zero, mask=mask)
    return q


def dequantize(q: TensorQ8) -> torch.Tensor:
    """w' = (k − z) · step (= min + k·step with min = −z·step), float32, in the original shape."""
    n_rows = q.step.size
    total = math.prod(q.shape)
    if q.mask is not None:
        nonzero = np.unpackbits(q.mask, count=total).astype(bool)
        codes = np.repeat(q.zero, total // n_rows).copy()  # every position at its row's zero code
        codes[nonzero] = q.codes
    else:
        codes = q.codes.reshape(-1)
    rows = codes.reshape(n_rows, -1).astype(np.float32) - q.zero[:, None].astype(np.float32)
    return torch.from_numpy((rows * q.step[:, None]).reshape(q.shape))


# ---- state dicts ---------------------------------------------------------------------------------------------

def should_quantize(name: str, tensor: torch.Tensor, config: QuantConfig) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2 and tensor.numel() >= config.min_numel


def quantize_state_dict(state: dict[str, torch.Tensor], config: QuantConfig | None = None) -> QuantizedWeights:
    """Quantise every weight matrix of a state dict; tied tensors (same storage) are stored once."""
    config = config or QuantConfig()
    out = QuantizedWeights(config=config)
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        if SEP in name:
            raise QuantizeError(f"tensor name {name!r} contains {SEP!r}, which the q8 format reserves.")
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype) if tensor.numel() else None
        if key is not None and key in seen:
            out.aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensor = tensor.detach().cpu()
        if should_quantize(name, tensor, config):
            out.quantized[name] = quantize_array(tensor.float().numpy(), config)
        else:
            out.kept[name] = tensor.contiguous()
    return out


def dequantize_state_dict(weights: QuantizedWeights) -> dict[str, torch.Tensor]:
    state = {name: dequantize(q) for name, q in weights.quantized.items()}
    state.update(weights.kept)
    for alias, target in weights.aliases.items():
        state[alias] = state[target]
    return state


def save_quantized(weights: QuantizedWeights, path: str | os.PathLike) -> Path:
    """One safetensors file (written atomically): the codes, interval tables, masks and float tensors."""
    from safetensors.numpy import save

    from bortify.utils import write_bytes_atomic

    arrays: dict[str, np.ndarray] = {}
    for name, q in weights.quantized.items():
        arrays.update(q.arrays(name))
    for name, t in weights.kept.items():
        arrays[name] = t.numpy()
    layout = {name: {"shape": list(q.shape), "sparse": q.mask is not None} for name, q in weights.quantized.items()}
    path = Path(path)
    metadata = {"format": FORMAT, "version": FORMAT_VERSION, "quantized": json_text(layout, what=str(path)),
                "aliases": json_text(weights.aliases, what=str(path)),
                "config": json_text(asdict(weights.config), what=str(path))}
    write_bytes_atomic(path, save(arrays, metadata=metadata))
    return path


def load_quantized(path: str | os.PathLike) -> QuantizedWeights:
    """Read a file written by `save_quantized` (refuses anything else, naming the file)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"{path} does not exist: quantise a checkpoint first (`bortify compress DIR`).")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise QuantizeError(f"{path} is not a readable safetensors file ({exc}); re-run `bortify compress`.") from exc
    if meta.get("format") != FORMAT:
        raise QuantizeError(f"{path} is not a bortify 8-bit weights file (format {meta.get('format')!r}, expected "
                            f"{FORMAT!r}); re-run `bortify compress`.")
    if meta.get("version") != FORMAT_VERSION:
        raise QuantizeError(f"{path} has format version {meta.get('version')}, this bortify reads {FORMAT_VERSION}; "
                            "re-run `bortify compress` with this version.")
    layout = json.loads(meta["quantized"])
    out = QuantizedWeights(aliases=json.loads(meta.get("aliases", "{}")),
                           config=QuantConfig(**json.loads(meta.get("config", "{}"))))
    for name, info in layout.items():
        out.quantized[name] = TensorQ8(tuple(info["shape"]), arrays.pop(f"{name}{SEP}codes"),
                                       arrays.pop(f"{name}{SEP}step"), arrays.pop(f"{name}{SEP}zero"),
                                       arrays.pop(f"{name}{SEP}mask") if info["sparse"] else None)
    out.kept = {name: torch.from_numpy(a.copy()) for name, a in arrays.items()}
    return out


# ---- models --------------------------------------------------------------------------------------------------

def auto_class(config):
    """The transformers Auto class that builds the architecture named in config.json."""
    import transformers

    arch = (getattr(config, "architectures", None) or [""])[0]
    for suffix, cls in (("ForSequenceClassification", transformers.AutoModelForSequenceClassification),
                        ("ForMaskedLM", transformers.AutoModelForMaskedLM)):
        if arch.endswith(suffix):
            return cls
    return transformers.AutoModel


def model_from_state(config, state: dict[str, torch.Tensor]):
    """A normal transformers model built from its config (no Hub, no custom code) with `state` loaded strictly."""
    model = auto_class(config).from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise QuantizeError(f"the quantised weights do not fit {type(model).__name__}: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}; re-run `bortify compress` on the checkpoint.")
    return model.eval()


def load_quantized_model(directory: str | os.PathLike, weights_file: str = Q8_FILE):
    """Rebuild the model saved by `bortify compress` (config.json + model.q8.safetensors in `directory`)."""
    from transformers import AutoConfig

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise QuantizeError(f"{directory} has no config.json; pass the output directory of `bortify compress`.")
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    return model_from_state(config, dequantize_state_dict(load_quantized(directory / weights_file)))


def quantize_model(model, config: QuantConfig | None = None) -> QuantizedWeights:
    return quantize_state_dict(model.state_dict(), config)


# ---- sizes ---------------------------------------------------------------------------------------------------

PARTS = ("embeddings", "encoder", "head")


def part_of(name: str) -> str:
    """Which part of a BERT a tensor belongs to: embeddings, encoder (the transformer layers) or head (the rest)."""
    if ".embeddings." in f".{name}":
        return "embeddings"
    if ".encoder." in f".{name}":
        return "encoder"
    return "head"


def bytes_by_part(sizes: dict[str, int]) -> dict[str, int]:
    out = dict.fromkeys(PARTS, 0)
    for name, n in sizes.items():
        out[part_of(name)] += n
    return out


def float_bytes_by_name(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Bytes of each tensor as float32 safetensors stores it (tied tensors once)."""
    seen, out = set(), {}
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape))
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = t.numel() * t.element_size()
    return out


def entropy_coded_sizes(path: str | os.PathLike) -> dict[str, int]:
    """How small general-purpose entropy coders get the file (the paper's 14x also counts entropy coding)."""
    data = Path(path).read_bytes()
    return {"zlib": len(zlib.compress(data, 9)), "lzma": len(lzma.compress(data, preset=6))}


def code_entropy_bits(weights: QuantizedWeights) -> float:
    """Empirical Shannon entropy of all stored codes, bits per quantised weight (the bound for coding the codes)."""
    counts = np.zeros(LEVELS, dtype=np.int64)
    total = 0
    for q in weights.quantized.values():
        counts += np.bincount(q.codes.reshape(-1), minlength=LEVELS)
        total += math.prod(q.shape)
    if not total:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum() * counts.sum() / total)
