"""The search space: candidate ⟨D, A, H, I⟩ architectures around a source model (docs/methods/01-extraction.md §1).

The source gives everything that is not searched: vocabulary, positions, token types, LayerNorm eps,
activation — and the maximum point T (its own shape). Only its config is loaded (AutoConfig), never
its weights, unless the error estimator slices the teacher.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from transformers import AutoConfig, BertConfig

from bortify.extraction.costs import Shape

# model_type values whose configs BertConfig can express (same block layout; roberta/xlm-r/camembert
# only differ in position offset and vocabulary; electra's generator/discriminator are BERT blocks).
BERT_SHAPED = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "bort", "data2vec-text", "ernie", "megatron-bert")
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings")


class SpaceError(ValueError):
    """The source or the search space cannot be used; the message says what to change."""


@dataclass(frozen=True)
class InlineSource:
    """Source shape stated in the recipe (offline use, e.g. BERT-large without the Hub)."""

    layers: int | None = None
    heads: int | None = None
    hidden: int | None = None
    intermediate: int | None = None
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    type_vocab_size: int | None = None
    layer_norm_eps: float | None = None

    def complete(self) -> bool:
        return None not in (self.layers, self.heads, self.hidden, self.intermediate, self.vocab_size)

    def any(self) -> bool:
        return any(v is not None for v in self.__dict__.values())


def _load_config(source: str):
    from bortify.resources import resolve_model

    path = resolve_model(source)
    p = Path(path)
    try:
        if p.is_file() and p.suffix == ".json":
            data = json.loads(p.read_text())
            model_type = data.get("model_type", "bert")
            if model_type not in BERT_SHAPED:
                raise SpaceError(f"Source {source!r} has model_type={model_type!r}, not a BERT-shaped model "
                                 f"(supported: {', '.join(BERT_SHAPED)}).")
            return BertConfig(**{k: v for k, v in data.items() if k not in ("model_type", "architectures")}), model_type
        if p.exists() and not p.is_dir():
            raise SpaceError(f"Source {source!r} is a file but not a config.json; give a checkpoint directory, its "
                             "config.json, a Hub name or an embedded:... default.")
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except SpaceError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise SpaceError(
            f"Could not load the config of source {source!r}: {exc}\n"
            "Give a Hub name (needs the Hub), a local checkpoint directory or config.json, an embedded:... default "
            "(bortify resources list), or state the source shape inline (source_layers, source_heads, "
            "source_hidden, source_intermediate, source_vocab_size)."
        ) from exc
    return config, getattr(config, "model_type", "?")


def load_source_config(source: str, inline: InlineSource | None = None) -> BertConfig:
    """The source as a plain BertConfig. A complete inline shape skips loading (works offline)."""
    inline = inline or InlineSource()
    if inline.complete():
        config, model_type = BertConfig(), "bert"
    else:
        if not source:
            raise SpaceError("No source: set `source` (Hub name, local path, embedded:...) or the inline shape "
                             "(source_layers, source_heads, source_hidden, source_intermediate, source_vocab_size).")
        config, model_type = _load_config(source)
        if model_type not in BERT_SHAPED or any(not hasattr(config, k) for k in _REQUIRED):
            raise SpaceError(
                f"Source {source!r} (model_type={model_type!r}) is not BERT-shaped: extraction needs an encoder with "
                f"{', '.join(_REQUIRED)} ({', '.join(BERT_SHAPED)})."
            )
        if getattr(config, "embedding_size", config.hidden_size) != config.hidden_size:
            raise SpaceError(f"Source {source!r} factorises its embeddings (embedding_size != hidden_size); "
                             "a plain BertConfig cannot express it.")
        fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures", "auto_map")}
        config = BertConfig(**fields)
    overrides = {
        "num_hidden_layers": inline.layers, "num_attention_heads": inline.heads, "hidden_size": inline.hidden,
        "intermediate_size": inline.intermediate, "vocab_size": inline.vocab_size,
        "max_position_embeddings": inline.max_position_embeddings, "type_vocab_size": inline.type_vocab_size,
        "layer_norm_eps": inline.layer_norm_eps,
    }
    for k, v in overrides.items():
        if v is not None:
            setattr(config, k, v)
    for k in _REQUIRED + ("type_vocab_size",):
        if not isinstance(getattr(config, k), int) or getattr(config, k) <= 0:
            raise SpaceError(f"Source {k}={getattr(config, k)!r} must be a positive integer.")
    if config.hidden_size % config.num_attention_heads:
        raise SpaceError(f"Source hidden size {config.hidden_size} is not divisible by its {config.num_attention_heads} heads.")
    return config


@dataclass
class Space:
    source: BertConfig
    candidates: list[Shape]
    dropped_indivisible: int
    dropped_larger: int

    @property
    def maximum_point(self) -> Shape:
        """T: the source's own shape (larger than every kept candidate in p and i)."""
        return Shape.from_config(self.source)


def _check_sizes(name: str, values: Sequence[int]) -> list[int]:
    values = list(values or [])
    if not values:
        raise SpaceError(f"The search space is empty: give at least one value for {name} (e.g. in the recipe's extract section).")
    bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v <= 0]
    if bad:
        raise SpaceError(f"{name} must be positive integers; got {bad}.")
    return sorted(set(values))


def build_space(source: BertConfig, depths: Sequence[int], heads: Sequence[int], hidden_sizes: Sequence[int],
                intermediate_sizes: Sequence[int]) -> Space:
    """Every ⟨D, A, H, I⟩ of the product with H % A == 0 and no size above the source's.

    Indivisible combinations are dropped and counted (Bort: 360 -> 300); so are candidates larger than the
    source in any dimension (they could not be sliced from it and would give negative W terms).
    """
    D_ = _check_sizes("depths (D)", depths)
    A_ = _check_sizes("heads (A)", heads)
    H_ = _check_sizes("hidden_sizes (H)", hidden_sizes)
    I_ = _check_sizes("intermediate_sizes (I)", intermediate_sizes)
    source_point = Shape.from_config(source)
    kept, indivisible, larger = [], 0, 0
    for D, A, H, I in itertools.product(D_, A_, H_, I_):  # noqa: E741
        if H % A:
            indivisible += 1
            continue
        if D > source_point.D or A > source_point.A or H > source_point.H or I > source_point.I:
            larger += 1
            continue
        kept.append(Shape(D, A, H, I, source_point.vocab_size, source_point.max_position_embeddings,
                          source_point.type_vocab_size))
    if not kept:
        raise SpaceError(
            f"The search space is empty after dropping {indivisible} candidate(s) with H not divisible by A and "
            f"{larger} larger than the source (D{source_point.D} A{source_point.A} H{source_point.H} I{source_point.I}). Choose sizes no larger than the source "
            "with H divisible by A."
        )
    return Space(source=source, candidates=kept, dropped_indivisible=indivisible, dropped_larger=larger)
