"""Pretraining data: tokenise with the teacher's tokenizer, pack into fixed-length blocks, mask 15% (80/10/10).

Packing follows BERT/RoBERTa pretraining: texts are tokenised without special tokens, concatenated with
[SEP] between them, cut into blocks of `seq_len - 2` tokens and wrapped as `[CLS] block [SEP]`, so no
position is wasted on padding. The held-out split is made on texts *before* packing (no block straddles
train and held-out).
"""

from __future__ import annotations

import zlib
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


def load_pretraining_data(corpus: str, tokenizer: PreTrainedTokenizerBase, *, seq_len: int, text_column: str = "text",
                          split: str = "train", config: str | None = None, heldout_fraction: float = 0.05,
                          max_heldout_blocks: int = 128, max_train_texts: int | None = None, seed: int = 42,
                          num_proc: int | None = None) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train blocks, held-out blocks) from a corpus; `DataError` when there is not enough text."""
    check_tokenizer(tokenizer)
    if seq_len > tokenizer.model_max_length and tokenizer.model_max_length < 10**6:
        raise DataError(f"seq_len {seq_len} exceeds the tokenizer's model_max_length {tokenizer.model_max_length}.")
    texts = load_text_corpus(corpus, text_column=text_column, split=split, config=config)
    if len(texts) < 2:
        raise DataError(f"Corpus {corpus!r} has {len(texts)} text(s); need at least 2 (train + held-out).")
    parts = texts.train_test_split(test_size=heldout_fraction, seed=seed)
    train_texts, held_texts = parts["train"], parts["test"]
    if max_train_texts is not None:
        train_texts = train_texts.select(range(min(max_train_texts, len(train_texts))))
    train = build_blocks(train_texts, tokenizer, seq_len, text_column, num_proc, "packing train blocks")
    held = build_blocks(held_texts, tokenizer, seq_len, text_column, num_proc, "packing held-out blocks")
    if len(train) == 0:
        raise DataError(f"Corpus {corpus!r} gives no training block of {seq_len} tokens; use more text or a "
                        "smaller --seq_len.")
    if len(held) == 0:
        raise DataError(f"The held-out texts of {corpus!r} give no block of {seq_len} tokens; raise "
                        "--heldout_fraction or lower --seq_len.")
    return train, held.select(range(min(max_heldout_blocks, len(held))))


@dataclass
class StaticMaskingCollator(DataCollatorForLanguageModeling):
    """`DataCollatorForLanguageModeling` (15%, 80/10/10) whose mask for a block depends only on the block's
    tokens and `seed`: the same block gets the same mask whatever the batch, rank or world size. Used for the
    held-out loss (before and after are scored on identical masks) and for reproducible distributed runs."""

    def torch_call(self, examples):
        batches = []
        for example in examples:
            ids = example["input_ids"] if isinstance(example, dict) else example
            digest = zlib.crc32(torch.as_tensor(ids, dtype=torch.int64).numpy().tobytes())
            self.generator = torch.Generator().manual_seed((int(self.seed or 0) * 1_000_003 + digest) % (2**63))
            batches.append(super().torch_call([example]))
        return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def make_collator(tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, masking: str = "dynamic",
                  seed: int = 42) -> DataCollatorForLanguageModeling:
    """BERT masking: `mlm_probability` of the non-special tokens are predicted; 80% [MASK], 10% random, 10% kept."""
    common = dict(tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability, mask_replace_prob=0.8,
                  random_replace_prob=0.1)
    if masking == "static":
        return StaticMaskingCollator(seed=seed, **common)
    if masking != "dynamic":
        raise ValueError(f"masking must be 'dynamic' or 'static', got {masking!r}.")
    return DataCollatorForLanguageModeling(**common)
