"""Sentence embeddings as sentence-transformers computes them, and sentence-transformers folders written without it.

A sentence-transformers (ST) model is a list of modules in `modules.json`: Transformer (a transformers checkpoint,
`sentence_bert_config.json` holding max_seq_length) -> Pooling (`1_Pooling/config.json`) -> optional Dense
(`2_Dense/config.json` + `model.safetensors`, keys linear.weight / linear.bias) -> optional Normalize. bortify
writes that folder in the classic layout (module types `sentence_transformers.models.*`, boolean pooling keys) that
every sentence-transformers release since 2.x loads, so `SentenceTransformer(DIR).encode(texts)` returns
normalize(Dense(pool(encoder(texts)))) — the same function as `sentence_embedding` below, which training uses.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bortify.compatible_embeddings.losses import POOLINGS
from bortify.utils import BortifyError, write_bytes_atomic, write_json_atomic

MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
TRANSFORMER_CONFIG_FILE = "sentence_bert_config.json"
POOLING_DIR, DENSE_DIR, NORMALIZE_DIR = "1_Pooling", "2_Dense", "3_Normalize"
ENCODER_DIR = "0_Transformer"  # the encoder inside a release folder whose root holds another model (a classifier)
_TYPES = {"transformer": "sentence_transformers.models.Transformer", "pooling": "sentence_transformers.models.Pooling",
          "dense": "sentence_transformers.models.Dense", "normalize": "sentence_transformers.models.Normalize"}
_POOLING_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
                 "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens"}
DEFAULT_MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's


class SentenceFolderError(BortifyError):
    """A sentence-transformers folder bortify cannot read (pooling it does not implement, broken files)."""


@dataclass
class SentenceSpec:
    """How token states become a sentence embedding: pooling, optional projection width, normalisation."""

    pooling: str = "mean"
    normalize: bool = True
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise SentenceFolderError(f"pooling {self.pooling!r} is not supported; bortify implements "
                                      f"{sorted(POOLINGS)}.")


def sentence_embedding(hidden: torch.Tensor, attention_mask: torch.Tensor | None, spec: SentenceSpec,
                       projection: nn.Module | None = None) -> torch.Tensor:
    """normalize(projection(pool(hidden))) — sentence-transformers' Pooling -> Dense -> Normalize."""
    emb = POOLINGS[spec.pooling](hidden, attention_mask)
    if projection is not None:
        emb = projection(emb)
    return F.normalize(emb, dim=-1) if spec.normalize else emb


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SentenceFolderError(f"{path} is not readable JSON ({exc}); re-write the sentence-transformers folder.") \
            from exc


def _modules(folder: Path) -> list[dict]:
    mods = _read_json(folder / MODULES_FILE)
    if not isinstance(mods, list) or not all(isinstance(m, dict) and "type" in m for m in mods):
        raise SentenceFolderError(f"{folder / MODULES_FILE} is not a list of modules with a 'type'.")
    return mods


def _kind(module_type: str) -> str:
    name = module_type.rsplit(".", 1)[-1].lower()
    return name if name in _TYPES else "other"


def read_sentence_folder(folder: str | Path) -> tuple[str, SentenceSpec, nn.Linear | None] | None:
    """(encoder sub-path, spec, Dense projection or None) of a sentence-transformers folder; None without
    modules.json. Modules other than Transformer / Pooling / Dense (identity activation) / Normalize are refused."""
    folder = Path(folder)
    if not (folder / MODULES_FILE).is_file():
        return None
    encoder, pooling, normalize, projection, max_len = "", "mean", False, None, DEFAULT_MAX_SEQ_LENGTH
    for mod in _modules(folder):
        kind, sub = _kind(mod["type"]), folder / mod.get("path", "")
        if kind == "transformer":
            encoder = mod.get("path", "")
            if (sub / TRANSFORMER_CONFIG_FILE).is_file():
                max_len = int(_read_json(sub / TRANSFORMER_CONFIG_FILE).get("max_seq_length") or max_len)
        elif kind == "pooling":
            pooling = _pooling_mode(_read_json(sub / "config.json"), sub)
        elif kind == "dense":
            projection = _load_dense(sub)
        elif kind == "normalize":
            normalize = True
        else:
            raise SentenceFolderError(f"{folder / MODULES_FILE} lists module {mod['type']!r}; bortify reads only "
                                      "Transformer, Pooling, Dense and Normalize.")
    return encoder, SentenceSpec(pooling, normalize, max_len), projection


