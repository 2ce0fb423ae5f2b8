"""Unit tests of the helpers behind "a broken model never looks like a result" and the inputs that used to crash or
hang: strict JSON (utils.json_text), the finite-weights check, position limits, the training guard
(bortify.trainer.FiniteGuard), YAML without aliases (recipes.RecipeLoader), CR-only csv files and numeric texts."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from bortify import utils


# ---- strict JSON -------------------------------------------------------------------------------------------

def test_json_text_refuses_non_finite_numbers_naming_where():
    obj = {"test": {"accuracy": float("nan"), "f1": 0.5}, "rounds": [1.0, float("inf")], "n": 3}
    assert utils.non_finite_paths(obj) == ["test.accuracy", "rounds[1]"]
    with pytest.raises(utils.NonFiniteError, match=r"report\.json: .*\['test\.accuracy', 'rounds\[1\]'\]"):
        utils.json_text(obj, what="report.json")


def test_json_text_nulls_only_where_asked_and_output_is_strict_json():
    text = utils.json_text({"a": [1, float("-inf")], "b": {"c": float("nan")}, "d": 2.5}, nulls=True)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text}")) == {
        "a": [1, None], "b": {"c": None}, "d": 2.5}
    assert utils.json_text({"x": 1.0}, indent=2) == '{\n  "x": 1.0\n}'
    import numpy as np

    with pytest.raises(utils.NonFiniteError):  # numpy floats are checked too
        utils.json_text({"x": np.float64("nan")})


def test_write_json_atomic_leaves_the_old_file_when_refused(tmp_path):
    path = tmp_path / "report.json"
    utils.write_json_atomic(path, {"accuracy": 0.8})
    with pytest.raises(utils.NonFiniteError, match="report.json"):
        utils.write_json_atomic(path, {"accuracy": float("nan")})
    assert json.loads(path.read_text()) == {"accuracy": 0.8}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# ---- finite weights ----------------------------------------------------------------------------------------

def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_weights_module_mapping_and_files(tmp_path, bad):
    from safetensors.torch import save_file

    model = _tiny()
    utils.check_finite_weights(model, "fine")  # no error
    with torch.no_grad():
        model[1].bias[2] = bad
    with pytest.raises(utils.NonFiniteWeightsError, match=r"The model x has non-finite weights .* in 1 of 4 tensors"
                                                         r", e\.g\. \['1\.bias'\]"):
        utils.check_finite_weights(model, "The model x")
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    with pytest.raises(utils.NonFiniteWeightsError, match=r"1\.bias"):
        utils.check_finite_weights(state, "a mapping")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(utils.NonFiniteWeightsError, match=r"model\.safetensors:1\.bias"):
        utils.check_finite_weights(tmp_path, "the folder")
    with pytest.raises(utils.NonFiniteWeightsError):
        utils.check_finite_weights(tmp_path / "model.safetensors", "the file")
    assert utils.non_finite_tensors({"ids": torch.arange(3)}) == ([], 1)  # integer buffers are never NaN


# ---- position limits ---------------------------------------------------------------------------------------

def test_position_limit_and_padding_offset():
    from transformers import BertConfig, GPT2Config, RobertaConfig

    assert utils.position_limit(BertConfig(max_position_embeddings=64)) == 64
    assert utils.position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert utils.position_limit(GPT2Config(n_positions=32)) == 32
    assert utils.position_limit(SimpleNamespace()) is None
    utils.check_sequence_length(512, RobertaConfig(max_position_embeddings=514, pad_token_id=1), "--max_length", "m")
    with pytest.raises(utils.SequenceLengthError, match=r"--max_length 513 exceeds what m can read: .*"
                                                        r"max_position_embeddings 514 less the padding offset 2 = 512"):
        utils.check_sequence_length(513, RobertaConfig(max_position_embeddings=514, pad_token_id=1), "--max_length",
                                    "m")
    utils.check_sequence_length(None, BertConfig(max_position_embeddings=8), "--max_length", "m")  # unset: nothing


def test_fit_sequence_length_shortens_the_default_and_refuses_an_explicit_length():
    from transformers import BertConfig

    short, long = BertConfig(max_position_embeddings=64), BertConfig(max_position_embeddings=512)
    models = [(long, "the teacher"), (short, "the student")]
    assert utils.fit_sequence_length(128, 128, models, "--max_length") == 64  # the default: the shortest table
    assert utils.fit_sequence_length(48, 128, models, "--max_length") == 48
    with pytest.raises(utils.SequenceLengthError, match=r"--max_length 100 exceeds what the student can read"):
        utils.fit_sequence_length(100, 128, models, "--max_length")


# ---- the training guard ------------------------------------------------------------------------------------

def test_finite_guard_checks_weights_on_a_doubling_schedule_and_at_the_end():
    from bortify.trainer import FiniteGuard

    model = _tiny()
    guard = FiniteGuard("the run with θ = (learning_rate 0.1)", "lower it")
    state = SimpleNamespace(global_step=0)
    checked = []
    real = utils.non_finite_tensors

    def spy(weights):
        checked.append(state.global_step)
        return real(weights)

    import bortify.utils

    bortify.utils.non_finite_tensors, saved = spy, bortify.utils.non_finite_tensors
    try:
        for step in range(1, 10):
            state.global_step = step
            guard.on_step_end(None, state, None, model=model)
        assert checked == [1, 2, 4, 8]
        guard.on_log(None, state, None, logs={"loss": 0.7})
        with pytest.raises(utils.DivergedError, match=r"Training diverged in the run with θ = \(learning_rate 0\.1\): "
                                                      r"the training loss is nan at step 9.*lower it"):
            guard.on_log(None, state, None, logs={"train_loss": math.nan})
        with torch.no_grad():
            model[0].weight[0, 0] = float("nan")
        with pytest.raises(utils.DivergedError, match=r"1 of 4 weight tensors hold NaN or inf \(e\.g\. \['0\.weight'\]\)"):
            guard.on_train_end(None, state, None, model=model)
    finally:
        bortify.utils.non_finite_tensors = saved
    FiniteGuard("sharded", weights=False).on_train_end(None, state, None, model=model)  # losses only


def test_fit_stops_a_diverged_run_naming_its_theta(tmp_path):
    """A real Trainer run (a 1-layer BERT) with a learning rate that overflows the weights."""
    import datasets
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from bortify.finetuning.trainer import fit, tokenize

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16,
                                                     max_position_embeddings=16))
    ds = datasets.Dataset.from_dict({"text": ["good film", "bad film"] * 8, "label": [1, 0] * 8})
    train = tokenize(ds, tok, ["text"], 8)
    theta = {"learning_rate": 1e30, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 4}
    with pytest.raises(utils.DivergedError, match=r"θ = \(learning_rate 1e\+30, weight_decay 0\.0, warmup_ratio 0\.0, "
                                                  r"batch_size 4\).*--learning_rates"):
        fit(model, tok, train, theta, epochs=2)
    utils.check_finite_weights(model, "model0")  # fit trains a copy: the start model is untouched


# ---- recipes: no anchors, no aliases -----------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    ("a: &a [x, x]\nb: [*a, *a]\n", r"anchor \(&a\) at line 1, column 4"),
    ("a: 1\nb: *a\n", r"alias \(\*a\) at line 2, column 4"),
    ("base: {x: 1}\nextract:\n  <<: *base\n", r"alias \(\*base\) at line 3"),
])
def test_recipes_refuse_anchors_and_aliases(tmp_path, text, match):
    from bortify.recipes import RecipeError, load_recipe

    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeError, match=match):
        load_recipe(tmp_path / "r.yaml")


def test_recipes_without_aliases_load_as_before(tmp_path):
    from bortify.recipes import load_recipe

    (tmp_path / "r.yaml").write_text("extract:\n  epsilon: 0.1\n  depths: [1, 2]\nnote: 'a & b * c'\n")
    assert load_recipe(tmp_path / "r.yaml") == {"extract": {"epsilon": 0.1, "depths": [1, 2]}, "note": "a & b * c"}


# ---- data: CR-only lines, numeric texts ---------------------------------------------------------------------

def test_cr_only_detection(tmp_path):
    from bortify.data import _cr_only, _has_data_rows

    (tmp_path / "cr.csv").write_bytes(b"text,label\rgood,a\rbad,b\r")
    (tmp_path / "crlf.csv").write_bytes(b"text,label\r\ngood,a\r\n")
    (tmp_path / "head.csv").write_bytes(b"text,label\r")
    assert _cr_only(str(tmp_path / "cr.csv")) and not _cr_only(str(tmp_path / "crlf.csv"))
    assert _has_data_rows(str(tmp_path / "cr.csv"), "csv") and not _has_data_rows(str(tmp_path / "head.csv"), "csv")


@pytest.mark.parametrize("value, text", [(12, "12"), (3.0, "3"), (0.25, "0.25"), (float("nan"), None), (None, None),
                                         ("x", "x")])
def test_numbers_are_read_as_texts(value, text):
    from bortify.finetuning.tasks import _as_text

    assert _as_text(value) == text
