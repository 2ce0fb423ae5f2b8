"""Cost surrogates of a BERT architecture: parameter size p(ξ), effective size, operation count i(ξ),
and (our addition) measured CPU latency. docs/methods/01-extraction.md §1 "Surrogates".

All closed forms take a `Shape` (D, A, H, I plus the source's vocabulary/positions/token types), so
they cost nothing to evaluate over a whole search space; `parameter_count` is tested to equal
`BertModel(config).num_parameters()` over all 300 Bort candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import BertConfig, BertModel


@dataclass(frozen=True)
class Shape:
    """⟨D, A, H, I⟩ plus the table sizes that come from the source config."""

    D: int  # depth: num_hidden_layers
    A: int  # attention heads
    H: int  # hidden size
    I: int  # intermediate (feed-forward) size  # noqa: E741
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2

    @classmethod
    def from_config(cls, config) -> "Shape":
        return cls(
            D=config.num_hidden_layers, A=config.num_attention_heads, H=config.hidden_size,
            I=config.intermediate_size, vocab_size=config.vocab_size,
            max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
        )

    def key(self) -> str:
        return f"D{self.D}-A{self.A}-H{self.H}-I{self.I}"

    def dims(self) -> dict[str, int]:
        return {"D": self.D, "A": self.A, "H": self.H, "I": self.I}


def embedding_parameters(s: Shape) -> int:
    """V·H + P·H + T·H + 2H (word, position, token-type tables and the embedding LayerNorm)."""
    return (s.vocab_size + s.max_position_embeddings + s.type_vocab_size) * s.H + 2 * s.H


def layer_parameters(H: int, I: int) -> int:  # noqa: E741
    """One transformer block: 4(H²+H) attention projections, (H·I+I)+(I·H+H) feed-forward, 4H two LayerNorms.
    A does not appear: heads split H, they do not add weights (docs/methods/01-extraction.md §1)."""
    return 4 * (H * H + H) + (H * I + I) + (I * H + H) + 4 * H


def effective_parameter_count(s: Shape) -> int:
    """Encoder only, D·layer — Bort's "effective size" (no embeddings, no pooler)."""
    return s.D * layer_parameters(s.H, s.I)


def parameter_count(s: Shape, pooler: bool = True) -> int:
    """p(ξ): closed form of `BertModel(config).num_parameters()` (with its pooler H²+H by default)."""
    return embedding_parameters(s) + effective_parameter_count(s) + ((s.H * s.H + s.H) if pooler else 0)


def operation_count(s: Shape, seq_len: int) -> int:
    """i(ξ): multiply-adds of the encoder for one sequence of length L (hardware-independent).

    Per layer: Q, K, V, O projections 4·L·H²; feed-forward 2·L·H·I; attention scores QKᵀ and the
    weighted sum of V, L²·H each; softmax ~A·L² (so A matters, a little). Embedding look-ups are free.
    docs/methods/01-extraction.md §1: i(ξ) ≈ D·(4H² + 2HI + 2LH) per token; this is that times L plus the softmax term.
    """
    L = seq_len
    per_layer = 4 * L * s.H * s.H + 2 * L * s.H * s.I + 2 * L * L * s.H + s.A * L * L
    return s.D * per_layer


def bert_config(s: Shape, base: BertConfig | None = None) -> BertConfig:
    """A plain BertConfig with the shape's sizes; other settings (activation, eps, dropout) from `base`."""
    fields = base.to_dict() if base is not None else {}
    for k in ("architectures", "_name_or_path", "transformers_version", "model_type", "auto_map"):
        fields.pop(k, None)
    fields.update(
        num_hidden_layers=s.D, num_attention_heads=s.A, hidden_size=s.H, intermediate_size=s.I,
        vocab_size=s.vocab_size, max_position_embeddings=s.max_position_embeddings, type_vocab_size=s.type_vocab_size,
    )
    return BertConfig(**fields)


def measure_latency(config, batch_size: int = 8, seq_len: int = 128, repeats: int = 5, warmup: int = 1,
                    seed: int = 0) -> float:
    """Median seconds of one forward pass of a random-weight `BertModel(config)` on CPU, fp32, at `batch_size` ×
    `seq_len` random token ids, after `warmup` untimed passes, at torch's current thread count.

    Timed by bortify's one latency timer (bortify.timing.time_call: torch.utils.benchmark's blocked_autorange,
    `repeats` rounds, median per-call time), the same as the card and `bortify bench` (docs/methods/05-compression.md §5).
    `config` is a BertConfig (or any config AutoModel-free BertModel accepts) or a `Shape`.
    Random weights are fine for latency: dense kernels do not depend on the values.
    """
    from bortify.timing import time_call

    if isinstance(config, Shape):
        config = bert_config(config)
    if batch_size < 1 or seq_len < 1 or repeats < 1:
        raise ValueError(f"batch_size, seq_len and repeats must be >= 1 (got {batch_size}, {seq_len}, {repeats}).")
    if seq_len > config.max_position_embeddings:
        raise ValueError(f"seq_len={seq_len} exceeds max_position_embeddings={config.max_position_embeddings}.")
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    mask = torch.ones_like(ids)

    def forward():
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)

    return time_call(forward, threads=0, rounds=repeats, min_run_time=0.0, warmup=warmup).median_s
