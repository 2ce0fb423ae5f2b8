"""A minimal perfect hash of a tokenizer vocabulary: no key strings stored (docs/methods/05-compression.md §5, Strimel et al. 2018).

The paper's algorithm (docs/methods/05-compression.md §5): a cascade of seeded MurmurHash3 functions. Level 1 hashes all N
keys into ~N slots; a key alone in its slot sets that slot's bit; colliding keys go on to level 2 with a new
seed and a smaller array; repeat until every key has a slot. The levels' bit arrays are concatenated, and the
rank of a key's set bit (the number of set bits before it, from a popcount directory) is its dense index in
[0, N). This is the BBHash construction (Limasset et al. 2017) with load factor `gamma` (1.0 = the paper's N
slots for N keys; about e ≈ 2.72 bits a key in all).

A perfect hash maps *every* string to some index (or to none, when it falls through every level), so on its
own it cannot tell a vocabulary token from an unknown string. Each key therefore also stores an f-bit
fingerprint (MurmurHash3 with its own seed) at its index; a look-up accepts only when the fingerprints match.
An unknown string is accepted (a false positive) with probability

    P(fp) = (1 - prod_l (1 - ones_l / size_l)) * 2**-f     (≈ 2**-f: the first factor is the chance it lands
                                                           on some set bit, ~0.99 for a 30k vocabulary)

`HashedVocab.false_positive_rate` computes it from the built structure; tests check it empirically.

API (the offline bundle builds on it)::

    >>> from bortify.compression.phash import build_hashed_vocab, HashedVocab
    >>> hv = build_hashed_vocab({"[PAD]": 0, "hello": 1, "##s": 2}, fingerprint_bits=16)
    >>> hv.lookup("hello")          # new id in [0, N): the key's hash index, or None if unknown
    >>> hv.permutation              # np.ndarray, new id -> old id (reorder embedding rows with weight[perm])
    >>> hv.save("bundle/tokenizer") # one file, vocab.phash (json header + bit arrays + fingerprints)
    >>> hv2 = HashedVocab.load("bundle/tokenizer")   # same look-ups; permutation is None unless saved with it

The WordPiece tokenizer on top is `bortify.compression.hashed_tokenizer.HashedWordPiece`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from bortify.utils import BortifyError, json_text, write_bytes_atomic

PHASH_FILE = "vocab.phash"
PERMUTATION_FILE = "phash_permutation.npy"
MAGIC = b"BORTPH1\n"
FORMAT_VERSION = 1
_WORD = 64  # bits per word of the concatenated bit array; the rank directory holds one count per word


class PhashError(BortifyError):
    """A vocabulary that cannot be hashed or a hashed-vocabulary file that cannot be read."""


def _mmh3():
    try:
        import mmh3
    except ImportError as exc:  # an optional dependency: `import bortify` stays light
        raise PhashError("the perfect-hashed vocabulary needs MurmurHash3: "
                         "pip install bortify[compress] (mmh3)") from exc
    return mmh3


@dataclass(frozen=True)
class PhashConfig:
    """How the cascade is built.

    gamma: slots per remaining key at each level (BBHash γ; the paper uses N slots for N keys, γ = 1).
        Larger γ: fewer levels and faster look-ups, more bits.
    fingerprint_bits: bits stored per key to reject unknown strings (false-positive rate ≈ 2**-bits).
    seed: base MurmurHash3 seed; level l uses seed + l, the fingerprint its own seed.
    max_levels: give up (an error) if keys remain after this many levels.
    """

    gamma: float = 1.0
    fingerprint_bits: int = 16
    seed: int = 0
    max_levels: int = 64

    def __post_init__(self):
        if not (isinstance(self.gamma, (int, float)) and self.gamma >= 0.5):
            raise PhashError(f"gamma must be a number >= 0.5 (slots per key per level), got {self.gamma!r}")
        if not (isinstance(self.fingerprint_bits, int) and 0 <= self.fingerprint_bits <= 32):
            raise PhashError(f"fingerprint_bits must be an integer in 0..32, got {self.fingerprint_bits!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**31):
            raise PhashError(f"seed must be an integer in 0..2**31-1, got {self.seed!r}")
        if not (isinstance(self.max_levels, int) and 1 <= self.max_levels <= 255):
            raise PhashError(f"max_levels must be an integer in 1..255, got {self.max_levels!r}")


def _fingerprint_seed(seed: int) -> int:
    return (seed ^ 0x5BD1E995) & 0xFFFFFFFF  # any seed unused by the levels (those are seed + l, l < 256)


def _level_size(n_keys: int, gamma: float) -> int:
    """Slots at a level: gamma * keys, rounded up to whole 64-bit words so levels start on a word."""
    return max(_WORD, math.ceil(gamma * n_keys / _WORD) * _WORD)


def _hash_all(mmh3, keys: list[bytes], seed: int) -> np.ndarray:
    return np.fromiter((mmh3.hash(k, seed, signed=False) for k in keys), dtype=np.uint64, count=len(keys))


def _pack_fingerprints(values: np.ndarray, bits: int) -> bytes:
    """N values of `bits` bits each, packed little-endian into ceil(N*bits/8) bytes (+4 bytes of slack)."""
    if bits == 0:
        return b""
    shifts = np.arange(bits, dtype=np.uint64)
    matrix = ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(matrix.reshape(-1), bitorder="little").tobytes() + b"\0" * 4


@dataclass
class BuildStats:
    """What a build cost and made (the report's figures)."""

    n_keys: int
    levels: int
    bits_per_level: list[int]
    keys_per_level: list[int]
    total_bits: int
    fingerprint_bits: int
    bytes_on_disk: int
    bits_per_key: float
    build_seconds: float
    false_positive_rate: float


class HashedVocab:
    """A string -> dense index map that stores no strings: cascade bit arrays + rank + fingerprints.

    `lookup(s)` returns the key's index in [0, N) or None. Ids are the hash's own order, so a model that
    uses them needs its embedding rows reordered by `permutation` (new id -> old id), known at build time.
    """

    def __init__(self, header: dict, words: np.ndarray, fingerprints: bytes, permutation: np.ndarray | None = None):
        self.header = header
        self.n_keys: int = header["n_keys"]
        self.fingerprint_bits: int = header["fingerprint_bits"]
        self.level_sizes: list[int] = header["level_sizes"]
        self.seeds: list[int] = [header["seed"] + level for level in range(len(self.level_sizes))]
        self.fingerprint_seed = _fingerprint_seed(header["seed"])
        self.max_key_chars: int = header.get("max_key_chars", 0)
        self.words = words.astype(np.uint64, copy=False)
        self.fingerprints = fingerprints
        self.permutation = permutation
        self._prepare()

    # ---- look-up -------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Rank directory (cumulative popcount per 64-bit word) and plain-int copies for fast Python look-ups."""
        self._mmh3 = _mmh3()
        words = [int(w) for w in self.words]
        self._words = words
        ranks, running = [], 0
        for w in words:
            ranks.append(running)
            running += w.bit_count()
        self._ranks = ranks
        if running != self.n_keys:
            raise PhashError(f"corrupt hashed vocabulary: {running} set bits for {self.n_keys} keys")
        offsets, start = [], 0
        for size in self.level_sizes:
            offsets.append(start)
            start += size
        self._levels = list(zip(self.seeds, self.level_sizes, offsets))
        self._fp_mask = (1 << self.fingerprint_bits) - 1

    def index(self, key: str | bytes) -> int | None:
        """The cascade alone: the slot rank a key maps to (any string may map somewhere), or None."""
        hash32 = self._mmh3.hash
        words = self._words
        for seed, size, offset in self._levels:
            pos = offset + hash32(key, seed, signed=False) % size
            word = words[pos >> 6]
            bit = pos & 63
            if (word >> bit) & 1:
                return self._ranks[pos >> 6] + (word & ((1 << bit) - 1)).bit_count()
        return None

    def fingerprint_at(self, idx: int) -> int:
        bits = self.fingerprint_bits
        start = idx * bits
        chunk = int.from_bytes(self.fingerprints[start >> 3:(start >> 3) + 5], "little")
        return (chunk >> (start & 7)) & self._fp_mask

    def lookup(self, key: str | bytes) -> int | None:
        """The key's id if it is (up to the false-positive rate) in the vocabulary, else None."""
        idx = self.index(key)
        if idx is None:
            return None
        if self.fingerprint_bits:
            expected = self._mmh3.hash(key, self.fingerprint_seed, signed=False) & self._fp_mask
            if self.fingerprint_at(idx) != expected:
                return None
        return idx

    def __contains__(self, key: str) -> bool:
        return self.lookup(key) is not None

    def __getitem__(self, key: str) -> int:
        idx = self.lookup(key)
        if idx is None:
            raise KeyError(key)
        return idx

    def __len__(self) -> int:
        return self.n_keys

    def lookup_many(self, keys: Iterable[str]) -> np.ndarray:
        """Ids of many keys, -1 where unknown."""
        return np.fromiter((-1 if (i := self.lookup(k)) is None else i for k in keys), dtype=np.int64)

    # ---- figures -------------------------------------------------------------------------------------------

    @property
    def levels(self) -> int:
        return len(self.level_sizes)

    @property
    def total_bits(self) -> int:
        return sum(self.level_sizes)

    @property
    def false_positive_rate(self) -> float:
        """P(an unknown string is accepted) = P(it lands on a set bit at some level) * 2**-fingerprint_bits."""
        miss_all = 1.0
        for (_, size, offset) in self._levels:
            ones = sum(w.bit_count() for w in self._words[offset // _WORD:(offset + size) // _WORD])
            miss_all *= 1.0 - ones / size
        return (1.0 - miss_all) * 2.0 ** -self.fingerprint_bits

    def describe(self) -> dict:
        """The figures a report needs: keys, levels, bits, bytes on disk, fingerprint bits, false-positive rate."""
        nbytes = self.nbytes
        return {"n_keys": self.n_keys, "levels": self.levels, "cascade_bits": self.total_bits,
                "bytes": nbytes, "bits_per_key": 8 * nbytes / self.n_keys,
                "fingerprint_bits": self.fingerprint_bits, "false_positive_rate": self.false_positive_rate}

    def to_bytes(self) -> bytes:
        header = json_text(self.header, what="the phash header", sort_keys=True, separators=(",", ":")).encode()
        return (MAGIC + len(header).to_bytes(4, "little") + header
                + self.words.astype("<u8").tobytes() + self.fingerprints)

    @property
    def nbytes(self) -> int:
        """Bytes of the saved file (header included)."""
        return len(self.to_bytes())

    # ---- storage -------------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike, *, with_permutation: bool = False) -> Path:
        """Write `vocab.phash` (atomically) into `directory`; with_permutation also writes the new->old id map.

        The permutation is only needed to reorder a model's embedding rows, once, when a bundle is made.
        """
        directory = Path(directory)
        path = directory / PHASH_FILE
        write_bytes_atomic(path, self.to_bytes())
        if with_permutation:
            if self.permutation is None:
                raise PhashError("this hashed vocabulary has no permutation (it was loaded without one); rebuild it "
                                 "with build_hashed_vocab to get one")
            import io

            buf = io.BytesIO()
            np.save(buf, self.permutation.astype(np.int64), allow_pickle=False)
            write_bytes_atomic(directory / PERMUTATION_FILE, buf.getvalue())
        return path

    @classmethod
    def from_bytes(cls, data: bytes, permutation: np.ndarray | None = None, *, source: str = "data") -> "HashedVocab":
        if not data.startswith(MAGIC):
            raise PhashError(f"{source} is not a bortify hashed vocabulary (bad magic); "
                             "rebuild it with build_hashed_vocab")
        try:
            hlen = int.from_bytes(data[len(MAGIC):len(MAGIC) + 4], "little")
            start = len(MAGIC) + 4
            header = json.loads(data[start:start + hlen])
            if header.get("format") != FORMAT_VERSION:
                raise PhashError(f"{source}: format {header.get('format')!r}, this bortify reads "
                                 f"{FORMAT_VERSION}; rebuild it")
            n_words = sum(header["level_sizes"]) // _WORD
            body = start + hlen
            words = np.frombuffer(data, dtype="<u8", count=n_words, offset=body)
            fingerprints = bytes(data[body + 8 * n_words:])
        except PhashError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise PhashError(f"{source} is truncated or corrupt ({exc}); rebuild it with build_hashed_vocab") from exc
        return cls(header, words, fingerprints, permutation)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "HashedVocab":
        """Read `vocab.phash` from `directory` (and the permutation, if it was saved with one)."""
        directory = Path(directory)
        path = directory / PHASH_FILE
        if not path.is_file():
            raise PhashError(f"no {PHASH_FILE} in {directory}; build one with build_hashed_vocab(vocab).save(dir)")
        permutation = None
        if (directory / PERMUTATION_FILE).is_file():
            permutation = np.load(directory / PERMUTATION_FILE, allow_pickle=False)
        return cls.from_bytes(path.read_bytes(), permutation, source=str(path))


def build_hashed_vocab(vocab: Mapping[str, int], config: PhashConfig | None = None, **overrides) -> HashedVocab:
    """Build the cascade for `vocab` (token -> id); the result's `.permutation[new_id] = vocab[token]`.

    Keyword overrides set PhashConfig fields: build_hashed_vocab(vocab, fingerprint_bits=12).
    Timing and sizes of the build are in `.build_stats`.
    """
    config = PhashConfig(**{**asdict(config or PhashConfig()), **overrides})
    if not vocab:
        raise PhashError("the vocabulary is empty: nothing to hash")
    bad = [k for k in list(vocab)[:1000] if not isinstance(k, str)]
    if bad:
        raise PhashError(f"vocabulary keys must be strings, got {type(bad[0]).__name__}")
    mmh3 = _mmh3()
    started = time.perf_counter()
    tokens = list(vocab)
    keys = [t.encode("utf-8") for t in tokens]
    remaining = np.arange(len(keys))
    level_bits: list[np.ndarray] = []
    keys_per_level: list[int] = []
    slot_of = np.full(len(keys), -1, dtype=np.int64)  # global bit position of each key
    offset = 0
    for level in range(config.max_levels):
        if remaining.size == 0:
            break
        size = _level_size(remaining.size, config.gamma)
        slots = (_hash_all(mmh3, [keys[i] for i in remaining], config.seed + level) % np.uint64(size)).astype(np.int64)
        counts = np.bincount(slots, minlength=size)
        alone = counts[slots] == 1  # the paper: keys alone in their slot set a bit and are placed here
        bits = np.zeros(size, dtype=bool)
        bits[slots[alone]] = True
        slot_of[remaining[alone]] = offset + slots[alone]
        level_bits.append(bits)
        keys_per_level.append(int(alone.sum()))
        remaining = remaining[~alone]  # colliding keys go on to the next level
        offset += size
    if remaining.size:
        raise PhashError(f"{remaining.size} keys still collide after max_levels={config.max_levels}; raise max_levels "
                         f"or gamma, and check the vocabulary has no duplicate tokens")
    all_bits = np.concatenate(level_bits)
    words = np.packbits(all_bits, bitorder="little").view("<u8").astype(np.uint64)
    # A key's new id is the rank of its bit: the number of set bits before it.
    new_id = np.cumsum(all_bits)[slot_of] - 1
    permutation = np.empty(len(keys), dtype=np.int64)
    permutation[new_id] = np.fromiter((vocab[t] for t in tokens), dtype=np.int64, count=len(tokens))
    fp = np.zeros(len(keys), dtype=np.uint64)
    if config.fingerprint_bits:
        mask = np.uint64((1 << config.fingerprint_bits) - 1)
        fp[new_id] = _hash_all(mmh3, keys, _fingerprint_seed(config.seed)) & mask
    header = {
        "format": FORMAT_VERSION, "kind": "bortify-mphf-cascade", "hash": "murmur3_32",
        "n_keys": len(keys), "seed": config.seed, "gamma": config.gamma,
        "fingerprint_bits": config.fingerprint_bits, "level_sizes": [int(b.size) for b in level_bits],
        "max_key_chars": max(len(t) for t in tokens),
    }
    hv = HashedVocab(header, words, _pack_fingerprints(fp, config.fingerprint_bits), permutation)
    seconds = time.perf_counter() - started
    nbytes = hv.nbytes
    hv.build_stats = BuildStats(
        n_keys=len(keys), levels=hv.levels, bits_per_level=header["level_sizes"], keys_per_level=keys_per_level,
        total_bits=hv.total_bits, fingerprint_bits=config.fingerprint_bits, bytes_on_disk=nbytes,
        bits_per_key=8 * nbytes / len(keys), build_seconds=seconds, false_positive_rate=hv.false_positive_rate,
    )
    return hv


def load_vocab_txt(path: str | os.PathLike) -> dict[str, int]:
    """A BERT vocab.txt (one token a line, id = line number) as token -> id."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            token = line.rstrip("\n")
            if token in vocab:
                raise PhashError(f"{path}: token {token!r} appears twice (lines {vocab[token] + 1} and {i + 1}); "
                                 "a vocabulary must list each token once")
            vocab[token] = i
    return vocab
