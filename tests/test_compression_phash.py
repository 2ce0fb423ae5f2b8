"""The perfect-hashed vocabulary (bortify.compression.phash) and its WordPiece tokenizer (hashed_tokenizer).

Checked against the real thing: the packaged MiniLM's vocabulary and its fast (Rust) tokenizer.
"""

import math
import random
import string
from pathlib import Path

import numpy as np
import pytest

from bortify.compression.hashed_tokenizer import (
    CONFIG_FILE, HashedTokenizerConfig, HashedWordPiece, read_bert_tokenizer, truncate_longest_first,
)
from bortify.compression.phash import (
    PERMUTATION_FILE, PHASH_FILE, HashedVocab, PhashConfig, PhashError, build_hashed_vocab, load_vocab_txt,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_vocab(n: int, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(6, 12))))
    return {w: i for i, w in enumerate(sorted(words))}


def unknown_strings(n: int, vocab, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()  # distinct: a repeated false positive would count many times
    while len(out) < n:
        s = "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(4, 14)))
        if s not in vocab:
            out.add(s)
    return sorted(out)


@pytest.fixture(scope="module")
def minilm_vocab(minilm_path):
    return load_vocab_txt(Path(minilm_path) / "vocab.txt")


@pytest.fixture(scope="module")
def fast_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def hashed(minilm_path):
    return HashedWordPiece.from_tokenizer_files(minilm_path)


# ---- the perfect hash --------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_every_key_gets_its_own_index_and_the_permutation_maps_back(gamma):
    vocab = random_vocab(5000)
    hv = build_hashed_vocab(vocab, gamma=gamma)
    ids = np.array([hv.lookup(k) for k in vocab])
    assert sorted(ids.tolist()) == list(range(len(vocab)))  # minimal and perfect: a bijection onto [0, N)
    assert (hv.permutation[ids] == np.array(list(vocab.values()))).all()
    assert hv.build_stats.levels == hv.levels > 1
    assert sum(hv.build_stats.keys_per_level) == len(vocab)
    # BBHash's bound: ~γ·e^(1/γ) bits a key for the cascade (e ≈ 2.72 at γ = 1), plus word rounding.
    assert hv.total_bits / len(vocab) < gamma * math.exp(1 / gamma) + 0.4


def test_saved_file_holds_no_key_strings_and_loads_to_the_same_lookups(tmp_path):
    vocab = random_vocab(3000)
    hv = build_hashed_vocab(vocab, fingerprint_bits=12)
    path = hv.save(tmp_path)
    assert path == tmp_path / PHASH_FILE and not (tmp_path / PERMUTATION_FILE).exists()
    data = path.read_bytes()
    assert not [k for k in vocab if k.encode() in data[data.index(b"}") + 1:]]
    assert len(data) == hv.nbytes < len(vocab) * (12 + 4) / 8 + 400  # fingerprints + cascade + header
    loaded = HashedVocab.load(tmp_path)
    assert loaded.permutation is None  # only needed to reorder embedding rows, once, at build time
    probe = list(vocab) + unknown_strings(2000, vocab)
    assert [loaded.lookup(k) for k in probe] == [hv.lookup(k) for k in probe]
    hv.save(tmp_path / "with", with_permutation=True)
    assert (HashedVocab.load(tmp_path / "with").permutation == hv.permutation).all()


@pytest.mark.parametrize("bits", [0, 6, 10])
def test_false_positive_rate_is_what_the_formula_says(bits):
    vocab = random_vocab(4000)
    hv = build_hashed_vocab(vocab, fingerprint_bits=bits)
    probe = unknown_strings(60_000, vocab)
    accepted = sum(hv.lookup(s) is not None for s in probe)
    expected = hv.false_positive_rate * len(probe)
    if bits:
        assert 2.0 ** -bits * 0.9 < hv.false_positive_rate <= 2.0 ** -bits
    assert abs(accepted - expected) <= 5 * math.sqrt(expected) + 3, (accepted, expected)


def test_minilm_vocab_is_at_most_40_percent_of_vocab_txt(minilm_path, minilm_vocab, tmp_path):
    hv = build_hashed_vocab(minilm_vocab)  # defaults: γ = 1, 16-bit fingerprints
    assert len(minilm_vocab) == 30522
    assert all(hv.permutation[hv.lookup(k)] == i for k, i in minilm_vocab.items())
    written = HashedWordPiece(hv, HashedTokenizerConfig()).save(tmp_path)
    hashed_bytes = sum(p.stat().st_size for p in written)
    vocab_txt = (Path(minilm_path) / "vocab.txt").stat().st_size
    assert hashed_bytes <= 0.40 * vocab_txt, (hashed_bytes, vocab_txt)
    assert hv.false_positive_rate < 2.0 ** -16
    figures = hv.describe()
    assert figures["bytes"] == hv.nbytes == (tmp_path / PHASH_FILE).stat().st_size
    assert figures["levels"] == hv.levels >= 8 and figures["n_keys"] == 30522 and figures["bits_per_key"] < 20


def test_bad_vocabularies_and_configs_are_refused(tmp_path):
    with pytest.raises(PhashError, match="empty"):
        build_hashed_vocab({})
    with pytest.raises(PhashError, match="fingerprint_bits"):
        build_hashed_vocab({"a": 0}, fingerprint_bits=40)
    with pytest.raises(PhashError, match="gamma"):
        PhashConfig(gamma=0.1)
    with pytest.raises(PhashError, match="max_levels"):
        build_hashed_vocab(random_vocab(500), max_levels=1)
    dup = tmp_path / "vocab.txt"
    dup.write_text("[PAD]\nhello\nworld\nhello\n")
    with pytest.raises(PhashError, match=r"'hello' appears twice \(lines 2 and 4\)"):
        load_vocab_txt(dup)


def test_corrupt_or_missing_files_are_named_and_left_alone(tmp_path):
    with pytest.raises(PhashError, match="no vocab.phash"):
        HashedVocab.load(tmp_path)
    (tmp_path / PHASH_FILE).write_bytes(b"not a hash")
    with pytest.raises(PhashError, match="bad magic"):
        HashedVocab.load(tmp_path)
    good = build_hashed_vocab(random_vocab(300)).to_bytes()
    (tmp_path / PHASH_FILE).write_bytes(good[:40])
    with pytest.raises(PhashError, match="truncated or corrupt"):
        HashedVocab.load(tmp_path)
    assert (tmp_path / PHASH_FILE).read_bytes() == good[:40]
    with pytest.raises(PhashError, match="no hashed_tokenizer.json"):
        HashedWordPiece.from_dir(tmp_path)


# ---- the tokenizer: small hand-made vocabulary ------------------------------------------------------------

SMALL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a", "##ff", "hello", "world",
         "!", ",", "中", "naive", "cafe", "##s", "x", "##y"]


