"""The named steps of `pretrain()` (bortify/pretraining/pretrain.py), each on its own: the layer map and relation
settings, the plan made before any weight is loaded, the held-out score by `Trainer.evaluate`, the step of a
checkpoint, and the report."""

import json

import datasets
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, TrainerState

from bortify.pretraining.arguments import DataArguments, DistillationArguments, ModelArguments
from bortify.pretraining.data import make_collator
from bortify.pretraining.pretrain import (
    KDPlan,
    PretrainError,
    _check_local,
    build_models,
    build_report,
    heldout_mlm_loss,
    plan_distillation,
    relation_settings,
    teacher_layers,
)
from bortify.pretraining.rundir import checkpoint_step
from bortify.slicing import default_layer_map

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from bortify.resources import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("embedded:splade-tiny"))  # the tokenizer only: fast


def _args(tmp_path, **kw) -> DistillationArguments:
    return DistillationArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", **kw)


# --- layer map and relation settings ---------------------------------------------------------------------------

def test_teacher_layers_default_is_the_slicing_map_and_the_flag_is_one_based(tmp_path):
    assert teacher_layers(_args(tmp_path), 3, 6) == default_layer_map(3, 6) == [1, 3, 5]
    assert teacher_layers(_args(tmp_path, layer_map="2,4,6"), 3, 6) == [1, 3, 5]  # --layer_map counts from 1
    for bad in ("1,2", "0,3,6", "2,4,7"):
        with pytest.raises(PretrainError, match=r"must give one teacher layer in 1\.\.6"):
            teacher_layers(_args(tmp_path, layer_map=bad), 3, 6)


def test_relation_settings_check_the_layer_and_the_heads(tmp_path):
    student, teacher = BertConfig(hidden_size=32, num_attention_heads=2), BertConfig(hidden_size=384,
                                                                                      num_attention_heads=12,
                                                                                      num_hidden_layers=6)
    assert relation_settings(_args(tmp_path), student, teacher) == (8, 5)  # gcd(32, 384) -> 8 heads; last layer
    assert relation_settings(_args(tmp_path, relation_teacher_layer=2, relation_heads=4), student, teacher) == (4, 1)
    with pytest.raises(PretrainError, match=r"outside 1\.\.6"):
        relation_settings(_args(tmp_path, relation_teacher_layer=7), student, teacher)
    with pytest.raises(PretrainError, match="does not divide the student's width 32"):
        relation_settings(_args(tmp_path, relation_heads=12), student, teacher)


@pytest.mark.parametrize("spec, ok", [("bert-base-uncased", True), ("google/bert_uncased", True),
                                      ("embedded:splade-tiny", True), ("./no/such/dir", False),
                                      ("/no/such/teacher", False), ("a/b/c", False), ("~/no-such", False)])
def test_a_missing_local_path_is_told_apart_from_a_hub_name(spec, ok):
    if ok:
        _check_local(spec, "teacher")
    else:
        with pytest.raises(PretrainError, match="does not exist"):
            _check_local(spec, "teacher")


def test_an_existing_path_that_is_no_repo_id_is_accepted(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    _check_local(str(tmp_path / "a" / "b"), "teacher")


@pytest.mark.slow  # reads the packaged teachers' configs and tokenizers
def test_plan_picks_the_mode_and_zero_based_layers_from_the_teacher(tmp_path, minilm_path, splade_path):
    student = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)
    data = DataArguments(corpus="embedded:corpus", seq_len=32)
    rep = plan_distillation(student, ModelArguments(student_config="s", teacher=minilm_path), data, _args(tmp_path),
                            tmp_path / "out")
    assert (rep.kind, rep.kd_mode, rep.teacher_layers, rep.relation_layer) == ("encoder", "representation",
                                                                               [1, 3, 5], 5)
    logit = plan_distillation(student, ModelArguments(student_config="s", teacher=splade_path), data,
                              _args(tmp_path), tmp_path / "out")
    assert (logit.kind, logit.kd_mode, logit.teacher_layers, logit.relation_heads) == ("mlm", "logit", None, None)
    sliced = plan_distillation(student, ModelArguments(student_config="s", teacher=splade_path, init="teacher"),
                               data, _args(tmp_path), tmp_path / "out")
    assert sliced.teacher_layers == default_layer_map(3, logit.teacher_cfg.num_hidden_layers)
    with pytest.raises(PretrainError, match="max_steps must be > 0"):
        plan_distillation(student, ModelArguments(student_config="s", teacher=splade_path), data,
                          _args(tmp_path, max_steps=0), tmp_path / "out")


