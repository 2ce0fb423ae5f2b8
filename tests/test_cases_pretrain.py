"""Bad-input case table for `bortify pretrain`: every row fails with exit code 2 and a message naming the problem,
before training, leaving every existing file byte-identical (harness: tests/casetable.py).

The teacher is a tiny random BertForMaskedLM saved with splade-tiny's tokenizer (fast: no packaged weights).
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from casetable import Case, run_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _base(root: Path, teacher: Path) -> dict:
    """The files every row starts from: teacher, student config, corpus."""
    from transformers import BertConfig

    shutil.copytree(teacher, root / "teacher")
    BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=64).save_pretrained(root / "student")
    lines = [f"line {i} of a small corpus about films, weather and the sea." for i in range(200)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {}


def _args(**changes) -> list[str]:
    flags = {"student_config": "{root}/student", "teacher": "{root}/teacher", "corpus": "{root}/corpus.txt",
             "output_dir": "{root}/out", "seq_len": "32", "max_steps": "2", "per_device_train_batch_size": "2",
             "save_strategy": "no", "disable_tqdm": "true"}
    flags.update(changes)
    argv = ["pretrain", "--use_cpu"]
    for key, value in flags.items():
        if value is not None:
            argv += [f"--{key}", value] if value != "" else [f"--{key}"]
    return argv


def _empty_corpus(root):
    (root / "empty.txt").write_bytes(b"")


def _blank_corpus(root):
    (root / "blank.txt").write_text("\n   \n\t\n", encoding="utf-8")


def _blocker(root):
    (root / "blocker").write_text("a file where the output directory should go\n", encoding="utf-8")


def _unfinished_other_corpus(root):
    (root / "other.txt").write_text("another corpus\nwith two lines\n", encoding="utf-8")
    (root / "out").mkdir()
    (root / "out" / "run_args.json").write_text(json.dumps({
        "model": {"student_config": str(root / "student"), "teacher": str(root / "teacher"), "kd_mode": "auto",
                  "init": "random"},
        "data": {"corpus": str(root / "other.txt"), "seq_len": 32}}), encoding="utf-8")


def _poisoned_teacher(root):
    """The teacher's word embeddings set to NaN (what a diverged training run leaves)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = root / "teacher" / "model.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in tensors if "word_embeddings" in k)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(path), metadata={"format": "pt"})


def _unfinished(root):
    """A diverged run leaves no student and no report: nothing there looks like a result."""
    assert not (root / "out" / "report.json").exists() and not (root / "out" / "model.safetensors").exists()


def _foreign_output(root):
    (root / "out").mkdir()
    (root / "out" / "notes.txt").write_text("somebody else's files\n", encoding="utf-8")


def _another_checkpoint(root):
    (root / "out").mkdir()
    (root / "out" / "config.json").write_text("{}", encoding="utf-8")
    (root / "out" / "model.safetensors").write_bytes(b"someone's weights")


def _finetune_output(root):
    _another_checkpoint(root)
    (root / "out" / "report.json").write_text("{}", encoding="utf-8")
    (root / "out" / ".bortify-output.json").write_text('{"stage": "finetune", "files": []}', encoding="utf-8")


def _student_inside_output(root):
    shutil.copytree(root / "student", root / "out" / "student")


