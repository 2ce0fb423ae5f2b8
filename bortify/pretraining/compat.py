"""`bortify pretrain --compatible_with OLD`: backward-compatible embeddings during pretraining (BCT; docs/methods.md §4).

Besides the KD loss, each step embeds a batch of clean corpus sentences with the student — Dense(mean_pool(student))
through a learned projection to the old model's width, normalised like the old model — and pulls it onto the OLD
model's sentence embedding of the same text (`bortify.compat.losses.compatibility_loss`, weight `w_compat`).

- The old embeddings are computed ONCE, before training, for the sentences the run will use (`CompatData`), and
  travel with each batch as `compat_target`: the old model is never run inside the training loop.
- The sentences are the corpus's training texts (the held-out texts stay out), one text per example, truncated to
  --seq_len: the index the student must join holds single texts, not the packed blocks the MLM loss sees.
- `CompatCollator` wraps the MLM collator and adds `compat_input_ids` / `compat_attention_mask` / `compat_target`,
  cycling through the sentences in a seeded order (offset by the process index, so DDP ranks differ).
- At the end the run writes the sentence-transformers files (`bortify.compat.sentence`) next to the checkpoint and
  runs BCT's compatibility test on a labelled set (`compat_eval_dataset`, default embedded:rotten-tomatoes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from bortify.compat.metric import run_compatibility_test, split_gallery_queries
from bortify.compat.sentence import SentenceEncoder, SentenceSpec, load_sentence_encoder, read_sentence_folder


@dataclass
class CompatData:
    """The compatibility training set: the student's token ids of each text and the old model's embedding of it."""

    input_ids: list[list[int]]
    targets: torch.Tensor  # (N, D_old), computed once
    spec: SentenceSpec  # the old model's pooling / normalisation (the student's embedding follows it)
    seconds: float = 0.0  # time spent computing the targets


def old_spec(path: str) -> SentenceSpec:
    """The old model's sentence pipeline: its sentence-transformers modules when the folder has them; otherwise
    mean pooling + normalisation (what sentence-transformers' own models such as all-MiniLM-L6-v2 do; the packaged
    copy of that model ships without modules.json)."""
    read = read_sentence_folder(path)
    return read[1] if read else SentenceSpec("mean", True)


def load_old_encoder(path: str, batch_size: int = 64) -> SentenceEncoder:
    """The old model as a SentenceEncoder (its own tokenizer, pooling, Dense and Normalize)."""
    return load_sentence_encoder(path, default_spec=old_spec(path), batch_size=batch_size)


def build_compat_data(texts: Sequence[str], old: SentenceEncoder, tokenizer, max_length: int) -> CompatData:
    """Tokenise `texts` for the student and embed them once with the old model."""
    import time

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no non-empty text to train compatibility on.")
    start = time.perf_counter()
    targets = old(texts)
    seconds = time.perf_counter() - start
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return CompatData(ids, targets, old.spec, round(seconds, 2))


@dataclass
class CompatCollator:
    """`base`'s batch plus a batch of compatibility sentences (see the module docstring)."""

    base: Callable[[list], dict]
    data: CompatData
    batch_size: int
    pad_token_id: int
    seed: int = 0
    _order: list[int] = field(default_factory=list, repr=False)
    _generator: Any = field(default=None, repr=False)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"compat_batch_size must be >= 1, got {self.batch_size}.")
        self._generator = torch.Generator().manual_seed(int(self.seed))

    def _next_indices(self) -> list[int]:
        out = []
        while len(out) < self.batch_size:
            if not self._order:
                self._order = torch.randperm(len(self.data.input_ids), generator=self._generator).tolist()
            out.append(self._order.pop())
        return out

    def __call__(self, examples: list) -> dict:
        batch = dict(self.base(examples))
        idx = self._next_indices()
        rows = [self.data.input_ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        batch.update(compat_input_ids=ids, compat_attention_mask=mask, compat_target=self.data.targets[idx])
        return batch


def labelled_texts(spec: str, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list[int]]:
    """Texts and integer labels of a labelled dataset (first split; string labels numbered in sorted order)."""
    from bortify.data import DataError, load_any_dataset

    dsd = load_any_dataset(spec)
    ds = dsd["train"] if "train" in dsd else dsd[next(iter(dsd))]
    for col in (text_column, label_column):
        if col not in ds.column_names:
            raise DataError(f"compat_eval_dataset {spec!r} has no column {col!r} (it has {ds.column_names}).")
    labels = list(ds[label_column])
    if labels and not isinstance(labels[0], int):
        names = {name: i for i, name in enumerate(sorted({str(x) for x in labels}))}
        labels = [names[str(x)] for x in labels]
    return list(ds[text_column]), labels


def compatibility_evaluation(old: SentenceEncoder, new: SentenceEncoder, texts: Sequence[str], labels: Sequence[int],
                             *, gallery_size: int, query_size: int, knn_k: int, seed: int,
                             baseline: SentenceEncoder | None = None) -> dict:
    """BCT's empirical compatibility test (bortify.compat.metric) on a seeded gallery/query split."""
    split = split_gallery_queries(texts, labels, gallery_size, query_size, seed)
    return run_compatibility_test(old, new, split, knn_k=knn_k, recall_ks=(1, 5), baseline=baseline)
