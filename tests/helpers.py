"""The tests' shared harness: tiny models, data writers, run-dir builders and the CLI wrappers.

A plain module, imported as `helpers` (pyproject.toml: `[tool.pytest.ini_options] pythonpath`). The fixtures that
build the tiny models once per test module are in conftest.py (`finetune_models`, `compare_models`,
`tiny_teacher`); a module opts in with `pytestmark = pytest.mark.usefixtures("finetune_models", ...)`. The
bad-input case tables have their own harness, tests/casetable.py.
"""

from __future__ import annotations

import csv
import json
import shutil
import textwrap
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ---- the CLI ----------------------------------------------------------------------------------------------------

def finetune_cli(*argv) -> int:
    """`bortify finetune ARGV...` in this process; returns the exit code."""
    from bortify.cli import main

    return main(["finetune", *argv])


# `bortify ARGV...` in a subprocess that SIGKILLs itself right after the checkpoint of step $KILL_AT is on disk
# (run with `python -c KILLER pretrain ...`): a hard crash for the resume tests.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    import bortify.pretraining.pretrain as P

    class KillAfterSave(TrainerCallback):  # a hard crash right after checkpoint-N is on disk
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)

    class Killable(P.DistillationTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback(KillAfterSave())

    P.DistillationTrainer = Killable
    from bortify.cli import main
    sys.exit(main(sys.argv[1:]))
""")


# ---- tiny models ------------------------------------------------------------------------------------------------

def micro_bert_config(vocab_size: int = 30522, **kw):
    """A one-layer BERT of width 16 (2 heads, 64 positions): seconds to train on a shared CPU."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, **kw)


def word_tokenizer(words, numbers: int):
    """A word-level BertTokenizer: the special tokens, `words`, then "0".."numbers-1"; returns (tokenizer, size)."""
    from transformers import BertTokenizer

    vocab = SPECIAL_TOKENS + list(words) + [str(i) for i in range(numbers)]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}), len(vocab)


