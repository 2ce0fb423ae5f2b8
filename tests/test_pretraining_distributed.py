"""Real multi-process runs on CPU (gloo): `accelerate launch` DDP of the KD trainer, and a 2 × 2 HSDP mesh
(PyTorch fully_shard) of the same KD loss on bortify's student (docs/methods/06-mics.md §6)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("dist")
    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0).save_pretrained(root / "student")
    (root / "corpus.txt").write_text("\n".join(corpus["text"][:600]) + "\n", encoding="utf-8")
    return root


def _losses(out: Path) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def test_accelerate_two_processes_match_one_process_at_the_same_global_batch(setup):
    flags = ["--student_config", str(setup / "student"), "--teacher", "embedded:splade-tiny",
             "--corpus", str(setup / "corpus.txt"), "--seq_len", "32", "--masking", "static", "--max_steps", "6",
             "--logging_steps", "1", "--save_strategy", "no", "--learning_rate", "1e-3", "--warmup_steps", "0",
             "--use_cpu", "--disable_tqdm", "true", "--seed", "3", "--max_heldout_blocks", "8"]
    one = subprocess.run([sys.executable, "-m", "bortify.cli", "pretrain", *flags, "--output_dir", str(setup / "w1"),
                          "--per_device_train_batch_size", "8"], env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([str(ACCELERATE), "launch", "--config_file", str(REPO / "recipes/accelerate/ddp.yaml"),
                          "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
                          "-m", "bortify.cli", "pretrain", *flags, "--output_dir", str(setup / "w2"),
                          "--per_device_train_batch_size", "4"], env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((setup / "w1" / "report.json").read_text())
    r2 = json.loads((setup / "w2" / "report.json").read_text())
    assert (r1["world_size"], r2["world_size"]) == (1, 2) and r1["batch_size"] == r2["batch_size"] == 8
    l1, l2 = _losses(setup / "w1"), _losses(setup / "w2")
    assert len(l1) == len(l2) == 6
    assert l1[-1] < l1[0] - 0.05  # it trains, so a desynchronised run would drift apart
    assert l2 == pytest.approx(l1, rel=1e-4)
    assert r2["heldout_mlm_loss_after"] == pytest.approx(r1["heldout_mlm_loss_after"], rel=1e-4)


def test_hsdp_two_by_two_mesh_matches_ddp_and_saves_a_loadable_student(setup):
    out = setup / "hsdp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4",
                           "--master_port", str(_free_port()), "-m", "bortify.pretraining.distributed",
                           "--student_config", str(setup / "student"), "--corpus", str(setup / "corpus.txt"),
                           "--output_dir", str(out), "--replicate", "2", "--shard", "2", "--steps", "4",
                           "--global_batch", "8", "--strategies", "ddp,hsdp"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "distributed_report.json").read_text())
    assert report["world_size"] == 4 and (report["replicate"], report["shard"]) == (2, 2)
    ddp, hsdp = report["losses"]["ddp"], report["losses"]["hsdp"]
    assert len(ddp) == len(hsdp) == 4 and ddp[-1] != ddp[0]
    assert hsdp == pytest.approx(ddp, rel=1e-4)
    # parameters really were sharded over the 2-way shard dimension
    assert report["shard_shape_rank0"] == [30522 // 2, 32]
    model, info = AutoModelForMaskedLM.from_pretrained(out / "hsdp", output_loading_info=True)
    assert type(model) is BertForMaskedLM and not info["missing_keys"] and not info["unexpected_keys"]
    from bortify.pretraining.distributed import build_student

    initial = build_student(model.config, seed=42).student  # the script's initial student: training changed it
    assert any((p - q).abs().max() > 1e-4 for p, q in zip(model.parameters(), initial.parameters()))
