"""Agora's text generators (bortify/finetuning/generators.py, docs/methods/03-agora.md §3.3): nearest-neighbour token
substitution on a hand-made embedding table (fast) and on the packaged MiniLM's (slow), and `generate_rows`."""

import random

import pytest
import torch
from transformers import BertTokenizer

from bortify.finetuning.arguments import GENERATORS as DOCUMENTED
from bortify.finetuning.generators import GENERATORS, NearestNeighbourSubstitution, generate_rows

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["good", "great", "fine", "bad", "awful", "film", "movie", "##s", "[unused0]", "a"]


def tiny_generator(**kw):
    """Words in 2-d clusters: good/great/fine near (1, 0), bad/awful near (-1, 0), film/movie near (0, 1)."""
    vocab = SPECIAL + WORDS
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    places = {"good": (1, 0), "great": (0.95, 0.05), "fine": (0.9, 0.1), "bad": (-1, 0), "awful": (-0.95, 0.05),
              "film": (0, 1), "movie": (0.05, 0.95), "##s": (0.1, 0.99), "a": (0.5, 0.5)}
    emb = torch.tensor([places.get(w, (0.99, 0.01)) for w in vocab], dtype=torch.float)  # specials sit near "good"
    return tok, NearestNeighbourSubstitution(tok, emb, **kw)


def test_every_documented_generator_is_built_and_every_built_one_documented():
    assert set(GENERATORS) == set(DOCUMENTED) and GENERATORS["nn-substitution"] is NearestNeighbourSubstitution


def test_nearest_are_word_like_tokens_of_the_same_kind_never_the_token_or_a_special_one():
    tok, gen = tiny_generator(neighbours=2)
    good = tok.convert_tokens_to_ids("good")
    assert tok.convert_ids_to_tokens(gen.nearest(good)) == ["great", "fine"]  # not [PAD]/[unused0], which sit closer
    film = tok.convert_tokens_to_ids("film")
    assert "##s" not in tok.convert_ids_to_tokens(gen.nearest(film))  # a whole word never becomes a `##` piece


def test_variants_are_distinct_and_never_the_original():
    _, gen = tiny_generator(rate=0.5, neighbours=2)
    variants = gen("good film", 3, random.Random(0))
    assert variants and len(variants) == len(set(variants)) and "good film" not in variants
    assert all(len(v.split()) == 2 for v in variants)


def test_an_embedding_table_of_another_model_is_refused():
    tok, _ = tiny_generator()
    with pytest.raises(ValueError, match="same model"):
        NearestNeighbourSubstitution(tok, torch.zeros(3, 2))


@pytest.mark.parametrize("k, expected", [(1, 1), (3, 3)])
def test_generate_rows_varies_both_sides_of_a_pair_and_drops_excluded_and_unchanged_rows(k, expected):
    def gen(text, k, rng):
        return [f"{text} v{j}" for j in range(k)] if text != "same" else []  # "same" has no variant

    rows = generate_rows([{"a": "x", "b": "y"}], ["a", "b"], gen, k, random.Random(0))
    assert rows == [{"a": f"x v{j}", "b": f"y v{j}"} for j in range(expected)]
    assert generate_rows([{"a": "x", "b": "same"}], ["a", "b"], gen, 2, random.Random(0),
                         exclude={("x v0", "same")}) == [{"a": "x v1", "b": "same"}]  # a side without variants stays
    assert generate_rows([{"a": "same"}], ["a"], gen, 2, random.Random(0)) == []  # nothing new: nothing returned


@pytest.mark.slow
def test_generator_substitutes_nearest_neighbours_on_real_embeddings(minilm_path):
    from transformers import AutoModel, AutoTokenizer

    from bortify.finetuning.generators import NearestNeighbourSubstitution, generate_rows

    tok = AutoTokenizer.from_pretrained(minilm_path)
    emb = AutoModel.from_pretrained(minilm_path).get_input_embeddings().weight
    gen = NearestNeighbourSubstitution(tok, emb, rate=0.15, neighbours=8)
    good = tok.convert_tokens_to_ids("good")
    neighbours = tok.convert_ids_to_tokens(gen.nearest(good))
    assert "good" not in neighbours and len(neighbours) == 8
    assert {"great", "bad", "excellent"} & set(neighbours)  # semantically close words, real MiniLM table
    assert all(t.isalpha() and not t.startswith("##") for t in neighbours)
    text = "a dull and lifeless movie with a terrible script and wooden acting"
    variants = gen(text, 5, random.Random(0))
    assert len(variants) == len(set(variants)) == 5
    n_words = len(text.split())
    for v in variants:
        assert v != text and "[" not in v  # never the original, never a special token
        changed = sum(a != b for a, b in zip(v.split(), text.split()))
        assert len(v.split()) == n_words and 1 <= changed <= max(1, round(0.15 * n_words)) + 1
    rows = generate_rows([{"text": text}], ["text"], gen, 3, random.Random(1), exclude={variants[0]})
    assert len(rows) <= 3 and all(r["text"] not in (text, variants[0]) for r in rows)


