"""Pretraining data: tokenise with the teacher's tokenizer, pack into fixed-length blocks, mask 15% (80/10/10).

Packing follows BERT/RoBERTa pretraining: texts are tokenised without special tokens, concatenated with
[SEP] between them, cut into blocks of `seq_len - 2` tokens and wrapped as `[CLS] block [SEP]`, so no
position is wasted on padding. The held-out split is made on texts *before* packing (no block straddles
train and held-out).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import datasets
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from bortify.data import DataError, load_text_corpus


def check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    missing = [name for name in ("mask_token", "cls_token", "sep_token") if getattr(tokenizer, name) is None]
    if missing:
        # RoBERTa-style tokenizers name them <mask>, <s>, </s>: they are set, so this only fires for
        # tokenizers that cannot do masked-LM at all (e.g. GPT-2's).
        raise DataError(f"The teacher's tokenizer has no {', '.join(missing)}: masked-LM pretraining needs a "
                        "tokenizer with mask, CLS and SEP tokens. Use a masked-LM teacher's tokenizer.")


def pack_texts(texts: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int) -> list[list[int]]:
    """Tokenise `texts` and pack them into `[CLS] ... [SEP]` blocks of exactly `seq_len` tokens (tail dropped)."""
    body = seq_len - 2
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for piece in ids:
        if piece:
            stream.extend(piece)
            stream.append(tokenizer.sep_token_id)
    n_blocks = len(stream) // body
    return [[tokenizer.cls_token_id, *stream[i * body:(i + 1) * body], tokenizer.sep_token_id] for i in range(n_blocks)]


def _pack_batch(batch: dict, tokenizer, seq_len: int, text_column: str) -> dict:
    blocks = pack_texts(batch[text_column], tokenizer, seq_len)
    special = [[1] + [0] * (seq_len - 2) + [1] for _ in blocks]
    return {"input_ids": blocks, "attention_mask": [[1] * seq_len for _ in blocks], "special_tokens_mask": special}


def build_blocks(texts: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, seq_len: int, text_column: str = "text",
                 num_proc: int | None = None, desc: str = "packing") -> datasets.Dataset:
    """A Dataset of packed blocks: input_ids, attention_mask, special_tokens_mask (each `seq_len` long)."""
    return texts.map(
        _pack_batch, batched=True, batch_size=1000, remove_columns=texts.column_names, num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer, "seq_len": seq_len, "text_column": text_column}, desc=desc,
    )


def _load_corpus(corpus: str, text_column: str, split: str, config: str | None) -> datasets.Dataset:
    """`load_text_corpus`, with an empty local file reported by name (datasets fails on it with a generic error)."""
    path = os.path.expanduser(str(corpus))
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DataError(f"Corpus file {corpus!r} is empty (0 bytes). Give a file with raw text, one text per line.")
    try:
        return load_text_corpus(corpus, text_column=text_column, split=split, config=config)
    except datasets.exceptions.DatasetGenerationError as exc:
        raise DataError(f"Cannot read corpus {corpus!r}: {exc.__cause__ or exc}. Give raw text (one text per line) "
                        "or a csv/json/parquet file with a text column.") from exc


def split_corpus_texts(corpus: str, *, text_column: str = "text", split: str = "train", config: str | None = None,
                       heldout_fraction: float = 0.05, max_train_texts: int | None = None,
                       seed: int = 42, heldout=None, record: dict | None = None) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train texts, held-out texts) of a corpus, split before packing (also what --compatible_with trains on).
    `heldout` (bortify.heldout.HeldOut): the run's final test texts, dropped from the corpus first (docs/methods/09-heldout.md
    §9); `record`, when given, receives what was dropped (the report's `heldout`)."""
    from bortify.heldout import drop_from_dataset

    texts, dropped = drop_from_dataset(_load_corpus(corpus, text_column, split, config), text_column, heldout,
                                       "the pretraining corpus's texts")
    if record is not None and dropped is not None:
        record.update(dropped)
    if len(texts) < 2:
        raise DataError(f"Corpus {corpus!r} has {len(texts)} text(s); need at least 2 (train + held-out).")
    parts = texts.train_test_split(test_size=heldout_fraction, seed=seed)
    train_texts, held_texts = parts["train"], parts["test"]
    if max_train_texts is not None:
        train_texts = train_texts.select(range(min(max_train_texts, len(train_texts))))
    return train_texts, held_texts


