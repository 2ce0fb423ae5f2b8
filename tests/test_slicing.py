"""bortify.slicing: teacher-sliced initialisation (Minitron-style) of smaller BERTs."""

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
)

from bortify.slicing import SlicingError, default_layer_map, init_from_teacher


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def _shrink(config, **sizes):
    return BertConfig(**{**config.to_dict(), **sizes})


@pytest.fixture(scope="module")
def minilm(minilm_path):
    model = AutoModel.from_pretrained(minilm_path).eval()
    tok = AutoTokenizer.from_pretrained(minilm_path)
    return model, tok


@pytest.fixture(scope="module")
def sentences(rotten_tomatoes):
    ds = rotten_tomatoes.shuffle(seed=0)
    return list(ds.select(range(48))["text"]), list(ds.select(range(100, 148))["text"])


def _sentence_sim(model, enc):
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
    return (e @ e.T).flatten()


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_default_layer_map_even_and_keeps_last():
    assert default_layer_map(6, 6) == list(range(6))
    assert default_layer_map(2, 6) == [2, 5]
    assert default_layer_map(4, 24) == [5, 11, 17, 23]
    assert default_layer_map(1, 12) == [11]
    assert default_layer_map(3, 6) == [1, 3, 5]
    # deeper than the teacher (representation KD only): teacher layers repeat, in order, the last one kept
    assert default_layer_map(7, 6) == [0, 1, 2, 2, 3, 4, 5]
    with pytest.raises(SlicingError):
        default_layer_map(0, 6)


def test_a_student_deeper_than_its_teacher_is_refused_by_slicing(tiny_bert_config):
    from transformers import BertConfig, BertModel

    teacher = BertModel(tiny_bert_config)
    deeper = BertConfig(**{**tiny_bert_config.to_dict(), "num_hidden_layers": tiny_bert_config.num_hidden_layers + 1})
    with pytest.raises(SlicingError, match="num_hidden_layers"):
        init_from_teacher(BertModel(deeper), teacher)


def test_same_shape_student_is_identical_tiny_mlm(tiny_bert_config):
    torch.manual_seed(0)
    teacher = BertForMaskedLM(tiny_bert_config).eval()
    torch.manual_seed(1)
    student = BertForMaskedLM(tiny_bert_config).eval()
    ids = torch.randint(0, tiny_bert_config.vocab_size, (2, 12))
    with torch.no_grad():
        before = (student(input_ids=ids).logits - teacher(input_ids=ids).logits).abs().max()
    for importance in ("magnitude", "first", "activation"):
        info = init_from_teacher(student, teacher, importance=importance, calibration={"input_ids": ids})
        with torch.no_grad():
            diff = (student(input_ids=ids).logits - teacher(input_ids=ids).logits).abs().max()
        assert before > 1e-2
        assert diff < 1e-5, importance
        assert info["identity"] and info["mlm_head"]


@pytest.mark.slow
def test_same_shape_student_is_identical_real_minilm(minilm, sentences):
    teacher, tok = minilm
    student = BertModel(teacher.config).eval()
    init_from_teacher(student, teacher)
    enc = tok(sentences[0][:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(student(**enc).last_hidden_state, teacher(**enc).last_hidden_state)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sizes",
    [
        dict(num_hidden_layers=3, num_attention_heads=6, hidden_size=192, intermediate_size=768),  # head size 32 = teacher's
        dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=256, intermediate_size=512),  # wider heads: merged
        dict(num_hidden_layers=4, num_attention_heads=12, hidden_size=384, intermediate_size=768),
    ],
)
def test_sliced_student_tracks_teacher_better_than_random(minilm, sentences, sizes):
    teacher, tok = minilm
    eval_text, calib_text = sentences
    enc = tok(eval_text, padding=True, truncation=True, max_length=64, return_tensors="pt")
    calib = tok(calib_text, padding=True, truncation=True, max_length=64, return_tensors="pt")
    ref = _sentence_sim(teacher, enc)
    torch.manual_seed(0)
    student = BertModel(_shrink(teacher.config, **sizes)).eval()
    random_corr = _corr(ref, _sentence_sim(student, enc))
    info = init_from_teacher(student, teacher, importance="activation", calibration=calib)
    sliced_corr = _corr(ref, _sentence_sim(student, enc))
    assert info["layers"] == default_layer_map(sizes["num_hidden_layers"], 6)
    assert len(info["heads"]) == sizes["num_hidden_layers"]
    assert sliced_corr > 0.5, sliced_corr
    assert sliced_corr > random_corr + 0.2, (sliced_corr, random_corr)