def _pooling_mode(cfg: dict, where: Path) -> str:
    if "pooling_mode" in cfg:  # sentence-transformers >= 6 writes one key
        mode = cfg["pooling_mode"]
        mode = mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
    else:
        on = [name for name, key in _POOLING_KEYS.items() if cfg.get(key)]
        mode = on[0] if len(on) == 1 else on
    if mode not in POOLINGS:
        raise SentenceFolderError(f"{where}: pooling {mode!r} is not supported; bortify implements {sorted(POOLINGS)}.")
    return mode


def _load_dense(sub: Path) -> nn.Linear:
    import safetensors.torch

    cfg = _read_json(sub / "config.json")
    act = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity"))
    if not act.endswith("Identity"):
        raise SentenceFolderError(f"{sub}: Dense activation {act} is not supported (bortify writes identity).")
    weights = sub / "model.safetensors"
    if not weights.is_file():
        raise SentenceFolderError(f"{sub} has no model.safetensors (bortify loads safetensors only).")
    layer = nn.Linear(int(cfg["in_features"]), int(cfg["out_features"]), bias=bool(cfg.get("bias", True)))
    state = safetensors.torch.load_file(str(weights))
    layer.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    return layer


def write_sentence_folder(folder: str | Path, *, hidden_size: int, spec: SentenceSpec,
                          projection: nn.Linear | None = None, encoder_path: str = "") -> list[str]:
    """Write the sentence-transformers files of `folder`, whose `encoder_path` sub-folder ("" = the folder itself)
    holds the transformers checkpoint. Returns the files written (relative paths). Each file is written atomically."""
    import safetensors.torch

    folder = Path(folder)
    mods = [{"idx": 0, "name": "0", "path": encoder_path, "type": _TYPES["transformer"]},
            {"idx": 1, "name": "1", "path": POOLING_DIR, "type": _TYPES["pooling"]}]
    pooling = {"word_embedding_dimension": hidden_size,
               **{key: name == spec.pooling for name, key in _POOLING_KEYS.items()}}
    files = {f"{POOLING_DIR}/config.json": pooling,
             f"{encoder_path}/{TRANSFORMER_CONFIG_FILE}".lstrip("/"): {"max_seq_length": spec.max_seq_length,
                                                                      "do_lower_case": False}}
    if projection is not None:
        if projection.in_features != hidden_size:
            raise ValueError(f"projection takes {projection.in_features} features, the encoder gives {hidden_size}.")
        mods.append({"idx": len(mods), "name": str(len(mods)), "path": DENSE_DIR, "type": _TYPES["dense"]})
        files[f"{DENSE_DIR}/config.json"] = {"in_features": projection.in_features,
                                             "out_features": projection.out_features,
                                             "bias": projection.bias is not None,
                                             "activation_function": "torch.nn.modules.linear.Identity"}
    if spec.normalize:
        mods.append({"idx": len(mods), "name": str(len(mods)), "path": NORMALIZE_DIR, "type": _TYPES["normalize"]})
        # sentence-transformers needs no config here; a file keeps the folder in a Hub repository
        files[f"{NORMALIZE_DIR}/config.json"] = {}
    files[ST_CONFIG_FILE] = {"__version__": {"bortify": _bortify_version()}, "prompts": {}, "default_prompt_name": None,
                             "similarity_fn_name": "cosine" if spec.normalize else "dot"}
    for rel, obj in files.items():
        write_json_atomic(folder / rel, obj)
    written = list(files)
    if projection is not None:
        # sentence-transformers' Dense keeps its nn.Linear as `linear`: keys linear.weight / linear.bias
        state = {f"linear.{k}": v.detach().cpu().contiguous() for k, v in projection.state_dict().items()}
        write_bytes_atomic(folder / DENSE_DIR / "model.safetensors", safetensors.torch.save(state, {"format": "pt"}))
        written.append(f"{DENSE_DIR}/model.safetensors")
    write_json_atomic(folder / MODULES_FILE, mods)  # last: a folder with modules.json is complete
    return [*written, MODULES_FILE]


