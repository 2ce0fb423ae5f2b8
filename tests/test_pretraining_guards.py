"""Static masking as a pure function of (seed, block), and the pretraining output-directory guards: complete
checkpoints only, resume past a half-written one, torch_threads restored, --overwrite as a dataclass field."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, TrainerState

from bortify.pretraining.data import StaticMaskingCollator, make_collator
from bortify.pretraining.rundir import checkpoint_problem, find_resume_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from bortify.resources import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("embedded:splade-tiny"))  # the tokenizer only: fast


def _blocks(tokenizer, n: int, length: int = 64, start: int = 2000) -> list[dict]:
    """Packed-style blocks `[CLS] ... [SEP]` of distinct ordinary tokens."""
    g = torch.Generator().manual_seed(start)
    blocks = []
    for _ in range(n):
        body = torch.randint(1000, 29000, (length - 2,), generator=g).tolist()
        blocks.append({"input_ids": [tokenizer.cls_token_id, *body, tokenizer.sep_token_id],
                       "attention_mask": [1] * length, "special_tokens_mask": [1] + [0] * (length - 2) + [1]})
    return blocks


# --- static masking ------------------------------------------------------------------------------------------

def test_a_fresh_and_a_used_collator_mask_a_block_identically(tokenizer):
    block = _blocks(tokenizer, 1, start=1)[0]
    fresh = make_collator(tokenizer, masking="static", seed=5)
    used = make_collator(tokenizer, masking="static", seed=5)
    for _ in range(3):
        used(_blocks(tokenizer, 4, start=99))  # its earlier blocks must not shift this block's mask
    torch.manual_seed(1234)  # nor the global RNG
    a = fresh([block])
    torch.manual_seed(4321)
    b = used([block])
    assert isinstance(fresh, StaticMaskingCollator)
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert (a["labels"] != -100).any()


def test_the_same_block_gets_the_same_mask_wherever_it_is(tokenizer):
    x, y, z = _blocks(tokenizer, 3, start=7)
    collator = make_collator(tokenizer, masking="static", seed=5)
    batch = collator([x, y, x])  # position in the batch, neighbours and repetition do not matter
    alone = collator([x])
    assert torch.equal(batch["labels"][0], batch["labels"][2]) and torch.equal(batch["labels"][0], alone["labels"][0])
    assert torch.equal(batch["input_ids"][0], alone["input_ids"][0])
    assert not torch.equal(batch["labels"][0], batch["labels"][1])  # another block, another mask
    other_seed = make_collator(tokenizer, masking="static", seed=6)([x])
    assert not torch.equal(other_seed["labels"][0], alone["labels"][0])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}  # DataCollatorForLanguageModeling's keys


def test_masked_fraction_and_80_10_10_split(tokenizer):
    blocks = _blocks(tokenizer, 300, start=11)
    batch = make_collator(tokenizer, masking="static", seed=0)(blocks)
    original = torch.tensor([b["input_ids"] for b in blocks])
    selected = batch["labels"] != -100
    maskable = ~torch.tensor([b["special_tokens_mask"] for b in blocks], dtype=torch.bool)
    fraction = selected.sum().item() / maskable.sum().item()
    assert 0.14 < fraction < 0.16, fraction
    assert torch.equal(batch["labels"][selected], original[selected])  # labels are the original tokens
    assert torch.equal(batch["input_ids"][~selected], original[~selected])  # unselected tokens are untouched
    chosen = batch["input_ids"][selected]
    as_mask = (chosen == tokenizer.mask_token_id).float().mean().item()
    kept = (chosen == original[selected]).float().mean().item()
    assert 0.77 < as_mask < 0.83 and 0.08 < kept < 0.12 and 0.07 < 1 - as_mask - kept < 0.13


def test_special_tokens_and_padding_are_never_masked(tokenizer):
    blocks = _blocks(tokenizer, 50, length=40, start=3) + _blocks(tokenizer, 50, length=24, start=4)
    for b in blocks[:10]:
        del b["special_tokens_mask"]  # the tokenizer's own special-token mask is used then
    batch = make_collator(tokenizer, masking="static", seed=1)(blocks)
    assert batch["input_ids"].shape == (100, 40)
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids)) & (batch["labels"] == -100)
    labels = batch["labels"]
    assert (labels[:, 0] == -100).all() and (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    assert (labels[:50, 39] == -100).all() and (labels[50:, 23] == -100).all()  # [SEP]
    pad = batch["attention_mask"] == 0
    assert pad[50:, 24:].all() and (labels[pad] == -100).all()
    assert (batch["input_ids"][pad] == tokenizer.pad_token_id).all()
    assert special.any() and not (labels == tokenizer.cls_token_id).any()
    assert not (labels == tokenizer.sep_token_id).any()


# --- checkpoint completeness ----------------------------------------------------------------------------------

def _fake_checkpoint(path, step: int):
    path.mkdir(parents=True)
    save_file({"w": torch.randn(64, 64)}, str(path / "model.safetensors"))
    torch.save({"state": {}, "param_groups": []}, path / "optimizer.pt")
    TrainerState(global_step=step).save_to_json(str(path / "trainer_state.json"))


@pytest.mark.parametrize("damage, reason", [
    ("no_state", "no trainer_state.json"),
    ("truncated_weights", "model.safetensors is truncated"),
    ("no_weights", "no model weights"),
    ("truncated_optimizer", "optimizer.pt is truncated"),
    ("bad_state", "trainer_state.json is unreadable"),
])
def test_the_newest_complete_checkpoint_is_chosen(tmp_path, damage, reason):
    for step in (10, 20, 30):
        _fake_checkpoint(tmp_path / f"checkpoint-{step}", step)
    newest = tmp_path / "checkpoint-30"
    if damage == "no_state":
        (newest / "trainer_state.json").unlink()
    elif damage == "truncated_weights":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "no_weights":
        (newest / "model.safetensors").unlink()
    elif damage == "truncated_optimizer":
        data = (newest / "optimizer.pt").read_bytes()
        (newest / "optimizer.pt").write_bytes(data[:-30])
    else:
        (newest / "trainer_state.json").write_text('{"global_step": 3')
    assert checkpoint_problem(tmp_path / "checkpoint-20") is None
    found, skipped = find_resume_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint-20"
    assert [p.name for p, _ in skipped] == ["checkpoint-30"] and reason in skipped[0][1]


# --- end to end: resume past a half-written checkpoint; threads; --overwrite -----------------------------------

@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("guards")
    cfg = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), **cfg)).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    BertConfig(vocab_size=30522, **cfg).save_pretrained(root / "student")
    lines = [f"line {i}: a short sentence about films, rivers, weather and {i % 7} boats." for i in range(300)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _stage_config(root, out, **overrides):
    cfg = {"student_config": str(root / "student"), "teacher": str(root / "teacher"),
           "corpus": str(root / "corpus.txt"), "seq_len": 32, "masking": "static", "max_heldout_blocks": 8,
           "output_dir": str(out), "max_steps": 4, "per_device_train_batch_size": 4, "save_steps": 2,
           "logging_steps": 1, "use_cpu": True, "disable_tqdm": True, "seed": 3, "report_to": "none"}
    cfg.update(overrides)
    return cfg


def test_a_half_written_newest_checkpoint_is_skipped_on_resume(tiny_setup, tmp_path, capsys):
    from bortify.pretraining.stage import run_stage

    out = tmp_path / "run"
    torch.set_num_threads(2)
    try:
        run_stage(_stage_config(tiny_setup, out, torch_threads=1))
        assert torch.get_num_threads() == 2  # --torch_threads is restored when pretrain returns
    finally:
        torch.set_num_threads(1)
    reference = json.loads((out / "report.json").read_text())
    # make it an unfinished run whose newest checkpoint was killed during its save
    (out / "report.json").unlink()
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    run_stage(_stage_config(tiny_setup, out))
    printed = capsys.readouterr().out
    assert "skipping checkpoint-4: model.safetensors is truncated" in printed
    assert "resuming from" in printed and "checkpoint-2" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-2") and report["global_step"] == 4
    assert report["heldout_mlm_loss_after"] == pytest.approx(reference["heldout_mlm_loss_after"], rel=1e-4)
    assert checkpoint_problem(out / "checkpoint-4") is None  # rewritten by the resumed run


def test_overwrite_is_a_dataclass_field_and_a_keyword(tiny_setup, tmp_path):
    from bortify.pretraining.arguments import DataArguments, DistillationArguments, ModelArguments
    from bortify.pretraining.pretrain import pretrain
    from bortify.recipes import parse_stage_args

    argv = ["--student_config", "s", "--output_dir", str(tmp_path / "o"), "--overwrite"]
    model_args, _, _ = parse_stage_args((ModelArguments, DataArguments, DistillationArguments), argv,
                                        stage="pretrain", prog="bortify pretrain", description="")
    assert model_args.overwrite is True
    # a foreign directory is refused, with the keyword (what stage.py passes) too: its files are not bortify's
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "notes.txt").write_text("not a run\n")
    from bortify.utils import OutputExistsError

    args = (ModelArguments, DataArguments, DistillationArguments)
    parsed = parse_stage_args(args, [f"--{k}={v}" for k, v in _stage_config(tiny_setup, out, max_steps=1).items()],
                              stage="pretrain", prog="bortify pretrain", description="")
    with pytest.raises(OutputExistsError, match="not an output of `bortify pretrain` \\(it holds notes.txt\\)"):
        pretrain(*parsed)
    with pytest.raises(OutputExistsError, match="even with --overwrite"):
        pretrain(*parsed, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "not a run\n"
    (out / "notes.txt").unlink()
    pretrain(*parsed, overwrite=True)  # an empty folder: written
    assert (out / "report.json").exists()
    first = (out / "model.safetensors").stat().st_ino
    report = pretrain(*parsed, overwrite=True)  # a finished run: trained beside it, then swapped in
    assert report.output_dir == str(out) and (out / "model.safetensors").stat().st_ino != first
    assert json.loads((out / ".bortify-output.json").read_text())["stage"] == "pretrain"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging, old or lock
    shutil.rmtree(out)