def load_pretraining_data(corpus: str, tokenizer: PreTrainedTokenizerBase, *, seq_len: int, text_column: str = "text",
                          split: str = "train", config: str | None = None, heldout_fraction: float = 0.05,
                          max_heldout_blocks: int = 128, max_train_texts: int | None = None, seed: int = 42,
                          num_proc: int | None = None, heldout=None,
                          record: dict | None = None) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train blocks, held-out blocks) from a corpus; `DataError` when there is not enough text. `heldout` and
    `record`: see `split_corpus_texts` (the run's test texts never reach a block)."""
    check_tokenizer(tokenizer)
    if seq_len > tokenizer.model_max_length and tokenizer.model_max_length < 10**6:
        raise DataError(f"seq_len {seq_len} exceeds the tokenizer's model_max_length {tokenizer.model_max_length}.")
    train_texts, held_texts = split_corpus_texts(corpus, text_column=text_column, split=split, config=config,
                                                 heldout_fraction=heldout_fraction, max_train_texts=max_train_texts,
                                                 seed=seed, heldout=heldout, record=record)
    train = build_blocks(train_texts, tokenizer, seq_len, text_column, num_proc, "packing train blocks")
    held = build_blocks(held_texts, tokenizer, seq_len, text_column, num_proc, "packing held-out blocks")
    if len(train) == 0:
        raise DataError(f"Corpus {corpus!r} gives no training block of {seq_len} tokens; use more text or a "
                        "smaller --seq_len.")
    if len(held) == 0:
        raise DataError(f"The held-out texts of {corpus!r} give no block of {seq_len} tokens; raise "
                        "--heldout_fraction or lower --seq_len.")
    return train, held.select(range(min(max_heldout_blocks, len(held))))


def block_seed(input_ids, seed: int) -> int:
    """The masking seed of one block: a function of `seed` and the block's tokens only (crc32 of its int64 ids)."""
    digest = zlib.crc32(torch.as_tensor(input_ids, dtype=torch.int64).numpy().tobytes())
    return (int(seed) * 1_000_003 + digest) % (2**63)


def mask_block(input_ids: torch.Tensor, maskable: torch.Tensor, *, generator: torch.Generator, mlm_probability: float,
               mask_token_id: int, vocab_size: int, mask_replace_prob: float = 0.8,
               random_replace_prob: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of one 1-D block (Devlin et al. 2019, §3.1; Bort keeps it, docs/methods/02-pretraining.md §2): each `maskable`
    position is selected with probability `mlm_probability`; a selected one becomes [MASK] with probability
    `mask_replace_prob`, else a uniformly random token with probability `random_replace_prob` (of the whole),
    else stays. Returns (masked input_ids, labels with -100 at unselected positions). All draws come from
    `generator`, in a fixed order, so the result is a function of its seed and the inputs."""
    labels = input_ids.clone()
    inputs = input_ids.clone()
    select = torch.bernoulli(torch.full(labels.shape, mlm_probability) * maskable, generator=generator).bool()
    labels[~select] = -100
    to_mask = torch.bernoulli(torch.full(labels.shape, mask_replace_prob), generator=generator).bool() & select
    inputs[to_mask] = mask_token_id
    if mask_replace_prob >= 1 or random_replace_prob <= 0:
        return inputs, labels
    scaled = random_replace_prob / (1 - mask_replace_prob)  # of the selected tokens not [MASK]ed
    to_random = torch.bernoulli(torch.full(labels.shape, scaled), generator=generator).bool() & select & ~to_mask
    random_words = torch.randint(vocab_size, labels.shape, dtype=torch.long, generator=generator)
    inputs[to_random] = random_words[to_random]
    return inputs, labels


@dataclass
class StaticMaskingCollator:
    """Masked-LM collator (15%, 80/10/10, like `DataCollatorForLanguageModeling`) whose mask for a block is a
    pure function of (`seed`, the block's tokens): the same block gets the same mask whatever the batch, rank,
    world size, process or how many blocks this collator has seen before. Used for the held-out loss (before
    and after are scored on identical masks) and for reproducible distributed runs and resumes.

    Each block is masked with its own local `torch.Generator` seeded by `block_seed`; no library RNG state
    is read or written. Special tokens (the example's `special_tokens_mask`, else the tokenizer's) and
    padding are never selected. Output keys are those of `DataCollatorForLanguageModeling`: `input_ids`,
    `labels` and the example's other columns (`attention_mask`, `token_type_ids`), padded to the longest block.
    """

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    seed: int = 42

    def __post_init__(self):
        if self.tokenizer.mask_token_id is None:
            raise DataError("Masked-LM pretraining needs a tokenizer with a mask token.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if not (0 <= self.mask_replace_prob <= 1 and 0 <= self.random_replace_prob <= 1
                and self.mask_replace_prob + self.random_replace_prob <= 1):
            raise ValueError("mask_replace_prob and random_replace_prob must be in [0, 1] with a sum of at most 1.")

    def mask_one(self, example) -> dict[str, torch.Tensor]:
        """Mask one example (a dict with input_ids, or a list of ids): its unpadded tensors plus `labels`."""
        row = dict(example) if isinstance(example, Mapping) else {"input_ids": example}
        ids = torch.as_tensor(row.pop("input_ids"), dtype=torch.long)
        special = row.pop("special_tokens_mask", None)
        if special is None:
            special = self.tokenizer.get_special_tokens_mask(ids.tolist(), already_has_special_tokens=True)
        maskable = ~torch.as_tensor(special, dtype=torch.bool)
        if self.tokenizer.pad_token_id is not None:
            maskable &= ids != self.tokenizer.pad_token_id
        if "attention_mask" in row:
            maskable &= torch.as_tensor(row["attention_mask"], dtype=torch.bool)
        generator = torch.Generator().manual_seed(block_seed(ids, self.seed))
        inputs, labels = mask_block(ids, maskable, generator=generator, mlm_probability=self.mlm_probability,
                                    mask_token_id=self.tokenizer.mask_token_id, vocab_size=len(self.tokenizer),
                                    mask_replace_prob=self.mask_replace_prob,
                                    random_replace_prob=self.random_replace_prob)
        out = {"input_ids": inputs, "labels": labels}
        out.update({k: torch.as_tensor(v) for k, v in row.items() if k != "offset_mapping"})
        return out

    def __call__(self, examples) -> dict[str, torch.Tensor]:
        rows = [self.mask_one(example) for example in examples]
        pad_values = {"input_ids": self.tokenizer.pad_token_id or 0, "labels": -100}
        width = max(len(r["input_ids"]) for r in rows)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch = {}
        for key in rows[0]:
            padded = []
            for r in rows:
                gap = width - len(r[key])
                fill = torch.full((gap,), pad_values.get(key, 0), dtype=r[key].dtype)
                padded.append(torch.cat([fill, r[key]] if left else [r[key], fill]))
            batch[key] = torch.stack(padded)
        return batch


def make_collator(tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, masking: str = "dynamic",
                  seed: int = 42) -> DataCollatorForLanguageModeling | StaticMaskingCollator:
    """BERT masking: `mlm_probability` of the non-special tokens are predicted; 80% [MASK], 10% random, 10% kept."""
    if masking == "static":
        return StaticMaskingCollator(tokenizer, mlm_probability, mask_replace_prob=0.8, random_replace_prob=0.1,
                                     seed=seed)
    if masking != "dynamic":
        raise ValueError(f"masking must be 'dynamic' or 'static', got {masking!r}.")
    return DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability,
                                           mask_replace_prob=0.8, random_replace_prob=0.1)