@pytest.fixture()
def small():
    return HashedWordPiece.build({t: i for i, t in enumerate(SMALL)})


def old_ids(tok, ids):
    return [SMALL[tok.permutation[i]] for i in ids]


def test_wordpiece_is_greedy_longest_match_first(small):
    assert old_ids(small, small.tokenize_ids("unaffable")) == ["un", "##aff", "##able"]
    assert old_ids(small, small.tokenize_ids("Hello, WORLD!")) == ["hello", ",", "world", "!"]
    # a word with a part no piece matches is one [UNK]; so is a word over max_input_chars_per_word
    assert old_ids(small, small.tokenize_ids("unaffablez hello")) == ["[UNK]", "hello"]
    assert old_ids(small, small.tokenize_ids("a" + "ff" * 60)) == ["[UNK]"]
    assert old_ids(small, small.tokenize_ids("a" + "ff" * 40)) == ["a"] + ["##ff"] * 40


def test_normalizer_strips_accents_cleans_and_splits_cjk(small):
    assert small.normalize("Naïve CAFÉ\u00a0x\x1cy\u200b\t中z") == "naive cafe xy  中 z"
    assert old_ids(small, small.tokenize_ids("Naïve cafés\u3000中中")) == ["naive", "cafe", "##s", "中", "中"]
    assert old_ids(small, small.tokenize_ids("hello[SEP]world [MASK]")) == ["hello", "[SEP]", "world", "[MASK]"]


def test_encoding_pairs_truncation_padding(small):
    batch = small(["hello world", "unaffable"], ["hello", "x"], padding=True)
    assert [old_ids(small, ids) for ids in batch["input_ids"]] == [
        ["[CLS]", "hello", "world", "[SEP]", "hello", "[SEP]", "[PAD]"],
        ["[CLS]", "un", "##aff", "##able", "[SEP]", "x", "[SEP]"],
    ]
    assert batch["token_type_ids"] == [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1]]
    assert batch["attention_mask"] == [[1] * 6 + [0], [1] * 7]
    assert batch["input_ids"][0][-1] == small.pad_token_id
    out = small("hello world hello world", truncation=True, max_length=4)
    assert old_ids(small, out["input_ids"]) == ["[CLS]", "hello", "world", "[SEP]"]
    t = small(["a", "hello world"], padding="max_length", max_length=6, return_tensors="pt")
    assert tuple(t["input_ids"].shape) == (2, 6) and t["attention_mask"].sum().item() == 7
    with pytest.raises(PhashError, match="padding=True"):
        small(["a", "hello world"], return_tensors="np")
    with pytest.raises(PhashError, match="no room for the special tokens"):
        small("hello", "world", truncation=True, max_length=2)


