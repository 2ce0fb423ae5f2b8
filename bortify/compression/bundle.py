"""The offline bundle: one directory that classifies text with no Hub and no tokenizer files (docs/methods/05-compression.md §5).

    bundle/
      bundle.json                     format, labels, max_length, the files with their sha256
      config.json                     the model's transformers config (pad_token_id in the hashed id order)
      model.q8.safetensors[.xz]       8-bit weights (bortify.compression.quantize), lzma-coded by default
      tokenizer/vocab.phash           the perfect-hashed vocabulary (bortify.compression.phash): no token strings
      tokenizer/hashed_tokenizer.json WordPiece settings (bortify.compression.hashed_tokenizer)

The hashed vocabulary gives every token a new id (its hash index); the embedding rows are reordered once, when
the bundle is written (row i of the new table = row permutation[i] of the old), so the model sees the same vectors.

Loading imports torch, numpy, mmh3, json, lzma, safetensors and transformers (to build the architecture from
config.json, locally: no Hub call, no remote code) — no tokenizer library, no network:

    >>> from bortify.compression.bundle import OfflineBundle
    >>> clf = OfflineBundle.load("runs/demo/compress/bundle")
    >>> clf.predict(["A gripping, beautifully acted film."])      # ['fresh']
"""

from __future__ import annotations

import json
import lzma
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bortify.compression.quantize import (Q8_FILE, QuantConfig, QuantizeError, dequantize_state_dict,
                                          load_quantized, model_from_state, quantize_state_dict, save_quantized)
from bortify.utils import sha256_file, write_bytes_atomic, write_json_atomic

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "bortify-offline-bundle"
BUNDLE_VERSION = 1
TOKENIZER_DIR = "tokenizer"
XZ = ".xz"


class BundleError(QuantizeError):
    """A bundle that cannot be written or read; the message says what to do."""


def input_embedding_name(model) -> str:
    """The state-dict key of the input (word) embedding matrix."""
    weight = model.get_input_embeddings().weight
    for name, param in model.named_parameters():
        if param is weight:
            return name
    raise BundleError(f"{type(model).__name__} has no input embedding parameter to reorder.")


def permuted_state(model, permutation: np.ndarray) -> dict[str, torch.Tensor]:
    """The model's state dict with the word-embedding rows in the hashed vocabulary's order (new id -> old id).
    Rows the vocabulary does not cover (a table larger than the vocabulary) follow, in their old order."""
    if model.get_output_embeddings() is not None:
        raise BundleError(f"{type(model).__name__} has an output embedding (an MLM head): the offline bundle holds "
                          "a task model (the output of `bortify finetune`).")
    state = dict(model.state_dict())
    name = input_embedding_name(model)
    table = state[name]
    perm = np.asarray(permutation, dtype=np.int64)
    if perm.size > table.shape[0] or (perm.size and perm.max() >= table.shape[0]):
        raise BundleError(f"the tokenizer's vocabulary ({perm.size} tokens, ids up to {perm.max()}) does not fit the "
                          f"model's {table.shape[0]} embedding rows: tokenizer and model do not belong together.")
    rest = np.setdiff1d(np.arange(table.shape[0]), perm)
    state[name] = table[torch.from_numpy(np.concatenate([perm, rest]))].clone()
    return state


def write_bundle(model, tokenizer_dir: str | os.PathLike, directory: str | os.PathLike, *,
                 quant: QuantConfig | None = None, coding: str = "lzma", max_length: int = 128,
                 text_columns: Sequence[str] = ("text",)) -> dict[str, int]:
    """Write the bundle of a task model whose tokenizer files are in `tokenizer_dir`; returns bytes per file."""
    from bortify.compression.hashed_tokenizer import HashedWordPiece

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = HashedWordPiece.from_tokenizer_files(tokenizer_dir)
    tokenizer.save(out / TOKENIZER_DIR)
    weights = quantize_state_dict(permuted_state(model, tokenizer.permutation), quant)
    q8 = save_quantized(weights, out / Q8_FILE)
    if coding == "lzma":
        write_bytes_atomic(out / (Q8_FILE + XZ), lzma.compress(q8.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
        q8.unlink()
        q8 = out / (Q8_FILE + XZ)
    config = model.config.to_dict()
    config["pad_token_id"] = tokenizer.pad_token_id
    write_json_atomic(out / "config.json", config)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    write_json_atomic(out / BUNDLE_FILE, {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "weights": q8.name, "coding": coding,
        "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
        "text_columns": list(text_columns), "max_length": max_length,
        "files": {f: sha256_file(out / f) for f in files},
        "load": "from bortify.compression.bundle import OfflineBundle; OfflineBundle.load(DIR).predict(texts)"})
    return {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}


def read_manifest(directory: Path) -> dict:
    path = directory / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{directory} is not an offline bundle (no {BUNDLE_FILE}); write one with "
                          "`bortify compress DIR --bundle true`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); write the bundle again.") from exc
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{path} is not a version-{BUNDLE_VERSION} {BUNDLE_FORMAT} manifest; write the bundle again "
                          "with this bortify.")
    for name, digest in manifest.get("files", {}).items():
        if not (directory / name).is_file() or sha256_file(directory / name) != digest:
            raise BundleError(f"{directory / name} is missing or changed since the bundle was written (sha256 "
                              "mismatch); copy the whole bundle directory again.")
    return manifest


def load_weights(path: Path):
    """The bundle's QuantizedWeights, decoding the lzma layer first when the file has one."""
    if path.suffix != XZ:
        return load_quantized(path)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bortify-bundle-") as tmp:
        raw = Path(tmp) / path.stem
        raw.write_bytes(lzma.decompress(path.read_bytes()))
        return load_quantized(raw)


@dataclass
class OfflineBundle:
    """A loaded bundle: the task model (float32 weights rebuilt from 8 bits) and its hashed tokenizer."""

    model: torch.nn.Module
    tokenizer: object
    labels: list[str]
    max_length: int

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "OfflineBundle":
        from transformers import BertConfig, PretrainedConfig

        from bortify.compression.hashed_tokenizer import HashedWordPiece

        directory = Path(directory)
        manifest = read_manifest(directory)
        data = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        config_class = BertConfig if data.get("model_type") == "bert" else PretrainedConfig
        config = config_class.from_dict(data)
        model = model_from_state(config, dequantize_state_dict(load_weights(directory / manifest["weights"])))
        return cls(model, HashedWordPiece.from_dir(directory / TOKENIZER_DIR), list(manifest["labels"]),
                   int(manifest["max_length"]))

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return self.tokenizer(list(texts), list(pairs) if pairs is not None else None, padding=True,
                              truncation=True, max_length=self.max_length, return_tensors="np")

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.encode(texts[start:start + batch_size], pairs[start:start + batch_size] if pairs else None)
            with torch.no_grad():
                out.append(self.model(**{k: torch.from_numpy(np.asarray(v, dtype=np.int64))
                                         for k, v in enc.items()}).logits.numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *, batch_size: int = 64) -> list[str]:
        return [self.labels[i] for i in self.logits(texts, pairs, batch_size=batch_size).argmax(-1)]
