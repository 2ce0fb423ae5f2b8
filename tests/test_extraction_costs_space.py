"""Extraction: closed-form costs against real transformers models, and the search space."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

from bortify.extraction.costs import (
    Shape,
    bert_config,
    effective_parameter_count,
    measure_latency,
    operation_count,
    parameter_count,
)
from bortify.extraction.space import InlineSource, SpaceError, build_space, load_source_config

BORT_SPACE = dict(depths=[2, 4, 6, 8, 10, 12], heads=[4, 8, 12, 16], hidden_sizes=[512, 768, 1024],
                  intermediate_sizes=[256, 512, 768, 1024, 3072])
BERT_LARGE_BORT_VOCAB = InlineSource(layers=24, heads=16, hidden=1024, intermediate=4096, vocab_size=50265,
                                     max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)


@pytest.fixture(scope="module")
def bort_space():
    source = load_source_config("bert-large-uncased", BERT_LARGE_BORT_VOCAB)  # complete inline shape: no Hub
    return build_space(source, **BORT_SPACE)


def test_bort_space_has_300_candidates_and_60_dropped(bort_space):
    assert len(bort_space.candidates) == 300
    assert bort_space.dropped_indivisible == 60
    assert bort_space.dropped_larger == 0
    assert all(s.H % s.A == 0 for s in bort_space.candidates)
    assert bort_space.maximum_point == Shape(24, 16, 1024, 4096, 50265, 514, 1)


def test_closed_form_parameters_equal_transformers_for_all_300(bort_space):
    """p(ξ) == BertModel(config).num_parameters() for every Bort candidate (meta device: no memory)."""
    with torch.device("meta"):
        for shape in bort_space.candidates:
            model = BertModel(bert_config(shape, bort_space.source))
            assert parameter_count(shape) == model.num_parameters(), shape
            encoder = sum(p.numel() for p in model.encoder.parameters())
            assert effective_parameter_count(shape) == encoder, shape
        # BERT-large itself, with and without its pooler
        T = bort_space.maximum_point
        assert parameter_count(T) == BertModel(bert_config(T)).num_parameters()
        assert parameter_count(T, pooler=False) == BertModel(bert_config(T), add_pooling_layer=False).num_parameters()


def test_bort_reported_sizes():
    """The two readings of Bort's ⟨4,8,768,1024⟩ (docs/methods/01-extraction.md §1): ~55M paper reading, ~75M released weights."""
    paper = Shape(4, 8, 768, 1024, 50265, 514, 1)
    released = Shape(4, 8, 1024, 768, 50265, 514, 1)
    large = Shape(24, 16, 1024, 4096, 50265, 514, 1)
    assert 54e6 < parameter_count(paper, pooler=False) < 57e6
    assert 74e6 < parameter_count(released, pooler=False) < 77e6
    assert 0.05 < effective_parameter_count(paper) / effective_parameter_count(large) < 0.06  # "5.5% effective"


def test_operation_count_is_exact_for_a_layer_and_orders_candidates():
    s = Shape(1, 2, 8, 16)
    L = 4
    expected = 4 * L * 8 * 8 + 2 * L * 8 * 16 + 2 * L * L * 8 + 2 * L * L
    assert operation_count(s, L) == expected
    assert operation_count(Shape(2, 2, 8, 16), L) == 2 * expected
    assert operation_count(Shape(1, 4, 8, 16), L) > expected  # heads matter a little (softmax)
    assert operation_count(s, 2 * L) > 2 * expected  # attention is quadratic in L


def test_measure_latency_times_the_candidate_forward(tiny_bert_config, monkeypatch):
    """Timing-independent: asserts what is timed (forward passes of BertModel(config) at batch x
    seq_len) and that the result is a positive, finite number of seconds. Which of two models runs faster is
    not asserted (a loaded shared machine can reorder them); the size order is the exact operation count's."""
    big_config = BertConfig(**{**tiny_bert_config.to_dict(), "num_hidden_layers": 6, "hidden_size": 512,
                               "intermediate_size": 2048, "num_attention_heads": 8})
    small_shape, big_shape = Shape.from_config(tiny_bert_config), Shape.from_config(big_config)
    assert operation_count(big_shape, 64) > 500 * operation_count(small_shape, 64)  # ~780x more multiply-adds
    seen = []
    real_forward = BertModel.forward

    def spy(self, *args, **kwargs):
        seen.append((self.config.num_hidden_layers, self.config.hidden_size, tuple(kwargs["input_ids"].shape)))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(BertModel, "forward", spy)
    seconds = measure_latency(tiny_bert_config, batch_size=2, seq_len=16, repeats=2)
    assert 0 < seconds < float("inf")
    assert len(seen) >= 2 and set(seen) == {(2, 32, (2, 16))}  # warm-up + timed calls, all of this candidate
    with pytest.raises(ValueError, match="seq_len"):
        measure_latency(tiny_bert_config, seq_len=1000)


@pytest.mark.slow
def test_source_from_embedded_checkpoint_and_config_json(minilm_path, tmp_path):
    config = load_source_config("embedded:all-MiniLM-L6-v2")
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size, config.intermediate_size) == (6, 12, 384, 1536)
    assert config.vocab_size == 30522
    from_json = load_source_config(f"{minilm_path}/config.json")
    assert from_json.to_dict()["hidden_size"] == 384
    # inline fields override a loaded config
    assert load_source_config("embedded:all-MiniLM-L6-v2", InlineSource(layers=3)).num_hidden_layers == 3


def test_roberta_shaped_source_is_accepted(tmp_path):
    from transformers import RobertaConfig

    RobertaConfig(vocab_size=50265, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=514, type_vocab_size=1).save_pretrained(tmp_path)
    config = load_source_config(str(tmp_path))
    assert isinstance(config, BertConfig) and config.vocab_size == 50265 and config.type_vocab_size == 1


def test_bad_sources_and_spaces_are_clear_errors(tmp_path):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2}))
    with pytest.raises(SpaceError, match="not BERT-shaped|not a BERT-shaped"):
        load_source_config(str(gpt2))
    with pytest.raises(SpaceError, match="not BERT-shaped|not a BERT-shaped"):
        load_source_config(str(gpt2 / "config.json"))
    with pytest.raises(SpaceError, match="Could not load"):
        load_source_config(str(tmp_path / "nowhere"))
    source = load_source_config("x", InlineSource(layers=6, heads=4, hidden=256, intermediate=1024, vocab_size=100))
    with pytest.raises(SpaceError, match="empty"):
        build_space(source, [], [4], [128], [256])
    with pytest.raises(SpaceError, match="positive"):
        build_space(source, [2], [4], [0, 128], [256])
    with pytest.raises(SpaceError, match="empty after dropping 1"):
        build_space(source, [2], [3], [128], [256])  # 128 % 3 != 0
    with pytest.raises(SpaceError, match="positive"):
        load_source_config("x", InlineSource(layers=6, heads=4, hidden=-1, intermediate=1024, vocab_size=100))
    space = build_space(source, [2, 12], [4], [128], [256])
    assert len(space.candidates) == 1 and space.dropped_larger == 1


def test_winner_config_round_trips_through_auto_classes(tmp_path):
    shape = Shape(2, 4, 128, 256)
    bert_config(shape).save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    model = AutoModel.from_config(loaded)
    assert isinstance(model, BertModel)
    assert model.num_parameters() == parameter_count(shape)