# (len a, len b, budget) -> kept lengths, as the packaged MiniLM's fast tokenizer truncates pairs (measured)
@pytest.mark.parametrize("na,nb,budget,kept", [
    (10, 3, 3, (2, 1)), (10, 3, 5, (3, 2)), (10, 3, 7, (4, 3)), (4, 4, 3, (1, 2)), (4, 4, 5, (2, 3)),
    (2, 9, 6, (2, 4)), (3, 3, 10, (3, 3)),
])
def test_truncate_longest_first_matches_tokenizers(na, nb, budget, kept):
    a, b = list(range(na)), list(range(100, 100 + nb))
    ta, tb = truncate_longest_first(a, b, budget)
    assert (len(ta), len(tb)) == kept and ta == a[:len(ta)] and tb == b[:len(tb)]


def test_special_token_missing_from_vocab_is_refused():
    with pytest.raises(PhashError, match=r"mask_token='\[MASK\]' is not in the hashed vocabulary"):
        HashedWordPiece.build({t: i for i, t in enumerate(SMALL) if t != "[MASK]"})


def test_non_wordpiece_tokenizer_files_are_refused(tmp_path):
    import json

    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}}}))
    with pytest.raises(PhashError, match="only copies WordPiece"):
        read_bert_tokenizer(tmp_path)
    with pytest.raises(PhashError, match="neither tokenizer.json nor vocab.txt"):
        read_bert_tokenizer(tmp_path / "missing")


# ---- the tokenizer against the packaged MiniLM's fast tokenizer -------------------------------------------

TRICKY = [
    "Hello, world! It's a well-known fact: 3.14 > 2.71 (approx.)",
    "Héllo İstanbul naïve CAFÉ Ωmega ΟΔΟΣ straße",
    "中文字符和日本語のテキスト 한국어", "emoji 😀🎬 and symbols $100 + 5% ~ ^ ` | <tag>",
    "tabs\tand\nnewlines\r\n and\u00a0nbsp and zero\u200bwidth and \x1c ctrl \x85 nel",
    "special [SEP] tokens [unk] [UNK] [MASK]x [CLS][PAD]", "supercalifragilisticexpialidocious " * 3,
    "a" * 101 + " " + "b" * 100, "", "   ", "\u0301accent first", "ﬁ ligature ² superscript Ⅻ numeral",
]


def test_tricky_texts_and_pairs_match_the_fast_tokenizer(hashed, fast_tokenizer):
    perm = hashed.permutation
    for text in TRICKY:
        assert perm[hashed(text)["input_ids"]].tolist() == fast_tokenizer(text)["input_ids"], text
    pairs = list(zip(TRICKY, TRICKY[::-1]))
    for max_length in (5, 9, 16, 40):
        ours = hashed([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=max_length, padding=True)
        ref = fast_tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=max_length,
                             padding=True)
        ours_ids = np.asarray(ours["input_ids"])
        pad = np.asarray(ours["attention_mask"]) == 0
        assert (np.where(pad, 0, perm[ours_ids]) == np.asarray(ref["input_ids"])).all(), max_length
        assert ours["token_type_ids"] == ref["token_type_ids"] and ours["attention_mask"] == ref["attention_mask"]


def test_saved_tokenizer_folder_reloads_without_token_strings(hashed, minilm_vocab, tmp_path):
    written = hashed.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, PHASH_FILE]) == sorted(p.name for p in written)
    blob = (tmp_path / PHASH_FILE).read_bytes()
    body = blob[blob.index(b"}") + 1:]  # after the json header (format settings: level sizes, seed, bits)
    assert len(body) > 0.9 * len(blob)
    assert not [t for t in minilm_vocab if len(t) >= 7 and t.encode() in body]
    import json

    strings = {v for v in json.loads((tmp_path / CONFIG_FILE).read_text()).values() if isinstance(v, str)}
    assert strings == {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]", "##"}  # settings only, no vocabulary
    again = HashedWordPiece.from_dir(tmp_path)
    assert again.permutation is None
    assert again(TRICKY, padding=True) == hashed(TRICKY, padding=True)


def test_reordered_embedding_rows_give_the_same_logits(hashed, fast_tokenizer, tiny_bert_config):
    """What the offline bundle does: permute word-embedding rows once, then feed hashed ids."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config).eval()
    texts = ["A gripping, beautifully acted film.", "Dull and far too long.", TRICKY[1]]
    with torch.no_grad():
        ref = model(**fast_tokenizer(texts, padding=True, return_tensors="pt")).logits
        emb = model.bert.embeddings.word_embeddings
        emb.weight.copy_(emb.weight[torch.as_tensor(hashed.permutation)])
        ours = model(**hashed(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["embedded:corpus", "embedded:rotten-tomatoes"])
def test_packaged_texts_tokenize_exactly_like_the_fast_tokenizer(name, hashed, fast_tokenizer):
    from bortify.resources import load_embedded_dataset

    texts = list(load_embedded_dataset(name)["text"])
    ref = fast_tokenizer(texts)["input_ids"]
    perm = hashed.permutation
    same = sum(perm[hashed(t)["input_ids"]].tolist() == r for t, r in zip(texts, ref))
    assert same / len(texts) >= 0.995, f"{same}/{len(texts)} texts tokenized identically"
