"""End-to-end KD pretraining on tiny students with the packaged teachers: outputs, errors, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

from helpers import KILLER

from bortify.data import DataError
from bortify.pretraining.pretrain import PretrainError
from bortify.utils import SequenceLengthError
from bortify.pretraining.stage import run_stage
from bortify.pretraining.trainer import DistillationStudent, masked_teacher_logits
from bortify.utils import OutputExistsError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("pretrain")
    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0).save_pretrained(root / "student")
    texts = [t for t in corpus["text"][:1500]]
    (root / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return root


def _config(workdir, out, **overrides):
    cfg = {
        "student_config": str(workdir / "student"), "teacher": "embedded:splade-tiny",
        "corpus": str(workdir / "corpus.txt"), "seq_len": 32, "masking": "static", "max_heldout_blocks": 32,
        "output_dir": str(out), "max_steps": 30, "per_device_train_batch_size": 8, "learning_rate": 2e-3,
        "logging_steps": 5, "save_steps": 10, "use_cpu": True, "disable_tqdm": True, "seed": 7,
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def logit_run(workdir):
    out = workdir / "logit"
    summary = run_stage(_config(workdir, out))
    return out, summary


@pytest.mark.slow
def test_logit_kd_writes_a_standard_student_and_learns(logit_run, splade_path):
    out, summary = logit_run
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_kind"] == "mlm" and report["kd_mode"] == "logit"
    assert report["loss"]["w_mlm"] == 0.1 and report["loss"]["w_kd"] == 0.5 and report["loss"]["temperature"] == 2.0
    assert report["global_step"] == 30 and report["init"] == "random"
    for key in ("teacher", "corpus", "max_steps", "seq_len", "batch_size", "train_seconds", "parameters",
                "heldout_mlm_loss_before", "heldout_mlm_loss_after", "tokens_per_second"):
        assert report[key] is not None, key
    assert report["heldout_mlm_loss_after"] < report["heldout_mlm_loss_before"] - 0.5
    assert summary["summary_lines"] and "held-out MLM loss" in summary["summary_lines"][-1]
    # a plain BertForMaskedLM: no custom code, no missing keys, nothing of the teacher
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert type(model) is BertForMaskedLM and not info["missing_keys"] and not info["unexpected_keys"]
    keys = set(load_file(out / "model.safetensors"))
    assert keys and all(k.startswith(("bert.", "cls.")) for k in keys)
    assert not (out / "kd_projections.safetensors").exists()
    n_teacher = sum(p.numel() for p in AutoModelForMaskedLM.from_pretrained(splade_path).parameters())
    assert report["parameters"] == sum(p.numel() for p in model.parameters()) < n_teacher
    assert AutoTokenizer.from_pretrained(out).vocab_size == 30522
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "loss" in h]
    assert len(logged) == 6 and all("loss_kd" in h and "loss_mlm" in h for h in logged)


@pytest.mark.slow
def test_finished_run_is_not_overwritten(logit_run, workdir):
    out, _ = logit_run
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_stage(_config(workdir, out))


@pytest.mark.slow
def test_teacher_is_frozen_and_outside_the_trained_module(splade_path, tiny_bert_config):
    from bortify.pretraining.arguments import DistillationArguments
    from bortify.pretraining.trainer import DistillationTrainer

    teacher = AutoModelForMaskedLM.from_pretrained(splade_path)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = DistillationStudent(BertForMaskedLM(tiny_bert_config))
    args = DistillationArguments(output_dir="/tmp/unused-bortify", use_cpu=True, max_steps=1)
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, kd_mode="logit")
    assert not any(p.requires_grad for p in trainer.teacher.parameters()) and not trainer.teacher.training
    assert not any(p is q for p in trainer.model.parameters() for q in teacher.parameters())
    ids = torch.randint(1000, 2000, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    loss = trainer.compute_loss(trainer.model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    loss.backward()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.slow
def test_masked_only_heads_match_full_logits(splade_path, tiny_bert_config):
    torch.manual_seed(0)
    ids = torch.randint(1000, 5000, (2, 12))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 7] = 11, 12
    keep = labels != -100
    teacher = AutoModelForMaskedLM.from_pretrained(splade_path).eval()
    with torch.no_grad():
        full = teacher(input_ids=ids, attention_mask=mask).logits[keep]
        assert torch.allclose(masked_teacher_logits(teacher, ids, mask, keep), full, atol=1e-4)
        student = BertForMaskedLM(tiny_bert_config).eval()
        out = DistillationStudent(student)(input_ids=ids, attention_mask=mask, labels=labels)
        assert torch.allclose(out.logits, student(input_ids=ids, attention_mask=mask).logits[keep], atol=1e-5)
        assert torch.equal(out.labels, labels[keep])


@pytest.mark.slow
@pytest.mark.parametrize("init", ["random", "teacher"])
def test_representation_kd_from_minilm_keeps_projections_apart(workdir, init, minilm_path):
    out = workdir / f"representation-{init}"
    run_stage(_config(workdir, out, teacher="embedded:all-MiniLM-L6-v2", max_steps=12, save_steps=100,
                      max_heldout_blocks=16, init=init))
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_kind"] == "encoder" and report["kd_mode"] == "representation"
    assert report["init"] == init and (report["init_report"] is None) == (init == "random")
    if init == "teacher":  # the student starts from the teacher's layers 3 and 6 (0-based 2, 5), sliced
        assert report["init_report"]["layers"] == [2, 5]
    assert report["loss"]["layer_map"] == [3, 6] and report["loss"]["relation_heads"] == 8
    assert report["heldout_mlm_loss_after"] < report["heldout_mlm_loss_before"]
    history = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert all(h["loss_hidden_mse"] > 0 and h["loss_attn_relation"] > 0 for h in history)
    _, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    projections = load_file(out / "kd_projections.safetensors")
    assert projections["0.weight"].shape == (384, 32) and len(projections) == 4


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"student_vocab": 1000}, PretrainError, "Vocabulary mismatch"),
        ({"corpus_text": "\n   \n\n"}, DataError, "empty"),
        ({"corpus_csv": "body,other\nhello there friend,1\n"}, DataError, "text column"),
        ({"kd_mode": "logit", "teacher": "embedded:all-MiniLM-L6-v2"}, PretrainError, "masked-LM head"),
        ({"student_type": "roberta"}, PretrainError, "model_type"),
        ({"seq_len": 100}, SequenceLengthError, "max_position_embeddings"),
        ({"teacher": "/no/such/teacher"}, PretrainError, "does not exist"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, workdir, change, error, match):
    cfg = _config(workdir, tmp_path / "out")
    if "student_vocab" in change or "student_type" in change:
        if "student_type" in change:
            from transformers import RobertaConfig
            RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path / "s")
        else:
            BertConfig(vocab_size=change["student_vocab"], hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64).save_pretrained(tmp_path / "s")
        cfg["student_config"] = str(tmp_path / "s")
    if "corpus_text" in change:
        (tmp_path / "empty.txt").write_text(change["corpus_text"])
        cfg["corpus"] = str(tmp_path / "empty.txt")
    if "corpus_csv" in change:
        (tmp_path / "c.csv").write_text(change["corpus_csv"])
        cfg["corpus"] = str(tmp_path / "c.csv")
    cfg.update({k: v for k, v in change.items() if k in ("kd_mode", "teacher", "seq_len")})
    with pytest.raises(error, match=match):
        run_stage(cfg)
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "out").glob("checkpoint-*")) if (tmp_path / "out").exists() else True


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_step(logit_run, workdir, tmp_path):
    reference, _ = logit_run  # the same configuration, never interrupted
    out = tmp_path / "resumed"
    flags = [f"--{k}={v}" for k, v in _config(workdir, out).items()]
    env = {**os.environ, "KILL_AT": "10", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLER, "pretrain", *flags], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "checkpoint-10").is_dir() and not (out / "report.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "bortify.cli", "pretrain", *flags], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["global_step"] == 30 and report["resumed_from"].endswith("checkpoint-10")
    # identical to the uninterrupted run: same data order, masks and optimizer state after the resume
    ref = json.loads((reference / "report.json").read_text())
    assert report["heldout_mlm_loss_after"] == pytest.approx(ref["heldout_mlm_loss_after"], rel=1e-4)
    final = [h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    ref_final = [h["loss"] for h in json.loads((reference / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert final[-1] == pytest.approx(ref_final[-1], rel=1e-4)


@pytest.mark.parametrize("recipe", ["demo.yaml", "bort.yaml"])
def test_recipe_pretrain_sections_parse(recipe, tmp_path):
    from bortify.pretraining.arguments import DataArguments, DistillationArguments, ModelArguments
    from bortify.recipes import args_from_dict, load_recipe, stage_section

    section = stage_section(load_recipe(REPO / "recipes" / recipe), "pretrain")
    section = {**section, "student_config": "unused", "output_dir": str(tmp_path)}
    section.pop("bf16", None)  # a GPU setting; this machine has none
    model_args, data_args, training_args = args_from_dict((ModelArguments, DataArguments, DistillationArguments), section)
    if recipe == "bort.yaml":  # the paper's values (docs/methods/02-pretraining.md §2)
        assert model_args.teacher == "roberta-large" and data_args.seq_len == 512
        assert (training_args.temperature, training_args.w_mlm, training_args.w_kd) == (2.0, 0.1, 0.5)
        assert (training_args.learning_rate, training_args.warmup_steps) == (1e-4, 0.01)
    else:
        assert model_args.teacher.startswith("embedded:") and training_args.use_cpu


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp2_hsdp.yaml", "deepspeed_zero3.yaml"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(REPO / "recipes" / "accelerate" / name)
    if name == "fsdp2_hsdp.yaml":
        assert cfg.fsdp_config["fsdp_version"] == 2
        pc = cfg.parallelism_config
        assert pc["parallelism_config_dp_replicate_size"] * pc["parallelism_config_dp_shard_size"] == cfg.num_processes
    if name == "deepspeed_zero3.yaml":
        assert cfg.deepspeed_config["zero_stage"] == 3
        hpz = json.loads((REPO / "recipes" / "accelerate" / "deepspeed_zero3_hpz.json").read_text())
        assert hpz["zero_optimization"]["stage"] == 3 and hpz["zero_optimization"]["zero_hpz_partition_size"] > 1


def test_cli_help_documents_every_kd_option(capsys):
    from bortify.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--student_config", "--teacher", "--kd_mode", "--init", "--corpus", "--seq_len", "--masking",
                   "--temperature", "--w_mlm", "--w_kd", "--kd_reduction", "--w_hidden", "--w_attn", "--layer_map",
                   "--relation_heads", "--overwrite"):
        assert option in text, option
    assert "T²·KL" in text and "MiniLMv2" in text
