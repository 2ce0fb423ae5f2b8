"""One fine-tuning run and prediction (bortify/finetuning/trainer.py) on a tiny in-process BERT: prediction through
`Trainer.predict` in order, the user's TrainingArguments (gradient accumulation, eval/save strategy) reaching each
run, and the soft-target Trainer evaluating a dev set without soft labels."""

import datasets
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, Trainer

from bortify.finetuning.trainer import fit, predict, run_arguments, tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = "a the film good bad movie plot was great awful".split()
THETA = {"learning_rate": 1e-2, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 4}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(path))
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval(), tok


def texts(n):
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 7)) for i in range(n)]  # lengths 1..7


def data(tok, n=12, soft=False):
    ds = datasets.Dataset.from_dict({"text": texts(n), "label": [i % 2 for i in range(n)]})
    if soft:
        ds = ds.add_column("soft_label", [[0.5, 0.5]] * n)
    return tokenize(ds, tok, ["text"], 16)


def test_predict_is_the_models_output_row_by_row_in_order_across_padded_batches(tiny):
    model, tok = tiny
    ds_tok = data(tok, n=10)
    got = predict(model, tok, ds_tok, batch_size=3)  # batches of different padded lengths
    with torch.no_grad():
        expected = np.concatenate([model(**tok(t, return_tensors="pt")).logits.numpy() for t in texts(10)])
    assert got.shape == (10, 2) and np.allclose(got, expected, atol=1e-5)
    assert predict(model, tok, ds_tok.select([]), batch_size=3).shape == (0, 2)


def test_run_arguments_take_the_users_training_arguments_over_the_quiet_defaults(tmp_path):
    args = run_arguments(str(tmp_path), batch_size=4, learning_rate=1e-3, weight_decay=0.0, warmup=0.1, epochs=1,
                         seed=3, extra={"gradient_accumulation_steps": 2, "eval_strategy": "epoch"})
    assert args.gradient_accumulation_steps == 2 and args.eval_strategy == "epoch"
    assert args.per_device_train_batch_size == 4 and args.seed == 3 and args.save_strategy == "no"
    quiet = run_arguments(str(tmp_path), batch_size=4, learning_rate=1e-3, weight_decay=0.0, warmup=0.1, epochs=1,
                          seed=3)
    assert quiet.eval_strategy == "no" and quiet.gradient_accumulation_steps == 1


@pytest.mark.parametrize("soft", [False, True])
def test_an_eval_strategy_evaluates_dev_and_load_best_model_at_end_runs(tiny, monkeypatch, soft):
    model0, tok = tiny
    evaluated = []
    real = Trainer.evaluate

    def spy(self, *a, **k):
        evaluated.append(len(self.eval_dataset))
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    training = {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
                "gradient_accumulation_steps": 2}
    dev = data(tok, n=6)
    model = fit(model0, tok, data(tok, soft=soft), THETA, epochs=2, seed=0, training=training, eval_tok=dev)
    assert evaluated == [6, 6]  # once per epoch, on dev
    assert not model.training and model is not model0
    evaluated.clear()
    fit(model0, tok, data(tok, soft=soft), THETA, epochs=1, seed=0, eval_tok=dev)
    assert evaluated == []  # the default: no evaluation during a run