def _bortify_version() -> str:
    try:
        from importlib.metadata import version

        return version("bortify")
    except Exception:  # not installed as a distribution (a source checkout)
        return "unknown"


def copy_sentence_folder(src: str | Path, dst: str | Path, encoder_files: Sequence[str],
                         encoder_path: str = ENCODER_DIR) -> list[str]:
    """Copy `src`'s sentence-transformers part into the release folder `dst`, its encoder (the checkpoint files of
    `src` matching the globs `encoder_files`) into `dst/0_Transformer` — the release's own root holds the fine-tuned
    model, whose encoder has moved away from the one the projection was trained with. `encoder_path=""`: `dst`'s root
    already holds that encoder (the release is the pretrained student itself); nothing else is copied. Returns the
    files written."""
    src, dst = Path(src), Path(dst)
    read = read_sentence_folder(src)
    if read is None:
        return []
    encoder, spec, projection = read
    enc_src = src / encoder
    copied = []
    if encoder_path:
        (dst / encoder_path).mkdir(parents=True, exist_ok=True)
        for pattern in encoder_files:
            for path in sorted(enc_src.glob(pattern)):
                if path.is_file():
                    shutil.copy2(path, dst / encoder_path / path.name)
                    copied.append(f"{encoder_path}/{path.name}")
    hidden = _read_json(src / POOLING_DIR / "config.json")
    width = hidden.get("word_embedding_dimension", hidden.get("embedding_dimension"))
    return copied + write_sentence_folder(dst, hidden_size=int(width), spec=spec, projection=projection,
                                          encoder_path=encoder_path)


class SentenceEncoder:
    """texts -> (N, D) sentence embeddings of a transformers encoder, pooled / projected / normalised by `spec`."""

    def __init__(self, encoder: nn.Module, tokenizer, spec: SentenceSpec, projection: nn.Module | None = None,
                 batch_size: int = 64):
        self.encoder, self.tokenizer, self.spec = encoder, tokenizer, spec
        self.projection, self.batch_size = projection, batch_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        was_training = self.encoder.training
        self.encoder.eval()
        device = next(self.encoder.parameters()).device
        out = []
        max_len = min(self.spec.max_seq_length, _max_positions(self.encoder))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        for start in range(0, len(texts), self.batch_size):
            chunk = [texts[i] for i in order[start:start + self.batch_size]]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=max_len,
                                   return_tensors="pt").to(device)
            hidden = self.encoder(**batch, return_dict=True).last_hidden_state
            out.append(sentence_embedding(hidden, batch["attention_mask"], self.spec, self.projection).float().cpu())
        self.encoder.train(was_training)
        if not out:
            return torch.zeros(0, 0)
        result = torch.empty_like(torch.cat(out))
        result[torch.as_tensor(order)] = torch.cat(out)
        return result


def _max_positions(encoder: nn.Module) -> int:
    return int(getattr(getattr(encoder, "config", None), "max_position_embeddings", 512) or 512)


def load_sentence_encoder(path: str | Path, *, default_spec: SentenceSpec | None = None,
                          batch_size: int = 64) -> SentenceEncoder:
    """A SentenceEncoder from a sentence-transformers folder (its modules), or from a plain transformers checkpoint
    with `default_spec` (mean pooling + normalisation unless given). Weights load as safetensors only."""
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    read = read_sentence_folder(path)
    if read:
        encoder_dir, spec, projection = path / read[0], read[1], read[2]
    else:
        encoder_dir, spec, projection = path, default_spec or SentenceSpec(), None
    model = AutoModel.from_pretrained(str(encoder_dir), use_safetensors=True).eval()
    from bortify.utils import check_finite_weights

    check_finite_weights(model, f"The sentence encoder {str(path)!r} ({encoder_dir})")
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    return SentenceEncoder(model, tokenizer, spec, projection, batch_size)