def save_tiny_teacher(path: Path) -> Path:
    """A tiny random masked-LM teacher directory (model.safetensors + splade-tiny's tokenizer)."""
    from transformers import AutoTokenizer, BertForMaskedLM

    from bortify.resources import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:splade-tiny"))
    BertForMaskedLM(micro_bert_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# The finetune family (`finetune_models` fixture): student (an MLM, as the pretraining stage writes), labeler,
# gpt2, nopad (the student with no pad token); name -> checkpoint folder while the fixture is active.
FINETUNE_WORDS = ("a an the great awful film good bad movie number was is wonderful dull plot acting and of score "
                  "cat sat ran dog").split()
FINETUNE_MODELS: dict[str, Path] = {}


def finetune_tokenizer(truncate=True):
    tok, n = word_tokenizer(FINETUNE_WORDS, 200)
    if truncate:  # like a sentence-transformers tokenizer.json: run-specific truncation/padding stored in the file
        tok.backend_tokenizer.enable_truncation(max_length=50)
        tok.backend_tokenizer.enable_padding(length=50)
    return tok, n


def save_finetune_models(root: Path) -> dict[str, Path]:
    import torch
    from transformers import BertForMaskedLM, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    tok, n = finetune_tokenizer()
    torch.manual_seed(0)
    BertForMaskedLM(micro_bert_config(n)).save_pretrained(root / "student")  # as the pretraining stage writes
    tok.save_pretrained(root / "student")
    labels = {"id2label": {0: "fresh", 1: "rotten"}, "label2id": {"fresh": 0, "rotten": 1}}
    BertForSequenceClassification(micro_bert_config(n, **labels)).save_pretrained(root / "labeler")
    tok.save_pretrained(root / "labeler")
    GPT2LMHeadModel(GPT2Config(vocab_size=n, n_layer=1, n_head=2, n_embd=16, n_positions=64)).save_pretrained(
        root / "gpt2")
    tok.save_pretrained(root / "gpt2")
    shutil.copytree(root / "student", root / "nopad")
    cfg_path = root / "nopad" / "tokenizer_config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "pad_token": None}))
    return {p.name: p for p in root.iterdir()}


def copy_model(root: Path, name="student", dest="model") -> str:
    """A copy of the finetune family's `name` at root/dest."""
    shutil.copytree(FINETUNE_MODELS[name], root / dest)
    return str(root / dest)


# The compare family (`compare_models` fixture): classifiers old, new, other_labels (neg/pos), old_swapped (old with
# its classes stored in the other order) and an MLM student, mlm.
COMPARE_WORDS = "a an the great awful film good bad movie was is dull plot".split()
COMPARE_MODELS: dict[str, Path] = {}


def save_classifier(path: Path, labels, seed: int, tok, n):
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = micro_bert_config(n, initializer_range=1.0, id2label=dict(enumerate(labels)),
                               label2id={x: i for i, x in enumerate(labels)})
    model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model


def save_compare_models(root: Path) -> dict[str, Path]:
    import torch
    from transformers import BertForMaskedLM

    tok, n = word_tokenizer(COMPARE_WORDS, 100)
    old = save_classifier(root / "old", ["rotten", "fresh"], 1, tok, n)
    save_classifier(root / "new", ["rotten", "fresh"], 2, tok, n)
    save_classifier(root / "other_labels", ["neg", "pos"], 3, tok, n)
    # the old model with its classes stored in the other order (rows of the head swapped): same predictions
    swapped = save_classifier(root / "old_swapped", ["fresh", "rotten"], 1, tok, n)
    swapped.load_state_dict(old.state_dict())
    with torch.no_grad():
        swapped.classifier.weight.copy_(old.classifier.weight.flip(0))
        swapped.classifier.bias.copy_(old.classifier.bias.flip(0))
    swapped.save_pretrained(root / "old_swapped")
    BertForMaskedLM(micro_bert_config(n)).save_pretrained(root / "mlm")
    tok.save_pretrained(root / "mlm")
    return {p.name: p for p in root.iterdir()}


def copy_compare_models(root: Path, *names) -> dict:
    """Copies of the compare family's `names` at root/<name>; name -> path."""
    for name in names:
        shutil.copytree(COMPARE_MODELS[name], root / name)
    return {name: str(root / name) for name in names}


def compare_setup(*names):
    """A case-table setup: train/dev/test csv files (write_data) and the compare family's `names`."""
    def make(root: Path) -> dict:
        return {**write_data(root), **copy_compare_models(root, *names)}
    return make


# ---- data writers -----------------------------------------------------------------------------------------------

def sentiment_rows(n, start=0):
    return [{"text": f"{'a great' if i % 2 else 'an awful'} film number {i}", "label": "fresh" if i % 2 else "rotten"}
            for i in range(start, start + n)]


def write_csv(path: Path, rows, fieldnames=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def compare_rows(n, start=0):
    return [{"text": f"{'a great' if i % 3 else 'an awful'} {COMPARE_WORDS[i % len(COMPARE_WORDS)]} film {i % 100}",
             "label": "fresh" if i % 2 else "rotten"} for i in range(start, start + n)]


def write_data(root: Path, n_test=40) -> dict:
    """root/train.csv (40 rows), dev.csv (20), test.csv (n_test) of compare_rows; split -> path."""
    for name, part in (("train", compare_rows(40)), ("dev", compare_rows(20, 40)), ("test", compare_rows(n_test, 60))):
        with open(root / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "label"])
            w.writeheader()
            w.writerows(part)
    return {"train": str(root / "train.csv"), "dev": str(root / "dev.csv"), "test": str(root / "test.csv")}


DATA = ["--train_file", "{train}", "--dev_file", "{dev}", "--test_file", "{test}"]  # write_data's files, as flags


# ---- run-dir builders -------------------------------------------------------------------------------------------

REPORTS = {
    "extract": {
        "source": "embedded:all-MiniLM-L6-v2", "source_shape": {"D": 6, "A": 12, "H": 384, "I": 1536},
        "source_parameters": 22713216, "source_effective_parameters": 10646784, "epsilon": 0.2,
        "space": {"D": [1, 2], "A": [2], "H": [32, 64], "I": [64]}, "error_estimator": "slice+kd",
        "winner": {"D": 2, "A": 2, "H": 32, "I": 64, "parameters": 1000000, "effective_parameters": 25000,
                   "ops": 123, "error": 0.41, "W": 0.77, "ops_ratio": 0.0123},
        "num_candidates": 4, "num_trained": 2, "num_cached": 0, "num_skipped": 2, "seq_len": 128,
        "plot": "pareto.png",
    },
    "pretrain": {
        "teacher": "embedded:splade-tiny", "teacher_kind": "mlm", "corpus": "embedded:corpus", "kd_mode": "logit",
        "loss": {"w_mlm": 0.1, "w_kd": 0.5, "temperature": 2.0}, "init": "slice", "max_steps": 40,
        "heldout_mlm_loss_before": 9.81, "heldout_mlm_loss_after": 7.42, "parameters": 1012345,
    },
    "finetune": {
        "base_model": "runs/x/pretrain", "dataset": "embedded:rotten-tomatoes", "task": "sentiment",
        "labels": ["rotten", "fresh"], "metric": "accuracy", "mode": "agora",
        "labeler": {"name": "embedded:all-MiniLM-L6-v2", "dev_accuracy": 0.81},
        "rounds": [{"round": 0, "best_theta": {"lr": 5e-5}, "dev_score": 0.6, "mistakes": 80, "examples_added": 12,
                    "train_size": 500},
                   {"round": 1, "best_theta": {"lr": 1e-4}, "dev_score": 0.64, "mistakes": 72, "examples_added": 7,
                    "train_size": 512}],
        "best_round": 1,
        "dev": {"eval_accuracy": 0.6423, "eval_loss": 0.6}, "test": {"test_accuracy": 0.6317, "test_f1": 0.6071,
                                                                     "test_runtime": 1.2},
        "splits": {"train": 500, "dev": 200, "test": 200},
    },
}


def build_run_dirs(root, minilm_path, stages=("extract", "pretrain", "finetune"), seed=0, reports=None):
    """A fake finished run: stage dirs with report.json, a tiny classifier checkpoint, plots, Trainer leftovers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    torch.manual_seed(seed)
    dirs = {}
    kwargs = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128)
    for stage in stages:
        d = root / stage
        d.mkdir(parents=True)
        dirs[stage] = str(d)
        (d / "report.json").write_text(json.dumps({**REPORTS, **(reports or {})}[stage]))
    if "extract" in stages:
        plt.figure(figsize=(2, 2))
        plt.plot([1, 2], [2, 1])
        plt.savefig(root / "extract" / "pareto.png")
        plt.close()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    if "pretrain" in stages:
        AutoModelForMaskedLM.from_config(BertConfig(**kwargs)).save_pretrained(root / "pretrain")
        tokenizer.save_pretrained(root / "pretrain")
    if "finetune" in stages:
        config = BertConfig(**kwargs, num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
        AutoModelForSequenceClassification.from_config(config).save_pretrained(root / "finetune")
        tokenizer.save_pretrained(root / "finetune")
        (root / "finetune" / "checkpoint-5").mkdir()
        (root / "finetune" / "checkpoint-5" / "optimizer.pt").write_bytes(b"not for release")
    return dirs