@pytest.mark.slow
def test_activation_importance_beats_naive_truncation(minilm, sentences):
    teacher, tok = minilm
    enc = tok(sentences[0], padding=True, truncation=True, max_length=64, return_tensors="pt")
    calib = tok(sentences[1], padding=True, truncation=True, max_length=64, return_tensors="pt")
    ref = _sentence_sim(teacher, enc)
    student = BertModel(_shrink(teacher.config, num_hidden_layers=6, hidden_size=288, intermediate_size=1536)).eval()
    init_from_teacher(student, teacher, importance="first")
    first = _corr(ref, _sentence_sim(student, enc))
    init_from_teacher(student, teacher, importance="activation", calibration=calib)
    activation = _corr(ref, _sentence_sim(student, enc))
    assert activation > first + 0.05, (activation, first)


@pytest.mark.slow
def test_mlm_head_sliced_from_real_masked_lm(splade_path):
    teacher = AutoModelForMaskedLM.from_pretrained(splade_path).eval()
    tok = AutoTokenizer.from_pretrained(splade_path)
    student = BertForMaskedLM(_shrink(teacher.config, num_hidden_layers=2, hidden_size=96, intermediate_size=384)).eval()
    enc = tok(["the movie was a [MASK] of time .", "paris is the [MASK] of france ."], padding=True, return_tensors="pt")
    info = init_from_teacher(student, teacher)
    assert info["mlm_head"] and not info["identity"]
    with torch.no_grad():
        t_logits = teacher(**enc).logits.flatten()
        s_logits = student(**enc).logits.flatten()
    assert _corr(t_logits, s_logits) > 0.5
    torch.testing.assert_close(student.cls.predictions.bias, teacher.cls.predictions.bias)


def test_sequence_classification_student_gets_encoder_and_pooler(tiny_bert_config):
    teacher = BertModel(tiny_bert_config).eval()
    small = _shrink(tiny_bert_config, hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1, num_labels=2)
    student = BertForSequenceClassification(small)
    info = init_from_teacher(student, teacher, importance="first")
    assert info["pooler"] and not info["mlm_head"]
    assert info["layers"] == [1]
    torch.testing.assert_close(student.bert.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight[:, :16])
    torch.testing.assert_close(student.bert.encoder.layer[0].intermediate.dense.weight,
                               teacher.encoder.layer[1].intermediate.dense.weight[:32, :16])
    ids = torch.randint(0, 30522, (2, 7))
    assert torch.isfinite(student(input_ids=ids).logits).all()


def test_more_student_heads_than_teacher_heads_still_builds(tiny_bert_config):
    teacher = BertModel(tiny_bert_config).eval()  # A=2, head size 16
    student = BertModel(_shrink(tiny_bert_config, num_attention_heads=4, hidden_size=24, intermediate_size=48)).eval()
    info = init_from_teacher(student, teacher)
    assert info["head_size"] == 6 and info["teacher_head_size"] == 16
    ids = torch.randint(0, 30522, (2, 7))
    assert torch.isfinite(student(input_ids=ids).last_hidden_state).all()


def test_errors_name_the_problem(tiny_bert_config):
    teacher = BertModel(tiny_bert_config)
    with pytest.raises(SlicingError, match="hidden_size=64 > teacher 32"):
        init_from_teacher(BertModel(_shrink(tiny_bert_config, hidden_size=64)), teacher)
    with pytest.raises(SlicingError, match="num_hidden_layers=3 > teacher 2"):
        init_from_teacher(BertModel(_shrink(tiny_bert_config, num_hidden_layers=3)), teacher)
    with pytest.raises(SlicingError, match="vocabulary mismatch"):
        init_from_teacher(BertModel(_shrink(tiny_bert_config, vocab_size=1000)), teacher)
    with pytest.raises(SlicingError, match="layer_map"):
        init_from_teacher(BertModel(_shrink(tiny_bert_config, num_hidden_layers=1)), teacher, layer_map=[5])
    with pytest.raises(SlicingError, match="calibration"):
        init_from_teacher(BertModel(tiny_bert_config), teacher, importance="activation")
    with pytest.raises(SlicingError, match="importance"):
        init_from_teacher(BertModel(tiny_bert_config), teacher, importance="random")
    with pytest.raises(SlicingError, match="BERT layout"):
        init_from_teacher(torch.nn.Linear(2, 2), teacher)