CASES = [
    Case("output-is-teacher", _args(output_dir="{root}/teacher"), r"output_dir .*teacher is the input --teacher"),
    Case("output-is-teacher-even-with-overwrite", _args(output_dir="{root}/teacher", overwrite=""),
         r"is the input --teacher.*--overwrite never replaces an input"),
    Case("output-inside-teacher", _args(output_dir="{root}/teacher/out"), r"is inside the input --teacher"),
    Case("output-contains-student-config", _args(student_config="{root}/out/student"),
         r"contains the input --student_config", setup=_student_inside_output),
    Case("output-is-corpus-file", _args(output_dir="{root}/corpus.txt"), r"is the input --corpus"),
    Case("student-config-missing", _args(student_config="{root}/no_such_config"), r"student_config .* does not exist"),
    Case("teacher-missing", _args(teacher="{root}/no_such_teacher"), r"teacher .* does not exist"),
    Case("empty-corpus-file", _args(corpus="{root}/empty.txt"), r"empty\.txt.* is empty", setup=_empty_corpus),
    Case("blank-corpus-file", _args(corpus="{root}/blank.txt"), r"blank\.txt.* is empty", setup=_blank_corpus),
    Case("seq-len-too-big", _args(seq_len="100"), r"seq_len 100 exceeds .*max_position_embeddings 64"),
    # a broken model never looks like a result
    Case("nan-weights-teacher", _args(), r"The teacher '.*teacher'.* has non-finite weights \(NaN or inf\)",
         setup=_poisoned_teacher),
    Case("learning-rate-diverges", _args(learning_rate="inf"),
         r"Training diverged in pretraining \(learning_rate inf.*hold NaN or inf.*at step 1.*lower --learning_rate",
         trains=True, check=_unfinished),
    Case("changed-corpus-on-resume", _args(), r"other arguments \(corpus: .*other\.txt.*corpus\.txt.*--overwrite",
         setup=_unfinished_other_corpus),
    Case("foreign-non-empty-output", _args(), r"is not an output of `bortify pretrain` \(it holds notes\.txt\)",
         setup=_foreign_output),
    # the output contract (bortify.outputs): nothing bortify did not write is replaced, even with --overwrite
    Case("foreign-non-empty-output-with-overwrite", _args(overwrite=""),
         r"is not an output of `bortify pretrain` \(it holds notes\.txt\).*even with --overwrite",
         setup=_foreign_output),
    Case("another-models-checkpoint-with-overwrite", _args(overwrite=""),
         r"out is not an output of `bortify pretrain`: it holds config\.json, model\.safetensors but no "
         r"\.bortify-output\.json", setup=_another_checkpoint),
    Case("another-stages-output", _args(overwrite=""), r"holds the output of `bortify finetune`",
         setup=_finetune_output),
    Case("negative-learning-rate", _args(learning_rate="-1"), r"learning_rate must be > 0"),
    Case("negative-w-kd", _args(w_kd="-0.5"), r"w_kd must be >= 0"),
    Case("bogus-kd-mode", _args(kd_mode="bogus"), r"kd_mode must be one of"),
    Case("output-under-a-file", _args(output_dir="{root}/blocker/out"), r"Cannot write to --output_dir .*is a file",
         setup=_blocker),
    Case("output-is-a-file", _args(output_dir="{root}/blocker"), r"Cannot write to --output_dir .*is a file",
         setup=_blocker),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys, tiny_teacher):
    _base(tmp_path, tiny_teacher)
    run_case(case, tmp_path, monkeypatch, capsys)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_read_only_parent_fails_before_training(tmp_path, monkeypatch, capsys, tiny_teacher):
    _base(tmp_path, tiny_teacher)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        run_case(Case("read-only-parent", _args(output_dir="{root}/ro/out"), r"Cannot write to --output_dir"),
                 tmp_path, monkeypatch, capsys)
    finally:
        (tmp_path / "ro").chmod(0o755)


# --- Trainer options that would publish behind `bortify push` (bortify.hygiene) ---------------------------------------

LEAK_TOKEN = "hf_" + "PretrainFlag7" * 3  # token-shaped: refused, never echoed, never written


def _no_token_written(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert LEAK_TOKEN.encode() not in path.read_bytes(), path
    assert not (root / "out").exists()  # refused before the output directory (and training_args.bin) was made


HUB_CASES = [
    Case("hub-token", _args(hub_token=LEAK_TOKEN), r"pretrain sets hub_token=\*\*\*.*`bortify push DIR --repo-id",
         check=_no_token_written),
    Case("push-to-hub", _args(push_to_hub="true"), r"pretrain sets push_to_hub=True.*bortify push",
         check=_no_token_written),
    Case("hub-model-id", _args(hub_model_id="me/student"), r"hub_model_id='me/student'.*bortify push"),
    Case("report-to-wandb", _args(report_to="wandb"), r"report_to=\['wandb'\].*only none / tensorboard"),
]


@pytest.mark.parametrize("case", [c.param() for c in HUB_CASES])
def test_hub_options_refused(case, tmp_path, monkeypatch, capsys, tiny_teacher):
    _base(tmp_path, tiny_teacher)
    rc, out, err = run_case(case, tmp_path, monkeypatch, capsys)
    assert LEAK_TOKEN not in out + err
