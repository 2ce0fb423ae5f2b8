"""The named steps of `finetune()` (bortify/finetuning/finetune.py) on a tiny in-process BERT: output checks, how
dev is split and described, the student's runs (examples seen with gradient accumulation), plain search recorded
as round 1, Agora's labelling callable and the report's fields. The whole command: test_finetuning_end_to_end.py."""

from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from bortify.finetuning.arguments import (AgoraArguments, FinetuneDataArguments, FinetuneGridArguments,
                                          FinetuneModelArguments)
from bortify.finetuning.finetune import output_inputs, task_fields
from bortify.finetuning.modes import agora_fields, agora_labeler, generator_fields, mode_of, plain_search
from bortify.finetuning.runs import Runs, RunSettings
from bortify.finetuning.labelers import GeneratedRowLabeler
from bortify.finetuning.tasks import TaskData
from bortify.outputs import refuse_inputs
from bortify.utils import OutputExistsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = "a the film good bad movie plot was great awful".split()


def split(n, offset=0, regression=False):
    feature = datasets.Value("float32") if regression else datasets.ClassLabel(names=["neg", "pos"])
    return datasets.Dataset.from_dict(
        {"text": [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 3) % len(WORDS)]}" for i in range(offset, offset + n)],
         "label": [float(i % 2) if regression else i % 2 for i in range(n)]},
        features=datasets.Features({"text": datasets.Value("string"), "label": feature}))


def make_task(regression=False):
    return TaskData(name="t", train=split(16, regression=regression), dev=split(8, 100, regression),
                    test=split(6, 200, regression), text_columns=["text"], label_names=[] if regression else
                    ["neg", "pos"], regression=regression, metrics=["pearsonr"] if regression else ["accuracy", "f1"])


def model_args(tmp_path, mode="plain", **kw):
    return FinetuneModelArguments(model="embedded:all-MiniLM-L6-v2", output_dir=str(tmp_path / "out"), mode=mode,
                                  max_length=16, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    return BertForSequenceClassification(config), BertTokenizer(str(path))


@pytest.mark.parametrize("mode, repair_fraction, selection, repair, note", [
    ("plain", 0.5, 8, None, "used only to choose θ"),
    ("distill", 0.5, 8, None, "never trained on a dev text"),
    ("agora", 1.0, 8, None, "repair_fraction 1, the paper"),
    ("agora", 0.5, 4, 4, "dev_repair = the repair part (4 rows)"),
])
def test_dev_parts(tmp_path, mode, repair_fraction, selection, repair, note):
    select_idx, repair_idx, text = mode_of(mode, AgoraArguments(repair_fraction=repair_fraction)).dev_parts(
        make_task(), model_args(tmp_path, mode).seed)
    assert len(select_idx) == selection and (repair_idx if repair is None else len(repair_idx)) == repair
    assert note in text
    if repair:
        assert not set(select_idx) & set(repair_idx)


@pytest.mark.parametrize("mode, inputs, refused", [
    ("plain", {"labeler": "lab"}, False),  # plain mode has no labeler: its folder is no input
    ("agora", {"labeler": "lab"}, True),
    ("agora", {"teacher": "lab"}, True),  # the teacher is fine-tuned into the labeler
    ("agora", {"teacher": "lab", "labeler": "other"}, False),  # a given labeler: the teacher is not read
])
def test_check_output_refuses_an_input_folder_as_output(tmp_path, mode, inputs, refused):
    (tmp_path / "lab").mkdir()
    (tmp_path / "other").mkdir()
    names = {k: str(tmp_path / v) for k, v in inputs.items()}
    args = FinetuneModelArguments(model="embedded:all-MiniLM-L6-v2", output_dir=str(tmp_path / "lab" / "out"),
                                  mode=mode)
    if refused:
        with pytest.raises(OutputExistsError, match="input"):
            refuse_inputs(tmp_path / "lab" / "out", output_inputs(args, AgoraArguments(**names)))
    else:
        refuse_inputs(tmp_path / "lab" / "out", output_inputs(args, AgoraArguments(**names)))


def test_plain_search_fits_every_theta_once_and_records_round_one(tmp_path, tiny):
    model0, tok = tiny
    grid = FinetuneGridArguments(learning_rates=[1e-2, 1e-3], num_train_epochs=1, batch_sizes=[4],
                                 gradient_accumulation_steps=2)
    runs = Runs(model0, tok, make_task(), RunSettings.of(model_args(tmp_path)), grid)
    result = plain_search(runs, grid.thetas())
    runs.bar.close()
    (record,) = result.rounds
    assert [t["theta"]["learning_rate"] for t in record.thetas] == [1e-2, 1e-3] and result.best_round == 1
    assert result.best_dev_score == max(t["dev_score"] for t in record.thetas)
    assert record.examples_seen == 2 * 16  # one epoch over 16 rows per θ
    assert runs.seen(16, {"batch_size": 4}) == 16
    runs.grid = FinetuneGridArguments(max_steps=1, gradient_accumulation_steps=2)
    assert runs.seen(16, {"batch_size": 4}) == 8  # one optimiser step = 4 × 2 rows
    assert len(result.best_model.state_dict()) and result.round_models == {1: result.best_model}


def test_agora_label_is_the_labeler_for_regression_and_the_accepting_labeler_otherwise():
    labeler = object()
    assert agora_labeler(make_task(regression=True), AgoraArguments(), labeler, []) is labeler
    label = agora_labeler(make_task(), AgoraArguments(soft_label_temperature=2.0, min_labeler_confidence=0.7), labeler,
                        [{"label": 0}, {"label": 1}, {"label": 1}, {"label": 1}])
    assert isinstance(label, GeneratedRowLabeler) and label.ratio == [0.25, 0.75]
    assert (label.temperature, label.min_confidence, label.balance) == (2.0, 0.7, True)


def test_report_fields(tmp_path):
    task = make_task()
    fields = task_fields(task, model_args(tmp_path).model, FinetuneDataArguments())
    assert fields["dataset"] == "embedded:rotten-tomatoes" and fields["positive_label"] == "pos"
    assert fields["metric"] == "accuracy" and fields["labels"] == ["neg", "pos"]
    assert generator_fields(AgoraArguments(), make_task(regression=True))["verify_mistakes"] is False
    result = SimpleNamespace(stop_reason="done", baseline_dev_score=0.5)
    scores = SimpleNamespace(repair_idx=None, select_idx=list(range(8)))
    ag = agora_fields(AgoraArguments(repair_fraction=1.0), task, result, scores)
    assert (ag["dev_repair_rows"], ag["dev_selection_rows"], ag["round1_dev_score"]) == (8, 8, 0.5)
