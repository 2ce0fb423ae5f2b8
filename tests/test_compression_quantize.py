"""Linear 8-bit quantisation (bortify.compression.quantize, docs/methods/05-compression.md §5): the arithmetic, the zero-dropping
sparse form, the safetensors storage and the loader that rebuilds a transformers model."""

import json

import numpy as np
import pytest
import torch

from bortify.compression import quantize as q

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _weights(shape=(16, 40), seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("per_channel", [False, True])
def test_every_weight_is_within_half_a_step_and_zero_is_exact(per_channel):
    w = _weights()
    w[3, 5] = 0.0
    w[0, 0] = w.max() + 0.3  # an outlier widens the range
    quant = q.quantize_array(w, q.QuantConfig(per_channel=per_channel, drop_zeros=False))
    back = q.dequantize(quant).numpy()
    step = quant.step if not per_channel else quant.step[:, None]
    assert quant.codes.dtype == np.uint8 and quant.codes.shape == w.shape
    assert quant.step.size == (w.shape[0] if per_channel else 1)
    assert np.all(np.abs(back - w) <= step / 2 + 1e-7)
    assert back[3, 5] == 0.0  # 0 is on the grid
    # 256 levels over [min(w, 0), max(w, 0)]: the table min + k·step spans the range
    lo = np.minimum(w.reshape(quant.step.size, -1).min(1), 0)
    assert np.all(np.abs(-quant.zero.astype(np.float64) * quant.step - lo) <= quant.step / 2 + 1e-7)


def test_per_channel_is_more_accurate_on_rows_of_different_scale():
    w = _weights((8, 64))
    w[0] *= 50  # one row with a much wider range
    err = {pc: np.abs(q.dequantize(q.quantize_array(w, q.QuantConfig(per_channel=pc))).numpy() - w)[1:].max()
           for pc in (False, True)}
    assert err[True] < err[False] / 10


def test_zero_threshold_drops_small_weights_into_a_smaller_sparse_form():
    w = _weights((32, 64))
    plain = q.quantize_array(w, q.QuantConfig(zero_threshold=0.5))
    pruned = q.quantize_array(w, q.QuantConfig(zero_threshold=20))
    assert plain.mask is None  # few zeros: one byte a weight is smaller
    assert pruned.mask is not None and pruned.nbytes < plain.nbytes
    back = q.dequantize(pruned).numpy()
    step = np.broadcast_to(pruned.step[:, None], w.shape)  # per output channel (QuantConfig's default)
    small = np.abs(w) <= 20 * step
    assert small.mean() > 0.2 and np.all(back[small] == 0)
    assert np.all(np.abs(back[~small] - w[~small]) <= step[~small] / 2 + 1e-7)
    dense = q.quantize_array(w, q.QuantConfig(zero_threshold=20, drop_zeros=False))
    assert torch.equal(q.dequantize(dense), q.dequantize(pruned))  # same values, two layouts


def test_bad_settings_are_refused():
    with pytest.raises(q.QuantizeError, match="zero_threshold must be a number >= 0"):
        q.QuantConfig(zero_threshold=-1)


def _tiny_classifier(tiny_bert_config):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    tiny_bert_config.vocab_size = 300
    tiny_bert_config.num_labels = 3
    tiny_bert_config.architectures = ["BertForSequenceClassification"]
    return BertForSequenceClassification(tiny_bert_config).eval()


def test_file_round_trip_rebuilds_the_transformers_model(tiny_bert_config, tmp_path):
    from safetensors import safe_open

    model = _tiny_classifier(tiny_bert_config)
    weights = q.quantize_model(model, q.QuantConfig(zero_threshold=3))
    path = q.save_quantized(weights, tmp_path / q.Q8_FILE)
    model.config.save_pretrained(tmp_path)
    with safe_open(str(path), framework="np") as f:  # plain safetensors: no pickle anywhere
        assert f.metadata()["format"] == q.FORMAT
        assert f.get_tensor("bert.encoder.layer.0.intermediate.dense.weight::codes").dtype == np.uint8
        assert "classifier.bias" in f.keys()  # small tensors stay float32
    rebuilt = q.load_quantized_model(tmp_path)
    assert type(rebuilt).__name__ == "BertForSequenceClassification"
    ids = torch.randint(5, 300, (4, 12))
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, rebuilt(input_ids=ids).logits
    assert torch.allclose(a, b, atol=0.05) and not torch.equal(a, b)  # 8-bit: close, not identical
    for name, tensor in rebuilt.state_dict().items():
        expected = model.state_dict()[name]
        if name in weights.quantized:
            assert (tensor - expected).abs().max() <= weights.quantized[name].step.max() * 3 + 1e-6
        else:
            assert torch.equal(tensor, expected)
    sizes = weights.bytes_by_name()
    parts = q.bytes_by_part(sizes)
    assert set(parts) == set(q.PARTS) and sum(parts.values()) == sum(sizes.values())
    assert parts["embeddings"] > parts["head"] > 0


def test_tied_weights_are_stored_once_and_restored(tiny_bert_config, tmp_path):
    from transformers import BertForMaskedLM

    tiny_bert_config.vocab_size = 300
    tiny_bert_config.architectures = ["BertForMaskedLM"]
    model = BertForMaskedLM(tiny_bert_config).eval()
    weights = q.quantize_model(model)
    assert weights.aliases["cls.predictions.decoder.weight"] == "bert.embeddings.word_embeddings.weight"
    q.save_quantized(weights, tmp_path / q.Q8_FILE)
    model.config.save_pretrained(tmp_path)
    rebuilt = q.load_quantized_model(tmp_path)
    assert type(rebuilt).__name__ == "BertForMaskedLM"
    assert torch.equal(rebuilt.cls.predictions.decoder.weight, rebuilt.bert.embeddings.word_embeddings.weight)


def test_foreign_or_missing_files_are_refused_by_name(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(q.QuantizeError, match="does not exist: quantise a checkpoint first"):
        q.load_quantized(tmp_path / "nope.safetensors")
    save_file({"w": np.zeros((2, 2), np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(q.QuantizeError, match="not a bortify 8-bit weights file"):
        q.load_quantized(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(q.QuantizeError, match="not a readable safetensors file"):
        q.load_quantized(tmp_path / "junk.safetensors")


def test_entropy_figures(tmp_path):
    w = _weights((64, 64))
    weights = q.QuantizedWeights(quantized={"a.weight": q.quantize_array(w, q.QuantConfig(per_channel=False))})
    bits = q.code_entropy_bits(weights)
    assert 3 < bits < 8  # a bell-shaped matrix uses fewer than 8 bits of its 256 codes
    path = q.save_quantized(weights, tmp_path / "w.safetensors")
    coded = q.entropy_coded_sizes(path)
    assert coded["lzma"] < path.stat().st_size and coded["zlib"] < path.stat().st_size
    assert json.loads(json.dumps(coded)) == coded
