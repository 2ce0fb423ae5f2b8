"""A BERT WordPiece tokenizer over the perfect-hashed vocabulary: no token strings on disk (docs/methods/05-compression.md §5).

It reproduces the Hugging Face fast BERT tokenizer (tokenizers' BertNormalizer + BertPreTokenizer + WordPiece +
the [CLS] A [SEP] B [SEP] template) on top of `HashedVocab`, so the offline bundle needs neither vocab.txt nor
tokenizer.json. Ids are the hash's own order; `permutation[new_id] = old_id` reorders a model's embedding rows
once, when the bundle is made (`embeddings.word_embeddings.weight[permutation]`).

    >>> from bortify.compression.hashed_tokenizer import HashedWordPiece
    >>> tok = HashedWordPiece.from_tokenizer_files("path/to/bert")   # reads vocab.txt + tokenizer.json / _config
    >>> tok.permutation                                               # new id -> old id (None after from_dir)
    >>> tok.save("bundle/tokenizer")                                  # vocab.phash + hashed_tokenizer.json
    >>> tok = HashedWordPiece.from_dir("bundle/tokenizer")
    >>> batch = tok(["a text", "another"], padding=True, truncation=True, max_length=128, return_tensors="pt")
    >>> model(**batch)                                                # input_ids, token_type_ids, attention_mask

The steps, as the fast tokenizer does them:
1. special tokens written in the raw text ("[SEP]", case-sensitive) are kept whole;
2. BertNormalizer: drop NUL, U+FFFD and control/format characters, map whitespace to " ", put spaces around
   CJK ideographs, strip accents (NFD, drop non-spacing marks) when lower-casing, lower-case char by char;
3. BertPreTokenizer: split on whitespace, and every punctuation character is a word of its own;
4. WordPiece: greedy longest-match-first, continuation pieces prefixed "##"; a word longer than
   max_input_chars_per_word, or with a part no piece matches, is one [UNK]. Candidate pieces longer than the
   vocabulary's longest token are never looked up (exact, and it keeps false-positive look-ups rare).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bortify.compression.phash import HashedVocab, PhashConfig, PhashError, build_hashed_vocab, load_vocab_txt
from bortify.utils import write_json_atomic

CONFIG_FILE = "hashed_tokenizer.json"
SPECIAL_ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Unicode White_Space, as Rust's char::is_whitespace (tokenizers' BertNormalizer / BertPreTokenizer) defines it.
_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                        "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# CJK Unified Ideographs blocks (BERT's _is_chinese_char), each padded with spaces so it becomes its own word.
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


@dataclass
class HashedTokenizerConfig:
    """The tokenizer's settings (everything but the vocabulary), saved as hashed_tokenizer.json."""

    lowercase: bool = True
    strip_accents: bool | None = None  # None: strip when lower-casing (BERT's default)
    handle_chinese_chars: bool = True
    clean_text: bool = True
    unk_token: str = "[UNK]"
    sep_token: str = "[SEP]"
    pad_token: str = "[PAD]"
    cls_token: str = "[CLS]"
    mask_token: str = "[MASK]"
    continuing_subword_prefix: str = "##"
    max_input_chars_per_word: int = 100
    model_max_length: int = 512
    max_word_chars: int = 100  # longest vocabulary token (chars): longer candidates are never looked up
    max_continuation_chars: int = 100  # longest "##" token without its prefix

    @classmethod
    def from_dict(cls, data: Mapping) -> "HashedTokenizerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---- character classes (cached: text is mostly the same few hundred characters) ------------------------------