def test_build_models_slices_the_student_from_the_kd_layers(tmp_path, tiny_bert_config):
    """init 'teacher' and representation KD use the same 0-based teacher layers (one layer map)."""
    torch.manual_seed(0)
    teacher_cfg = BertConfig(**{**tiny_bert_config.to_dict(), "num_hidden_layers": 4})
    teacher_dir = tmp_path / "teacher"
    BertForMaskedLM(teacher_cfg).save_pretrained(teacher_dir)
    student_cfg = BertConfig(**{**tiny_bert_config.to_dict(), "num_hidden_layers": 2})
    plan = KDPlan(str(teacher_dir), teacher_cfg, None, "mlm", "representation", teacher_layers=[1, 3])
    teacher, wrapper, init = build_models(student_cfg, plan, ModelArguments(student_config="s", init="teacher"),
                                          _args(tmp_path, w_attn=0.0))
    assert init["layers"] == [1, 3] and init["identity"] is False
    for s_layer, t_layer in zip(wrapper.student.bert.encoder.layer, [1, 3]):
        assert torch.equal(s_layer.output.dense.weight, teacher.bert.encoder.layer[t_layer].output.dense.weight)
    assert wrapper.hidden_layers == [0, 1] and wrapper.projections is None and not wrapper.relation


# --- held-out score: Trainer.evaluate gives the numbers of the hand-written loop it replaced ---------------------

def _by_hand_heldout_loss(student, blocks, collator, batch_size=16) -> float:
    """The loop `heldout_mlm_loss` used before (bortify 0.x): summed CE over masked tokens / their count."""
    student.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            batch = collator([blocks[i] for i in range(start, min(start + batch_size, len(blocks)))])
            out = student.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            keep = batch["labels"] != -100
            logits = student.cls(out.last_hidden_state[keep])
            total += float(torch.nn.functional.cross_entropy(logits.float(), batch["labels"][keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def _blocks(tokenizer, n: int, length: int = 32) -> datasets.Dataset:
    g = torch.Generator().manual_seed(11)
    rows = []
    for _ in range(n):
        body = torch.randint(1000, 29000, (length - 2,), generator=g).tolist()
        rows.append({"input_ids": [tokenizer.cls_token_id, *body, tokenizer.sep_token_id],
                     "attention_mask": [1] * length, "special_tokens_mask": [1] + [0] * (length - 2) + [1]})
    return datasets.Dataset.from_list(rows)


def test_heldout_loss_by_trainer_evaluate_equals_the_old_loop(tokenizer, tiny_bert_config):
    torch.manual_seed(0)
    student = BertForMaskedLM(tiny_bert_config)
    blocks = _blocks(tokenizer, 37)  # 37 blocks: uneven last batch, varying masked counts per batch
    collator = make_collator(tokenizer, masking="static", seed=3)
    old = _by_hand_heldout_loss(student, blocks, collator, batch_size=16)
    new = heldout_mlm_loss(student, blocks, collator, batch_size=16, use_cpu=True)
    print(f"held-out MLM loss: old loop {old:.7f}, Trainer.evaluate {new:.7f}")
    assert new == pytest.approx(old, rel=1e-6)
    # the batch size changes nothing (a per-token mean, not a mean of batch means), nor does it train the student
    assert heldout_mlm_loss(student, blocks, collator, batch_size=5, use_cpu=True) == pytest.approx(old, rel=1e-6)
    student.train()
    heldout_mlm_loss(student, blocks, collator, use_cpu=True)
    assert student.training  # the caller's mode is restored


# --- checkpoint step and report --------------------------------------------------------------------------------

def test_checkpoint_step_is_read_from_the_trainer_state_not_the_name(tmp_path):
    folder = tmp_path / "checkpoint-99"  # a renamed folder: the state knows better
    folder.mkdir()
    TrainerState(global_step=40).save_to_json(str(folder / "trainer_state.json"))
    assert checkpoint_step(folder) == 40


def test_report_counts_only_the_steps_this_invocation_ran(tmp_path):
    ckpt = tmp_path / "out" / "checkpoint-10"  # (save_total_limit may have deleted it by the end of the run)
    args = _args(tmp_path, per_device_train_batch_size=4, max_steps=30)
    plan = KDPlan("t", BertConfig(), None, "encoder", "representation", teacher_layers=[1, 3, 5],
                  relation_heads=8, relation_layer=5)
    run = {"train_loss": 1.5, "train_seconds": 2.0, "resume": str(ckpt), "resumed_at_step": 10, "global_step": 30, "loss_before": 9.0,
           "loss_after": 7.0, "train_blocks": 100, "heldout_blocks": 8, "parameters": 1234}
    report = build_report(ModelArguments(student_config="s"), DataArguments(corpus="c", seq_len=32), args, plan,
                          None, run)
    data = report.to_dict()
    assert data["tokens_per_second"] == pytest.approx(20 * 4 * 32 / 2.0)  # 20 steps run here, not 30
    assert data["loss"]["layer_map"] == [2, 4, 6] and data["loss"]["relation_teacher_layer"] == 6  # 1-based, as the flags
    assert data["resumed_from"].endswith("checkpoint-10") and data["global_step"] == 30
