"""Text generators for Agora: new texts near a dev mistake, never the mistake itself (docs/methods/03-agora.md §3).

The paper does not say how its generator works. Our choice (configurable): k variants per text, each replacing
a fraction (10-15%) of its word tokens by one of their nearest neighbours, by cosine similarity, in an input-
embedding table (the labeler's by default). Neighbours are restricted to "word-like" vocabulary entries of the
same kind (whole word vs `##` continuation), so special and unused tokens never appear. Duplicates of the
original, of each other and of any text in `exclude` (train and dev) are dropped.

A generator is any callable `(text, k, rng) -> list[str]`; `generate_rows` applies one to every text column
of the mistaken rows (sentence pairs: both sides are varied).
"""

from __future__ import annotations

import random
import re
from typing import Callable, Iterable

import torch

Generator = Callable[[str, int, random.Random], list]

_WORDLIKE = re.compile(r"^(##)?[a-z][a-z'\-]*$")


class NearestNeighbourSubstitution:
    """Replace ~`rate` of the word tokens of a text by one of their `neighbours` nearest tokens (cosine)."""

    def __init__(self, tokenizer, embeddings: torch.Tensor, *, rate: float = 0.15, neighbours: int = 8,
                 max_tries: int = 6):
        if embeddings.shape[0] < len(tokenizer.get_vocab()) - len(getattr(tokenizer, "added_tokens_decoder", {})):
            raise ValueError(f"Embedding table has {embeddings.shape[0]} rows but the tokenizer has "
                             f"{len(tokenizer.get_vocab())} tokens: they must come from the same model.")
        self.tokenizer = tokenizer
        self.rate = rate
        self.neighbours = neighbours
        self.max_tries = max_tries
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        n = embeddings.shape[0]
        self.wordlike = torch.zeros(n, dtype=torch.bool)
        self.continuation = torch.zeros(n, dtype=torch.bool)
        for token, idx in vocab.items():
            if idx < n and idx not in special and _WORDLIKE.match(token.lower()) and token.lower() == token:
                self.wordlike[idx] = True
                self.continuation[idx] = token.startswith("##")
        emb = embeddings.detach().float()
        self.normed = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        self._cache: dict[int, list[int]] = {}

    def nearest(self, token_id: int) -> list[int]:
        """The `neighbours` most cosine-similar word-like tokens of the same kind (never the token itself)."""
        if token_id not in self._cache:
            sims = self.normed @ self.normed[token_id]
            allowed = self.wordlike & (self.continuation == self.continuation[token_id])
            sims = sims.masked_fill(~allowed, float("-inf"))
            sims[token_id] = float("-inf")
            top = torch.topk(sims, self.neighbours)
            self._cache[token_id] = [int(i) for i, s in zip(top.indices, top.values) if torch.isfinite(s)]
        return self._cache[token_id]

    def _variant(self, ids: list[int], rng: random.Random) -> list[int]:
        # Whole words only (a word-like token that is not a `##` piece and not followed by one), so a
        # substitution never glues pieces of two words together ("laughs" + "##niest").
        def whole(i):
            t = ids[i]
            nxt = ids[i + 1] if i + 1 < len(ids) else None
            return (t < len(self.wordlike) and bool(self.wordlike[t]) and not bool(self.continuation[t])
                    and not (nxt is not None and nxt < len(self.continuation) and bool(self.continuation[nxt])))
        positions = [i for i in range(len(ids)) if whole(i)]
        if not positions:
            return ids
        m = max(1, round(self.rate * len(positions)))
        new = list(ids)
        for pos in rng.sample(positions, min(m, len(positions))):
            options = self.nearest(ids[pos])
            if options:
                new[pos] = rng.choice(options)
        return new

    def __call__(self, text: str, k: int, rng: random.Random) -> list[str]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        original = self.tokenizer.decode(ids, clean_up_tokenization_spaces=True)
        seen = {text, original}
        out = []
        for _ in range(k * self.max_tries):
            if len(out) == k:
                break
            candidate = self.tokenizer.decode(self._variant(ids, rng), clean_up_tokenization_spaces=True)
            if candidate not in seen:
                seen.add(candidate)
                out.append(candidate)
        return out


def generate_rows(rows: list[dict], text_columns: list[str], generator: Generator, k: int, rng: random.Random,
                  exclude: Iterable = ()) -> list[dict]:
    """k new rows (text columns only, no label) per input row; none equal to an input row or to `exclude`
    (keys: a text, or a tuple of texts for pairs)."""
    banned = set(exclude)
    out = []
    for row in rows:
        variants = [generator(row[c], k, rng) for c in text_columns]
        for j in range(k):
            new = {}
            for c, vs in zip(text_columns, variants):
                new[c] = vs[j] if j < len(vs) else row[c]  # a side with too few variants stays as it was
            key = tuple(new[c] for c in text_columns)
            key = key[0] if len(key) == 1 else key
            if key in banned or all(new[c] == row[c] for c in text_columns):
                continue
            banned.add(key)
            out.append(new)
    return out


# The generators `AgoraArguments.generator` can name (their descriptions: arguments.GENERATORS), each built as
# cls(tokenizer, input_embeddings, rate=..., neighbours=...).
GENERATORS: dict[str, type] = {"nn-substitution": NearestNeighbourSubstitution}