def _is_control(ch: str) -> bool:
    """tokenizers' is_control: Unicode "Other" (Cc, Cf, Cs, Co, Cn) except tab / newline / carriage return."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK)


@lru_cache(maxsize=65536)
def _is_punctuation(ch: str) -> bool:
    """ASCII punctuation (incl. $+<=>^`|~) or any Unicode P* category, as BERT splits it."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


@lru_cache(maxsize=65536)
def _clean_char(ch: str, clean_text: bool, chinese: bool) -> str:
    if clean_text:
        if ch in ("\0", "\ufffd") or _is_control(ch):
            return ""
        if ch in _WHITESPACE:
            return " "
    if chinese and _is_cjk(ch):
        return f" {ch} "
    return ch


class HashedWordPiece:
    """BERT uncased WordPiece over a `HashedVocab`; call it like a transformers tokenizer (batched, padded)."""

    def __init__(self, vocab: HashedVocab, config: HashedTokenizerConfig):
        self.vocab = vocab
        self.config = config
        self.special_ids: dict[str, int] = {}
        for role in SPECIAL_ROLES:
            token = getattr(config, role)
            idx = vocab.lookup(token)
            if idx is None:
                raise PhashError(f"the special token {role}={token!r} is not in the hashed vocabulary; build it from "
                                 "a vocabulary that contains it, or set that token in the tokenizer config")
            self.special_ids[role] = idx
        specials = sorted({getattr(config, r) for r in SPECIAL_ROLES}, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        self._special_of = {getattr(config, r): self.special_ids[r] for r in SPECIAL_ROLES}
        self._strip = config.lowercase if config.strip_accents is None else config.strip_accents
        self._word_cache: dict[str, tuple[int, ...]] = {}

    # ---- construction and storage ---------------------------------------------------------------------------

    @classmethod
    def build(cls, vocab: Mapping[str, int], config: HashedTokenizerConfig | None = None,
              phash: PhashConfig | None = None, **phash_overrides) -> "HashedWordPiece":
        """Hash `vocab` (token -> old id) and wrap it; `.permutation` maps new ids to the old ones."""
        config = HashedTokenizerConfig(**asdict(config or HashedTokenizerConfig()))
        prefix = config.continuing_subword_prefix
        config.max_word_chars = max(len(t) for t in vocab)
        config.max_continuation_chars = max((len(t) - len(prefix) for t in vocab if t.startswith(prefix)), default=0)
        return cls(build_hashed_vocab(vocab, phash, **phash_overrides), config)

    @classmethod
    def from_tokenizer_files(cls, directory: str | os.PathLike, phash: PhashConfig | None = None,
                             **phash_overrides) -> "HashedWordPiece":
        """Build from a BERT tokenizer's files: vocab.txt (or tokenizer.json's vocab) and its settings."""
        vocab, config = read_bert_tokenizer(directory)
        return cls.build(vocab, config, phash, **phash_overrides)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> "HashedWordPiece":
        """Load what `save` wrote: vocab.phash and hashed_tokenizer.json (no token strings needed)."""
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise PhashError(f"no {CONFIG_FILE} in {directory}; make one with "
                             "HashedWordPiece.from_tokenizer_files(...).save(dir)")
        try:
            config = HashedTokenizerConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise PhashError(f"{path} is not a valid tokenizer config ({exc}); save the tokenizer again") from exc
        return cls(HashedVocab.load(directory), config)

    def save(self, directory: str | os.PathLike, *, with_permutation: bool = False) -> list[Path]:
        """Write vocab.phash and hashed_tokenizer.json (atomically); returns the paths written."""
        phash_path = self.vocab.save(directory, with_permutation=with_permutation)
        config_path = Path(directory) / CONFIG_FILE
        write_json_atomic(config_path, asdict(self.config))
        return [phash_path, config_path]

    @property
    def permutation(self) -> np.ndarray | None:
        """new id -> old id (known after `build`, or after `from_dir` of a folder saved with_permutation)."""
        return self.vocab.permutation

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_token_id(self) -> int:
        return self.special_ids["pad_token"]

    @property
    def unk_token_id(self) -> int:
        return self.special_ids["unk_token"]

    @property
    def cls_token_id(self) -> int:
        return self.special_ids["cls_token"]

    @property
    def sep_token_id(self) -> int:
        return self.special_ids["sep_token"]

    @property
    def mask_token_id(self) -> int:
        return self.special_ids["mask_token"]

    # ---- the pipeline ---------------------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """BertNormalizer: clean, pad CJK, strip accents, lower-case (char by char: no final-sigma rule)."""
        cfg = self.config
        if cfg.clean_text or cfg.handle_chinese_chars:
            text = "".join([_clean_char(ch, cfg.clean_text, cfg.handle_chinese_chars) for ch in text])
        if self._strip and not text.isascii():
            text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
        if cfg.lowercase:
            text = text.lower() if text.isascii() else "".join([ch.lower() for ch in text])
        return text

    @staticmethod
    def pre_tokenize(text: str) -> list[str]:
        """BertPreTokenizer: whitespace splits, each punctuation character is a word of its own."""
        words: list[str] = []
        for chunk in text.split():
            if chunk.isalnum():
                words.append(chunk)
                continue
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if i > start:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def wordpiece(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first WordPiece ids of one word (BERT; Wu et al. 2016)."""
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        ids = self._wordpiece(word)
        if len(self._word_cache) < 200_000:
            self._word_cache[word] = ids
        return ids

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        cfg, lookup = self.config, self.vocab.lookup
        n = len(word)
        if n > cfg.max_input_chars_per_word:
            return (self.unk_token_id,)
        pieces: list[int] = []
        start = 0
        while start < n:
            limit = cfg.max_word_chars if start == 0 else cfg.max_continuation_chars
            end = min(n, start + limit)
            found = None
            while end > start:
                piece = word[start:end] if start == 0 else cfg.continuing_subword_prefix + word[start:end]
                found = lookup(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return (self.unk_token_id,)
            pieces.append(found)
            start = end
        return tuple(pieces)

    def tokenize_ids(self, text: str) -> list[int]:
        """Ids of one text, without [CLS]/[SEP] (special tokens written in the text are kept whole)."""
        ids: list[int] = []
        for part in self._special_split.split(text) if text else ():
            special = self._special_of.get(part)
            if special is not None:
                ids.append(special)
                continue
            for word in self.pre_tokenize(self.normalize(part)):
                ids.extend(self.wordpiece(word))
        return ids

    # ---- encoding -------------------------------------------------------------------------------------------

    def encode(self, text: str, text_pair: str | None = None, *, add_special_tokens: bool = True,
               truncation: bool | str = False, max_length: int | None = None) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of one text or pair: [CLS] A [SEP] (B [SEP]), truncated longest-first."""
        a = self.tokenize_ids(text)
        b = self.tokenize_ids(text_pair) if text_pair is not None else None
        if truncation:
            limit = self.config.model_max_length if max_length is None else max_length
            specials = (3 if b is not None else 2) if add_special_tokens else 0
            a, b = truncate_longest_first(a, b, limit - specials)
        if not add_special_tokens:
            ids = a + (b or [])
            return ids, [0] * len(a) + [1] * len(b or [])
        cls_id, sep_id = self.cls_token_id, self.sep_token_id
        ids = [cls_id, *a, sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, sep_id]
            types += [1] * (len(b) + 1)
        return ids, types

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str = False,
                 max_length: int | None = None, return_tensors: str | None = None) -> dict:
        """Like a transformers tokenizer: input_ids, token_type_ids, attention_mask (lists, or "np"/"pt" arrays).

        padding: False, True / "longest" (to the batch's longest) or "max_length". truncation: False or
        True / "longest_first" (to max_length, default model_max_length).
        """
        if truncation not in (False, True, "longest_first", "do_not_truncate"):
            raise PhashError(f"truncation={truncation!r} is not supported; use True / 'longest_first' or False")
        truncation = truncation not in (False, "do_not_truncate")
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise PhashError(f"padding={padding!r} is not supported; use True / 'longest', 'max_length' or False")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if text_pair is None:
            pairs: list[str | None] = [None] * len(texts)
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise PhashError(f"{len(texts)} texts but {len(pairs)} text pairs; pass one pair per text")
        encoded = [self.encode(t, p, add_special_tokens=add_special_tokens, truncation=truncation,
                               max_length=max_length) for t, p in zip(texts, pairs)]
        batch = self._pad(encoded, padding, max_length)
        if return_tensors is None:
            return {k: v[0] for k, v in batch.items()} if single else batch
        if single:
            batch = {k: v[:1] for k, v in batch.items()}
        return _as_tensors(batch, return_tensors)

    def _pad(self, encoded: list[tuple[list[int], list[int]]], padding: bool | str, max_length: int | None) -> dict:
        if padding in (False, "do_not_pad"):
            target = None
        elif padding == "max_length":
            target = self.config.model_max_length if max_length is None else max_length
        else:
            target = max((len(ids) for ids, _ in encoded), default=0)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for ids, types in encoded:
            pad = max(0, target - len(ids)) if target is not None else 0
            batch["input_ids"].append(ids + [self.pad_token_id] * pad)
            batch["token_type_ids"].append(types + [0] * pad)
            batch["attention_mask"].append([1] * len(ids) + [0] * pad)
        return batch


def truncate_longest_first(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """tokenizers' LongestFirst: the shorter sequence keeps min(len, budget // 2), the longer gets the rest.

    With equal lengths the pair counts as the longer one (as tokenizers does it).
    """
    if budget < 0:
        raise PhashError(f"max_length leaves no room for the special tokens ({-budget} too few); raise max_length")
    if b is None:
        return a[:budget], None
    if len(a) + len(b) <= budget:
        return a, b
    if len(a) > len(b):
        keep_b = min(len(b), budget // 2)
        return a[:budget - keep_b], b[:keep_b]
    keep_a = min(len(a), budget // 2)
    return a[:keep_a], b[:budget - keep_a]


def _as_tensors(batch: dict, kind: str) -> dict:
    lengths = {len(row) for row in batch["input_ids"]}
    if len(lengths) > 1:
        raise PhashError(f"return_tensors={kind!r} needs rows of one length; pass padding=True")
    if kind == "np":
        return {k: np.asarray(v, dtype=np.int64) for k, v in batch.items()}
    if kind == "pt":
        import torch

        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
    raise PhashError(f"return_tensors={kind!r} is not supported; use 'pt', 'np' or None")


# ---- reading a BERT tokenizer's files ---------------------------------------------------------------------

def read_bert_tokenizer(directory: str | os.PathLike) -> tuple[dict[str, int], HashedTokenizerConfig]:
    """The vocabulary and settings of a BERT WordPiece tokenizer folder, refusing anything this cannot copy.

    tokenizer.json (what the fast tokenizer runs) wins over tokenizer_config.json + vocab.txt.
    """
    directory = Path(directory)
    tj, tc, vt = directory / "tokenizer.json", directory / "tokenizer_config.json", directory / "vocab.txt"
    settings = json.loads(tc.read_text(encoding="utf-8")) if tc.is_file() else {}
    config = HashedTokenizerConfig()
    for role in SPECIAL_ROLES:
        value = settings.get(role)
        if isinstance(value, dict):  # older configs store AddedToken dicts
            value = value.get("content")
        if isinstance(value, str):
            setattr(config, role, value)
    if isinstance(settings.get("model_max_length"), int) and settings["model_max_length"] < 10**6:
        config.model_max_length = settings["model_max_length"]
    if tj.is_file():
        vocab = _from_tokenizer_json(json.loads(tj.read_text(encoding="utf-8")), config, tj)
    elif vt.is_file():
        vocab = load_vocab_txt(vt)
        config.lowercase = bool(settings.get("do_lower_case", True))
        config.strip_accents = settings.get("strip_accents")
        config.handle_chinese_chars = bool(settings.get("tokenize_chinese_chars", True))
        if settings.get("do_basic_tokenize") is False:
            raise PhashError(f"{tc}: do_basic_tokenize=false is not supported by the hashed tokenizer")
    else:
        raise PhashError(f"{directory} has neither tokenizer.json nor vocab.txt: "
                         "pass a BERT WordPiece tokenizer folder")
    return vocab, config


def _from_tokenizer_json(data: dict, config: HashedTokenizerConfig, path: Path) -> dict[str, int]:
    model, norm, pre = data.get("model") or {}, data.get("normalizer") or {}, data.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece":
        raise PhashError(f"{path}: model type {model.get('type')!r}; the hashed tokenizer only copies WordPiece (BERT)")
    if norm.get("type") != "BertNormalizer":
        raise PhashError(f"{path}: normalizer {norm.get('type')!r}; the hashed tokenizer only copies BertNormalizer")
    if pre.get("type") != "BertPreTokenizer":
        raise PhashError(f"{path}: pre_tokenizer {pre.get('type')!r}; "
                         "the hashed tokenizer only copies BertPreTokenizer")
    config.lowercase = bool(norm.get("lowercase", True))
    config.strip_accents = norm.get("strip_accents")
    config.handle_chinese_chars = bool(norm.get("handle_chinese_chars", True))
    config.clean_text = bool(norm.get("clean_text", True))
    config.unk_token = model.get("unk_token", config.unk_token)
    config.continuing_subword_prefix = model.get("continuing_subword_prefix", "##")
    config.max_input_chars_per_word = int(model.get("max_input_chars_per_word", 100))
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise PhashError(f"{path}: no WordPiece vocabulary in model.vocab")
    return vocab
